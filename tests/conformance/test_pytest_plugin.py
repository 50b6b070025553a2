"""The pytest plugin, run by pytester in a separate temporary project: one item per case,
with the case ids, the baseline and the reports of the command."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from types import ModuleType

import pytest
from runwire_test_fakefamily import LoopbackServer

from runwire.conformance.report import validate_results

pytest_plugins = ["pytester"]

PLUGIN = ("-p", "runwire.conformance.pytest_plugin")
TEST_FILE = "from runwire.conformance.pytest_plugin import test_conformance  # noqa: F401\n"
ITEM = "test_conformance.py::test_conformance[{}]"


def item(case_id: str) -> str:
    """The item id of a case, escaped for fnmatch_lines (brackets are glob classes there)."""
    return ITEM.format(case_id).replace("[", "[[]")


@pytest.fixture
def project(pytester: pytest.Pytester, fake_family: ModuleType) -> pytest.Pytester:
    pytester.makepyfile(test_conformance=TEST_FILE)
    return pytester


def select(*ids: str) -> list[str]:
    return [arg for case_id in ids for arg in ("--runwire-select", case_id)]


def test_one_item_per_case_with_the_case_ids(
    project: pytest.Pytester, server: LoopbackServer
) -> None:
    result = project.runpytest(
        *PLUGIN,
        "-v",
        "--runwire-family=fake",
        f"--runwire-target={server.target}",
        "--runwire-timeout=0.5",
        *select("fake/echo/echo/round-trip", "fake/echo/echo/bad-reply", "fake/echo/count"),
        *select("fake/echo/echo/should-be-loud", "fake/other"),
    )
    result.assert_outcomes(passed=3, failed=1, skipped=1, warnings=1)
    result.stdout.fnmatch_lines(
        [
            f"{item('fake/echo/count/three')} PASSED*",
            f"{item('fake/echo/echo/bad-reply')} FAILED*",
            f"{item('fake/echo/echo/round-trip')} PASSED*",
            f"{item('fake/echo/echo/should-be-loud')} PASSED*",
            f"{item('fake/other/ping/needs-target')} SKIPPED*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*FAIL fake/echo/echo/bad-reply",
            "*does not match https://runwire.dev/schemas/fake/echo.json#/$defs/EchoReply",
            '*frame: {"echo":1,"extra":"not allowed"}',
            "*at (root): Additional properties are not allowed*rule: additionalProperties*",
        ]
    )
    result.stdout.fnmatch_lines(["*ConformanceWarning: fake/echo/echo/should-be-loud*"])
    result.stdout.fnmatch_lines(
        ["*runwire conformance fake*", "2 passed, 1 failed, 1 skipped, 1 warned"]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_collect_only_lists_the_selected_ids(project: pytest.Pytester) -> None:
    result = project.runpytest(
        *PLUGIN, "--collect-only", "-q", "--runwire-family", "fake", *select("fake/echo/echo/s*")
    )
    assert result.ret == pytest.ExitCode.OK
    assert [line for line in result.outlines if line.startswith("test_")] == [
        ITEM.format("fake/echo/echo/should-be-loud"),
        ITEM.format("fake/echo/echo/should-level"),
        ITEM.format("fake/echo/echo/skips-itself"),
    ]


def test_baseline_ratchet_and_reports(project: pytest.Pytester, server: LoopbackServer) -> None:
    project.makefile(".yaml", baseline="- fake/echo/echo/bad-reply\n- fake/echo/echo/round-trip\n")
    result = project.runpytest(
        *PLUGIN,
        "-rxf",
        "--runwire-family",
        "fake",
        "--runwire-target",
        server.target,
        *select("fake/echo/echo/round-trip", "fake/echo/echo/bad-reply"),
        "--runwire-baseline",
        "baseline.yaml",
        "--runwire-report-dir",
        "reports",
    )
    result.assert_outcomes(failed=1, xfailed=1)
    result.stdout.fnmatch_lines(
        [
            "*fake/echo/echo/round-trip is listed in the baseline *baseline.yaml as an expected"
            " failure, but it passed: delete the entry*"
        ]
    )
    result.stdout.fnmatch_lines(["*XFAIL*expected failure (baseline*"])
    document = json.loads((project.path / "reports" / "results.json").read_text())
    validate_results(document)
    assert document["runner"] == "pytest"
    assert {c["id"]: c["baseline"] for c in document["cases"]} == {
        "fake/echo/echo/bad-reply": "expected-failure",
        "fake/echo/echo/round-trip": "stale",
    }
    suite = ET.parse(project.path / "reports" / "junit.xml").getroot().find("testsuite")
    assert suite is not None and len(suite.findall("testcase")) == 2


def test_zero_selected_cases_fail(project: pytest.Pytester) -> None:
    result = project.runpytest(*PLUGIN, "--runwire-family", "fake", *select("fake/none/*"))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no conformance case selected (15 available*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_not_configured_fails_the_conformance_item(project: pytest.Pytester) -> None:
    result = project.runpytest(*PLUGIN)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*runwire conformance is not configured*"])


def test_ini_configuration_and_a_fixture_starting_the_server(
    project: pytest.Pytester, server: LoopbackServer
) -> None:
    project.makeini(
        """
        [pytest]
        addopts = -p runwire.conformance.pytest_plugin
        runwire_family = fake
        runwire_select =
            fake/echo/echo/round-trip
            fake/echo/echo/skips-itself
        runwire_token = from-ini
        """
    )
    project.makeconftest(
        f"""
        import pytest

        @pytest.fixture(scope="session")
        def runwire_targets():
            yield {{"echo": "tcp://127.0.0.1:{server.port}"}}  # a real conftest starts it here
        """
    )
    result = project.runpytest("-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"{item('fake/echo/echo/skips-itself')} PASSED*"])


def test_a_bad_target_is_a_usage_error(project: pytest.Pytester) -> None:
    result = project.runpytest(
        *PLUGIN, "--runwire-family", "fake", "--runwire-target", "echo=ws://h:1"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*interface 'echo' (jsonlines) takes tcp://, tls://*"])


def test_the_plugin_loads_only_when_asked(project: pytest.Pytester) -> None:
    result = project.runpytest("--runwire-family", "fake")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unrecognized arguments: --runwire-family*"])


def test_a_family_without_a_test_taking_the_cases_fails(
    pytester: pytest.Pytester, fake_family: ModuleType
) -> None:
    pytester.makepyfile(test_other="def test_other():\n    pass\n")
    result = pytester.runpytest(*PLUGIN, "--runwire-family", "fake")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*no collected test takes the runwire_case fixture*"])


def test_all_skipped_fails_the_session(project: pytest.Pytester) -> None:
    result = project.runpytest(*PLUGIN, "--runwire-family", "fake", *select("fake/other"))
    result.assert_outcomes(skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["run fails: no case ran: all 1 were skipped*"])
