"""Declaring cases and families: ids, registration rules, loading against the manifest,
targets and options."""

from __future__ import annotations

import ssl
import sys
from types import ModuleType
from typing import Any

import pytest
import runwire_test_fakefamily as FAKE

from runwire.conformance import (
    CaseContext,
    CaseSet,
    ConformanceConfigError,
    FamilySpec,
    Target,
    load_family,
    parse_targets,
    resolve_options,
)
from runwire.conformance.family import describe_option_values, family_spec
from runwire.conformance.jobs import FAMILY as JOBS
from runwire.conformance.jobs import agent_tls_context

FAMILY = load_family(FAKE.FAMILY)


async def nothing(ctx: CaseContext) -> None:
    """Does nothing."""


def test_ids_and_summaries() -> None:
    cases = CaseSet("demo")
    cases.case("demo/a/b/plain", "given summary")(nothing)
    cases.under("demo/a/b").case("from-doc")(nothing)
    cases.case("demo/a/b/c/deeper-still", "  spaces\n  collapse ")(nothing)
    got = {case.id: case for case in cases}
    assert list(got) == ["demo/a/b/plain", "demo/a/b/from-doc", "demo/a/b/c/deeper-still"]
    assert got["demo/a/b/from-doc"].summary == "Does nothing."
    assert got["demo/a/b/c/deeper-still"].summary == "spaces collapse"
    case = got["demo/a/b/plain"]
    assert (case.family, case.interface, case.parent, case.name) == (
        "demo",
        "a",
        "demo/a/b",
        "plain",
    )
    assert case.interfaces == ("a",) and case.level == "MUST"


@pytest.mark.parametrize(
    "case_id",
    ["demo/a/b", "demo/a/b/", "demo/a/B/c", "demo/a/b/c d", "other/a/b/c", "demo/a/b/c.d", "demo"],
)
def test_malformed_or_foreign_ids_are_refused(case_id: str) -> None:
    with pytest.raises(ValueError):
        CaseSet("demo").case(case_id, "x")


def test_registration_rules() -> None:
    cases = CaseSet("demo")
    cases.case("demo/a/b/c", "x")(nothing)
    with pytest.raises(ValueError, match="registered twice"):
        cases.case("demo/a/b/c", "x")(nothing)

    def not_async(ctx: CaseContext) -> None:
        pass

    with pytest.raises(ValueError, match="must be an async function"):
        cases.case("demo/a/b/d", "x")(not_async)  # type: ignore[arg-type]

    async def undocumented(ctx: CaseContext) -> None:
        pass

    with pytest.raises(ValueError, match="give a summary or a docstring"):
        cases.case("demo/a/b/e")(undocumented)
    with pytest.raises(ValueError, match="level must be MUST or SHOULD"):
        cases.case("demo/a/b/f", "x", level="MAY")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not an id prefix"):
        cases.under("Demo/a")


def test_loading_fills_in_the_operations() -> None:
    operations = {case.id: case.operations for case in FAMILY.cases}
    assert operations["fake/echo/echo/round-trip"] == ("fake/echo/echo",)
    assert operations["fake/echo/misc/also-counts"] == ("fake/echo/count",)
    assert operations["fake/other/ping/needs-target"] == ("fake/other/ping",)
    assert [c.id for c in FAMILY.cases] == sorted(c.id for c in FAMILY.cases)


def _family_with(monkeypatch: pytest.MonkeyPatch, cases: CaseSet, **spec: Any) -> FamilySpec:
    module = ModuleType("runwire_test_cases_x")
    module.CASES = cases  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "runwire_test_cases_x", module)
    return FamilySpec(
        name="fake",
        title="t",
        case_modules=spec.pop("case_modules", ("runwire_test_cases_x",)),
        manifest=FAKE.MANIFEST,
        schema_documents={FAKE.SCHEMA["$id"]: FAKE.SCHEMA},
        **spec,
    )


