"""The demo (``tox -e demo``'s second command) end to end: both reference servers start from
an empty state folder, the whole jobs suite passes against them, the servers stop.

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

PASSWORD = "demo test password 5f3a"


def test_demo_runs_the_whole_jobs_suite_against_the_reference_servers(tmp_path: Path) -> None:
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

    # it says where it ran, where the reports are, and ends with the closing line
    total = len(load_family("jobs").cases)
    assert lines[-1] == f"{total} passed, 0 failed", output
    assert (
        f"runwire demo: reports: {reports / 'results.json'}, {reports / 'junit.xml'}; "
        f"server logs: {reports / 'jobs-agent.log'}, {reports / 'jobs-dispatcher.log'}"
    ) in lines, output
    assert "runwire demo: servers stopped" in lines, output

    # every case ran and passed
    results = json.loads((reports / "results.json").read_text(encoding="utf-8"))
    assert results["outcome"] == "pass" and results["exit_status"] == 0
    verdicts = {case["id"]: case["verdict"] for case in results["cases"]}
    assert len(verdicts) == total
    assert set(verdicts.values()) == {"PASS"}, {k: v for k, v in verdicts.items() if v != "PASS"}
    assert {c["id"].split("/")[1] for c in results["cases"]} == {"agent", "dispatcher"}
    assert (reports / "junit.xml").is_file()

    # the password never shows: not in the output, the reports or the servers' logs
    assert PASSWORD not in output
    for path in reports.iterdir():
        assert PASSWORD not in path.read_text(encoding="utf-8"), path

    # the temporary state folder is gone and both servers have stopped listening
    state = re.search(r"state folder (\S+) \(temporary\)", completed.stdout)
    assert state is not None, output
    assert not Path(state.group(1)).exists()
    ports = [int(p) for p in re.findall(r"listening on 127\.0\.0\.1:(\d+)", completed.stdout)]
    assert len(ports) == 2, output
    for port in ports:
        with socket.socket() as probe:
            probe.settimeout(5)
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still listens"
