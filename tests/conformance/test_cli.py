"""``runwire conformance``: help, --list, --coverage, runs, reports, exit statuses."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from runwire_test_fakefamily import LoopbackServer

from runwire.commands.conformance import readme_text
from runwire.conformance import FamilySpec
from runwire.conformance import family as family_module
from runwire.conformance.report import validate_results
from runwire.main import main

ROOT = Path(__file__).resolve().parents[2]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        status = main(["conformance", *argv])
    except SystemExit as exc:  # argparse usage errors
        status = int(exc.code or 0)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_help_is_the_readme(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "--help")
    assert status == 0
    readme = (ROOT / "conformance" / "README.md").read_text()
    assert readme_text() == readme  # the packaged text is the README
    assert readme.strip() in out
    assert "## What a server under test must offer (jobs)" in out


def test_family_help_lists_common_and_family_options(
    fake_family: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run_cli(capsys, "fake", "--help")
    assert status == 0
    for flag in ("--target", "--select", "--exclude", "--list", "--coverage", "--timeout"):
        assert flag in out
    assert "fake options:" in out and "--token TOKEN" in out and "--loud" in out
    assert "(env RUNWIRE_FAKE_SECRET)" in out


def test_list_prints_one_line_per_selected_case(
    fake_family: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run_cli(capsys, "fake", "--list", "--select", "fake/echo/echo/s*")
    assert status == 0
    assert out.splitlines() == [
        "fake/echo/echo/should-be-loud  a SHOULD rule that does not hold",
        "fake/echo/echo/should-level    a SHOULD-level case whose check fails [SHOULD]",
        "fake/echo/echo/skips-itself    needs the token option",
    ]


def test_list_of_nothing_fails(fake_family: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run_cli(capsys, "fake", "--list", "--select", "nothing/*")
    assert (status, out) == (1, "")
    assert "no case selected (15 available" in err


def test_coverage_reports_operations_without_a_case(
    fake_family: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run_cli(capsys, "fake", "--coverage")
    assert status == 1
    lines = out.splitlines()
    assert "fake/echo/unused  (request-reply): NO CASE" in lines
    count = lines.index("fake/echo/count  (request-stream): 2 cases")
    assert lines[count + 1 : count + 3] == [
        "    fake/echo/count/three",
        "    fake/echo/misc/also-counts",
    ]
    assert "fake/other/ping  (request-reply): 1 case" in lines
    assert lines[-1] == "4 operations, 3 covered, 1 without a case: fake/echo/unused"


def test_a_run_writes_reports_and_ends_with_the_closing_line(
    fake_family: ModuleType,
    server: LoopbackServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run_cli(
        capsys,
        "fake",
        "--target",
        server.target,
        "--select",
        "fake/echo/echo/round-trip",
        "--select",
        "fake/echo/echo/bad-reply",
        "--select",
        "fake/other",
        "--timeout",
        "0.5",
        "--report-dir",
        str(tmp_path),
    )
    assert status == 1
    lines = out.splitlines()
    assert lines[-1] == "1 passed, 1 failed, 1 skipped"
    assert f"reports: {tmp_path / 'results.json'}, {tmp_path / 'junit.xml'}" in lines
    document = json.loads((tmp_path / "results.json").read_text())
    validate_results(document)
    assert [c["verdict"] for c in document["cases"]] == ["FAIL", "PASS", "SKIP"]
    assert document["timeouts"] == {"step_s": 0.5, "case_s": None}


def test_a_baseline_lets_a_known_failure_pass(
    fake_family: ModuleType,
    server: LoopbackServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    baseline = tmp_path / "baseline.yaml"
    baseline.write_text("# known\n- fake/echo/echo/bad-reply\n")
    argv = ["fake", "--target", server.target, "--select", "fake/echo/echo/bad-reply"]
    status, out, _ = run_cli(capsys, *argv, "--baseline", str(baseline))
    assert status == 0, out
    assert out.splitlines()[-2:] == [
        f"baseline: 1 expected failure ({baseline})",
        "0 passed, 1 failed",
    ]
    baseline.write_text('["fake/echo/echo/bad-reply", "fake/echo/echo/round-trip"]')
    status, out, _ = run_cli(
        capsys, *argv, "--select", "fake/echo/echo/round-trip", "--baseline", str(baseline)
    )
    assert status == 1
    assert "stale baseline entry" in out


def test_passing_run_exits_zero_and_family_options_reach_cases(
    fake_family: ModuleType, server: LoopbackServer, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run_cli(
        capsys,
        "fake",
        "--target",
        server.target,
        "--select",
        "fake/echo/echo/skips-itself",
        "--select",
        "fake/echo/echo/round-trip",
        "--token",
        "abc",
        "-q",
    )
    assert status == 0, out
    assert out.splitlines()[-1] == "2 passed, 0 failed"
    assert "PASS" not in out  # quiet


def test_zero_selected_run_fails(
    fake_family: ModuleType, server: LoopbackServer, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run_cli(capsys, "fake", "--target", server.target, "--select", "x/y/z/w")
    assert status == 1
    assert out.splitlines()[-2:] == [
        "run fails: no case selected (15 available; check --select and --exclude)",
        "0 passed, 0 failed",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target", "tcp://127.0.0.1:1"], "name the interface, e.g. echo=tcp://127.0.0.1:1"),
        (["--target", "nope=tcp://h:1"], "family 'fake' has no interface 'nope'"),
        (["--target", "echo=ws://h:1"], "interface 'echo' (jsonlines) takes tcp://, tls://"),
        (["--target", "echo=tcp://h:1", "--target", "echo=tcp://h:2"], "given twice"),
        (["--baseline", "/nonexistent/baseline.yaml"], "baseline /nonexistent/baseline.yaml"),
    ],
)
def test_usage_errors_exit_2(
    fake_family: ModuleType,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    status, _, err = run_cli(capsys, "fake", *argv)
    assert status == 2
    assert message in err


def test_bad_option_values_are_argparse_errors(
    fake_family: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run_cli(capsys, "fake", "--timeout", "0")
    assert status == 2 and "must be more than 0 seconds" in err
    status, _, err = run_cli(capsys, "fake", "--no-such-option")
    assert status == 2 and "unrecognized arguments: --no-such-option" in err


def test_a_family_without_cases_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ghost = ModuleType("runwire_test_ghost")
    ghost.FAMILY = FamilySpec(  # type: ignore[attr-defined]
        name="jobs", title="jobs without cases", case_modules=("runwire_test_ghost.cases",)
    )
    monkeypatch.setitem(sys.modules, "runwire_test_ghost", ghost)
    monkeypatch.setitem(family_module.FAMILIES, "jobs", "runwire_test_ghost")
    status, _, err = run_cli(capsys, "jobs", "--list")
    assert status == 2
    assert "family jobs has no cases yet: module runwire_test_ghost.cases is missing" in err
