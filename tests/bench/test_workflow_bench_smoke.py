"""Smoke test of ``bench/workflow.py``: a tiny run prints every row and writes them as JSON.

Speed is the benchmark's business (ratios against raw pyzmq measured in the same run);
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

BENCH = Path(__file__).resolve().parents[2] / "bench" / "workflow.py"
ROW_IDS = (
    "rt-plain",
    "rt-curve",
    "rt-asyncio",
    "rt-async",
    "curve-cost",
    "rps-1",
    "rps-8",
    "rps-scaling",
)
TINY = ["--quick", "--round-trips=20", "--block=10", "--warmup=5", "--rate-s=0.1"]
RUN_TIMEOUT_S = 120


def test_quick_run_prints_every_row(tmp_path: Path) -> None:
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
    assert list(rows) == list(ROW_IDS), stdout
    for row_id in ("rt-plain", "rt-curve"):
        assert re.search(r"\s<= 2x\s+(PASS|MISS)\s*$", rows[row_id]), rows[row_id]
    assert "details:" in lines
    assert any(line.strip().startswith("split (CurveZMQ, p50)") for line in lines), stdout

    written = json.loads(report.read_text())
    assert [row["id"] for row in written["rows"]] == list(ROW_IDS)
    assert written["sizes"]["round_trips"] == 20
    for row in written["rows"]:
        assert row["verdict"] in ("PASS", "MISS", "info")
    assert written["rows"][1]["data"]["ratio"] > 0
