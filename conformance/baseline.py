"""The expected-failures baseline: a ratchet that only shrinks.

A baseline file is a YAML or JSON list of case ids expected to fail::

    # known failures of our server, issue tracker links in comments
    - jobs/dispatcher/follow_stream/since-beyond-end
    - jobs/agent/call/timeout-error

When a listed case fails, the run does not fail. When an unlisted case fails, it does. When a
listed case now passes, the run fails too (a stale entry: delete it), as does an entry naming
no case of the family (renamed or removed). Listed cases that were skipped or not selected
are not judged. Idea from the MCP conformance suite's expected-failures file and
connectrpc's ``--known-failing``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from .case import validate_case_id
from .family import ConformanceConfigError

__all__ = ["Baseline", "BaselineStatus"]


class BaselineStatus(enum.StrEnum):
    """How the baseline judges one case's verdict."""

    NOT_LISTED = "not-listed"
    """The case is not in the baseline: a failure fails the run."""
    EXPECTED_FAILURE = "expected-failure"
    """Listed, and it failed: the run does not fail because of it."""
    STALE = "stale"
    """Listed, but it passed: the entry is stale and fails the run."""
    NOT_EVALUATED = "not-evaluated"
    """Listed, but skipped: nothing to judge."""


@dataclass(frozen=True)
class Baseline:
    """The entries of a baseline file.

    Attributes:
        path: where it was read from (for messages and reports).
        entries: the listed case ids, in file order.
    """

    path: str
    entries: tuple[str, ...]

    @classmethod
    def load(cls, path: str | Path) -> Baseline:
        """Read a YAML or JSON list of case ids (an empty file is an empty list).

        Raises:
            ConformanceConfigError: unreadable file, not a list of strings, a malformed id, or
                an id listed twice; the message says how to fix it.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConformanceConfigError(f"baseline {path}: cannot read: {exc}") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConformanceConfigError(f"baseline {path}: not YAML or JSON: {exc}") from exc
        if data is None:
            data = []
        if not isinstance(data, list):
            raise ConformanceConfigError(
                f"baseline {path}: must be a list of case ids "
                f"(YAML '- jobs/dispatcher/...' lines or a JSON array), not {type(data).__name__}"
            )
        return cls.from_entries(data, str(path))

    @classmethod
    def from_entries(cls, entries: Sequence[object], path: str = "<baseline>") -> Baseline:
        """A baseline from already-parsed entries; checked as :meth:`load` does."""
        seen: set[str] = set()
        for position, entry in enumerate(entries, 1):
            if not isinstance(entry, str):
                raise ConformanceConfigError(
                    f"baseline {path}: entry {position} is {entry!r}; each entry is a case id string"
                )
            try:
                validate_case_id(entry)
            except ValueError as exc:
                raise ConformanceConfigError(
                    f"baseline {path}: entry {position}: {exc}"
                    + (" (globs are not allowed here; list exact ids)" if _globby(entry) else "")
                ) from None
            if entry in seen:
                raise ConformanceConfigError(f"baseline {path}: {entry} is listed twice")
            seen.add(entry)
        return cls(path=path, entries=tuple(str(e) for e in entries))

    def __contains__(self, case_id: object) -> bool:
        return case_id in self.entries

    def status(self, case_id: str, failed: bool | None) -> BaselineStatus:
        """The status of a case: `failed` True/False, or None when it was skipped."""
        if case_id not in self.entries:
            return BaselineStatus.NOT_LISTED
        if failed is None:
            return BaselineStatus.NOT_EVALUATED
        return BaselineStatus.EXPECTED_FAILURE if failed else BaselineStatus.STALE

    def unknown(self, known_ids: Iterable[str]) -> list[str]:
        """Entries naming no case among `known_ids` (every case of the family)."""
        known = set(known_ids)
        return [entry for entry in self.entries if entry not in known]


def _globby(entry: str) -> bool:
    return bool(re.search(r"[*?\[\]]", entry))
