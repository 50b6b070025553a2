"""pytest plugin: a family's conformance cases as pytest items in an implementer's own suite.

Enable it explicitly (it is deliberately not a ``pytest11`` entry point, so installing
runwire never changes anyone else's test runs): ``-p runwire.conformance.pytest_plugin`` or,
in the root ``conftest.py``, ``pytest_plugins = ["runwire.conformance.pytest_plugin"]``. Any
test taking the ``runwire_case`` fixture is parametrised with one item per selected case,
id = case id; the one-line test file is::

    from runwire.conformance.pytest_plugin import test_conformance  # noqa: F401

Configuration: ``--runwire-family`` / ini ``runwire_family`` and the options listed in
``conformance/README.md`` (section "pytest plugin"). Targets and family options may also come
from fixtures: override ``runwire_targets`` (session scope, ``{interface: url}``) to start
the server under test in a fixture, and ``runwire_options`` likewise.

Outcomes: FAIL → failed item (the message shows the failure, the frame, pointer and rule),
SKIP → skipped, expected failure (baseline) → xfailed, stale baseline entry → failed, WARN →
passed with a :class:`ConformanceWarning`. With ``--runwire-report-dir`` the session writes
the same ``results.json`` and ``junit.xml`` as the command.
"""

from __future__ import annotations

import datetime
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

from .baseline import Baseline, BaselineStatus
from .case import Case, Verdict
from .family import (
    FAMILIES,
    ConformanceConfigError,
    Family,
    FamilySpec,
    Option,
    OptionValue,
    Target,
    family_spec,
    load_family,
    parse_targets,
    resolve_options,
)
from .report import ReportError, render_result, write_reports
from .runner import (
    DEFAULT_STEP_TIMEOUT_S,
    CaseResult,
    RunConfig,
    RunResult,
    run_case,
    select_cases,
    skipped_after_service_end,
)

__all__ = ["ConformanceWarning", "RunwireCase", "test_conformance"]

NO_CASES: Final = "no-cases-selected"
NOT_CONFIGURED: Final = "runwire-not-configured"


class ConformanceWarning(UserWarning):
    """A case passed its MUST-level checks but not a SHOULD-level rule (verdict WARN)."""


@dataclass
class _Session:
    """What the plugin keeps for one pytest session."""

    family: Family
    select: tuple[str, ...]
    exclude: tuple[str, ...]
    step_timeout_s: float
    case_timeout_s: float | None
    strict: bool
    baseline: Baseline | None
    report_dir: Path | None
    targets: list[str]
    options: dict[str, OptionValue]
    from_command_line: bool
    started_at: datetime.datetime = field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC)
    )
    started: float = field(default_factory=time.monotonic)
    results: list[CaseResult] = field(default_factory=list)
    config: RunConfig | None = None
    collected: int = 0
    report_paths: tuple[Path, ...] = ()
    report_error: str | None = None
    ended_by: str | None = None
    """The id of the case that ended the service of the server under test, once one ran."""

    def run_result(self) -> RunResult:
        config = self.config or RunConfig(
            select=self.select,
            exclude=self.exclude,
            step_timeout_s=self.step_timeout_s,
            case_timeout_s=self.case_timeout_s,
            strict=self.strict,
            baseline=self.baseline,
        )
        return RunResult(
            family=self.family,
            config=config,
            started_at=self.started_at,
            duration_s=time.monotonic() - self.started,
            available=len(self.family.cases),
            results=tuple(sorted(self.results, key=lambda r: r.case.id)),
        )


_SESSION = pytest.StashKey[_Session]()


def _family_options() -> Iterator[tuple[FamilySpec, Option]]:
    """(spec, option) for every option of every family in the table, each name once."""
    seen: set[str] = set()
    for name in sorted(FAMILIES):
        try:
            spec = family_spec(name)
        except (ImportError, ConformanceConfigError):
            continue
        for option in spec.options:
            if option.name not in seen:
                seen.add(option.name)
                yield spec, option


