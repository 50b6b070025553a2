"""Smoke test of ``bench/workflow.py``: a tiny run prints every row and writes them as JSON.

Speed is the benchmark's business (ratios against raw pyzmq measured in the same run);
nothing here asserts a time or a verdict, only that each row is there with a verdict.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

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


def test_quick_run_prints_every_row(run_bench: Callable[..., Any]) -> None:
    run = run_bench("workflow.py", TINY, RUN_TIMEOUT_S)
    assert list(run.rows) == list(ROW_IDS), run.stdout
    for row_id in ("rt-plain", "rt-curve"):
        assert re.search(r"\s<= 2x\s+(PASS|MISS)\s*$", run.rows[row_id]), run.rows[row_id]
    assert any(line.strip().startswith("split (CurveZMQ, p50)") for line in run.lines), run.stdout

    written = run.report
    assert [row["id"] for row in written["rows"]] == list(ROW_IDS)
    assert written["sizes"]["round_trips"] == 20
    for row in written["rows"]:
        assert row["verdict"] in ("PASS", "MISS", "info")
    assert written["rows"][1]["data"]["ratio"] > 0
