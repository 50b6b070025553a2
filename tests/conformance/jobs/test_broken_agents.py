"""The jobs agent conformance cases against the reference agent (every case passes) and
against deliberately broken agents (each fault is caught by exactly the expected cases).

The suite runs in-process through the runner API, on the agent cases only (the family spec
is narrowed to ``runwire.conformance.jobs.agent_cases``), with a 2 s step limit.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from runwire.conformance import (
    RunConfig,
    RunResult,
    Verdict,
    load_family,
    parse_targets,
    resolve_options,
    run,
)
from runwire.conformance.jobs import FAMILY
from runwire.conformance.report import render_result

AGENT_CASES = "runwire.conformance.jobs.agent_cases"
STEP_S = 2.0


def _load_broken() -> ModuleType:
    name = "runwire_test_broken_agents"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("broken_agents.py")
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


BROKEN = _load_broken()
AGENT_SPEC = dataclasses.replace(FAMILY, case_modules=(AGENT_CASES,))
AGENT_FAMILY = load_family(AGENT_SPEC)
ALL_AGENT_CASES = frozenset(case.id for case in AGENT_FAMILY.cases)


def run_agent_cases(
    port: int,
    cafile: Path | str,
    user: str | None,
    password: str | None,
    *,
    scheme: str = "tls",
    host: str = "localhost",
) -> RunResult:
    """Run every agent case against the agent at ``scheme://host:port``."""
    options: dict[str, Any] = {"agent_ca_file": str(cafile)}
    if user is not None:
        options["agent_user"] = user
    if password is not None:
        options["agent_password"] = password
    config = RunConfig(
        targets=parse_targets([f"agent={scheme}://{host}:{port}"], AGENT_FAMILY.manifest),
        options=resolve_options(AGENT_SPEC, options, environ={}),
        select=("jobs/agent",),
        step_timeout_s=STEP_S,
    )
    return run(AGENT_FAMILY, config)


def verdicts(result: RunResult) -> dict[str, Verdict]:
    return {r.case.id: r.verdict for r in result.results}


def explain(result: RunResult) -> str:
    return "\n".join(render_result(r) for r in result.results if r.verdict is not Verdict.PASS)


def test_the_agent_cases_are_the_ones_the_variants_name() -> None:
    assert frozenset(BROKEN.AGENT_CASES_CALLING_ECHO_OR_MORE) < ALL_AGENT_CASES
    only_auth_errors = ALL_AGENT_CASES - BROKEN.AGENT_CASES_CALLING_ECHO_OR_MORE
    assert only_auth_errors == {"jobs/agent/call/auth-indistinguishable"}
    for variant in BROKEN.VARIANTS:
        assert variant.expected_failures <= ALL_AGENT_CASES, variant.name


def test_the_reference_agent_passes_every_agent_case(jobs_agent: Any) -> None:
    result = run_agent_cases(
        jobs_agent.port, jobs_agent.cafile, jobs_agent.user, jobs_agent.password
    )
    assert verdicts(result) == dict.fromkeys(ALL_AGENT_CASES, Verdict.PASS), explain(result)
    assert result.exit_status == 0
    assert result.summary.closing_line() == f"{len(ALL_AGENT_CASES)} passed, 0 failed"


def test_without_credentials_the_cases_needing_them_skip(jobs_agent: Any) -> None:
    result = run_agent_cases(jobs_agent.port, jobs_agent.cafile, None, None)
    found = verdicts(result)
    ran = {case for case, verdict in found.items() if verdict is not Verdict.SKIP}
    assert ran == {
        "jobs/agent/call/eof-before-newline",
        "jobs/agent/call/malformed-auth",
        "jobs/agent/call/not-json",
        "jobs/agent/call/serves-after-bad-input",
        "jobs/agent/call/tls-below-1-2-refused",
    }, explain(result)
    assert all(found[case] is Verdict.PASS for case in ran), explain(result)
    skipped = [r for r in result.results if r.verdict is Verdict.SKIP]
    assert all("--agent-" in (r.skip_reason or "") for r in skipped)
    assert result.exit_status == 0


def test_over_plain_tcp_an_incomplete_request_gets_invalid_request(
    background_loop: Any, tmp_path: Path
) -> None:
    """Over TCP the suite can half-close, so eof-before-newline insists on harpd's
    invalid_request line (over TLS it accepts a close without a reply)."""
    from runwire.reference_server.jobs.agent import Agent

    started = background_loop.run(
        BROKEN.start_variant(Agent, tmp_path / "tcp-agent", tls_context=None)
    )
    try:
        result = run_agent_cases(
            started.port, started.cafile, started.user, started.password, scheme="tcp"
        )
    finally:
        background_loop.run(started.aclose())
    found = verdicts(result)
    assert found.pop("jobs/agent/call/tls-below-1-2-refused") is Verdict.SKIP
    assert set(found.values()) == {Verdict.PASS}, explain(result)
    (eof,) = [r for r in result.results if r.case.name == "eof-before-newline"]
    received = [f.value for f in eof.frames if f.direction == "received" and f.connection == 1]
    assert received == [
        {
            "harp": 1,
            "error": {"type": "invalid_request", "message": "request incomplete or too long"},
        }
    ]


@pytest.mark.parametrize("variant", BROKEN.VARIANTS, ids=lambda v: v.name)
def test_each_broken_agent_is_caught(variant: Any, background_loop: Any, tmp_path: Path) -> None:
    if variant.name == "accepts-tls-1-1":
        _skip_unless_tls_1_1_is_possible()
    started = background_loop.run(
        BROKEN.start_variant(
            variant.agent_class, tmp_path / variant.name, tls_context=variant.tls_context
        )
    )
    try:
        result = run_agent_cases(started.port, started.cafile, started.user, started.password)
    finally:
        background_loop.run(started.aclose())
    failed = {case for case, verdict in verdicts(result).items() if verdict is Verdict.FAIL}
    assert failed == variant.expected_failures, explain(result)
    others = set(verdicts(result).values()) - {Verdict.FAIL}
    assert others <= {Verdict.PASS}, explain(result)
    assert result.exit_status == 1
    first = next(r for r in result.results if r.case.id in variant.expected_failures)
    assert first.failure is not None and variant.message in first.failure.message, explain(result)


def _skip_unless_tls_1_1_is_possible() -> None:
    import ssl
    import warnings

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ssl.SSLError, ValueError) as exc:
        pytest.skip(f"this OpenSSL cannot offer TLS 1.1: {exc}")
