"""Codegen output is deterministic, carries its banner, and the drift check catches changes."""

from __future__ import annotations

import json
import re
import shutil
from importlib import resources
from pathlib import Path

import pytest

from runwire.codegen.generate import build, check, diff_trees, inputs_digest, write
from runwire.codegen.model import SchemaTree, load_families
from runwire.main import main

SCHEMAS = Path(str(resources.files("runwire.schemas")))
GENERATED = Path(str(resources.files("runwire.generated")))


@pytest.fixture(scope="module")
def built() -> dict[str, str]:
    return build(SCHEMAS)


@pytest.fixture
def schemas(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, target, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    return target


def test_two_builds_are_byte_identical(built: dict[str, str]) -> None:
    assert build(SCHEMAS) == built


def test_every_generated_file_opens_with_the_banner(built: dict[str, str]) -> None:
    digest = inputs_digest(SchemaTree.load(SCHEMAS), load_families(SchemaTree.load(SCHEMAS))[0])
    for path, text in built.items():
        first = text.splitlines()[0] if not path.endswith(".json") else json.loads(text)["$comment"]
        assert "DO NOT EDIT" in first, path
        assert re.search(r"datamodel-code-generator \d+\.\d+", first), path
        if path.startswith("jobs/"):
            assert f"sha256:{digest}" in first, path


def test_the_shipped_generated_tree_is_up_to_date(built: dict[str, str], tmp_path: Path) -> None:
    write(built, tmp_path / "fresh")
    assert diff_trees(tmp_path / "fresh", GENERATED) == []


def test_a_changed_default_is_drift_and_shows_in_the_diff(schemas: Path, tmp_path: Path) -> None:
    out = tmp_path / "generated"
    write(build(schemas), out)
    assert check(schemas, out) == []
    path = schemas / "jobs" / "dispatcher.json"
    text = path.read_text()
    assert '"default": false' in text
    path.write_text(text.replace('"default": false', '"default": true', 1))
    diff = "".join(check(schemas, out))
    assert "--- generated/jobs/models.py" in diff
    assert "+    wait: bool = True" in diff
    assert "-    wait: bool = False" in diff


def test_added_and_removed_files_are_drift(built: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "generated"
    write(built, out)
    (out / "jobs" / "stray.py").write_text("x = 1\n")
    (out / "jobs" / "reference.md").unlink()
    diff = "".join(diff_trees(_fresh(built, tmp_path), out))
    assert "--- generated/jobs/stray.py\n+++ /dev/null" in diff
    assert "--- /dev/null\n+++ regenerated/jobs/reference.md" in diff


def _fresh(built: dict[str, str], tmp_path: Path) -> Path:
    fresh = tmp_path / "fresh"
    write(built, fresh)
    return fresh


def test_write_removes_stale_files_and_keeps_caches(built: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "generated"
    (out / "jobs" / "__pycache__").mkdir(parents=True)
    (out / "jobs" / "__pycache__" / "x.pyc").write_bytes(b"")
    (out / "gone").mkdir()
    (out / "gone" / "old.py").write_text("")
    write(built, out)
    assert not (out / "gone").exists()
    assert (out / "jobs" / "__pycache__" / "x.pyc").exists()
    assert diff_trees(_fresh(built, tmp_path), out) == []


def test_cli_check_exit_codes(
    schemas: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "generated"
    assert main(["codegen", "--schemas", str(schemas), "--out", str(out)]) == 0
    assert main(["codegen", "--check", "--schemas", str(schemas), "--out", str(out)]) == 0
    (out / "jobs" / "models.py").write_text("# edited by hand\n")
    capsys.readouterr()
    assert main(["codegen", "--check", "--schemas", str(schemas), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "-# edited by hand" in captured.out
    assert "tox -e codegen" in captured.err


def test_cli_refuses_a_folder_that_is_not_schemas(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["codegen", "--schemas", str(tmp_path), "--out", str(tmp_path / "g")]) == 2
    assert "not a runwire schemas folder" in capsys.readouterr().err


def test_one_class_per_definition(built: dict[str, str]) -> None:
    tree = SchemaTree.load(SCHEMAS)
    models = built["jobs/models.py"]
    names = {
        name
        for rel in tree.schema_paths()
        if rel.startswith("jobs/")
        for name in tree.documents[rel]["$defs"]
    }
    for name in names:
        assert re.search(rf"^class {name}\(\s*Wire(Root)?Model", models, re.M), name
    assert not re.search(r"^class \w+\d\(", models, re.M), "numbered anonymous classes"