def test_a_case_of_an_unknown_interface_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    cases = CaseSet("fake")
    cases.case("fake/nowhere/echo/x", "x")(nothing)
    with pytest.raises(
        ConformanceConfigError,
        match="case fake/nowhere/echo/x: family 'fake' has no interface 'nowhere'",
    ):
        load_family(_family_with(monkeypatch, cases))


def test_exercising_an_unknown_operation_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    cases = CaseSet("fake")
    cases.case("fake/echo/echo/x", "x", exercises=["fake/echo/nope"])(nothing)
    with pytest.raises(ConformanceConfigError, match="has no operation 'fake/echo/nope'"):
        load_family(_family_with(monkeypatch, cases))


def test_case_modules_must_declare_their_cases(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConformanceConfigError, match="must define CASES = CaseSet"):
        load_family(_family_with(monkeypatch, CaseSet("other")))
    spec = _family_with(monkeypatch, CaseSet("fake"), case_modules=("runwire_test_cases_x",) * 2)
    cases = CaseSet("fake")
    cases.case("fake/echo/echo/x", "x")(nothing)
    monkeypatch.setattr(sys.modules["runwire_test_cases_x"], "CASES", cases)
    with pytest.raises(ConformanceConfigError, match="registered by two modules"):
        load_family(spec)


def test_a_broken_manifest_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = {**FAKE.MANIFEST, "version": 0}
    spec = _family_with(monkeypatch, CaseSet("fake"))
    spec = FamilySpec(**{**spec.__dict__, "manifest": manifest})
    with pytest.raises(ConformanceConfigError, match=r"manifest is not valid: .*at /version"):
        load_family(spec)


def test_unknown_family() -> None:
    with pytest.raises(ConformanceConfigError, match=r"unknown family 'nope' \(known: .*jobs"):
        family_spec("nope")


def test_targets() -> None:
    manifest = FAMILY.manifest
    assert parse_targets(["echo=tcp://127.0.0.1"], manifest) == {
        "echo": Target("echo", "tcp", "127.0.0.1", 7001)
    }
    targets = parse_targets(["echo=tcp://[::1]:9", "other=tls://agent.example:4306"], manifest)
    assert targets["echo"].address == "tcp://[::1]:9" and not targets["echo"].tls
    assert targets["other"].tls and str(targets["other"]) == "other=tls://agent.example:4306"
    with pytest.raises(ConformanceConfigError, match="no host"):
        parse_targets(["echo=tcp://:5"], manifest)
    with pytest.raises(ConformanceConfigError, match="Port out of range"):
        parse_targets(["echo=tcp://h:99999"], manifest)


def test_options_from_given_values_environment_and_defaults() -> None:
    spec = FAKE.FAMILY
    values = resolve_options(spec, {"token": "t"}, environ={"RUNWIRE_FAKE_SECRET": "s"})
    assert dict(values) == {"token": "t", "secret_word": "s", "loud": False}
    assert describe_option_values(spec, values) == [
        ("token", "t", False),
        ("secret_word", "***", True),
        ("loud", False, False),
    ]
    with pytest.raises(ConformanceConfigError, match="has no option colour"):
        resolve_options(spec, {"colour": "red"}, environ={})


def test_jobs_family_declaration() -> None:
    assert family_spec("jobs") is JOBS
    assert [o.cli_flag for o in JOBS.options] == [
        "--jobs-host",
        "--agent-user",
        "--agent-password",
        "--agent-ca-file",
        "--agent-insecure",
    ]
    assert JOBS.option("agent_password").secret
    assert JOBS.option("agent_password").env == "RUNWIRE_AGENT_PASSWORD"
    checked = agent_tls_context("agent", {"agent_insecure": False})
    assert checked.verify_mode is ssl.CERT_REQUIRED and checked.check_hostname
    assert checked.minimum_version is ssl.TLSVersion.TLSv1_2
    loose = agent_tls_context("agent", {"agent_insecure": True})
    assert loose.verify_mode is ssl.CERT_NONE and not loose.check_hostname
    with pytest.raises(FileNotFoundError):
        agent_tls_context("agent", {"agent_ca_file": "/nonexistent/ca.pem"})
