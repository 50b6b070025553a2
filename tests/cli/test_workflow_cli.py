"""``runwire serve workflow`` and ``runwire workflow ...`` end to end.

The scheduler runs the example pipeline (``examples/workflow/pipeline.yaml``) in a subprocess
(``python -m runwire serve workflow``, CURVE on, ports from the default range, a run root in
``tmp_path``); the client commands run in-process (``runwire.main.main``) with their output
captured, and once as a subprocess. Waits are bounded: the serve line is read with a
select() deadline, a queued command's effect is awaited by re-asking ``status`` until a
deadline, and the subprocess is waited for with a timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runwire.commands.workflow import STDIN_HINT
from runwire.main import main

REPO = Path(__file__).resolve().parents[2]
PIPELINE = REPO / "examples" / "workflow" / "pipeline.yaml"
CONFORMANCE = REPO / "conformance" / "workflow" / "conformance.yaml"  # the packaged one
WAIT_S = 15.0
LISTENING = re.compile(
    r"^runwire workflow (?P<id>\S+) listening on (?P<host>\S+):(?P<port>\d+) "
    r"\(publish (?P<publish>\d+), (?P<security>curve|none)\); contact file (?P<contact>\S+); "
    r"run directory (?P<run_dir>\S+)$"
)


@dataclass
class Outcome:
    status: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Served:
    """``runwire serve workflow`` running in a subprocess."""

    process: subprocess.Popen[str]
    match: re.Match[str]
    run_root: Path

    @property
    def contact_file(self) -> Path:
        return Path(self.match["contact"])

    def wait(self) -> tuple[int, str]:
        """Exit status and the rest of stdout, once the process ends (bounded)."""
        out, _ = self.process.communicate(timeout=WAIT_S)
        return self.process.returncode, out


def read_line(process: subprocess.Popen[str], timeout_s: float = WAIT_S) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    assert ready, "no line from the server in time"
    return process.stdout.readline()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """``serve(definition, *options)``: start ``runwire serve workflow`` in a subprocess
    (run root ``tmp_path`` through $RUNWIRE_RUN_ROOT), wait for its line; killed at teardown."""
    started: list[subprocess.Popen[str]] = []

    def start(definition: Path = PIPELINE, *options: str) -> Served:
        env = {**os.environ, "RUNWIRE_RUN_ROOT": str(tmp_path)}
        process = subprocess.Popen(
            [sys.executable, "-m", "runwire", "serve", "workflow", str(definition), *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        started.append(process)
        line = read_line(process).rstrip("\n")
        match = LISTENING.match(line)
        assert match, (line, process.stderr.read() if process.poll() is not None else "")
        return Served(process, match, tmp_path)

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.communicate(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate(timeout=WAIT_S)


@pytest.fixture
def workflow(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Outcome]:
    """``workflow("status", "pipeline", "--json", stdin=None)``: ``runwire workflow ...``
    in-process (``stdin``: its text, or a file object to read it from)."""

    def run(*argv: str, stdin: str | io.StringIO | None = None) -> Outcome:
        if stdin is not None:
            monkeypatch.setattr(
                sys, "stdin", io.StringIO(stdin) if isinstance(stdin, str) else stdin
            )
        capsys.readouterr()
        status = main(["workflow", *argv])
        captured = capsys.readouterr()
        return Outcome(status, captured.out, captured.err)

    return run


def until_status(
    workflow: Callable[..., Outcome],
    root: Path,
    check: Callable[[Any], bool],
    workflow_id: str = "pipeline",
) -> Any:
    """Re-ask ``status --json`` until ``check`` passes (the command was actioned), bounded."""
    deadline = time.monotonic() + WAIT_S
    while True:
        outcome = workflow("status", workflow_id, "--json", "--run-root", str(root))
        assert outcome.status == 0, outcome
        if check(outcome.json):
            return outcome.json
        assert time.monotonic() < deadline, outcome.json


def row(status: Any, task_id: str) -> dict[str, Any] | None:
    return next((r for r in status["task_proxies"] if r["id"] == task_id), None)


# --- end to end -------------------------------------------------------------------------------------


def test_serve_status_hold_client_and_stop(
    serve: Callable[..., Served], workflow: Callable[..., Outcome], tmp_path: Path
) -> None:
    served = serve(PIPELINE, "--paused")
    match = served.match
    assert match["id"] == "pipeline" and match["security"] == "curve"
    assert 43001 <= int(match["port"]) <= 43100 and 43001 <= int(match["publish"]) <= 43100
    assert served.contact_file == tmp_path / "pipeline" / ".service" / "contact"
    assert served.contact_file.stat().st_mode & 0o777 == 0o600
    root = ("--run-root", str(tmp_path))

    status = workflow("status", "pipeline", *root)
    assert status.status == 0, status
    lines = status.out.splitlines()
    assert lines[0].startswith("workflow pipeline: paused")
    assert lines[1].split() == ["ID", "STATE", "HELD", "SUBMIT", "JOB"]
    assert lines[2].split() == ["1/generate", "waiting", "no", "-", "-"]

    # hold a waiting task and a future one (4/summarise keeps the workflow from finishing)
    held = workflow("hold", "pipeline", "1/generate", "4/summarise", *root)
    assert held.status == 0, held
    assert held.out.startswith("hold: Command queued (id ")
    assert "matched 2: 1/generate, 4/summarise" in held.out
    until_status(workflow, tmp_path, lambda s: (row(s, "1/generate") or {}).get("is_held"))

    ping = workflow("client", "pipeline", "ping_workflow", "-n", *root)
    assert (ping.status, ping.json) == (0, True)
    doc = workflow("client", "pipeline", "api", *root, stdin='{"endpoint": "hold"}')
    assert doc.status == 0 and doc.json.startswith("Hold task proxies")
    elements = workflow(
        "client", "pipeline", "data_elements", *root, stdin='{"element_type": "tasks"}'
    )
    assert elements.json["element_type"] == "tasks"
    assert "summarise" in {e["name"] for e in elements.json["elements"]}

    # released and resumed: every point runs but 4/summarise, held
    assert workflow("release", "pipeline", "1/*", *root).status == 0
    resumed = workflow("resume", "pipeline", "--json", *root)
    assert resumed.status == 0 and resumed.json["accepted"] is True
    until_status(
        workflow, tmp_path, lambda s: (row(s, "4/publish") or {}).get("job_state") == "succeeded"
    )

    # the status table, as a subprocess too
    env = {**os.environ, "RUNWIRE_RUN_ROOT": str(tmp_path)}
    table = subprocess.run(
        [sys.executable, "-m", "runwire", "workflow", "status", "pipeline"],
        capture_output=True,
        text=True,
        env=env,
        timeout=WAIT_S,
        check=False,
    )
    assert table.returncode == 0, table.stderr
    assert re.search(r"^4/generate\s+succeeded\s+no\s+01\s+succeeded$", table.stdout, re.M)
    assert re.search(r"^4/summarise\s+waiting\s+yes\s+-\s+-$", table.stdout, re.M)

    stopped = workflow("stop", "pipeline", "--mode", "kill", *root)
    assert stopped.status == 0 and stopped.out.startswith("stop: Command queued")
    status_code, rest = served.wait()
    assert status_code == 0
    assert rest.strip() == "runwire workflow pipeline stopped: REQUEST(KILL)"
    assert not served.contact_file.exists()
    assert not (served.contact_file.parent / "server.key_secret").exists()

    after = workflow("status", "pipeline", *root)
    assert after.status == 1 and "pipeline is not running" in after.err


def live_group_members(pgid: int) -> list[int]:
    """Processes of process group `pgid` that are not zombies (Linux /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(stat.parent.name))
    return members


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_stop_signals_kill_the_jobs_and_stop_the_workflow_cleanly(
    serve: Callable[..., Served],
    workflow: Callable[..., Outcome],
    tmp_path: Path,
    signum: signal.Signals,
) -> None:
    """SIGTERM, SIGINT and SIGHUP each stop the workflow in kill mode: the running job is
    killed and the contact file and keys removed (SIGHUP used to kill the scheduler with no
    clean-up at all)."""
    served = serve(CONFORMANCE, "--workflow-id", "conf/run1")
    assert served.match["id"] == "conf/run1"
    assert served.contact_file.exists()
    until_status(
        workflow,
        tmp_path,
        lambda s: (row(s, "1/sleeper") or {}).get("job_state") == "running",
        "conf/run1",
    )
    status_file = tmp_path / "conf" / "run1" / "log" / "job" / "1" / "sleeper" / "01" / "job.status"
    pid = next(
        int(line.split("=", 1)[1])
        for line in status_file.read_text().splitlines()
        if line.startswith("CYLC_JOB_ID=")
    )
    served.process.send_signal(signum)
    status_code, rest = served.wait()
    assert status_code == 0
    assert rest.strip() == "runwire workflow conf/run1 stopped: REQUEST(KILL)"
    assert not served.contact_file.exists()
    assert not (served.contact_file.parent / "server.key_secret").exists()
    assert "CYLC_JOB_EXIT=" in status_file.read_text()  # the scheduler saw its job end
    assert live_group_members(pid) == []  # no orphan left (zombies awaiting init are dead)


