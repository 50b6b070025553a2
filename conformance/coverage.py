"""Which manifest operations the cases exercise (``runwire conformance FAMILY --coverage``).

Every operation of the family manifest is listed with the cases that exercise it: those
filed under its conformance id, and those naming it in ``exercises=``. An operation without a
case is reported, makes ``--coverage`` exit with status 1, and fails the project's own test
(``tests/conformance/test_families.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .family import Family
from .manifest import OperationInfo

__all__ = ["OperationCoverage", "coverage", "render_coverage"]


@dataclass(frozen=True)
class OperationCoverage:
    """One manifest operation and the ids of the cases exercising it (sorted)."""

    operation: OperationInfo
    cases: tuple[str, ...]

    @property
    def covered(self) -> bool:
        return bool(self.cases)


def coverage(family: Family) -> list[OperationCoverage]:
    """Every operation of `family`'s manifest, in manifest order, with its cases."""
    return [
        OperationCoverage(
            operation,
            tuple(sorted(c.id for c in family.cases if operation.conformance_id in c.operations)),
        )
        for operation in family.manifest.operations()
    ]


def render_coverage(family: Family, rows: list[OperationCoverage] | None = None) -> str:
    """The coverage report as text: one block per operation, then a closing line."""
    rows = coverage(family) if rows is None else rows
    lines = []
    for row in rows:
        op = row.operation
        count = f"{len(row.cases)} case{'s' if len(row.cases) != 1 else ''}"
        lines.append(
            f"{op.conformance_id}  ({op.pattern}{', extension' if op.extension else ''}): "
            + (count if row.covered else "NO CASE")
        )
        lines += [f"    {case_id}" for case_id in row.cases]
    filed = {c.id for c in family.cases if not c.operations}
    if filed:
        lines.append(f"cases exercising no manifest operation: {', '.join(sorted(filed))}")
    missing = [row.operation.conformance_id for row in rows if not row.covered]
    closing = f"{len(rows)} operations, {len(rows) - len(missing)} covered"
    if missing:
        closing += f", {len(missing)} without a case: {', '.join(missing)}"
    lines.append(closing)
    return "\n".join(lines)
