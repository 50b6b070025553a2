"""The demo: the conformance suites against the reference servers, in one command.

``python -m runwire.conformance.demo`` (what ``tox -e demo`` runs after the bindings check):

1. makes a fresh temporary state folder (or uses ``--state-dir``);
2. jobs: starts ``runwire serve jobs-agent`` on a free loopback port, with a demo user whose
   random password travels only in the environment variable ``RUNWIRE_AGENT_PASSWORD``, and
   waits for its "listening" line; starts ``runwire serve jobs-dispatcher`` on a free
   loopback port (its default configuration reads the agent's ``jobs-agent/dev-agent.json``
   from the same state folder and routes the host ``localhost`` to it); runs
   ``runwire conformance jobs`` against both (``--jobs-host localhost``, the agent's
   development certificate as CA file), its output passed through, reports in
   ``--report-dir`` (default ``./conformance-reports``), the servers' output in
   ``jobs-agent.log`` and ``jobs-dispatcher.log`` next to them; stops both servers
   (SIGTERM, a bounded wait, then SIGKILL);
3. workflow: starts ``runwire serve workflow`` with the conformance workflow
   (:func:`runwire.conformance.workflow.definition_path`) under CurveZMQ, on loopback, in a
   fresh run root in the state folder, and runs ``runwire conformance workflow`` against
   it with the keys of its ``.service`` folder (``--workflow-keys``), reports in
   ``REPORT_DIR/workflow/``. The cases that stop the scheduler end its service: the first
   (``stop/clean``) runs last in that run, and each other (``stop/kill``, ``stop/now``)
   runs alone against a scheduler of its own (reports in ``REPORT_DIR/workflow-stop-kill/``
   ...); see :func:`workflow_groups`. Each scheduler's output goes to
   ``REPORT_DIR/<run>-server.log``; one the suite has not stopped is stopped with SIGTERM;
4. removes a temporary state folder;
5. prints, per family, the closing line over its runs, and, last, the closing line over
   every run (``N passed, N failed``).

The demo user's password is ``$RUNWIRE_AGENT_PASSWORD`` when set, else random; it reaches
the agent and the suite only through that environment variable, never a command line (nor
the workflow scheduler's environment).

Exit status: 0 when every suite passed, else the first failing suite's (1 failed, 2 usage
error, 3 reports not written); 4 when a server did not start (its log is printed).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

__all__ = [
    "DEMO_USER",
    "EXIT_SERVER_FAILED",
    "FAMILY_NAMES",
    "PASSWORD_VARIABLE",
    "DemoError",
    "ServerProcess",
    "SuiteRun",
    "closing_line",
    "main",
    "run_demo",
    "workflow_groups",
]

DEMO_USER: Final = "demo"
"""The agent user the demo creates (with a random password)."""

PASSWORD_VARIABLE: Final = "RUNWIRE_AGENT_PASSWORD"
"""Carries the demo user's password to the agent and to the suite (never on a command line)."""

EXIT_SERVER_FAILED: Final = 4
"""Exit status when a reference server did not start."""

DEFAULT_START_TIMEOUT_S: Final = 60.0
"""Bound on each server's start, seconds (the first start makes a certificate and a hash)."""

STOP_TIMEOUT_S: Final = 15.0
"""Bound on each server's stop after SIGTERM before SIGKILL, seconds (the agent allows its
calls 5 s to end)."""

AGENT_LISTENING: Final = re.compile(r"listening on (?P<host>\S+):(?P<port>\d+) \(TLS\)")
DISPATCHER_LISTENING: Final = re.compile(r"listening on (?P<host>\S+):(?P<port>\d+);")
WORKFLOW_LISTENING: Final = re.compile(
    r"listening on (?P<host>\S+):(?P<port>\d+) \(publish (?P<publish>\d+), "
    r"(?P<security>\w+)\); contact file (?P<contact>\S+);"
)
"""The line ``runwire serve workflow`` prints once it listens."""

WORKFLOW_HEARTBEAT_S: Final = 0.5
"""The demo scheduler's heartbeat interval, seconds (the publish cases wait for one)."""

WORKFLOW_EXIT_WAIT_S: Final = 5.0
"""After the workflow suite, how long the scheduler gets to exit by itself (its last case
stopped it) before it is sent SIGTERM, seconds."""