def test_serve_help_documents_the_signals_and_log_levels_are_choices() -> None:
    from runwire.reference_server.workflow import serve_main

    parser = argparse.ArgumentParser(prog="runwire serve workflow")
    serve_main.add_arguments(parser)
    text = parser.format_help()
    for needle in ("SIGTERM, SIGINT (Ctrl-C) and SIGHUP", "--mode kill", "--now mode"):
        assert needle in text.replace("\n  ", " "), text
    assert "SIGHUP" in (serve_main.__doc__ or "")
    assert parser.parse_args(["x.yaml", "--log-level", "debug"]).log_level == "DEBUG"


def test_signals_while_cleaning_up_do_not_kill_the_server(serve: Callable[..., Served]) -> None:
    """A SIGTERM once the workflow has stopped (shutdown published, files being removed, or
    removed and the process on its way out) is ignored: the process exits 0, not -15."""
    served = serve(CONFORMANCE, "--workflow-id", "conf/late")
    served.process.send_signal(signal.SIGTERM)  # stop (kill mode)
    deadline = time.monotonic() + WAIT_S
    while served.contact_file.exists():  # (the process is waited for, bounded, between looks)
        assert time.monotonic() < deadline, "the contact file was not removed in time"
        with contextlib.suppress(subprocess.TimeoutExpired):
            served.process.wait(timeout=0.002)
    sent = 0
    while served.process.poll() is None and sent < 5000:  # late signals until it exits
        assert time.monotonic() < deadline, "the server did not exit in time"
        with contextlib.suppress(ProcessLookupError):
            served.process.send_signal(signal.SIGTERM)
        sent += 1
        with contextlib.suppress(subprocess.TimeoutExpired):
            served.process.wait(timeout=0.001)
    rest, err = served.process.communicate(timeout=WAIT_S)
    assert served.process.returncode == 0, (sent, err)
    assert rest.strip() == "runwire workflow conf/late stopped: REQUEST(KILL)"
    assert not (served.contact_file.parent / "server.key_secret").exists()


