"""The workflow conformance cases against the reference scheduler (every case passes, the
three stop modes each on a server of its own) and against deliberately broken variants of it
(each fault is caught by the cases its variant names, and the cases run beside them pass).

The suite runs in-process through the runner API with a 2 s step limit; the servers run on
loopback with CURVE keys, on event loops of their own (``broken_servers.py``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from runwire.conformance import (
    CaseContext,
    CaseSet,
    RunConfig,
    RunResult,
    Verdict,
    load_family,
    parse_targets,
    resolve_options,
    run,
    select_cases,
)
from runwire.conformance.family import ConformanceConfigError
from runwire.conformance.report import render_result
from runwire.conformance.workflow import FAMILY, KEYS_NEEDED, definition_path

STEP_S = 2.0
STOP_MODES = (
    "workflow/runtime/stop/clean",
    "workflow/runtime/stop/kill",
    "workflow/runtime/stop/now",
)


def _load(name: str, file: str) -> ModuleType:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(file))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


SERVERS = _load("runwire_test_workflow_servers", "broken_servers.py")
WORKFLOW = load_family(FAMILY)
ALL_CASES = frozenset(case.id for case in WORKFLOW.cases)


def run_cases(
    served: Any, select: Iterable[str] = (), options: Mapping[str, Any] | None = None
) -> RunResult:
    config = RunConfig(
        targets=parse_targets(served.targets(), WORKFLOW.manifest),
        options=resolve_options(FAMILY, dict(served.options() if options is None else options)),
        select=tuple(select),
        step_timeout_s=STEP_S,
    )
    return run(WORKFLOW, config)


def verdicts(result: RunResult) -> dict[str, Verdict]:
    return {r.case.id: r.verdict for r in result.results}


def explain(result: RunResult) -> str:
    return "\n".join(render_result(r) for r in result.results if r.verdict is not Verdict.PASS)


def serve(starter: Any) -> Any:
    thread = SERVERS.ServerThread(starter)
    thread.start()
    return thread


def test_the_conformance_definition_is_package_data_and_valid() -> None:
    from runwire.reference_server.workflow import load_definition

    with definition_path() as path:
        assert path.name == "conformance.yaml" and path.is_file()
        definition = load_definition(path)
    assert set(definition.tasks) == {
        "hello", "flaky", "reporter", "consumer", "sleeper", "doomed", "recover", "listener"
    }  # fmt: skip


def test_the_variants_name_real_cases() -> None:
    for variant in SERVERS.VARIANTS:
        assert variant.expected_failures, variant.name
        assert variant.expected_failures <= ALL_CASES, variant.name
        assert variant.passing <= ALL_CASES - variant.expected_failures, variant.name


def test_the_reference_passes_every_case(tmp_path: Path) -> None:
    found: dict[str, Verdict] = {}
    server = serve(SERVERS.reference_service(tmp_path / "main"))
    try:
        result = run_cases(server.served)
    finally:
        server.stop()
    main = verdicts(result)
    assert main.pop("workflow/runtime/stop/kill") is Verdict.SKIP
    assert main.pop("workflow/runtime/stop/now") is Verdict.SKIP
    skipped = {r.case.id: r.skip_reason for r in result.results if r.verdict is Verdict.SKIP}
    assert all("ended the service" in (reason or "") for reason in skipped.values())
    assert [r.case.id for r in result.results][-3:] == list(STOP_MODES)  # they run last
    found.update(main)
    for mode in STOP_MODES[1:]:  # each on a fresh server
        server = serve(SERVERS.reference_service(tmp_path / mode.rsplit("/", 1)[1]))
        try:
            alone = run_cases(server.served, select=[mode])
        finally:
            server.stop()
        assert verdicts(alone) == {mode: Verdict.PASS}, explain(alone)
        found[mode] = Verdict.PASS
    assert found == dict.fromkeys(ALL_CASES, Verdict.PASS), explain(result)
    assert result.exit_status == 0


def test_over_plain_tcp_the_security_cases_skip(tmp_path: Path) -> None:
    server = serve(SERVERS.reference_service(tmp_path, insecure=True))
    try:
        result = run_cases(
            server.served,
            select=["workflow/runtime/security", "workflow/runtime/ping_workflow/answers-true"],
        )
    finally:
        server.stop()
    found = verdicts(result)
    assert found.pop("workflow/runtime/ping_workflow/answers-true") is Verdict.PASS
    assert set(found.values()) == {Verdict.SKIP} and len(found) == 4, explain(result)
    skipped = [r for r in result.results if r.verdict is Verdict.SKIP]
    assert all("--insecure" in (r.skip_reason or "") for r in skipped)


@pytest.mark.parametrize("variant", SERVERS.VARIANTS, ids=lambda v: v.name)
def test_each_broken_server_is_caught(variant: Any, tmp_path: Path) -> None:
    server = serve(SERVERS.variant_server(tmp_path, variant.server_class, variant.scheduler_class))
    try:
        result = run_cases(server.served, select=variant.expected_failures | variant.passing)
    finally:
        server.stop()
    found = verdicts(result)
    expected = {case: Verdict.FAIL for case in variant.expected_failures}
    expected.update(dict.fromkeys(variant.passing, Verdict.PASS))
    assert found == expected, explain(result)
    for failed in result.results:
        if failed.verdict is Verdict.FAIL:
            assert failed.failure is not None
            assert variant.message in failed.failure.message, render_result(failed)
    assert result.exit_status == 1


def test_without_keys_every_case_skips_and_the_run_fails() -> None:
    served = SERVERS.Served(port=1, publish_port=2, keys_dir=None)
    result = run_cases(
        served, select=["workflow/runtime/api", "workflow/runtime/heartbeat"], options={}
    )
    assert set(verdicts(result).values()) == {Verdict.SKIP}
    assert all(r.skip_reason == KEYS_NEEDED for r in result.results)
    assert result.exit_status == 1


def test_unreadable_keys_fail_the_cases_that_need_them(tmp_path: Path) -> None:
    served = SERVERS.Served(port=1, publish_port=2, keys_dir=tmp_path)
    result = run_cases(served, select=["workflow/runtime/api/lists-commands"])
    (only,) = result.results
    assert only.verdict is Verdict.FAIL and only.failure is not None
    assert "cannot load the CurveZMQ keys for runtime" in only.failure.message


def test_the_publish_socket_is_a_target_of_its_own() -> None:
    manifest = WORKFLOW.manifest
    targets = parse_targets(["runtime=tcp://h:5", "publish=tcp://h:6"], manifest)
    assert targets["publish"].interface == "runtime" and targets["publish"].socket == "publish"
    assert str(targets["publish"]) == "publish=tcp://h:6" and targets["runtime"].socket is None
    with pytest.raises(ConformanceConfigError, match="give a port"):
        parse_targets(["publish=tcp://h"], manifest)
    with pytest.raises(ConformanceConfigError, match="no interface or socket 'pub'"):
        parse_targets(["pub=tcp://h:6"], manifest)
    with pytest.raises(ConformanceConfigError, match="takes tcp://"):
        parse_targets(["publish=ws://h:6"], manifest)
    served = SERVERS.Served(port=1, publish_port=2, keys_dir=None)
    config = RunConfig(
        targets={"runtime": targets["runtime"]},
        options=resolve_options(FAMILY, {"insecure": True}),
        select=("workflow/runtime/heartbeat",),
        step_timeout_s=STEP_S,
    )
    del served
    (only,) = run(WORKFLOW, config).results
    assert only.verdict is Verdict.SKIP
    assert only.skip_reason is not None and "publish=tcp://HOST:PORT" in only.skip_reason


def test_cases_ending_the_service_run_last_and_once() -> None:
    ran: list[str] = []
    cases = CaseSet("workflow")

    def record(name: str, ends: bool) -> None:
        @cases.case(f"workflow/runtime/{name}", name, ends_service=ends)
        async def case(ctx: CaseContext) -> None:
            ran.append(name)

    record("stop/a-first", True)
    record("stop/b-second", True)
    record("trigger/after-in-id-order", False)
    record("api/before", False)
    family = dataclasses.replace(WORKFLOW, cases=tuple(sorted(cases, key=lambda c: c.id)))
    order = [c.id.split("/", 2)[2] for c in select_cases(family.cases, (), ())]
    assert order == ["api/before", "trigger/after-in-id-order", "stop/a-first", "stop/b-second"]
    config = RunConfig(targets=parse_targets(["runtime=tcp://h:1"], WORKFLOW.manifest))
    result = run(family, config)
    assert ran == ["api/before", "trigger/after-in-id-order", "stop/a-first"]
    assert [r.verdict for r in result.results] == [Verdict.PASS] * 3 + [Verdict.SKIP]
    assert result.results[-1].skip_reason == (
        "not run: case workflow/runtime/stop/a-first ended the service of the server under "
        "test; run this case against a fresh server (--select workflow/runtime/stop/b-second)"
    )
    assert result.exit_status == 0
