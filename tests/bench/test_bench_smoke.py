"""Smoke test of ``bench/jobs.py``: a tiny run prints every metric row and writes them as JSON.

Speed is the benchmark's business (ratios against a raw baseline measured in the same run);
nothing here asserts a time or a verdict, only that each row is there with a verdict.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

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


def test_quick_run_prints_every_metric(run_bench: Callable[..., Any]) -> None:
    run = run_bench("jobs.py", TINY, RUN_TIMEOUT_S)
    for row_id in ROW_IDS:
        assert row_id in run.rows, f"no {row_id!r} row in:\n{run.stdout}"
        assert re.search(r"\s(PASS|MISS|info)\s*$", run.rows[row_id]), run.rows[row_id]

    written = run.report
    assert [row["id"] for row in written["rows"]] == list(ROW_IDS)
    assert written["sizes"]["memory_jobs"] == 10
    for row in written["rows"]:
        assert row["verdict"] in ("PASS", "MISS", "info")