def test_client_command_errors(
    serve: Callable[..., Served], workflow: Callable[..., Outcome], tmp_path: Path
) -> None:
    missing = workflow("status", "nosuch", "--run-root", str(tmp_path))
    assert missing.status == 1 and "no such workflow: nosuch" in missing.err

    serve(PIPELINE, "--paused")
    root = ("--run-root", str(tmp_path))
    not_object = workflow("client", "pipeline", "api", *root, stdin="[1]")
    assert not_object.status == 2 and "JSON object" in not_object.err
    not_json = workflow("client", "pipeline", "api", *root, stdin="{")
    assert not_json.status == 2 and "not JSON" in not_json.err
    unknown = workflow("client", "pipeline", "nosuch", "-n", *root)
    assert unknown.status == 1 and "unknown_command" in unknown.err
    refused = workflow("hold", "pipeline", "9/*", *root)
    assert refused.status == 1 and "not accepted" in refused.err
    refused_json = workflow("hold", "pipeline", "9/*", "--json", *root)
    assert refused_json.status == 1 and refused_json.json["accepted"] is False
    with pytest.raises(SystemExit) as usage:
        workflow("stop", "pipeline", "--mode", "sideways", *root)
    assert usage.value.code == 2

    # client on a terminal says it reads stdin (and only once the workflow is found)
    terminal = TerminalInput('{"endpoint": "hold"}')
    doc = workflow("client", "pipeline", "api", *root, stdin=terminal)
    assert doc.status == 0 and doc.json.startswith("Hold task proxies")
    assert doc.err == STDIN_HINT + "\n"
    assert STDIN_HINT == (
        "reading the command's JSON args from stdin; end with Ctrl-D, or pass -n for no args"
    )
    piped = workflow("client", "pipeline", "api", *root, stdin='{"endpoint": "hold"}')
    assert piped.status == 0 and piped.err == ""
    assert workflow("client", "pipeline", "api", "-n", *root, stdin=TerminalInput("")).err == ""
    unread = TerminalInput("{}")
    missing = workflow("client", "nosuch", "api", *root, stdin=unread)
    assert missing.status == 1 and "no such workflow" in missing.err
    assert STDIN_HINT not in missing.err and unread.tell() == 0


