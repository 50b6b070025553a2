"""One distribution, runwire, importable as runwire.<folder> with the schemas as package data."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import runwire

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def test_every_source_package_is_listed() -> None:
    found = set()
    for package, folder in SETUPTOOLS["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *rel)))
    listed = set(SETUPTOOLS["packages"])
    # a subpackage maps either through its own package-dir entry or under its parent's
    assert found - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - found == set(), "listed packages without an __init__.py"


def test_installed_package_works_outside_the_source_tree(tmp_path: Path) -> None:
    script = (
        "import json, runwire, runwire.generated.jobs as jobs\n"
        "from importlib.resources import files\n"
        "from runwire.runtime.validation import SchemaRegistry\n"
        "schema = json.loads(files('runwire.schemas').joinpath('jobs/dispatcher.json').read_text())\n"
        "fixtures = list(files('runwire.generated').joinpath('jobs/fixtures/CallRequest').iterdir())\n"
        "registry = SchemaRegistry.from_package()\n"
        "ok = registry.validator('jobs/dispatcher.json#/$defs/CallReply').is_valid(\n"
        "    {'harpcaller': 1, 'job_id': '8ec71d6b-28d1-4c5e-9f1a-3b0c2d4e5f60'})\n"
        "print(schema['$id'], len(fixtures) > 5, ok, jobs.DispatcherClient.DEFAULT_PORT)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "https://runwire.dev/schemas/jobs/dispatcher.json",
        "True",
        "True",
        "3502",
    ]


@pytest.mark.skipif(
    "TOX_ENV_DIR" not in os.environ, reason="only under tox, which installs the wheel"
)
def test_tox_tests_the_built_wheel_not_the_source_tree() -> None:
    installed = Path(runwire.__file__).resolve()
    assert Path(os.environ["TOX_ENV_DIR"]).resolve() in installed.parents
    assert "site-packages" in installed.parts
    assert installed != (ROOT / "cli" / "__init__.py").resolve()


def test_console_script_entry_point_names_main() -> None:
    assert PYPROJECT["project"]["scripts"]["runwire"] == "runwire.main:main"
    result = subprocess.run(
        [sys.executable, "-m", "runwire", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == f"runwire {runwire.__version__}"
