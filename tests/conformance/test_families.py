"""The project's own families: each declares itself, and every operation of its manifest
has at least one case (``runwire conformance FAMILY --coverage`` would list the others)."""

from __future__ import annotations

import pytest
import runwire_test_fakefamily as FAKE

from runwire.conformance import FAMILIES, ConformanceConfigError, family_spec, load_family
from runwire.conformance.coverage import coverage, render_coverage
from runwire.conformance.manifest import load_packaged_manifest
from runwire.runtime.validation import SchemaRegistry


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_declares_itself(name: str) -> None:
    spec = family_spec(name)
    assert spec.name == name and spec.case_modules
    manifest = load_packaged_manifest(name, SchemaRegistry.from_package())
    assert manifest.family == name


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_operation_has_a_case(name: str) -> None:
    try:
        family = load_family(name)
    except ConformanceConfigError as exc:
        if "has no cases yet" in str(exc):
            pytest.skip(str(exc))
        raise
    missing = [row.operation.conformance_id for row in coverage(family) if not row.covered]
    assert missing == [], render_coverage(family)


def test_coverage_names_the_operation_without_a_case() -> None:
    rows = {row.operation.conformance_id: row.cases for row in coverage(load_family(FAKE.FAMILY))}
    assert rows == {
        "fake/echo/echo": tuple(
            f"fake/echo/echo/{name}"
            for name in sorted(
                [
                    "bad-reply",
                    "blocks-loop",
                    "crashes",
                    "hangs",
                    "no-reply",
                    "not-json",
                    "plain-assert",
                    "round-trip",
                    "should-be-loud",
                    "should-level",
                    "skips-itself",
                    "wrong-value",
                ]
            )
        ),
        "fake/echo/count": ("fake/echo/count/three", "fake/echo/misc/also-counts"),
        "fake/echo/unused": (),
        "fake/other/ping": ("fake/other/ping/needs-target",),
    }