class TerminalInput(io.StringIO):
    """Text on stdin that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["hold", "pipeline", "bad id with space"],
            "argument TASKS: bad task id 'bad id with space': expected "
            "CYCLE[/TASK[/JOB]][:STATE] with * and ? globs (e.g. 1/foo, 1/*, */*:failed, "
            "1/foo/01, 1)",
        ),
        (
            ["trigger", "pipeline", "1/foo", "1/a b"],
            "argument TASKS: bad task id '1/a b': expected CYCLE[/TASK[/JOB]][:STATE]",
        ),
        (
            ["stop", "--cycle-point", "abc", "pipeline"],
            "argument --cycle-point: bad cycle point 'abc': expected an integer cycle point "
            "such as 1 or 3",
        ),
        (
            ["stop", "--task", "nosuch", "pipeline"],
            "argument --task: bad task id 'nosuch': expected CYCLE/TASK such as 1/foo (one "
            "task, no globs)",
        ),
        (
            ["stop", "--mode", "now", "--cycle-point", "1", "pipeline"],
            "--mode now cannot be combined with --cycle-point: stopping after a cycle point or "
            "a task is always clean (active jobs finish); give one or the other",
        ),
        (
            ["stop", "--mode", "kill", "--task", "1/foo", "pipeline"],
            "--mode kill cannot be combined with --task:",
        ),
        (
            ["stop", "--cycle-point", "1", "--task", "1/foo", "pipeline"],
            "argument --task: not allowed with argument --cycle-point",
        ),
    ],
)
def test_bad_ids_and_contradictory_stop_options_are_one_line_usage_errors(
    workflow: Callable[..., Outcome],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    argv: list[str],
    message: str,
) -> None:
    """Checked before anything is sent (no workflow needed): exit status 2, and the error line
    names the value and the form expected, instead of a JSON-Schema dump."""
    with pytest.raises(SystemExit) as usage:
        workflow(*argv, "--run-root", str(tmp_path))
    assert usage.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: runwire workflow ")
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith(f"runwire workflow {argv[0]}: error: {message}"), err
    assert "pattern" not in err and "schema" not in err


def test_clean_mode_may_name_a_stop_point(workflow: Callable[..., Outcome], tmp_path: Path) -> None:
    """--mode clean with --cycle-point passes the checks (and then finds no workflow)."""
    outcome = workflow(
        "stop", "--mode", "clean", "--cycle-point", "2", "nosuch", "--run-root", str(tmp_path)
    )
    assert outcome.status == 1 and "no such workflow: nosuch" in outcome.err


def write_definition(path: Path, data: dict[str, Any]) -> Path:
    """A definition file (JSON is YAML)."""
    path.write_text(json.dumps(data))
    return path


def test_a_restart_after_a_crash_never_reuses_the_orphaned_jobs_directory(
    serve: Callable[..., Served], workflow: Callable[..., Outcome], tmp_path: Path
) -> None:
    """kill -9 of the scheduler while job 1/a/01 runs, then the same workflow id again in the
    same run directory: the new job is 1/a/02, and what the orphaned job 01 reports
    afterwards (its custom output, in its own job.status) is not taken as the new job's."""
    gate, back = tmp_path / "gate", tmp_path / "back"
    os.mkfifo(gate)
    os.mkfifo(back)
    script = (
        "if [[ $CYLC_TASK_SUBMIT_NUMBER == 1 ]]; then\n"
        '  read -r -t 20 _ < "$GATE"\n'  # the orphan reports once the test says so
        '  runwire_message "x is ready"\n'
        '  echo reported > "$BACK"\n'
        "else\n"
        "  sleep 30\n"
        "fi\n"
    )
    definition = write_definition(
        tmp_path / "crashy.yaml",
        {
            "name": "crashy",
            "scheduling": {"initial_cycle_point": 1, "final_cycle_point": 1, "graph": "a:x => b"},
            "runtime": {
                "a": {
                    "script": script,
                    "outputs": {"x": "x is ready"},
                    "environment": {"GATE": str(gate), "BACK": str(back)},
                }
            },
        },
    )
    # held open by the test for its whole run: writes never block, no line is lost
    gate_fd = os.open(gate, os.O_RDWR)
    back_fd = os.open(back, os.O_RDWR | os.O_NONBLOCK)
    root = ("--run-root", str(tmp_path))
    try:
        first = serve(definition)
        until_status(
            workflow,
            tmp_path,
            lambda s: (row(s, "1/a") or {}).get("job_state") == "running",
            "crashy",
        )
        first.process.kill()  # the crash: no clean-up, job 01 orphaned
        first.process.communicate(timeout=WAIT_S)
        assert first.contact_file.exists()  # stale

        serve(definition)
        until_status(
            workflow,
            tmp_path,
            lambda s: (
                (row(s, "1/a") or {}).get("submit_num") == 2
                and (row(s, "1/a") or {}).get("job_state") == "running"
            ),
            "crashy",
        )
        os.write(gate_fd, b"go\n")
        ready, _, _ = select.select([back_fd], [], [], WAIT_S)
        assert ready, "the orphaned job did not report in time"
        assert os.read(back_fd, 100) == b"reported\n"
        jobs = tmp_path / "crashy" / "log" / "job" / "1" / "a"
        assert "|x is ready" in (jobs / "01" / "job.status").read_text()

        # poll, then hold: once the hold shows, the poll has been actioned
        assert workflow("poll", "crashy", "1/a", *root).status == 0
        assert workflow("hold", "crashy", "1/a", *root).status == 0
        until_status(workflow, tmp_path, lambda s: (row(s, "1/a") or {}).get("is_held"), "crashy")
        snapshot = workflow("client", "crashy", "entire_workflow", "-n", *root)
        assert snapshot.status == 0, snapshot
        [proxy] = snapshot.json["task_proxies"]
        assert proxy["id"] == "1/a" and proxy["job_ids"] == ["1/a/02"]
        assert proxy["outputs"]["x"] is False and proxy["state"] == "running"
        assert "|x is ready" not in (jobs / "02" / "job.status").read_text()
    finally:
        os.close(gate_fd)
        os.close(back_fd)


