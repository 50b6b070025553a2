"""What the benchmark smoke tests share: running one ``bench/*.py`` script and reading its
table and its JSON report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


@dataclass(frozen=True)
class BenchRun:
    """One finished run: its stdout lines, the table's rows by id (the whole line) and the
    ``--json`` report."""

    lines: list[str]
    rows: dict[str, str]
    report: dict[str, Any]

    @property
    def stdout(self) -> str:
        return "\n".join(self.lines)


def run_bench_script(script: str, args: list[str], timeout_s: float, report: Path) -> BenchRun:
    """Run ``bench/SCRIPT ARGS --json REPORT`` (killing its process group past ``timeout_s``),
    check it exited 0 and printed a table ending in a verdict column, and return the run."""
    process = subprocess.Popen(
        [sys.executable, str(BENCH_DIR / script), *args, "--json", str(report)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the servers it starts share its process group
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(f"the bench ran over {timeout_s} s:\n{stdout}\n{stderr}") from None
    assert process.returncode == 0, f"exit {process.returncode}\n{stdout}\n{stderr}"
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("id "))
    assert lines[header].split()[-1] == "verdict"
    end = lines.index("", header)  # the table ends at the first blank line
    rows = {line.split()[0]: line for line in lines[header + 1 : end]}
    assert "details:" in lines
    return BenchRun(lines, rows, json.loads(report.read_text()))


@pytest.fixture
def run_bench(tmp_path: Path) -> Callable[[str, list[str], float], BenchRun]:
    """``run_bench(script, args, timeout_s)``: :func:`run_bench_script` with its report in
    the test's temporary folder."""

    def run(script: str, args: list[str], timeout_s: float) -> BenchRun:
        return run_bench_script(script, args, timeout_s, tmp_path / "rows.json")

    return run
