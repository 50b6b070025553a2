"""The demo (``tox -e demo``'s second command) end to end: the jobs servers start from an
empty state folder and the whole jobs suite passes against them; then the workflow scheduler
runs the conformance workflow under CURVE and the whole workflow suite passes against it (the
stop modes each on a scheduler of its own); every server stops.

One run of the real thing, in a subprocess (it takes a few tens of seconds).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from runwire.conformance import load_family
from runwire.conformance.demo import SuiteRun, closing_line, workflow_groups

PASSWORD = "demo test password 5f3a"


def test_demo_runs_both_suites_against_the_reference_servers(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    env = {**os.environ, "RUNWIRE_AGENT_PASSWORD": PASSWORD}
    completed = subprocess.run(
        [sys.executable, "-m", "runwire.conformance.demo", "--report-dir", str(reports)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    lines = completed.stdout.splitlines()

    # it says where it ran, where the reports are, and ends with the closing lines
    jobs_total = len(load_family("jobs").cases)
    workflow_cases = {case.id for case in load_family("workflow").cases}
    assert lines[-3:] == [
        f"runwire demo: jobs: {jobs_total} passed, 0 failed",
        f"runwire demo: workflow: {len(workflow_cases)} passed, 0 failed (3 runs, one server each)",
        f"{jobs_total + len(workflow_cases)} passed, 0 failed",
    ], output
    assert (
        f"runwire demo: reports: {reports / 'results.json'}, {reports / 'junit.xml'}; "
        f"server logs: {reports / 'jobs-agent.log'}, {reports / 'jobs-dispatcher.log'}"
    ) in lines, output
    assert "runwire demo: servers stopped" in lines, output
    assert not [line for line in lines if "ended with status" in line], output

    # every jobs case ran and passed
    results = json.loads((reports / "results.json").read_text(encoding="utf-8"))
    assert results["outcome"] == "pass" and results["exit_status"] == 0
    verdicts = {case["id"]: case["verdict"] for case in results["cases"]}
    assert len(verdicts) == jobs_total
    assert set(verdicts.values()) == {"PASS"}, {k: v for k, v in verdicts.items() if v != "PASS"}
    assert {c["id"].split("/")[1] for c in results["cases"]} == {"agent", "dispatcher"}
    assert (reports / "junit.xml").is_file()

    # every workflow case ran once and passed, over three runs
    seen: dict[str, str] = {}
    for run in ("workflow", "workflow-stop-kill", "workflow-stop-now"):
        report = json.loads((reports / run / "results.json").read_text(encoding="utf-8"))
        assert report["outcome"] == "pass", run
        for case in report["cases"]:
            assert case["id"] not in seen, case["id"]
            seen[case["id"]] = case["verdict"]
        assert (reports / f"{run}-server.log").is_file()
    assert seen == dict.fromkeys(workflow_cases, "PASS")

    # the password never shows: not in the output, the reports or the servers' logs
    assert PASSWORD not in output
    for path in reports.rglob("*"):
        if path.is_file():
            assert PASSWORD not in path.read_text(encoding="utf-8"), path

    # the temporary state folder is gone and every server has stopped listening
    state = re.search(r"state folder (\S+) \(temporary\)", completed.stdout)
    assert state is not None, output
    assert not Path(state.group(1)).exists()
    jobs_ports = re.findall(r"jobs \w+ listening on 127\.0\.0\.1:(\d+)", completed.stdout)
    workflow_ports = re.findall(
        r"workflow scheduler listening on 127\.0\.0\.1:(\d+) \(publish (\d+), curve\)",
        completed.stdout,
    )
    assert len(jobs_ports) == 2 and len(workflow_ports) == 3, output
    for port in [*jobs_ports, *(p for pair in workflow_ports for p in pair)]:
        with socket.socket() as probe:
            probe.settimeout(5)
            assert probe.connect_ex(("127.0.0.1", int(port))) != 0, f"port {port} still listens"


def test_the_workflow_runs_one_scheduler_per_case_ending_its_service() -> None:
    kill, now = "workflow/runtime/stop/kill", "workflow/runtime/stop/now"
    assert workflow_groups(()) == [
        ("workflow", ["--exclude", kill, "--exclude", now]),
        ("workflow-stop-kill", ["--select", kill]),
        ("workflow-stop-now", ["--select", now]),
    ]
    stops = ["--select", "workflow/runtime/stop"]
    assert workflow_groups(["workflow/runtime/stop"])[0] == (
        "workflow",
        [*stops, "--exclude", kill, "--exclude", now],
    )
    assert workflow_groups(["workflow/runtime/api"]) == [
        ("workflow", ["--select", "workflow/runtime/api"])
    ]
    assert workflow_groups([now]) == [("workflow", ["--select", now])]


def test_the_closing_line_adds_up_the_runs() -> None:
    runs = [
        SuiteRun("jobs", 0, "3 passed, 0 failed"),
        SuiteRun("workflow", 1, "5 passed, 1 failed, 2 skipped"),
        SuiteRun("workflow-stop-kill", 0, "1 passed, 0 failed, 1 warned"),
    ]
    assert closing_line(runs) == "9 passed, 1 failed, 2 skipped, 1 warned"
    assert closing_line(runs[:1]) == "3 passed, 0 failed"
