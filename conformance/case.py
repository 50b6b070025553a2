"""Conformance cases: what one case is, how a family declares its cases, and verdicts.

A case is an async function taking a :class:`~runwire.conformance.context.CaseContext`,
registered on a :class:`CaseSet` under a stable hierarchical id that extends the conformance
id of the manifest operation it exercises::

    from runwire.conformance import CaseContext, CaseSet

    CASES = CaseSet("jobs")
    follow = CASES.under("jobs/dispatcher/follow_stream")

    @follow.case("since-beyond-end", "since past the last packet: no packets, one terminator")
    async def since_beyond_end(ctx: CaseContext) -> None:
        ...

A case passes when it returns. It fails when it calls ``ctx.fail`` (or a failing
``ctx.check``), when a plain ``assert`` fails, when a received frame breaks its schema, when a
step or the whole case runs out of time, and when it raises anything else (a crash is that
case's FAIL, never the run's). ``ctx.warn`` marks a SHOULD-level rule that was not met (WARN);
``ctx.skip`` gives up with a reason (SKIP).

Ids: ``<family>/<interface>/<group>/<name>[/<more>]``, each segment lowercase letters, digits,
``_`` and ``-``. The operation a case exercises is the manifest operation whose conformance id
is the longest prefix of the case id; ``exercises=`` adds others (for the coverage report).
"""

from __future__ import annotations

import enum
import inspect
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from runwire.runtime.validation import SchemaViolation

if TYPE_CHECKING:
    from .context import CaseContext

__all__ = [
    "DEFAULT_TIMEOUT_STEPS",
    "Case",
    "CaseFailure",
    "CaseFunction",
    "CaseGroup",
    "CaseOutcome",
    "CaseSet",
    "CaseSkip",
    "FailureKind",
    "Level",
    "Verdict",
    "validate_case_id",
]

CaseFunction = Callable[["CaseContext"], Awaitable[None]]
"""The signature of a case: ``async def case(ctx: CaseContext) -> None``."""

Level = Literal["MUST", "SHOULD"]
"""MUST: a failed check is a FAIL. SHOULD: a failed check is a WARN (schema violations,
timeouts, transport errors and crashes stay FAILs)."""

DEFAULT_TIMEOUT_STEPS: Final = 6
"""A case may take this many step timeouts in all, unless it says otherwise."""

_SEGMENT = r"[a-z0-9][a-z0-9_-]*"
_CASE_ID = re.compile(rf"^[a-z][a-z0-9_]*(?:/{_SEGMENT}){{3,}}$")
_PREFIX = re.compile(rf"^[a-z][a-z0-9_]*(?:/{_SEGMENT})+$")


class Verdict(enum.StrEnum):
    """The verdict of one case."""

    PASS = "PASS"
    """Every check held."""
    FAIL = "FAIL"
    """A MUST-level check failed, a frame broke its schema, a step timed out, or it crashed."""
    WARN = "WARN"
    """Every MUST-level check held, but a SHOULD-level rule did not."""
    SKIP = "SKIP"
    """Not run or not finished, with a reason (no target for an interface, option missing)."""


class FailureKind(enum.StrEnum):
    """Why a case failed; shown in reports and used as the JUnit failure type."""

    ASSERTION = "assertion"
    """A check of the case did not hold (``ctx.fail``, ``ctx.check``, ``assert``)."""
    SCHEMA = "schema"
    """A received frame is not valid against its schema."""
    PROTOCOL = "protocol"
    """Framing or ordering broke the protocol (not JSON, line too long, out of order)."""
    TIMEOUT = "timeout"
    """A step or the whole case did not finish in time."""
    TRANSPORT = "transport"
    """The connection could not be opened or broke (refused, reset, TLS rejected)."""
    ERROR = "error"
    """The case raised an unexpected exception (a bug in the case or the harness)."""


class CaseOutcome(Exception):
    """Base of the exceptions that end a case early with a verdict."""


class CaseFailure(CaseOutcome):
    """End the case with FAIL (WARN for an assertion in a SHOULD-level case).

    Attributes:
        kind: the :class:`FailureKind`.
        message: one line (or a few) saying what was expected and what happened.
        frame: index of the frame the failure is about, if any.
        violations: the schema violations, for kind SCHEMA.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: FailureKind = FailureKind.ASSERTION,
        frame: int | None = None,
        violations: Sequence[SchemaViolation] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.frame = frame
        self.violations = tuple(violations)


class CaseSkip(CaseOutcome):
    """End the case with SKIP; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def validate_case_id(case_id: str) -> None:
    """Raise ValueError unless `case_id` is ``family/interface/group/name[/...]``."""
    if not _CASE_ID.match(case_id):
        raise ValueError(
            f"case id {case_id!r} must be family/interface/group/name[/...]: at least four "
            f"segments of lowercase letters, digits, '_' and '-'"
        )


