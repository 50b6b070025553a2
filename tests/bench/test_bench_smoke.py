"""Smoke test of ``bench/jobs.py``: a tiny run prints every metric row and writes them as JSON.

Speed is the benchmark's business (ratios against a raw baseline measured in the same run);
nothing here asserts a time or a verdict, only that each row is there with a verdict.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "jobs.py"
ROW_IDS = (
    "latency",
    "follow",
    "follow-plain",
    "follow-live",
    "submit-small",
    "submit-large",
    "submit-flat",
    "memory",
)
TINY = [
    "--quick",
    "--latency-jobs=3",
    "--follow-packets=200",
    "--follow-repeats=1",
    "--live-packets=50",
    "--live-repeats=1",
    "--submit-jobs=3",
    "--queued-small=2",
    "--queued-large=20",
    "--memory-jobs=10",
    "--memory-packets=10",
    "--block=2",
]
RUN_TIMEOUT_S = 240


def test_quick_run_prints_every_metric(tmp_path: Path) -> None:
    report = tmp_path / "rows.json"
    process = subprocess.Popen(
        [sys.executable, str(BENCH), *TINY, "--json", str(report)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the servers it starts share its process group
    )
    try:
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(f"the bench ran over {RUN_TIMEOUT_S} s:\n{stdout}\n{stderr}") from None
    assert process.returncode == 0, f"exit {process.returncode}\n{stdout}\n{stderr}"

    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("id "))
    assert lines[header].split()[-1] == "verdict"
    end = lines.index("", header)  # the table ends at the first blank line
    rows = {line.split()[0]: line for line in lines[header + 1 : end]}
    for row_id in ROW_IDS:
        assert row_id in rows, f"no {row_id!r} row in:\n{stdout}"
        assert re.search(r"\s(PASS|MISS|info)\s*$", rows[row_id]), rows[row_id]
    assert "details:" in lines

    written = json.loads(report.read_text())
    assert [row["id"] for row in written["rows"]] == list(ROW_IDS)
    assert written["sizes"]["memory_jobs"] == 10
    for row in written["rows"]:
        assert row["verdict"] in ("PASS", "MISS", "info")