#: Built-in option names; a family option with one of these names is only reachable as
#: ``--runwire-option NAME=VALUE``.
_BUILT_IN: Final = frozenset(
    {"family", "targets", "select", "exclude", "timeout", "case_timeout", "baseline"}
    | {"report_dir", "strict", "options"}
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("runwire", "runwire conformance suite")

    def add(name: str, ini_type: Any, help_text: str, flag: str = "", **kwargs: Any) -> None:
        flag = flag or f"--runwire-{name.replace('_', '-')}"
        group.addoption(flag, dest=f"runwire_{name}", help=help_text, **kwargs)
        parser.addini(f"runwire_{name}", help_text, type=ini_type)

    add("family", "string", "family whose conformance cases to run (jobs)")
    add(
        "targets",
        "linelist",
        "where an interface listens: INTERFACE=URL (repeatable)",
        flag="--runwire-target",
        action="append",
        metavar="INTERFACE=URL",
    )
    add(
        "select",
        "linelist",
        "run only cases whose id matches (repeatable)",
        action="append",
        metavar="GLOB",
    )
    add(
        "exclude",
        "linelist",
        "leave out cases whose id matches (repeatable)",
        action="append",
        metavar="GLOB",
    )
    add(
        "timeout",
        "string",
        f"per-step limit in seconds (default {DEFAULT_STEP_TIMEOUT_S:g})",
        metavar="S",
    )
    add("case_timeout", "string", "bound on a whole case in seconds", metavar="S")
    add("baseline", "string", "YAML or JSON list of case ids expected to fail", metavar="FILE")
    add("report_dir", "string", "write results.json and junit.xml into this folder", metavar="DIR")
    add("strict", "bool", "count WARN as a failure", action="store_true", default=None)
    add(
        "options",
        "linelist",
        "a family option (repeatable)",
        flag="--runwire-option",
        action="append",
        metavar="NAME=VALUE",
    )
    for spec, option in _family_options():
        if option.name in _BUILT_IN:
            continue
        help_text = f"{spec.name}: {option.help}"
        if option.flag:
            add(option.name, "bool", help_text, action="store_true", default=None)
        else:
            add(option.name, "string", help_text, metavar=option.metavar)


def _value(config: pytest.Config, name: str) -> Any:
    """Command-line value if given, else the ini value (None/empty when neither)."""
    value = config.getoption(f"runwire_{name}", default=None)
    if value not in (None, [], ""):
        return value
    ini = config.getini(f"runwire_{name}")
    return ini if ini not in ("", [], None, False) else None


def _path(config: pytest.Config, name: str) -> Path | None:
    value = config.getoption(f"runwire_{name}", default=None)
    base = config.invocation_params.dir
    if value in (None, ""):
        value = config.getini(f"runwire_{name}")
        base = config.inipath.parent if config.inipath else config.rootpath
    if not value:
        return None
    path = Path(str(value))
    return path if path.is_absolute() else base / path


def _seconds(config: pytest.Config, name: str, default: float | None) -> float | None:
    value = _value(config, name)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise pytest.UsageError(f"runwire_{name}: {value!r} is not a number of seconds") from None
    if not seconds > 0:
        raise pytest.UsageError(f"runwire_{name}: must be more than 0 seconds")
    return seconds


def _configure(config: pytest.Config, family_name: str) -> _Session:
    try:
        family = load_family(family_name)
    except ConformanceConfigError as exc:
        raise pytest.UsageError(f"runwire conformance: {exc}") from None
    given: dict[str, OptionValue] = {}
    for item in _value(config, "options") or []:
        name, sep, text = str(item).partition("=")
        if not sep:
            raise pytest.UsageError(f"runwire option {item!r}: write NAME=VALUE")
        given[name.strip()] = text.strip()
    for option in family.spec.options:
        value = _value(config, option.name)
        if value is not None:
            given[option.name] = bool(value) if option.flag else str(value)
    for name, value in list(given.items()):
        try:
            option = family.spec.option(name)
        except KeyError:
            continue  # resolve_options names it
        if option.flag and isinstance(value, str):
            given[name] = value.lower() in ("1", "true", "yes", "on")
    try:
        options = dict(resolve_options(family.spec, given))
        baseline_path = _path(config, "baseline")
        baseline = Baseline.load(baseline_path) if baseline_path else None
        targets = [str(t) for t in _value(config, "targets") or []]
        parse_targets(targets, family.manifest)  # fail early on a bad target
    except ConformanceConfigError as exc:
        raise pytest.UsageError(f"runwire conformance: {exc}") from None
    return _Session(
        family=family,
        select=tuple(str(s) for s in _value(config, "select") or []),
        exclude=tuple(str(s) for s in _value(config, "exclude") or []),
        step_timeout_s=_seconds(config, "timeout", DEFAULT_STEP_TIMEOUT_S)
        or DEFAULT_STEP_TIMEOUT_S,
        case_timeout_s=_seconds(config, "case_timeout", None),
        strict=bool(_value(config, "strict")),
        baseline=baseline,
        report_dir=_path(config, "report_dir"),
        targets=targets,
        options=options,
        from_command_line=config.getoption("runwire_family", default=None) is not None,
    )


def pytest_configure(config: pytest.Config) -> None:
    family_name = _value(config, "family")
    if family_name:
        config.stash[_SESSION] = _configure(config, str(family_name))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "runwire_case" not in metafunc.fixturenames:
        return
    session = metafunc.config.stash.get(_SESSION, None)
    if session is None:
        metafunc.parametrize("runwire_case", [NOT_CONFIGURED], ids=[NOT_CONFIGURED], indirect=True)
        return
    cases = select_cases(session.family.cases, session.select, session.exclude)
    if not cases:
        metafunc.parametrize("runwire_case", [NO_CASES], ids=[NO_CASES], indirect=True)
        return
    metafunc.parametrize("runwire_case", cases, ids=[c.id for c in cases], indirect=True)


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    state = config.stash.get(_SESSION, None)
    if state is not None:
        state.collected = sum(
            1 for item in items if "runwire_case" in getattr(item, "fixturenames", ())
        )


@pytest.fixture(scope="session")
def runwire_targets(pytestconfig: pytest.Config) -> Mapping[str, str] | Sequence[str]:
    """The targets, ``INTERFACE=URL`` strings from ``--runwire-target`` / ini
    ``runwire_targets``. Override this fixture (session scope) to start the server under test
    and return ``{interface: url}``."""
    session = pytestconfig.stash.get(_SESSION, None)
    return list(session.targets) if session else []


@pytest.fixture(scope="session")
def runwire_options(pytestconfig: pytest.Config) -> Mapping[str, OptionValue]:
    """The family's options ({name: value}) from the command line, ini file and environment.
    Override (session scope) to compute them in a fixture."""
    session = pytestconfig.stash.get(_SESSION, None)
    return dict(session.options) if session else {}


@dataclass
class RunwireCase:
    """One conformance case bound to the session's targets, options and baseline; call
    :meth:`run` in the test. `problem` is set (and `case` None) for the placeholder item of
    a run that is not configured or selects no case: :meth:`run` fails it."""

    case: Case | None
    session: _Session | None
    config: RunConfig | None
    node: pytest.Item
    problem: str | None = None

    def run(self) -> CaseResult:
        """Run the case and turn its verdict into the pytest outcome (see module doc)."""
        if self.case is None or self.session is None or self.config is None:
            pytest.fail(self.problem or "no conformance case", pytrace=False)
        if self.session.ended_by is not None:
            result = skipped_after_service_end(self.case, self.session.ended_by)
        else:
            result = run_case(self.session.family, self.case, self.config)
            if self.case.ends_service and result.verdict is not Verdict.SKIP:
                self.session.ended_by = self.case.id
        self.session.results.append(result)
        self.node.user_properties.append(("case_id", self.case.id))
        self.node.user_properties.append(("verdict", result.verdict.value))
        failed = result.failed(self.config.strict)
        baseline = self.config.baseline
        status = baseline.status(self.case.id, failed) if baseline else BaselineStatus.NOT_LISTED
        details = render_result(result, with_frames=True)
        if status is BaselineStatus.STALE:
            assert baseline is not None
            pytest.fail(
                f"{self.case.id} is listed in the baseline {baseline.path} as an expected "
                f"failure, but it passed: delete the entry\n{details}",
                pytrace=False,
            )
        if failed:
            if status is BaselineStatus.EXPECTED_FAILURE:
                assert baseline is not None
                pytest.xfail(f"expected failure (baseline {baseline.path}): {result.message}")
            pytest.fail(f"{result.verdict.value} {self.case.id}\n{details}", pytrace=False)
        if result.verdict is Verdict.SKIP:
            pytest.skip(result.skip_reason or "skipped")
        if result.verdict is Verdict.WARN:
            warnings.warn(ConformanceWarning(f"{self.case.id}: {result.message}"), stacklevel=2)
        return result


def _target_values(value: Mapping[str, str] | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [f"{name}={url}" for name, url in value.items()]
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


@pytest.fixture
def runwire_case(
    request: pytest.FixtureRequest,
    runwire_targets: Mapping[str, str] | Sequence[str],
    runwire_options: Mapping[str, OptionValue],
) -> RunwireCase:
    """The conformance case of this item (the plugin parametrises tests taking it)."""
    param = request.param
    if param == NOT_CONFIGURED:
        return RunwireCase(
            None,
            None,
            None,
            request.node,
            "runwire conformance is not configured: give --runwire-family FAMILY "
            "(or ini runwire_family)",
        )
    session = request.config.stash[_SESSION]
    if param == NO_CASES:
        return RunwireCase(
            None,
            None,
            None,
            request.node,
            f"no conformance case selected ({len(session.family.cases)} available; check "
            f"--runwire-select and --runwire-exclude)",
        )
    try:
        targets: dict[str, Target] = parse_targets(
            _target_values(runwire_targets), session.family.manifest
        )
        options = resolve_options(
            session.family.spec, {k: v for k, v in runwire_options.items() if v is not None}
        )
    except ConformanceConfigError as exc:
        raise pytest.UsageError(f"runwire conformance: {exc}") from None
    config = RunConfig(
        targets=targets,
        options=options,
        select=session.select,
        exclude=session.exclude,
        step_timeout_s=session.step_timeout_s,
        case_timeout_s=session.case_timeout_s,
        strict=session.strict,
        baseline=session.baseline,
    )
    session.config = config
    return RunwireCase(param, session, config, request.node)


def test_conformance(runwire_case: RunwireCase) -> None:
    """One item per selected conformance case (import this into a test module)."""
    runwire_case.run()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(_SESSION, None)
    if state is None:
        return
    if not state.results and not state.from_command_line:
        return  # configured in the ini file, but this run did not include the cases
    if session.config.option.collectonly:
        return
    run = state.run_result()
    if run.reasons or (state.from_command_line and not state.collected):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if state.report_dir is not None:
        try:
            state.report_paths = write_reports(run, state.report_dir, runner="pytest")
        except ReportError as exc:
            state.report_error = str(exc)
            session.exitstatus = pytest.ExitCode.INTERNAL_ERROR


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(_SESSION, None)
    if state is None or (not state.results and not state.from_command_line):
        return
    if config.option.collectonly:
        return
    run = state.run_result()
    terminalreporter.section(f"runwire conformance {state.family.name}")
    if not state.collected:
        terminalreporter.write_line(
            "no conformance case ran: no collected test takes the runwire_case fixture "
            "(add `from runwire.conformance.pytest_plugin import test_conformance`)"
        )
    for reason in run.reasons:
        terminalreporter.write_line(f"run fails: {reason}")
    if state.report_paths:
        terminalreporter.write_line("reports: " + ", ".join(str(p) for p in state.report_paths))
    if state.report_error:
        terminalreporter.write_line(f"reports not written: {state.report_error}")
    terminalreporter.write_line(run.summary.closing_line())