def occupied_port_pair() -> tuple[list[socket.socket], int]:
    """Two consecutive loopback ports, both listened on (the sockets to close, the first)."""
    for _ in range(50):
        first = socket.create_server(("127.0.0.1", 0))
        port = first.getsockname()[1]
        try:
            second = socket.create_server(("127.0.0.1", port + 1))
        except OSError:
            first.close()
            continue
        return [first, second], port
    raise AssertionError("no two consecutive free ports")


def test_serve_reports_a_port_range_in_use(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    sockets, port = occupied_port_pair()
    # (in-process, run() installs its SIGTERM/SIGINT handlers for good: put pytest's back)
    saved = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        status = main(
            [
                "serve",
                "workflow",
                str(PIPELINE),
                "--run-root",
                str(tmp_path),
                "--port-range",
                f"{port}-{port + 1}",
            ]
        )
    finally:
        for sock in sockets:
            sock.close()
        for number, handler in saved.items():
            signal.signal(number, handler)
    assert status == 1
    assert f"cannot bind on 127.0.0.1, ports {port}-{port + 1}" in capsys.readouterr().err
    assert not (tmp_path / "pipeline").exists()  # the run directory this start made is gone
    after = main(["workflow", "status", "pipeline", "--run-root", str(tmp_path)])
    assert after == 1 and "no such workflow: pipeline" in capsys.readouterr().err


def test_serve_refuses_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status = main(
        [
            "serve",
            "workflow",
            str(PIPELINE),
            "--run-root",
            str(tmp_path),
            "--insecure-loopback",
            "--host",
            "0.0.0.0",
        ]
    )
    captured = capsys.readouterr()
    assert status == 1 and "loopback" in captured.err
    assert not (tmp_path / "pipeline" / ".service" / "contact").exists()

    broken = tmp_path / "broken.yaml"
    broken.write_text("scheduling: {}\nruntime: {}\n")
    assert main(["serve", "workflow", str(broken), "--run-root", str(tmp_path)]) == 2
    assert "invalid workflow definition" in capsys.readouterr().err
    for bad_range in ("9-1", "5000-5000", "x-y", "0-10"):
        with pytest.raises(SystemExit):
            main(["serve", "workflow", str(PIPELINE), "--port-range", bad_range])
    with pytest.raises(SystemExit):
        main(["serve", "workflow", str(PIPELINE), "--workflow-id", "../x"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as bad_level:  # a usage error, not a traceback
        main(["serve", "workflow", str(PIPELINE), "--log-level", "bogus"])
    assert bad_level.value.code == 2
    assert "argument --log-level: invalid choice: 'BOGUS'" in capsys.readouterr().err
