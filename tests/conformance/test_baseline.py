"""Reading baseline files (their judging is in test_runner.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runwire.conformance import Baseline, BaselineStatus, ConformanceConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "baseline.yaml"
    path.write_text(text)
    return path


def test_yaml_json_and_empty(tmp_path: Path) -> None:
    yaml_file = write(tmp_path, "# comment\n- jobs/a/b/c\n- jobs/a/b/d  # why\n")
    assert Baseline.load(yaml_file).entries == ("jobs/a/b/c", "jobs/a/b/d")
    json_file = tmp_path / "b.json"
    json_file.write_text('["jobs/a/b/c"]')
    assert Baseline.load(json_file).entries == ("jobs/a/b/c",)
    assert Baseline.load(write(tmp_path, "# nothing yet\n")).entries == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("jobs/a/b/c: x\n", "must be a list of case ids"),
        ("- 3\n", "entry 1 is 3; each entry is a case id string"),
        ("- jobs/a/*\n", "globs are not allowed here"),
        ("- jobs/a/b/c\n- jobs/a/b/c\n", "jobs/a/b/c is listed twice"),
        ("- [unclosed\n", "not YAML or JSON"),
    ],
)
def test_malformed_files_say_how_to_fix_them(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(
        ConformanceConfigError, match=message.replace("*", r"\*").replace("[", r"\[")
    ):
        Baseline.load(write(tmp_path, text))


def test_status() -> None:
    baseline = Baseline.from_entries(["jobs/a/b/c"])
    assert baseline.status("jobs/a/b/c", True) is BaselineStatus.EXPECTED_FAILURE
    assert baseline.status("jobs/a/b/c", False) is BaselineStatus.STALE
    assert baseline.status("jobs/a/b/c", None) is BaselineStatus.NOT_EVALUATED
    assert baseline.status("jobs/a/b/d", True) is BaselineStatus.NOT_LISTED
    assert baseline.unknown(["jobs/a/b/d"]) == ["jobs/a/b/c"]
