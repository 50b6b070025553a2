"""``runwire jobs`` client commands, run in-process against a real dispatcher and agent.

The agent (``jobs_agent``: the conformance procedures ``echo``, ``add``, ``stream``,
``sleep``, ``fail``) runs in a background thread, the dispatcher on a background event
loop; each command is ``runwire.main.main([...])`` with its output captured. Waits are
bounded by ``--timeout-s`` and the dispatcher's own limits.
"""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from runwire.main import main

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
        argv = ["jobs", command, "--dispatcher", address, "--timeout-s", str(timeout_s), *args]
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
    assert both.status == 2 and "not both" in both.err
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


def test_request_errors_exit_2(jobs: Runner) -> None:
    missing = str(uuid.uuid4())
    for command in ("result", "status", "cancel", "follow", "read"):
        outcome = jobs(command, missing)
        assert outcome.status == 2, (command, outcome)
        assert "invalid_jobid" in outcome.err, (command, outcome)
    outcome = jobs("result", "not-a-job-id")
    assert outcome.status == 2 and "invalid request" in outcome.err


def test_connection_errors_exit_2(
    capsys: pytest.CaptureFixture[str], silent_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        closed_port = probe.getsockname()[1]
    refused = _runner(capsys, f"127.0.0.1:{closed_port}")("status", str(uuid.uuid4()))
    assert refused.status == 2 and "cannot reach the dispatcher at 127.0.0.1" in refused.err
    silent = _runner(capsys, f"127.0.0.1:{silent_port}")("list", timeout_s=0.2)
    assert silent.status == 2 and "did not answer" in silent.err

    monkeypatch.setenv("RUNWIRE_DISPATCHER", f"127.0.0.1:{closed_port}")
    capsys.readouterr()
    assert main(["jobs", "list"]) == 2
    assert f"127.0.0.1:{closed_port}" in capsys.readouterr().err
    for bad in ("host:99999", "host:x", ":3502", "[::1"):
        with pytest.raises(SystemExit) as exited:
            main(["jobs", "list", "--dispatcher", bad])
        assert exited.value.code == 2
