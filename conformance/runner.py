"""Select cases, run them one after another, judge the run.

Each case runs on its own event loop in its own thread, bounded by its case timeout
(``timeout_steps`` × the step limit unless ``case_timeout_s`` is set). A case that crashes
is that case's FAIL; a case that hangs is cancelled at its bound and FAILs with kind
timeout; a case that blocks its event loop or ignores cancellation is abandoned (its thread
is left behind, a daemon) and FAILs the same way. The run always goes on to the next case.

The run fails (exit status 1) when a case fails that the baseline does not list, when a
listed case passes (stale entry), when a baseline entry names no case, when no case is
selected, or when every selected case was skipped (nothing was checked).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import fnmatch
import threading
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from runwire.runtime.validation import SchemaViolation

from .baseline import Baseline, BaselineStatus
from .case import Case, CaseFailure, CaseSkip, FailureKind, Verdict
from .context import CaseContext, CaseWarning, Frame, LogEntry, missing_target_reason_for
from .family import Family, OptionValue, Target

__all__ = [
    "DEFAULT_STEP_TIMEOUT_S",
    "CaseResult",
    "Failure",
    "Reporter",
    "RunConfig",
    "RunResult",
    "Summary",
    "matches",
    "run",
    "run_case",
    "select_cases",
    "skipped_after_service_end",
]

DEFAULT_STEP_TIMEOUT_S: Final = 10.0
"""Default per-step limit, in seconds: suited to a real network and a busy server (the
original dispatcher's connect-and-acknowledge limit is 10 s; h2spec's 2 s default is a known
source of flaky runs), not to loopback."""

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERNAL: Final = 3


@dataclass(frozen=True)
class RunConfig:
    """How to run a family's cases.

    Attributes:
        targets: {interface: Target}.
        options: the family's extra options, resolved (see ``family.resolve_options``).
        select: globs; a case runs if it matches any (all cases when empty).
        exclude: globs; a matching case does not run.
        step_timeout_s: the per-step limit, in seconds.
        case_timeout_s: bound on each whole case, in seconds; None: the case's
            ``timeout_steps`` × `step_timeout_s`.
        strict: WARN counts as a failure (SHOULD-level rules become MUST).
        baseline: expected failures, or None.
    """

    targets: Mapping[str, Target] = field(default_factory=dict)
    options: Mapping[str, OptionValue] = field(default_factory=dict)
    select: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    step_timeout_s: float = DEFAULT_STEP_TIMEOUT_S
    case_timeout_s: float | None = None
    strict: bool = False
    baseline: Baseline | None = None

    def case_timeout(self, case: Case) -> float:
        """The bound on `case`, in seconds."""
        if self.case_timeout_s is not None:
            return self.case_timeout_s
        return case.timeout_steps * self.step_timeout_s

    def cleanup_grace_s(self) -> float:
        """How long a cancelled case may take to stop before it is abandoned, in seconds."""
        return max(1.0, min(5.0, self.step_timeout_s))


@dataclass(frozen=True)
class Failure:
    """Why a case failed.

    Attributes:
        kind: see :class:`~runwire.conformance.case.FailureKind`.
        message: what was expected and what happened (for kind schema: the frame, each
            violation's pointer and rule).
        frame: index of the frame it is about, if any.
        violations: schema violations (kind schema).
        traceback: the traceback (kind error, and failed ``assert`` statements).
    """

    kind: FailureKind
    message: str
    frame: int | None = None
    violations: tuple[SchemaViolation, ...] = ()
    traceback: str | None = None


@dataclass(frozen=True)
class CaseResult:
    """The result of one case.

    Attributes:
        case: the case.
        verdict: PASS, FAIL, WARN or SKIP.
        duration_s: wall-clock seconds.
        failure: why it failed (verdict FAIL), else None.
        skip_reason: why it was skipped (verdict SKIP), else None.
        warnings: SHOULD-level rules not met.
        frames: recorded frames (at most ``MAX_FRAMES_PER_CASE``).
        frames_omitted: frames recorded beyond that bound.
        log: the case's log (steps, notes).
    """

    case: Case
    verdict: Verdict
    duration_s: float
    failure: Failure | None = None
    skip_reason: str | None = None
    warnings: tuple[CaseWarning, ...] = ()
    frames: tuple[Frame, ...] = ()
    frames_omitted: int = 0
    log: tuple[LogEntry, ...] = ()

    @property
    def message(self) -> str | None:
        """The failure message, the skip reason, or the warnings; None for a PASS."""
        if self.failure is not None:
            return self.failure.message
        if self.skip_reason is not None:
            return self.skip_reason
        if self.warnings:
            return "\n".join(w.message for w in self.warnings)
        return None

    def failed(self, strict: bool = False) -> bool | None:
        """True for FAIL (and WARN when `strict`), False for PASS/WARN, None for SKIP."""
        if self.verdict is Verdict.SKIP:
            return None
        return self.verdict is Verdict.FAIL or (strict and self.verdict is Verdict.WARN)


class Reporter(Protocol):
    """Receives progress while a run goes on (the console display implements it). The
    caller shows the outcome itself once :func:`run` returns (after writing reports)."""

    def run_started(self, family: Family, cases: Sequence[Case]) -> None: ...

    def case_started(self, index: int, total: int, case: Case) -> None: ...

    def case_finished(self, index: int, total: int, result: CaseResult) -> None: ...


@dataclass(frozen=True)
class Summary:
    """Counts over a run's results."""

    total: int
    passed: int
    failed: int
    warned: int
    skipped: int
    expected_failures: int
    unexpected_failures: int
    stale_baseline_entries: int

    def closing_line(self) -> str:
        """``N passed, N failed`` then ``, N skipped`` and ``, N warned`` when nonzero."""
        line = f"{self.passed} passed, {self.failed} failed"
        if self.skipped:
            line += f", {self.skipped} skipped"
        if self.warned:
            line += f", {self.warned} warned"
        return line


@dataclass(frozen=True)
class RunResult:
    """The outcome of a run: every case's result and the judgement of the whole."""

    family: Family
    config: RunConfig
    started_at: datetime.datetime
    duration_s: float
    available: int
    results: tuple[CaseResult, ...]
    interrupted_after: int | None = None
    """Set when the run was interrupted (Ctrl-C): how many selected cases it had finished;
    the rest were not run."""

    def status(self, result: CaseResult) -> BaselineStatus:
        """How the baseline judges `result`."""
        if self.config.baseline is None:
            return BaselineStatus.NOT_LISTED
        return self.config.baseline.status(result.case.id, result.failed(self.config.strict))

    def fails_run(self, result: CaseResult) -> bool:
        """True when `result` alone makes the run fail (unexpected failure or stale entry)."""
        status = self.status(result)
        if status is BaselineStatus.STALE:
            return True
        return bool(result.failed(self.config.strict)) and status is BaselineStatus.NOT_LISTED

    def unknown_baseline_entries(self) -> list[str]:
        """Baseline entries naming no case of the family."""
        if self.config.baseline is None:
            return []
        return self.config.baseline.unknown(c.id for c in self.family.cases)

    @property
    def summary(self) -> Summary:
        statuses = [self.status(r) for r in self.results]
        count = {verdict: 0 for verdict in Verdict}
        for result in self.results:
            count[result.verdict] += 1
        return Summary(
            total=len(self.results),
            passed=count[Verdict.PASS],
            failed=count[Verdict.FAIL],
            warned=count[Verdict.WARN],
            skipped=count[Verdict.SKIP],
            expected_failures=statuses.count(BaselineStatus.EXPECTED_FAILURE),
            unexpected_failures=sum(
                1
                for r, s in zip(self.results, statuses, strict=True)
                if r.failed(self.config.strict) and s is BaselineStatus.NOT_LISTED
            ),
            stale_baseline_entries=statuses.count(BaselineStatus.STALE),
        )

    @property
    def reasons(self) -> list[str]:
        """Why the run fails, one line each; empty when it passes."""
        reasons = []
        if self.interrupted_after is not None:
            reasons.append(f"interrupted after {self.interrupted_after} case(s)")
        if not self.results and self.interrupted_after is None:
            reasons.append(
                f"no case selected ({self.available} available; check --select and --exclude)"
            )
        elif all(r.verdict is Verdict.SKIP for r in self.results):
            first = self.results[0].skip_reason
            reasons.append(f"no case ran: all {len(self.results)} were skipped (first: {first})")
        unexpected = [
            r.case.id
            for r in self.results
            if r.failed(self.config.strict) and self.status(r) is BaselineStatus.NOT_LISTED
        ]
        if unexpected:
            reasons.append(f"{_count(unexpected, 'unexpected failure')}: {_ids(unexpected)}")
        stale = [r.case.id for r in self.results if self.status(r) is BaselineStatus.STALE]
        if stale:
            where = self.config.baseline.path if self.config.baseline else "the baseline"
            reasons.append(
                f"{_count(stale, 'stale baseline entry', 'stale baseline entries')} "
                f"(the case passes now; delete it from {where}): {_ids(stale)}"
            )
        unknown = self.unknown_baseline_entries()
        if unknown:
            reasons.append(
                f"{_count(unknown, 'baseline entry', 'baseline entries')} name no case of "
                f"family {self.family.name} (renamed or removed? delete them): {_ids(unknown)}"
            )
        return reasons

    @property
    def exit_status(self) -> int:
        """0 when the run passes, 1 when it fails."""
        return EXIT_FAILED if self.reasons else EXIT_OK


def _count(items: Sequence[str], singular: str, plural: str | None = None) -> str:
    return f"{len(items)} {singular if len(items) == 1 else (plural or singular + 's')}"


def _ids(ids: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def matches(case_id: str, pattern: str) -> bool:
    """True when `pattern` selects `case_id`: a glob over the whole id (``*`` also spans
    ``/``), or an id prefix ending at a segment boundary (``jobs/dispatcher``)."""
    pattern = pattern.rstrip("/")
    return fnmatch.fnmatchcase(case_id, pattern) or fnmatch.fnmatchcase(case_id, pattern + "/*")


def select_cases(
    cases: Iterable[Case], select: Sequence[str], exclude: Sequence[str]
) -> list[Case]:
    """The cases matching any `select` pattern (all when empty) and no `exclude` pattern, in
    run order: as given, except that cases ending the service (``ends_service``) come last."""
    selected = [
        case
        for case in cases
        if (not select or any(matches(case.id, p) for p in select))
        and not any(matches(case.id, p) for p in exclude)
    ]
    return [c for c in selected if not c.ends_service] + [c for c in selected if c.ends_service]


def skipped_after_service_end(case: Case, ended_by: str) -> CaseResult:
    """The SKIP of a case selected after `ended_by`, a case that ended the service of the
    server under test."""
    return CaseResult(
        case,
        Verdict.SKIP,
        0.0,
        skip_reason=(
            f"not run: case {ended_by} ended the service of the server under test; run this "
            f"case against a fresh server (--select {case.id})"
        ),
    )


@dataclass(frozen=True)
class _Outcome:
    verdict: Verdict
    failure: Failure | None = None
    skip_reason: str | None = None


def _assertion_message(exc: AssertionError) -> str:
    location = ""
    entries = traceback.extract_tb(exc.__traceback__)
    if entries:
        last = entries[-1]
        location = f" ({last.filename.rsplit('/', 1)[-1]}:{last.lineno}: {last.line})"
    text = str(exc).strip()
    return f"{text}{location}" if text else f"assertion failed{location}"


async def _execute(ctx: CaseContext, case: Case, limit_s: float) -> _Outcome:
    bound = asyncio.timeout(limit_s)
    try:
        try:
            async with bound:
                await case.func(ctx)
        finally:
            await ctx.aclose()
    except CaseSkip as skip:
        return _Outcome(Verdict.SKIP, skip_reason=skip.reason)
    except CaseFailure as failure:
        return _Outcome(
            Verdict.FAIL,
            Failure(failure.kind, failure.message, failure.frame, failure.violations),
        )
    except AssertionError as exc:
        return _Outcome(
            Verdict.FAIL,
            Failure(
                FailureKind.ASSERTION,
                _assertion_message(exc),
                traceback="".join(traceback.format_exception(exc)),
            ),
        )
    except TimeoutError as exc:
        if bound.expired():
            step = f"; it was in step {ctx.current_step!r}" if ctx.current_step else ""
            return _Outcome(
                Verdict.FAIL,
                Failure(
                    FailureKind.TIMEOUT,
                    f"case did not finish within {limit_s:g} s{step}",
                ),
            )
        return _error(exc)
    except Exception as exc:
        return _error(exc)
    return _Outcome(Verdict.PASS)


def _error(exc: BaseException) -> _Outcome:
    return _Outcome(
        Verdict.FAIL,
        Failure(
            FailureKind.ERROR,
            f"the case raised {type(exc).__name__}: {exc}",
            traceback="".join(traceback.format_exception(exc)),
        ),
    )


def run_case(family: Family, case: Case, config: RunConfig) -> CaseResult:
    """Run one case in isolation (own thread, own event loop) and return its result.

    A case whose interfaces lack a target is SKIPped without running. Never raises for
    anything the case does.
    """
    for interface in case.interfaces:
        if interface not in config.targets:
            reason = missing_target_reason_for(family.manifest, interface)
            return CaseResult(case, Verdict.SKIP, 0.0, skip_reason=reason)
    ctx = CaseContext(case, family, config.targets, config.options, config.step_timeout_s)
    limit = config.case_timeout(case)
    grace = config.cleanup_grace_s()
    box: dict[str, _Outcome] = {}
    done = threading.Event()

    async def main() -> None:
        try:
            box["outcome"] = await _execute(ctx, case, limit)
        finally:
            done.set()

    def thread_main() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # asyncio itself failed: still that case's FAIL only
            box.setdefault("outcome", _error(exc))
            done.set()

    started = time.monotonic()
    thread = threading.Thread(target=thread_main, name=f"conformance {case.id}", daemon=True)
    thread.start()
    if done.wait(limit + grace):
        outcome = box["outcome"]
        thread.join(grace)  # let the loop close what the case left behind
    else:
        step = f" in step {ctx.current_step!r}" if ctx.current_step else ""
        outcome = _Outcome(
            Verdict.FAIL,
            Failure(
                FailureKind.TIMEOUT,
                f"case did not finish within {limit:g} s and did not stop{step} when "
                f"cancelled (it blocks its event loop or ignores cancellation); abandoned",
            ),
        )
    duration = time.monotonic() - started
    frames, omitted, warnings, log = ctx.snapshot()
    verdict, failure = outcome.verdict, outcome.failure
    if failure is not None:
        failure = dataclasses.replace(
            failure,
            message=ctx.redact_text(failure.message),
            traceback=ctx.redact_text(failure.traceback) if failure.traceback else None,
        )
    skip_reason = ctx.redact_text(outcome.skip_reason) if outcome.skip_reason else None
    if failure is not None and failure.kind is FailureKind.ASSERTION and case.level == "SHOULD":
        warnings.append(CaseWarning(failure.message, failure.frame))
        verdict, failure = Verdict.WARN, None
    elif verdict is Verdict.PASS and warnings:
        verdict = Verdict.WARN
    return CaseResult(
        case=case,
        verdict=verdict,
        duration_s=duration,
        failure=failure,
        skip_reason=skip_reason,
        warnings=tuple(warnings),
        frames=tuple(frames),
        frames_omitted=omitted,
        log=tuple(log),
    )


def run(family: Family, config: RunConfig, reporter: Reporter | None = None) -> RunResult:
    """Run the selected cases of `family` one after another and judge the run.

    Cases that end the service of the server under test run last (see
    :func:`select_cases`); once one of them has run, the rest are SKIPped.

    A KeyboardInterrupt (Ctrl-C) stops the run: the result holds the cases that finished,
    and the run fails (``interrupted_after``).
    """
    cases = select_cases(family.cases, config.select, config.exclude)
    started_at = datetime.datetime.now(datetime.UTC)
    started = time.monotonic()
    if reporter is not None:
        reporter.run_started(family, cases)
    results = []
    interrupted: int | None = None
    ended_by: str | None = None
    try:
        for index, case in enumerate(cases, 1):
            if reporter is not None:
                reporter.case_started(index, len(cases), case)
            if ended_by is not None:
                result = skipped_after_service_end(case, ended_by)
            else:
                result = run_case(family, case, config)
                if case.ends_service and result.verdict is not Verdict.SKIP:
                    ended_by = case.id
            results.append(result)
            if reporter is not None:
                reporter.case_finished(index, len(cases), result)
    except KeyboardInterrupt:  # keep what ran: the caller still reports it
        interrupted = len(results)
    return RunResult(
        family=family,
        config=config,
        started_at=started_at,
        duration_s=time.monotonic() - started,
        available=len(family.cases),
        results=tuple(results),
        interrupted_after=interrupted,
    )
