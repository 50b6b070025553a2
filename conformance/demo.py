"""The demo: the jobs conformance suite against the reference servers, in one command.

``python -m runwire.conformance.demo`` (what ``tox -e demo`` runs after the bindings check):

1. makes a fresh temporary state folder (or uses ``--state-dir``);
2. starts ``runwire serve jobs-agent`` on a free loopback port, with a demo user whose random
   password travels only in the environment variable ``RUNWIRE_AGENT_PASSWORD``, and waits
   for its "listening" line;
3. starts ``runwire serve jobs-dispatcher`` on a free loopback port; its default
   configuration reads the agent's ``jobs-agent/dev-agent.json`` from the same state folder
   and routes the host ``localhost`` to it;
4. runs ``runwire conformance jobs`` against both (``--jobs-host localhost``, the agent's
   development certificate as CA file), its output passed through, reports in
   ``--report-dir`` (default ``./conformance-reports``), the servers' output in
   ``jobs-agent.log`` and ``jobs-dispatcher.log`` next to them;
5. stops both servers (SIGTERM, a bounded wait, then SIGKILL) and removes a temporary state
   folder;
6. prints where the reports are and, last, the suite's closing line (``N passed, N failed``).

The demo user's password is ``$RUNWIRE_AGENT_PASSWORD`` when set, else random; it reaches
the agent and the suite only through that environment variable, never a command line.

Exit status: the suite's (0 passed, 1 failed, 2 usage error, 3 reports not written); 4 when
a server did not start (its log is printed).
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
    "PASSWORD_VARIABLE",
    "DemoError",
    "ServerProcess",
    "main",
    "run_demo",
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
                return found["host"], int(found["port"])

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


def run_demo(
    state_dir: Path | None,
    report_dir: Path,
    *,
    step_timeout_s: float | None = None,
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
    suite_options: Sequence[str] = (),
) -> int:
    """Start both reference servers, run the jobs suite against them, stop them.

    The demo user's password is ``$RUNWIRE_AGENT_PASSWORD`` when set, else a random one; it
    reaches the agent and the suite only through that environment variable.

    Args:
        state_dir: the runwire state folder for both servers (None: a fresh temporary one,
            removed afterwards).
        report_dir: where the suite writes results.json and junit.xml, and the demo the
            servers' logs.
        step_timeout_s: the suite's ``--timeout`` (None: its default).
        start_timeout_s: bound on each server's start, seconds.
        suite_options: more ``runwire conformance jobs`` options (``--select`` ...).

    Returns:
        The suite's exit status, or :data:`EXIT_SERVER_FAILED`.
    """
    report_dir = report_dir.resolve()
    password = os.environ.get(PASSWORD_VARIABLE) or secrets.token_urlsafe(18)
    env = {**os.environ, PASSWORD_VARIABLE: password, "PYTHONUNBUFFERED": "1"}
    servers: list[ServerProcess] = []
    with _state_folder(state_dir) as state:
        kind = "given" if state_dir is not None else "temporary"
        _say(f"state folder {state} ({kind})")
        try:
            try:
                targets = _start_servers(state, report_dir, env, start_timeout_s, servers)
            except DemoError as exc:
                _say(f"error: {exc}")
                for server in servers:
                    server.stop()
                    print(f"--- last lines of {server.log_path} ---\n{server.log_tail()}")
                return EXIT_SERVER_FAILED
            command = [
                *(sys.executable, "-m", "runwire", "conformance", "jobs"),
                *(item for target in targets for item in ("--target", target)),
                *("--jobs-host", "localhost", "--agent-user", DEMO_USER),
                *("--agent-ca-file", str(state / "jobs-agent" / "dev-cert.pem")),
                *("--report-dir", str(report_dir)),
            ]
            if step_timeout_s is not None:
                command += ["--timeout", f"{step_timeout_s:g}"]
            command += suite_options
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
            "conformance suite against both, print where the reports are and the closing "
            "line, stop the servers. Exit status: the suite's; 4 when a server did not start."
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
        "--select", action="append", default=[], metavar="GLOB", help="run only matching cases"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit status. SIGTERM stops it (and the servers)."""
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    options = [item for pattern in args.select for item in ("--select", pattern)]
    return run_demo(
        args.state_dir,
        args.report_dir,
        step_timeout_s=args.timeout,
        start_timeout_s=args.start_timeout,
        suite_options=options,
    )


if __name__ == "__main__":
    sys.exit(main())
