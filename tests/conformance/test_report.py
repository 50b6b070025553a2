"""Reports: results.json against its own schema, JUnit XML, the console display."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import runwire_test_fakefamily as FAKE
from runwire_test_fakefamily import STEP_S, LoopbackServer

from runwire.conformance import (
    Baseline,
    RunConfig,
    RunResult,
    load_family,
    parse_targets,
    resolve_options,
    run,
)
from runwire.conformance.report import (
    ConsoleReporter,
    ReportError,
    junit_tree,
    results_document,
    validate_results,
    write_reports,
)
from runwire.conformance.runner import Summary
from runwire.runtime.validation import SchemaRegistry

FAMILY = load_family(FAKE.FAMILY)
SELECTED = (
    "fake/echo/echo/round-trip",  # PASS
    "fake/echo/echo/bad-reply",  # FAIL schema
    "fake/echo/echo/crashes",  # FAIL error, listed in the baseline
    "fake/echo/echo/should-be-loud",  # WARN
    "fake/echo/count/three",  # PASS, listed in the baseline: stale
    "fake/other/ping/needs-target",  # SKIP
)


@pytest.fixture(scope="module")
def mixed_run(server: LoopbackServer) -> RunResult:
    config = RunConfig(
        targets=parse_targets([server.target], FAMILY.manifest),
        options=resolve_options(FAKE.FAMILY, {"secret_word": "hunter2"}, environ={}),
        select=SELECTED,
        step_timeout_s=STEP_S,
        baseline=Baseline.from_entries(
            ["fake/echo/echo/crashes", "fake/echo/count/three"], "known.yaml"
        ),
    )
    return run(FAMILY, config)


def test_results_document_matches_its_schema(mixed_run: RunResult) -> None:
    document = results_document(mixed_run)
    validate_results(document)
    assert (
        SchemaRegistry.from_package()
        .validator("conformance/results.json")
        .oracle_is_valid(document)
    )
    assert document["summary"] == {
        "total": 6,
        "passed": 2,
        "failed": 2,
        "warned": 1,
        "skipped": 1,
        "expected_failures": 1,
        "unexpected_failures": 1,
        "stale_baseline_entries": 1,
    }
    assert document["outcome"] == "fail" and document["exit_status"] == 1
    assert document["baseline"] == {
        "file": "known.yaml",
        "entries": ["fake/echo/echo/crashes", "fake/echo/count/three"],
        "expected_failures": ["fake/echo/echo/crashes"],
        "stale": ["fake/echo/count/three"],
        "unknown": [],
        "not_evaluated": [],
    }
    cases = {c["id"]: c for c in document["cases"]}
    assert [c["id"] for c in document["cases"]] == sorted(SELECTED)
    assert cases["fake/echo/echo/crashes"]["baseline"] == "expected-failure"
    assert cases["fake/echo/echo/crashes"]["fails_run"] is False
    assert cases["fake/echo/count/three"]["fails_run"] is True
    bad = cases["fake/echo/echo/bad-reply"]["failure"]
    assert bad["kind"] == "schema" and bad["frame"] == 1
    assert bad["violations"][0]["keyword"] == "additionalProperties"


def test_secret_options_are_masked(mixed_run: RunResult) -> None:
    options = {o["name"]: o for o in results_document(mixed_run)["options"]}
    assert options["secret_word"] == {"name": "secret_word", "value": "***", "secret": True}
    assert options["loud"]["value"] is False and options["token"]["value"] is None
    assert "hunter2" not in json.dumps(results_document(mixed_run))


def test_a_report_breaking_its_schema_is_refused(mixed_run: RunResult) -> None:
    document: dict[str, Any] = results_document(mixed_run)
    document["cases"][0]["verdict"] = "MAYBE"
    with pytest.raises(ReportError, match=r"at /cases/0/verdict: 'MAYBE' is not one of"):
        validate_results(document)
    document = results_document(mixed_run)
    document["cases"][0]["frames"][0]["surprise"] = 1
    with pytest.raises(ReportError, match=r"additionalProperties"):
        validate_results(document)


def test_write_reports(mixed_run: RunResult, tmp_path: Path) -> None:
    results, junit = write_reports(mixed_run, tmp_path / "out")
    assert (results.name, junit.name) == ("results.json", "junit.xml")
    validate_results(json.loads(results.read_text()))
    ET.parse(junit)


def test_junit_has_one_testcase_per_case(mixed_run: RunResult) -> None:
    xml = ET.tostring(junit_tree(mixed_run).getroot(), encoding="unicode")
    root = ET.fromstring(xml)  # what a CI system parses
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(SELECTED)
    by_id = {
        tc.find("properties/property[@name='case_id']").get("value"): tc  # type: ignore[union-attr]
        for tc in cases
    }
    assert sorted(by_id) == sorted(SELECTED)
    bad = by_id["fake/echo/echo/bad-reply"]
    assert (bad.get("classname"), bad.get("name")) == ("fake.echo.echo", "bad-reply")
    (failure,) = bad.findall("failure")
    assert failure.get("type") == "schema"
    assert "does not match" in (failure.get("message") or "")
    assert 'frame: {"echo":1,"extra":"not allowed"}' in (failure.text or "")
    assert "rule: additionalProperties" in (failure.text or "")
    (stale,) = by_id["fake/echo/count/three"].findall("failure")
    assert stale.get("type") == "stale-baseline"
    (expected,) = by_id["fake/echo/echo/crashes"].findall("skipped")
    assert expected.get("type") == "expected-failure"
    (skipped,) = by_id["fake/other/ping/needs-target"].findall("skipped")
    assert "no target for interface 'other'" in (skipped.get("message") or "")
    assert by_id["fake/echo/echo/round-trip"].findall("failure") == []
    warned = by_id["fake/echo/echo/should-be-loud"]
    assert warned.findall("failure") == []
    assert "warning (SHOULD): the echo should be loud" in (warned.findtext("system-out") or "")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("6", "2", "2")
    assert suite.find("properties/property[@name='target.echo']") is not None


@pytest.mark.parametrize(
    ("counts", "line"),
    [
        ((3, 0, 0, 0), "3 passed, 0 failed"),
        ((1, 2, 0, 0), "1 passed, 2 failed"),
        ((1, 2, 4, 0), "1 passed, 2 failed, 4 skipped"),
        ((0, 0, 0, 2), "0 passed, 0 failed, 2 warned"),
        ((5, 1, 2, 3), "5 passed, 1 failed, 2 skipped, 3 warned"),
    ],
)
def test_closing_line(counts: tuple[int, int, int, int], line: str) -> None:
    passed, failed, skipped, warned = counts
    summary = Summary(
        total=sum(counts),
        passed=passed,
        failed=failed,
        warned=warned,
        skipped=skipped,
        expected_failures=0,
        unexpected_failures=failed,
        stale_baseline_entries=0,
    )
    assert summary.closing_line() == line


def _console(run_result: RunResult, **options: Any) -> str:
    out = io.StringIO()
    console = ConsoleReporter(out, **options)
    cases = [r.case for r in run_result.results]
    console.run_started(run_result.family, cases)
    for index, result in enumerate(run_result.results, 1):
        console.case_started(index, len(cases), result.case)
        console.case_finished(index, len(cases), result)
    console.run_finished(run_result)
    return out.getvalue()


def test_console_ends_with_the_closing_line(mixed_run: RunResult) -> None:
    text = _console(mixed_run)
    lines = text.splitlines()
    assert lines[0] == "runwire conformance fake: 6 of 15 cases"
    assert lines[-1] == "2 passed, 2 failed, 1 skipped, 1 warned"
    assert "running" not in text  # not a terminal: no progress line
    assert "FAIL  fake/echo/echo/bad-reply" in text
    assert "rule: additionalProperties" in text
    assert "baseline: 1 expected failure (known.yaml)" in text
    assert "run fails: 1 unexpected failure: fake/echo/echo/bad-reply" in text


def test_console_progress_shows_the_running_case(mixed_run: RunResult) -> None:
    text = _console(mixed_run, progress=True)
    assert "[1/6] running fake/echo/count/three ...\r\x1b[2K" in text
    assert text.splitlines()[-1] == "2 passed, 2 failed, 1 skipped, 1 warned"


def test_quiet_console_leaves_out_passes(mixed_run: RunResult) -> None:
    text = _console(mixed_run, quiet=True)
    assert "PASS" not in text and "FAIL  fake/echo/echo/bad-reply" in text


@pytest.mark.parametrize("as_json", [True, False])
def test_a_frame_over_the_report_limit_is_cut(as_json: bool) -> None:
    from runwire.conformance.context import REPORT_FRAME_LIMIT, Frame

    big = "x" * (REPORT_FRAME_LIMIT + 10)
    frame = Frame(
        index=0,
        direction="sent",
        offset_s=0.0,
        interface="dispatcher",
        connection=1,
        value={"info": big} if as_json else None,
        is_json=as_json,
        raw=None if as_json else big.encode(),
    )
    data = frame.to_json()
    assert data["truncated"] is True
    assert len(data["text"]) == REPORT_FRAME_LIMIT
    assert "json" not in data and "base64" not in data
    assert data["size_bytes"] > REPORT_FRAME_LIMIT
    registry = SchemaRegistry.from_package()
    assert registry.validator(
        "https://runwire.dev/schemas/conformance/results.json#/$defs/Frame"
    ).is_valid(data)
