"""``runwire jobs`` client commands, run in-process against a real dispatcher and agent.

The agent (``jobs_agent``: the conformance procedures ``echo``, ``add``, ``stream``,
``sleep``, ``fail``) runs in a background thread, the dispatcher on a background event
loop; each command is ``runwire.main.main([...])`` with its output captured. Waits are
bounded by ``--wait-timeout`` and the dispatcher's own limits. Ctrl-C and closed-output
checks run the command in a subprocess (a real SIGINT, a real closed pipe).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from runwire.commands import jobs_client
from runwire.main import build_parser, main

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@dataclass
class Outcome:
    status: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    @property
    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.lines]


Runner = Callable[..., Outcome]


@pytest.fixture
def dispatcher(jobs_dispatcher_factory: Callable[..., Any], jobs_agent: Any) -> Any:
    return jobs_dispatcher_factory(agents={"localhost": jobs_agent})


def _runner(capsys: pytest.CaptureFixture[str], address: str) -> Runner:
    def run(command: str, *args: str, timeout_s: float = 5.0) -> Outcome:
        argv = ["jobs", command, "--dispatcher", address, "--wait-timeout", str(timeout_s), *args]
        capsys.readouterr()
        status = main(argv)
        captured = capsys.readouterr()
        return Outcome(status, captured.out, captured.err)

    return run


@pytest.fixture
def jobs(dispatcher: Any, capsys: pytest.CaptureFixture[str]) -> Runner:
    """``jobs("result", "--wait", job_id)`` runs ``runwire jobs result ...`` in-process."""
    return _runner(capsys, f"127.0.0.1:{dispatcher.port}")


def submit(jobs: Runner, *args: str) -> str:
    outcome = jobs("submit", "localhost", *args)
    assert outcome.status == 0, outcome
    job_id = outcome.out.strip()
    assert UUID4.match(job_id), outcome
    return job_id


@pytest.fixture
def silent_port() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0), backlog=8)
    yield server.getsockname()[1]
    server.close()


# --- submit and result ---------------------------------------------------------------------------


def test_submit_then_result(jobs: Runner) -> None:
    job_id = submit(jobs, "add", "2", "3")
    outcome = jobs("result", "--wait", job_id)
    assert (outcome.status, outcome.out) == (0, "5\n")
    outcome = jobs("result", "--json", job_id)
    assert (outcome.status, outcome.json) == (0, {"result": 5})


def test_arguments_are_json_when_they_parse(jobs: Runner) -> None:
    job_id = submit(jobs, "echo", "1", "abc", '"1"', '{"a": [true]}', "null", "-2.5")
    assert jobs("result", "--wait", "--json", job_id).json == {
        "result": [1, "abc", "1", {"a": [True]}, None, -2.5]
    }
    job_id = submit(jobs, "echo", "--kwargs", '{"x": 1}')
    assert jobs("result", "--wait", job_id).out == '{"x":1}\n'
    both = jobs("submit", "localhost", "echo", "1", "--kwargs", "{}")
    assert both.status == 2 and "not both" in both.err  # a usage error
    with pytest.raises(SystemExit) as exited:
        jobs("submit", "localhost", "echo", "--kwargs", "[1]")
    assert exited.value.code == 2


def test_job_options_reach_the_dispatcher(jobs: Runner) -> None:
    job_id = submit(
        jobs,
        "echo",
        "--queue",
        '{"svc": "web"}',
        "--concurrency",
        "2",
        "--timeout",
        "30",
        "--max-exec-time",
        "60",
        "--info",
        '{"who": "ops"}',
    )
    assert jobs("result", "--wait", job_id).status == 0
    status = jobs("status", "--json", job_id).json
    assert status["info"] == {"who": "ops"} and status["state"] == "finished"
    listed = jobs("list", "--json", "--queue", '{"svc": "web"}').json["jobs"]
    assert [row["job_id"] for row in listed] == [job_id]
    no_queue = jobs("submit", "localhost", "echo", "--concurrency", "2")
    assert no_queue.status == 2 and "--queue" in no_queue.err


def test_failed_jobs_exit_1(jobs: Runner) -> None:
    raised = submit(jobs, "fail", "boom")
    outcome = jobs("result", "--wait", raised)
    assert outcome.status == 1 and outcome.out.startswith("exception RuntimeError: boom")
    assert jobs("result", "--json", raised).json["exception"]["type"] == "RuntimeError"
    outcome = jobs("submit", "nohost", "echo")
    unknown = outcome.out.strip()
    outcome = jobs("result", "--wait", unknown)
    assert (outcome.status, outcome.out) == (1, "error unknown_host: host unknown\n")


def test_submit_follow_prints_stream_then_result(jobs: Runner) -> None:
    outcome = jobs("submit", "localhost", "stream", "3", "--follow")
    assert (outcome.status, outcome.lines) == (0, ["0", "1", "2", "3"])
    assert re.match(r"^job [0-9a-f-]{36}$", outcome.err.strip())
    outcome = jobs("submit", "--json", "--follow", "localhost", "stream", "2")
    lines = outcome.json_lines
    assert UUID4.match(lines[0]["job_id"])
    assert lines[1:] == [{"packet": 0, "data": 0}, {"packet": 1, "data": 1}, {"result": 2}]


def test_waits_outlast_the_socket_timeout(jobs: Runner) -> None:
    """Packets 0.5 s apart, socket timeout 0.2 s: follow and result --wait re-ask."""
    outcome = jobs("submit", "localhost", "stream", "2", "0.5", "--follow", timeout_s=0.2)
    assert (outcome.status, outcome.lines) == (0, ["0", "1", "2"])
    job_id = submit(jobs, "sleep", "0.5")
    outcome = jobs("result", "--wait", job_id, timeout_s=0.2)
    assert (outcome.status, outcome.out) == (0, "0.5\n")


# --- status, streams, cancel, list -----------------------------------------------------------------


def test_status_human_and_json(jobs: Runner) -> None:
    job_id = submit(jobs, "echo", "x", "--info", '{"n": 1}')
    jobs("result", "--wait", job_id)
    human = jobs("status", job_id)
    assert human.status == 0
    fields = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in human.lines)
    assert fields["job"] == job_id and fields["state"] == "finished"
    assert (fields["host"], fields["procedure"], fields["arguments"]) == (
        "localhost",
        "echo",
        '["x"]',
    )
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d$", fields["submitted"])
    assert fields["ended"] != "-" and fields["info"] == '{"n":1}'
    data = jobs("status", "--json", job_id).json
    assert data["job_id"] == job_id and data["call"]["arguments"] == ["x"]
    assert data["time"]["end"] >= data["time"]["submit"]


def test_read_and_follow_positions(jobs: Runner) -> None:
    job_id = submit(jobs, "stream", "3")
    assert jobs("result", "--wait", job_id).out == "3\n"
    assert jobs("read", job_id).lines == ["0", "1", "2", "3"]  # default since 0
    assert jobs("read", "--recent", "1", job_id).lines == ["2", "3"]
    assert jobs("follow", "--since", "1", job_id).lines == ["1", "2", "3"]
    assert jobs("follow", job_id).lines == ["3"]  # default recent 0: no new packets
    assert jobs("follow", "--recent", "2", "--json", job_id).json_lines == [
        {"packet": 1, "data": 1},
        {"packet": 2, "data": 2},
        {"result": 3},
    ]
    with pytest.raises(SystemExit) as exited:
        jobs("read", "--since", "1", "--recent", "1", job_id)
    assert exited.value.code == 2


def test_running_job_read_result_cancel(jobs: Runner) -> None:
    job_id = submit(jobs, "sleep", "30")
    outcome = jobs("read", job_id)
    assert (outcome.status, outcome.out) == (0, "") and "not finished" in outcome.err
    assert jobs("read", "--json", job_id).json_lines == [{"continue": True}]
    outcome = jobs("result", job_id)
    assert (outcome.status, outcome.out) == (0, "not finished\n")
    assert jobs("result", "--json", job_id).json == {"no_result": True}

    outcome = jobs("cancel", job_id)
    assert (outcome.status, outcome.out) == (0, f"cancelled {job_id}\n")
    outcome = jobs("result", job_id)
    assert (outcome.status, outcome.out) == (1, "cancelled\n")
    assert jobs("cancel", "--json", job_id).json == {"cancelled": False}
    assert "already ended" in jobs("cancel", job_id).out
    outcome = jobs("follow", "--since", "0", job_id)
    assert (outcome.status, outcome.out) == (1, "cancelled\n")


def test_list_table_filters_and_json(jobs: Runner) -> None:
    first = submit(jobs, "echo", "1")
    jobs("result", "--wait", first)
    failed = submit(jobs, "fail", "x")
    jobs("result", "--wait", failed)
    outcome = jobs("list")
    assert outcome.status == 0
    header, *rows = outcome.lines
    assert header.split() == ["JOB", "STATE", "HOST", "PROCEDURE", "SUBMITTED", "ENDED", "QUEUE"]
    assert [row.split()[0] for row in rows] == [failed, first]  # newest first
    assert header.index("STATE") == rows[0].index("failed") == rows[1].index("finished")
    assert [row["job_id"] for row in jobs("list", "--json", "--state", "failed").json["jobs"]] == [
        failed
    ]
    assert jobs("list", "--json", "--host", "nohost").json == {"jobs": [], "truncated": False}
    limited = jobs("list", "--limit", "1")
    assert len(limited.lines) == 2 and "raise --limit" in limited.err
    with pytest.raises(SystemExit):
        jobs("list", "--limit", "1001")


# --- errors ----------------------------------------------------------------------------------------


def test_request_errors_exit_1(jobs: Runner) -> None:
    """The dispatcher answered, with an error: status 1, as for a failed job (not 2, which
    is for usage errors only)."""
    missing = str(uuid.uuid4())
    for command in ("result", "status", "cancel", "follow", "read"):
        outcome = jobs(command, missing)
        assert outcome.status == 1, (command, outcome)
        assert "invalid_jobid" in outcome.err, (command, outcome)
        assert len(outcome.err.splitlines()) == 1, (command, outcome)


def test_connection_errors_exit_3(
    capsys: pytest.CaptureFixture[str], silent_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        closed_port = probe.getsockname()[1]
    refused = _runner(capsys, f"127.0.0.1:{closed_port}")("status", str(uuid.uuid4()))
    assert refused.status == 3 and "cannot reach the dispatcher at 127.0.0.1" in refused.err
    silent = _runner(capsys, f"127.0.0.1:{silent_port}")("list", timeout_s=0.2)
    assert silent.status == 3 and "did not answer" in silent.err

    monkeypatch.setenv("RUNWIRE_DISPATCHER", f"127.0.0.1:{closed_port}")
    capsys.readouterr()
    assert main(["jobs", "list"]) == 3
    assert f"127.0.0.1:{closed_port}" in capsys.readouterr().err
    for bad in ("host:99999", "host:x", ":3502", "[::1"):
        with pytest.raises(SystemExit) as exited:
            main(["jobs", "list", "--dispatcher", bad])
        assert exited.value.code == 2


def test_a_reply_that_breaks_the_protocol_exits_3(
    capsys: pytest.CaptureFixture[str], fake_dispatcher: FakeDispatcher
) -> None:
    run = _runner(capsys, fake_dispatcher.address)
    with fake_dispatcher.answering(b'{"job_id": "not a uuid"}\n'):
        outcome = run("submit", "localhost", "echo")
    assert outcome.status == 3 and "broke the protocol" in outcome.err


# --- bad input is a usage error, found before sending ---------------------------------------------


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run ``runwire jobs ARGV``, expect argparse's usage error (exit 2), return its message
    line; the address is closed, so nothing could have been sent anyway."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["jobs", *argv, "--dispatcher", "127.0.0.1:9"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "pydantic" not in err and "Traceback" not in err
    return err.splitlines()[-1]


@pytest.mark.parametrize("command", ["result", "status", "follow", "read", "cancel"])
@pytest.mark.parametrize(
    "bad",
    ["notanid", "00000000-0000-0000-0000-000000000000", "8ec71d6b-28d1-4c5e-9f1a-3b0c2d4e5f6"],
)
def test_a_bad_job_id_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], command: str, bad: str
) -> None:
    line = usage_error(capsys, command, bad)
    assert line == (
        f"runwire jobs {command}: error: argument JOB_ID: bad job id {bad!r}: "
        "expected a UUID v4 as the dispatcher gives"
    )


def test_job_ids_are_checked_with_the_protocols_pattern() -> None:
    schema = json.loads((ROOT / "schemas" / "jobs" / "dispatcher.json").read_text())
    assert schema["$defs"]["JobId"]["pattern"] == jobs_client.JOB_ID_PATTERN
    upper = "8EC71D6B-28D1-4C5E-9F1A-3B0C2D4E5F60"
    assert build_parser().parse_args(["jobs", "status", upper]).job_id == upper.lower()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["submit", "", "echo"], "argument HOST: must not be empty"),
        (["submit", "h" * 256, "echo"], "argument HOST: at most 255 characters"),
        (["submit", "localhost", ""], "argument PROCEDURE: must not be empty"),
        (["list", "--host", ""], "argument --host: must not be empty"),
        (["submit", "localhost", "echo", "--info", "NaN"], "argument --info: not JSON"),
        (["submit", "localhost", "echo", "--kwargs", '{"a": Infinity}'], "not JSON"),
        (["submit", "localhost", "echo", "--queue", "[1]"], "expected a JSON object"),
        (["submit", "localhost", "echo", "1e999"], "number out of range: 1e999"),
        (["submit", "localhost", "echo", "--concurrency", "0"], "must be at least 1"),
        (["submit", "localhost", "echo", "--timeout", "1.5"], "not an integer"),
        (["list", "--queue", "{"], "argument --queue: not JSON"),
    ],
)
def test_bad_values_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    assert expected in usage_error(capsys, *argv)


def test_arguments_that_are_not_strict_json_are_strings() -> None:
    args = build_parser().parse_args(["jobs", "submit", "h", "p", "NaN", "Infinity", "1e3"])
    assert args.args == ["NaN", "Infinity", 1000.0]


def test_a_validation_error_is_summed_up_in_one_line() -> None:
    from pydantic import ValidationError

    from runwire.generated.jobs import models

    with pytest.raises(ValidationError) as raised:
        models.ListJobsRequest.model_validate({"harpcaller": 1, "list_jobs": {"host": ""}})
    summary = jobs_client._validation_summary(raised.value)
    assert summary == "list_jobs.host: String should have at least 1 character"


# --- the two timeouts --------------------------------------------------------------------------


def test_wait_timeout_and_its_deprecated_alias(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    args = parser.parse_args(["jobs", "submit", "--wait-timeout", "7", "--timeout", "60", "h", "p"])
    assert (args.wait_timeout, args.timeout) == (7.0, 60)
    assert capsys.readouterr().err == ""
    args = parser.parse_args(["jobs", "list", "--timeout-s", "0.5"])
    assert args.wait_timeout == 0.5
    assert "--timeout-s is deprecated; use --wait-timeout" in capsys.readouterr().err
    assert parser.parse_args(["jobs", "list"]).wait_timeout == jobs_client.DEFAULT_TIMEOUT_S

    with pytest.raises(SystemExit):
        main(["jobs", "submit", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--timeout-s" not in help_text
    assert "--wait-timeout S this command's patience" in help_text
    assert "--timeout S the job's idle limit (the protocol's timeout)" in help_text
    assert "Not how long this command waits: see --wait-timeout" in help_text
    assert "Exit status: 0 success; 1 the job failed" in help_text


# --- Ctrl-C and closed output, in a subprocess -------------------------------------------------


def test_ctrl_c_while_following_exits_130_with_one_line(jobs: Runner, dispatcher: Any) -> None:
    job_id = submit(jobs, "stream", "2", "60")  # packet 0 now, packet 1 in a minute
    address = f"127.0.0.1:{dispatcher.port}"
    try:
        with Child("jobs", "follow", "--since", "0", "--dispatcher", address, job_id) as child:
            child.wait_for(child.stdout, b"0\n")  # packet 0 printed: it waits for packet 1
            status, out, err = child.interrupt()
        assert (status, out, err) == (130, b"0\n", b"runwire jobs follow: interrupted\n")
    finally:
        jobs("cancel", job_id)


def test_ctrl_c_in_submit_follow_exits_130_with_one_line(jobs: Runner, dispatcher: Any) -> None:
    address = f"127.0.0.1:{dispatcher.port}"
    argv = ("jobs", "submit", "--follow", "--dispatcher", address, "localhost", "stream", "2", "60")
    with Child(*argv) as child:
        child.wait_for(child.stdout, b"0\n")
        status, out, err = child.interrupt()
    job_line, interrupted = err.decode().splitlines()
    assert (status, out, interrupted) == (130, b"0\n", "runwire jobs submit: interrupted")
    assert jobs("cancel", job_line.removeprefix("job ")).status == 0


def test_ctrl_c_in_result_wait_exits_130_with_one_line(fake_dispatcher: FakeDispatcher) -> None:
    job_id = str(uuid.uuid4())
    with Child(
        "jobs", "result", "--wait", "--dispatcher", fake_dispatcher.address, job_id
    ) as child:
        request = fake_dispatcher.receive()  # the request is sent: it waits for the reply
        assert json.loads(request)["get_result"] == job_id
        status, out, err = child.interrupt()
    assert (status, out, err) == (130, b"", b"runwire jobs result: interrupted\n")


def test_ctrl_c_at_the_password_prompt_exits_130(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def interrupted(prompt: str) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr("getpass.getpass", interrupted)
    passwd = tmp_path / "passwd"
    try:
        status = main(["jobs", "agent-passwd", "--password-file", str(passwd), "ops"])
    except KeyboardInterrupt:  # would stop the whole test run
        pytest.fail("KeyboardInterrupt escaped runwire.main.main")
    assert status == 130
    # The prompt's line ended, then the one line of every interrupted command.
    assert capsys.readouterr().err == "\nrunwire jobs agent-passwd: interrupted\n"
    assert not passwd.exists()


def test_no_input_at_the_password_prompt_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def end_of_input(prompt: str) -> str:
        raise EOFError

    monkeypatch.setattr("getpass.getpass", end_of_input)
    assert main(["jobs", "agent-passwd", "--password-file", str(tmp_path / "p"), "ops"]) == 1
    assert capsys.readouterr().err == "runwire jobs agent-passwd: no input\n"


def test_closed_output_while_printing_a_stream_exits_141(jobs: Runner, dispatcher: Any) -> None:
    """The packets are flushed one by one, so the closed pipe fails inside the command: it
    must not be taken for a dispatcher that cannot be reached."""
    job_id = submit(jobs, "stream", "3")
    assert jobs("result", "--wait", job_id).status == 0
    address = f"127.0.0.1:{dispatcher.port}"
    status, err = run_with_closed_stdout("jobs", "read", "--dispatcher", address, job_id)
    assert (status, err) == (141, b"")


# --- helpers for the subprocess tests ------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
CHILD_S = 30.0
"""Bound on each wait for a child command (its output, its exit)."""

#: ``runwire ARGV`` with Python's own SIGINT handler even if this process ignores SIGINT (a
#: test run started in the background does; children would inherit that).
CHILD = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from runwire.main import main; sys.exit(main(sys.argv[1:]))"
)


class Child:
    """``runwire ARGV`` in a subprocess, its output read without blocking past a bound."""

    def __init__(self, *argv: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self.stdout, self.stderr = self.process.stdout, self.process.stderr
        self.fds = (self.stdout.fileno(), self.stderr.fileno())
        self.seen: dict[int, bytes] = {fd: b"" for fd in self.fds}

    def wait_for(self, stream: IO[bytes], text: bytes) -> None:
        """Read ``stream`` until ``text`` has come (at most CHILD_S seconds)."""
        fd = stream.fileno()
        deadline = time.monotonic() + CHILD_S
        while text not in self.seen[fd]:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} within {CHILD_S} s: {self.seen}"
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                assert chunk, f"output closed before {text!r}: {self.seen}"
                self.seen[fd] += chunk

    def wait_until_idle(self) -> None:
        """Where Linux tells (/proc/PID/stat and wchan), wait until the child sleeps in
        epoll_wait, i.e. its event loop waits for the dispatcher: a SIGINT then interrupts
        the loop, not the Python code around it (the case that left the async generator
        running), so the test does not pass by luck without the fix."""
        proc = Path(f"/proc/{self.process.pid}")
        deadline = time.monotonic() + CHILD_S
        while time.monotonic() < deadline:
            try:
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                wchan = (proc / "wchan").read_text()
            except (OSError, IndexError):
                return  # no /proc: send the signal now
            if state == "S" and ("epoll" in wchan or wchan.strip("0") == ""):
                return  # asleep in epoll_wait (or asleep and the kernel hides where)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=0.002)  # poll the condition; fails if it exited
                raise AssertionError(f"the child exited: {self.process.returncode}")
        raise AssertionError(f"the child did not wait in epoll_wait within {CHILD_S} s")

    def interrupt(self) -> tuple[int, bytes, bytes]:
        """Send SIGINT once the child waits; return (exit status, all stdout, all stderr)."""
        self.wait_until_idle()
        self.process.send_signal(signal.SIGINT)
        out, err = self.process.communicate(timeout=CHILD_S)
        return (
            self.process.returncode,
            self.seen[self.fds[0]] + out,
            self.seen[self.fds[1]] + err,
        )

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=CHILD_S)


def run_with_closed_stdout(*argv: str) -> tuple[int, bytes]:
    """Run ``runwire ARGV`` with a standard output whose reader has gone; (status, stderr)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, *argv],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=CHILD_S * 2,
            check=False,
        )
    finally:
        os.close(write_end)
    return done.returncode, done.stderr


class FakeDispatcher:
    """A listening socket that reads one request line per connection and answers as told
    (by default never, as a dispatcher holding a get_result with wait)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(CHILD_S)
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.connections: list[socket.socket] = []

    def receive(self) -> bytes:
        """Accept a connection and read its request line (bounded by CHILD_S)."""
        connection, _ = self.server.accept()
        connection.settimeout(CHILD_S)
        self.connections.append(connection)
        data = b""
        while not data.endswith(b"\n"):
            chunk = connection.recv(65536)
            assert chunk, f"closed before the end of the request: {data!r}"
            data += chunk
        return data

    @contextlib.contextmanager
    def answering(self, reply: bytes) -> Iterator[None]:
        """While inside: one connection is served ``reply`` (in a thread)."""

        def serve() -> None:
            with contextlib.suppress(OSError):
                self.receive()
                self.connections[-1].sendall(reply)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield
        finally:
            thread.join(CHILD_S)

    def close(self) -> None:
        for connection in self.connections:
            connection.close()
        self.server.close()


@pytest.fixture
def fake_dispatcher() -> Iterator[FakeDispatcher]:
    fake = FakeDispatcher()
    yield fake
    fake.close()
