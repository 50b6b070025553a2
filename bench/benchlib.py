"""What the benchmarks share: progress lines, percentiles, table rows and the printed table.

The benchmark scripts run as ``python bench/<name>.py``, so this folder is on ``sys.path``
and they import this module by its plain name.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["Row", "percentile", "print_table", "progress", "verdict"]


def progress(message: str) -> None:
    """A progress line on stderr (the table goes to stdout)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` percentile of ``values`` (nearest rank); NaN when empty."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def verdict(passed: bool) -> str:
    """PASS or MISS against a target."""
    return "PASS" if passed else "MISS"


@dataclass
class Row:
    """One table row."""

    id: str
    metric: str
    ours: str
    raw: str
    ratio: str
    target: str
    verdict: str  # PASS, MISS or info
    data: dict[str, Any] = field(default_factory=dict)


def print_table(
    title: str, rows: Sequence[Row], details: Sequence[str], sizes: Any, elapsed_s: float
) -> None:
    """Print the aligned table of ``rows``, then the details, the sizes (a dataclass) and
    the total time."""
    print()
    print(title)
    header = ("id", "metric", "ours", "raw", "ratio", "target", "verdict")
    cells = [(r.id, r.metric, r.ours, r.raw, r.ratio, r.target, r.verdict) for r in rows]
    widths = [max(len(str(row[i])) for row in [header, *cells]) for i in range(len(header))]
    for row in [header, *cells]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    print()
    print("details:")
    for line in details:
        print(f"  {line}")
    listed = ", ".join(f"{f.name}={getattr(sizes, f.name)}" for f in fields(sizes))
    print(f"  sizes: {listed}")
    print(f"  total time {elapsed_s:.0f} s")