@dataclass(frozen=True)
class Case:
    """One registered case.

    Attributes:
        id: the stable hierarchical id.
        summary: one line on what the case checks (``--list`` prints it).
        func: the async case function.
        level: MUST or SHOULD.
        interfaces: the interfaces the case talks to; a case whose interface has no target
            is skipped.
        operations: conformance ids of the operations the case exercises (filled in from the
            manifest when the family is loaded).
        exercises: operations named explicitly by the case (``exercises=``).
        references: where the rule comes from (``reference/jobs.md §1.4``, a schema `$id`).
        timeout_steps: the case as a whole may take this many step timeouts.
        ends_service: the case ends the service of the server under test (it stops a
            workflow scheduler): it runs after every other selected case, and once one such
            case has run, the cases after it are SKIPped (each needs a fresh server: run it
            alone with ``--select``).
    """

    id: str
    summary: str
    func: CaseFunction = field(compare=False, repr=False)
    level: Level = "MUST"
    interfaces: tuple[str, ...] = ()
    operations: tuple[str, ...] = ()
    exercises: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    timeout_steps: float = DEFAULT_TIMEOUT_STEPS
    ends_service: bool = False

    @property
    def family(self) -> str:
        """The first segment of the id."""
        return self.id.split("/", 1)[0]

    @property
    def interface(self) -> str:
        """The second segment of the id: the interface the case is filed under."""
        return self.id.split("/")[1]

    @property
    def parent(self) -> str:
        """The id without its last segment (``jobs/dispatcher/follow_stream``)."""
        return self.id.rsplit("/", 1)[0]

    @property
    def name(self) -> str:
        """The last segment of the id."""
        return self.id.rsplit("/", 1)[1]


def _summary_of(func: Callable[..., Any], summary: str | None) -> str:
    if summary is not None and summary.strip():
        return " ".join(summary.split())
    doc = inspect.getdoc(func)
    if doc:
        return " ".join(doc.split("\n\n", 1)[0].split())
    raise ValueError(f"case {func.__qualname__}: give a summary or a docstring")


class CaseSet:
    """The cases of one family (or one module of a family), in a registry.

    A family's case modules each expose one ``CASES = CaseSet("<family>")``; the runner
    imports them and checks every case against the family manifest.

    Raises (at registration):
        ValueError: a malformed id, an id of another family, a duplicate id, a case function
            that is not ``async def``, or no summary.
    """

    def __init__(self, family: str) -> None:
        self.family = family
        self._cases: dict[str, Case] = {}

    def case(
        self,
        case_id: str,
        summary: str | None = None,
        *,
        level: Level = "MUST",
        interfaces: Sequence[str] | None = None,
        exercises: Sequence[str] = (),
        references: Sequence[str] = (),
        timeout_steps: float = DEFAULT_TIMEOUT_STEPS,
        ends_service: bool = False,
    ) -> Callable[[CaseFunction], CaseFunction]:
        """Register the decorated async function as case `case_id`.

        Args:
            case_id: full id, ``<family>/<interface>/<operation>/<name>``.
            summary: one line on what it checks (default: the docstring's first paragraph).
            level: ``"MUST"`` (default) or ``"SHOULD"`` (failed checks are WARN).
            interfaces: interfaces it needs targets for (default: the id's interface).
            exercises: conformance ids of further operations it exercises (coverage).
            references: spec references (free text: a document and section, a schema URI).
            timeout_steps: bound on the whole case, in step timeouts (default 6).
            ends_service: the case ends the server's service (see :class:`Case`): it runs
                last, and at most one such case runs against one server.

        Returns:
            A decorator returning the function unchanged.
        """
        validate_case_id(case_id)
        if case_id.split("/", 1)[0] != self.family:
            raise ValueError(f"case id {case_id!r} is not in family {self.family!r}")
        if level not in ("MUST", "SHOULD"):
            raise ValueError(f"case {case_id}: level must be MUST or SHOULD, not {level!r}")
        if timeout_steps <= 0:
            raise ValueError(f"case {case_id}: timeout_steps must be positive")

        def register(func: CaseFunction) -> CaseFunction:
            if not inspect.iscoroutinefunction(func):
                raise ValueError(f"case {case_id}: {func.__qualname__} must be an async function")
            if case_id in self._cases:
                raise ValueError(f"case id {case_id!r} is registered twice")
            self._cases[case_id] = Case(
                id=case_id,
                summary=_summary_of(func, summary),
                func=func,
                level=level,
                interfaces=tuple(interfaces) if interfaces else (case_id.split("/")[1],),
                exercises=tuple(exercises),
                references=tuple(references),
                timeout_steps=timeout_steps,
                ends_service=ends_service,
            )
            return func

        return register

    def under(self, prefix: str) -> CaseGroup:
        """A helper registering cases under `prefix` (usually an operation's conformance id):
        ``CASES.under("jobs/dispatcher/call").case("basic", "...")`` registers
        ``jobs/dispatcher/call/basic``."""
        if not _PREFIX.match(prefix):
            raise ValueError(f"{prefix!r} is not an id prefix (family/interface[/...])")
        return CaseGroup(self, prefix)

    def __iter__(self) -> Iterator[Case]:
        return iter(self._cases.values())

    def __len__(self) -> int:
        return len(self._cases)

    def __contains__(self, case_id: object) -> bool:
        return case_id in self._cases


@dataclass(frozen=True)
class CaseGroup:
    """Registers cases under one id prefix; made by :meth:`CaseSet.under`."""

    cases: CaseSet
    prefix: str

    def case(
        self, name: str, summary: str | None = None, **options: Any
    ) -> Callable[[CaseFunction], CaseFunction]:
        """:meth:`CaseSet.case` for id ``<prefix>/<name>``; the same keyword options."""
        return self.cases.case(f"{self.prefix}/{name}", summary, **options)