FAMILY_NAMES: Final = ("jobs", "workflow")
"""The families the demo runs, in order."""

CLOSING_LINE: Final = re.compile(r"^\d+ passed, \d+ failed(, \d+ (skipped|warned))*$")


class DemoError(Exception):
    """The demo could not run (a server did not start); the message says why."""


@dataclass
class ServerProcess:
    """A reference server started as a subprocess, its output copied to `log_path`.

    Attributes:
        name: ``jobs-agent`` or ``jobs-dispatcher``.
        process: the subprocess.
        log_path: where its stdout and stderr go.
        lines: its stdout lines as they arrive (read by a thread); None once it closed.
    """

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _readers: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def start(
        cls, name: str, arguments: Sequence[str], log_path: Path, env: dict[str, str]
    ) -> ServerProcess:
        """Start ``python -m runwire serve NAME ARGUMENTS``.

        Raises:
            OSError: the log file cannot be written or the process not started.
        """
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("w", encoding="utf-8")
        process = subprocess.Popen(
            [sys.executable, "-m", "runwire", "serve", name, *arguments],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        server = cls(name, process, log_path, log)
        assert process.stdout is not None and process.stderr is not None
        for stream, is_stdout in ((process.stdout, True), (process.stderr, False)):
            reader = threading.Thread(
                target=server._copy, args=(stream, is_stdout), name=f"{name} output", daemon=True
            )
            reader.start()
            server._readers.append(reader)
        return server

    def _copy(self, stream: IO[bytes], is_stdout: bool) -> None:
        try:
            for raw in stream:
                text = raw.decode("utf-8", "replace").rstrip("\n")
                with self._lock:
                    if not self.log.closed:
                        self.log.write(text + "\n")
                        self.log.flush()
                if is_stdout:
                    self.lines.put(text)
        finally:
            if is_stdout:
                self.lines.put(None)

    def wait_listening(self, pattern: re.Pattern[str], timeout_s: float) -> tuple[str, int]:
        """(host, port) from the server's "listening" line.

        Raises:
            DemoError: it exited or printed no such line within `timeout_s`.
        """
        found = self.wait_for(pattern, timeout_s)
        return found["host"], int(found["port"])

    def wait_for(self, pattern: re.Pattern[str], timeout_s: float) -> re.Match[str]:
        """The match of `pattern` in the first stdout line it matches.

        Raises:
            DemoError: it exited or printed no such line within `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DemoError(f"{self.name} did not say it listens within {timeout_s:g} s")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(5)
                raise DemoError(
                    f"{self.name} exited (status {self.process.returncode}) before listening"
                )
            found = pattern.search(line)
            if found:
                return found

    def wait_exit(self, timeout_s: float) -> int | None:
        """Wait up to `timeout_s` for the server to exit by itself; its status, or None."""
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait up to `timeout_s`, then SIGKILL. Returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                print(f"runwire demo: {self.name} ignored SIGTERM; killing it", flush=True)
                self.process.kill()
                self.process.wait(timeout_s)
        for reader in self._readers:
            reader.join(timeout_s)
        with self._lock:
            self.log.close()
        return self.process.returncode

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of its log."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def _state_folder(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    folder = Path(tempfile.mkdtemp(prefix="runwire-demo-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _say(message: str) -> None:
    print(f"runwire demo: {message}", flush=True)


@dataclass(frozen=True)
class SuiteRun:
    """One run of ``runwire conformance``: its label (``jobs``, ``workflow-stop-kill``),
    exit status and closing line (None when it printed none)."""

    label: str
    status: int
    closing: str | None


def _counts(closing: str | None) -> dict[str, int]:
    """{"passed": N, "failed": N, "skipped": N, "warned": N} from a closing line."""
    counts = dict.fromkeys(("passed", "failed", "skipped", "warned"), 0)
    for number, word in re.findall(r"(\d+) (passed|failed|skipped|warned)", closing or ""):
        counts[word] += int(number)
    return counts


def closing_line(runs: Sequence[SuiteRun]) -> str:
    """The closing line over several suite runs: ``N passed, N failed`` then ``, N
    skipped`` and ``, N warned`` when nonzero (as one run's)."""
    total = dict.fromkeys(("passed", "failed", "skipped", "warned"), 0)
    for suite in runs:
        for word, number in _counts(suite.closing).items():
            total[word] += number
    line = f"{total['passed']} passed, {total['failed']} failed"
    for word in ("skipped", "warned"):
        if total[word]:
            line += f", {total[word]} {word}"
    return line


def run_demo(
    state_dir: Path | None,
    report_dir: Path,
    *,
    step_timeout_s: float | None = None,
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
    suite_options: Sequence[str] = (),
    families: Sequence[str] = FAMILY_NAMES,
    select: Sequence[str] = (),
) -> int:
    """Run the jobs suite against the reference jobs servers, then the workflow suite
    against the reference workflow scheduler (see the module docstring).

    Args:
        state_dir: the runwire state folder (None: a fresh temporary one, removed
            afterwards).
        report_dir: where the suites write their reports (jobs: results.json and junit.xml
            there; workflow: in ``workflow/`` and one folder per case that ends the
            service), and the demo the servers' logs.
        step_timeout_s: the suites' ``--timeout`` (None: their default).
        start_timeout_s: bound on each server's start, seconds.
        suite_options: more ``runwire conformance`` options for every suite.
        families: the families to run (default both).
        select: case id globs; a family none of them names (``jobs/...``,
            ``workflow/...``, or a glob starting with ``*``) is left out.

    Returns:
        0 when every suite passed; else the first failing suite's exit status, or
        :data:`EXIT_SERVER_FAILED` when a server did not start.
    """
    report_dir = report_dir.resolve()
    runs: list[SuiteRun] = []
    status = 0
    with _state_folder(state_dir) as state:
        kind = "given" if state_dir is not None else "temporary"
        _say(f"state folder {state} ({kind})")
        for family in families:
            patterns = [p for p in select if _names_family(p, family)]
            if select and not patterns:
                continue
            part = _run_jobs if family == "jobs" else _run_workflow
            family_status = part(
                state, report_dir, runs, step_timeout_s, start_timeout_s, suite_options, patterns
            )
            if family_status != 0 and status == 0:
                status = family_status
            if family_status == EXIT_SERVER_FAILED:
                break
    for label in dict.fromkeys(run.label.split("-", 1)[0] for run in runs):
        mine = [run for run in runs if run.label.split("-", 1)[0] == label]
        parts = f" ({len(mine)} runs, one server each)" if len(mine) > 1 else ""
        _say(f"{label}: {closing_line(mine)}{parts}")
    if status == EXIT_SERVER_FAILED or any(run.closing is None for run in runs) or not runs:
        print("(a suite printed no closing line)", flush=True)
    else:
        print(closing_line(runs), flush=True)
    return status


def _names_family(pattern: str, family: str) -> bool:
    return pattern.startswith((f"{family}/", "*")) or pattern == family


def _suite_command(
    family: str,
    targets: Sequence[str],
    options: Sequence[str],
    report_dir: Path,
    step_timeout_s: float | None,
    suite_options: Sequence[str],
) -> list[str]:
    command = [
        *(sys.executable, "-m", "runwire", "conformance", family),
        *(item for target in targets for item in ("--target", target)),
        *options,
        *("--report-dir", str(report_dir)),
    ]
    if step_timeout_s is not None:
        command += ["--timeout", f"{step_timeout_s:g}"]
    return command + list(suite_options)


def _run_jobs(
    state: Path,
    report_dir: Path,
    runs: list[SuiteRun],
    step_timeout_s: float | None,
    start_timeout_s: float,
    suite_options: Sequence[str],
    select: Sequence[str],
) -> int:
    """Start the jobs agent and dispatcher, run the jobs suite, stop them."""
    password = os.environ.get(PASSWORD_VARIABLE) or secrets.token_urlsafe(18)
    env = {**os.environ, PASSWORD_VARIABLE: password, "PYTHONUNBUFFERED": "1"}
    servers: list[ServerProcess] = []
    try:
        try:
            targets = _start_servers(state, report_dir, env, start_timeout_s, servers)
        except DemoError as exc:
            _say(f"error: {exc}")
            for server in servers:
                server.stop()
                print(f"--- last lines of {server.log_path} ---\n{server.log_tail()}")
            return EXIT_SERVER_FAILED
        options = [
            *("--jobs-host", "localhost", "--agent-user", DEMO_USER),
            *("--agent-ca-file", str(state / "jobs-agent" / "dev-cert.pem")),
            *(item for pattern in select for item in ("--select", pattern)),
        ]
        command = _suite_command(
            "jobs", targets, options, report_dir, step_timeout_s, suite_options
        )
        _say(f"running runwire conformance jobs (the password in ${PASSWORD_VARIABLE})")
        status, closing = _run_suite(command, env)
    finally:
        for server in reversed(servers):
            stopped = server.stop()
            if stopped != 0:
                _say(f"{server.name} ended with status {stopped}; see {server.log_path}")
    _say("servers stopped")
    logs = ", ".join(str(server.log_path) for server in servers)
    _say(f"reports: {report_dir / 'results.json'}, {report_dir / 'junit.xml'}; server logs: {logs}")
    print(closing or "(the suite printed no closing line)", flush=True)
    runs.append(SuiteRun("jobs", status, closing))
    return status


def workflow_groups(select: Sequence[str]) -> list[tuple[str, list[str]]]:
    """The workflow suite's runs, one server each: (label, selection options).

    The first run takes every selected case except the cases that end the service (stop
    the scheduler) after the first of them; each of those gets a run of its own
    (``workflow-stop-kill``: ``--select workflow/runtime/stop/kill``). Runs selecting
    nothing are left out.
    """
    from .family import load_family
    from .runner import matches, select_cases

    family = load_family("workflow")
    chosen = select_cases(family.cases, select, ())
    ending = [case.id for case in chosen if case.ends_service]
    alone = ending[1:]
    groups: list[tuple[str, list[str]]] = []
    if any(case.id not in alone for case in chosen):
        options = [item for pattern in select for item in ("--select", pattern)]
        options += [item for case_id in alone for item in ("--exclude", case_id)]
        groups.append(("workflow", options))
    for case_id in alone:
        if not select or any(matches(case_id, pattern) for pattern in select):
            label = "workflow-" + "-".join(case_id.split("/")[-2:])
            groups.append((label, ["--select", case_id]))
    return groups


def _run_workflow(
    state: Path,
    report_dir: Path,
    runs: list[SuiteRun],
    step_timeout_s: float | None,
    start_timeout_s: float,
    suite_options: Sequence[str],
    select: Sequence[str],
) -> int:
    """For each run of :func:`workflow_groups`: start ``runwire serve workflow`` with the
    conformance definition under CURVE in a fresh run root, run the workflow suite with
    the service directory's keys, stop the scheduler (if the suite has not)."""
    from .workflow import definition_path

    env = {key: value for key, value in os.environ.items() if key != PASSWORD_VARIABLE}
    env["PYTHONUNBUFFERED"] = "1"
    status = 0
    with definition_path() as definition:
        for label, selection in workflow_groups(select):
            reports = report_dir / label
            server = ServerProcess.start(
                "workflow",
                [
                    str(definition),
                    *("--run-root", str(state / label), "--host", "127.0.0.1"),
                    *("--heartbeat-interval", f"{WORKFLOW_HEARTBEAT_S:g}"),
                ],
                report_dir / f"{label}-server.log",
                env,
            )
            try:
                try:
                    found = server.wait_for(WORKFLOW_LISTENING, start_timeout_s)
                except DemoError as exc:
                    _say(f"error: {exc}")
                    server.stop()
                    print(f"--- last lines of {server.log_path} ---\n{server.log_tail()}")
                    return EXIT_SERVER_FAILED
                host, port, publish = found["host"], found["port"], found["publish"]
                keys = Path(found["contact"]).parent
                _say(
                    f"workflow scheduler listening on {host}:{port} (publish {publish}, "
                    f"{found['security']}); keys in {keys}"
                )
                command = _suite_command(
                    "workflow",
                    [f"runtime=tcp://{host}:{port}", f"publish=tcp://{host}:{publish}"],
                    ["--workflow-keys", str(keys), *selection],
                    reports,
                    step_timeout_s,
                    suite_options,
                )
                _say(f"running runwire conformance workflow {' '.join(selection)}".rstrip())
                suite_status, closing = _run_suite(command, env)
            finally:
                server.wait_exit(WORKFLOW_EXIT_WAIT_S)  # a stop case stopped it: let it end
                stopped = server.stop()
                if stopped != 0:
                    _say(f"{server.name} ended with status {stopped}; see {server.log_path}")
            _say(
                f"workflow scheduler stopped; reports: {reports / 'results.json'}, "
                f"{reports / 'junit.xml'}; server log: {server.log_path}"
            )
            runs.append(SuiteRun(label, suite_status, closing))
            if suite_status != 0 and status == 0:
                status = suite_status
    return status


def _start_servers(
    state: Path,
    report_dir: Path,
    env: dict[str, str],
    start_timeout_s: float,
    servers: list[ServerProcess],
) -> list[str]:
    """Start the agent, then the dispatcher (which reads the agent's dev-agent.json);
    append each to `servers` as it starts. Returns the suite's ``--target`` values.

    Raises:
        DemoError: a server did not start.
    """
    loopback = ["--host", "127.0.0.1", "--port", "0", "--state-dir", str(state)]
    agent = ServerProcess.start(
        "jobs-agent",
        [*loopback, "--user", DEMO_USER, "--password-env", PASSWORD_VARIABLE],
        report_dir / "jobs-agent.log",
        env,
    )
    servers.append(agent)
    agent_host, agent_port = agent.wait_listening(AGENT_LISTENING, start_timeout_s)
    _say(f"jobs agent listening on {agent_host}:{agent_port} (TLS), user {DEMO_USER}")
    dispatcher = ServerProcess.start(
        "jobs-dispatcher",
        loopback,
        report_dir / "jobs-dispatcher.log",
        {key: value for key, value in env.items() if key != PASSWORD_VARIABLE},
    )
    servers.append(dispatcher)
    host, port = dispatcher.wait_listening(DISPATCHER_LISTENING, start_timeout_s)
    _say(f"jobs dispatcher listening on {host}:{port}; it routes host localhost to the agent")
    return [f"dispatcher=tcp://{host}:{port}", f"agent=tls://{agent_host}:{agent_port}"]


def _run_suite(command: Sequence[str], env: dict[str, str]) -> tuple[int, str | None]:
    """Run the suite, passing its output through; (exit status, its closing line)."""
    closing: str | None = None
    with subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    ) as suite:
        assert suite.stdout is not None
        for raw in suite.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            print(line, flush=True)
            if CLOSING_LINE.match(line):
                closing = line
    return suite.returncode, closing


def build_parser() -> argparse.ArgumentParser:
    """The demo's command line."""
    parser = argparse.ArgumentParser(
        prog="python -m runwire.conformance.demo",
        description=(
            "Start the reference jobs agent and dispatcher on loopback, run the jobs "
            "conformance suite against both and stop them; then start the reference workflow "
            "scheduler under CurveZMQ, run the workflow suite against it (the stop modes "
            "each on a fresh scheduler) and stop it. Print where the reports are and the "
            "closing line. Exit status: the first failing suite's; 4 when a server did not "
            "start."
        ),
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="state folder for both servers (default: a fresh temporary one, removed after)",
    )
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=Path("conformance-reports"),
        metavar="DIR",
        help="where results.json, junit.xml and the server logs go (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout", type=float, metavar="S", help="the suite's per-step limit (default: its own)"
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=DEFAULT_START_TIMEOUT_S,
        metavar="S",
        help="bound on each server's start in seconds (default: %(default)g)",
    )
    parser.add_argument(
        "--select",
        action="append",
        default=[],
        metavar="GLOB",
        help="run only matching cases (a family no pattern names is left out)",
    )
    parser.add_argument(
        "--family",
        action="append",
        choices=FAMILY_NAMES,
        metavar="FAMILY",
        help="run only this family's suite (jobs, workflow; repeatable; default both)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit status. SIGTERM stops it (and the servers)."""
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    families = [name for name in FAMILY_NAMES if name in (args.family or FAMILY_NAMES)]
    return run_demo(
        args.state_dir,
        args.report_dir,
        step_timeout_s=args.timeout,
        start_timeout_s=args.start_timeout,
        families=families,
        select=args.select,
    )


if __name__ == "__main__":
    sys.exit(main())
