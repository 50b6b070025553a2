"""The dispatcher conformance cases have teeth: the reference dispatcher (with the real
reference agent) passes every one of them, and each deliberately broken variant in
``broken_dispatchers.py`` (one fault each) fails the cases that guard the broken rule while
passing neighbouring ones.

The suite runs in-process through the runner API, selecting the dispatcher cases only (the
family is loaded with its dispatcher case module alone).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from runwire.conformance import (
    Family,
    RunConfig,
    RunResult,
    Verdict,
    load_family,
    parse_targets,
    resolve_options,
    run,
)
from runwire.conformance.coverage import coverage
from runwire.conformance.jobs import FAMILY
from runwire.reference_server.jobs.dispatcher import Dispatcher, DispatcherConfig, HostEntry

STEP_S = 5.0  # loopback, a fast server: generous for a loaded CI machine, short for hangs
HOST = "conformance-agent"  # the --jobs-host name; the dispatcher routes it to the agent


def _load_broken() -> ModuleType:
    name = "runwire_test_broken_dispatchers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("broken_dispatchers.py")
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


BROKEN_MODULE = _load_broken()
BROKEN = BROKEN_MODULE.BROKEN


@pytest.fixture(scope="module")
def family() -> Family:
    spec = dataclasses.replace(FAMILY, case_modules=("runwire.conformance.jobs.dispatcher_cases",))
    return load_family(spec)


@pytest.fixture
def start_dispatcher(
    jobs_agent: Any, background_loop: Any
) -> Iterator[Callable[[type[Dispatcher]], Dispatcher]]:
    """``start(cls)``: a started dispatcher of class `cls` routing HOST to ``jobs_agent``."""
    started: list[Dispatcher] = []

    def start(cls: type[Dispatcher]) -> Dispatcher:
        host = HostEntry(
            jobs_agent.host,
            jobs_agent.port,
            jobs_agent.user,
            jobs_agent.password,
            ca_file=jobs_agent.cafile,
            server_name="localhost",
        )
        config = DispatcherConfig(host="127.0.0.1", port=0, hosts={HOST: host})
        dispatcher = cls(config)
        background_loop.run(dispatcher.start())
        started.append(dispatcher)
        return dispatcher

    yield start
    for dispatcher in started:
        background_loop.run(dispatcher.aclose())


def run_against(family: Family, dispatcher: Dispatcher, select: tuple[str, ...]) -> RunResult:
    targets = parse_targets([f"dispatcher=tcp://127.0.0.1:{dispatcher.port}"], family.manifest)
    options = resolve_options(family.spec, {"jobs_host": HOST}, environ={})
    config = RunConfig(targets=targets, options=options, select=select, step_timeout_s=STEP_S)
    return run(family, config)


def describe(result: RunResult) -> str:
    lines = []
    for case in result.results:
        lines.append(f"{case.verdict.value} {case.case.id}")
        if case.message:
            lines.append("    " + case.message.replace("\n", "\n    "))
    return "\n".join(lines)


def test_reference_dispatcher_passes_every_dispatcher_case(
    family: Family, start_dispatcher: Callable[[type[Dispatcher]], Dispatcher]
) -> None:
    result = run_against(family, start_dispatcher(Dispatcher), ("jobs/dispatcher",))
    verdicts = {r.case.id: r.verdict for r in result.results}
    assert len(verdicts) == len(family.cases) > 40
    assert set(verdicts.values()) == {Verdict.PASS}, describe(result)
    assert result.exit_status == 0


def test_every_dispatcher_operation_has_a_case(family: Family) -> None:
    rows = coverage(family)
    missing = [
        row.operation.conformance_id
        for row in rows
        if row.operation.interface == "dispatcher" and not row.covered
    ]
    assert missing == []
    assert {row.operation.name for row in rows if row.operation.interface == "dispatcher"} == {
        "call",
        "cancel",
        "get_result",
        "get_status",
        "follow_stream",
        "read_stream",
        "list_jobs",
    }


def test_cases_that_need_an_agent_skip_without_jobs_host(family: Family) -> None:
    targets = parse_targets(["dispatcher=tcp://127.0.0.1:9"], family.manifest)
    options = resolve_options(family.spec, {}, environ={})
    config = RunConfig(targets=targets, options=options, select=("jobs/dispatcher/call/timeout",))
    (result,) = run(family, config).results
    assert result.verdict is Verdict.SKIP
    assert result.skip_reason is not None and "--jobs-host" in result.skip_reason


def test_every_case_has_a_summary_and_references(family: Family) -> None:
    for case in family.cases:
        assert case.summary and "\n" not in case.summary, case.id
        assert case.references, case.id
        assert case.id.startswith("jobs/dispatcher/"), case.id


@pytest.mark.parametrize("broken", BROKEN, ids=lambda b: b.name)
def test_broken_dispatcher_is_caught(
    family: Family,
    start_dispatcher: Callable[[type[Dispatcher]], Dispatcher],
    broken: Any,
) -> None:
    known = {case.id for case in family.cases}
    assert set(broken.caught_by) | set(broken.also_run) <= known
    dispatcher = start_dispatcher(broken.cls)
    result = run_against(family, dispatcher, (*broken.caught_by, *broken.also_run))
    verdicts = {r.case.id: r.verdict for r in result.results}
    expected = {case_id: Verdict.FAIL for case_id in broken.caught_by}
    expected.update({case_id: Verdict.PASS for case_id in broken.also_run})
    assert verdicts == expected, describe(result)
    assert result.exit_status == 1
