"""Fixtures for the conformance runner's tests: the fake family and its loopback server.

Test modules import the fake family as ``runwire_test_fakefamily`` (loaded here first).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

from runwire.conformance import family as family_module

if TYPE_CHECKING:
    from runwire_test_fakefamily import LoopbackServer

FAKE_MODULE = "runwire_test_fakefamily"


def _load_fake() -> ModuleType:
    if FAKE_MODULE in sys.modules:
        return sys.modules[FAKE_MODULE]
    spec = importlib.util.spec_from_file_location(
        FAKE_MODULE, Path(__file__).with_name("fakefamily.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[FAKE_MODULE] = module
    spec.loader.exec_module(module)
    return module


FAKE = _load_fake()


@pytest.fixture
def fake_family(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The fake family module, reachable as family "fake" in the family table."""
    monkeypatch.setitem(family_module.FAMILIES, "fake", FAKE_MODULE)
    monkeypatch.delenv("RUNWIRE_FAKE_SECRET", raising=False)
    return FAKE


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    running = FAKE.LoopbackServer()
    running.start()
    yield running
    running.stop()
