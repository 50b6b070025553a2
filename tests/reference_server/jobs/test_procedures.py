"""Tests of the procedure decorators and registry (runwire.reference_server.jobs.procedures),
and of the child-side helpers in runwire.reference_server.jobs.worker."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from runwire.reference_server.jobs import conformance_procedures
from runwire.reference_server.jobs.procedures import (
    ModuleSource,
    ProcedureInfo,
    ProcedureRegistry,
    Result,
    procedure,
    procedure_info,
    streaming_procedure,
)
from runwire.reference_server.jobs.worker import NotJson, encode_value, exception_info

HERE = Path(__file__).resolve().parent
AGENT_PROCEDURES = HERE / "agent_procedures.py"
CONFORMANCE = "runwire.reference_server.jobs.conformance_procedures"


def test_bare_decorator_keeps_the_function_and_its_name() -> None:
    @procedure
    def hello(name: str) -> str:
        return f"hello {name}"

    assert hello("x") == "hello x"
    assert procedure_info(hello) == ProcedureInfo("hello", streaming=False, timeout_s=None)


def test_called_decorator_sets_name_and_time_limit() -> None:
    @procedure("say-hello", timeout_s=5)
    def hello() -> None:
        pass

    @procedure(timeout_s=2.5)
    def other() -> None:
        pass

    @streaming_procedure("lines", timeout_s=1)
    def lines() -> Iterator[int]:
        yield 1

    assert procedure_info(hello) == ProcedureInfo("say-hello", False, 5.0)
    assert procedure_info(other) == ProcedureInfo("other", False, 2.5)
    assert procedure_info(lines) == ProcedureInfo("lines", True, 1.0)
    assert procedure_info(len) is None


@pytest.mark.parametrize("name", ["", "x" * 256, 7])
def test_bad_names_are_refused(name: Any) -> None:
    with pytest.raises(ValueError, match="procedure name"):
        procedure(name)


@pytest.mark.parametrize("timeout_s", [0, -1, True, "5"])
def test_bad_time_limits_are_refused(timeout_s: Any) -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        procedure(timeout_s=timeout_s)


def test_generators_need_the_streaming_decorator() -> None:
    def numbers() -> Iterator[int]:
        yield 1

    async def async_numbers() -> AsyncIterator[int]:
        yield 1

    async def coroutine() -> None:
        pass

    with pytest.raises(TypeError, match="streaming_procedure"):
        procedure(numbers)
    with pytest.raises(TypeError, match="streaming_procedure"):
        procedure(async_numbers)
    with pytest.raises(TypeError, match="coroutine function"):
        streaming_procedure(coroutine)
    assert procedure_info(streaming_procedure(async_numbers)) is not None


def test_load_module_by_name_registers_the_conformance_procedures() -> None:
    registry = ProcedureRegistry()
    names = registry.load_module(CONFORMANCE)
    expected = ["add", "echo", "fail", "not_json", "sleep", "stream", "stream_limited"]
    assert sorted(names) == registry.names() == expected
    assert all(p.is_async for p in registry)
    limited = registry.get("stream_limited")
    assert limited is not None and limited.streaming and limited.timeout_s == 1.0
    echo = registry.get("echo")
    assert echo is not None and not echo.streaming and echo.timeout_s is None
    assert registry.get("STREAM_LIMITED_TIMEOUT_S") is None
    assert "echo" in registry and "asyncio" not in registry
    assert registry.modules == [ModuleSource("module", CONFORMANCE)]


def test_conformance_procedures_behave_as_documented() -> None:
    async def scenario() -> None:
        assert await conformance_procedures.echo(1, 2) == [1, 2]
        assert await conformance_procedures.echo(a=1) == {"a": 1}
        assert await conformance_procedures.echo() == []
        assert await conformance_procedures.add(2, 3) == 5
        values = [v async for v in conformance_procedures.stream(3)]
        assert values == [0, 1, 2, Result(3)]
        assert await conformance_procedures.sleep(0) == 0
        with pytest.raises(RuntimeError, match="boom"):
            await conformance_procedures.fail("boom")
        with pytest.raises(NotJson):
            encode_value(await conformance_procedures.not_json(), 1000)

    asyncio.run(scenario())
    for name in conformance_procedures.__all__:
        assert f"``{name}(" in (conformance_procedures.__doc__ or "")


def test_load_module_by_path(tmp_path: Path) -> None:
    registry = ProcedureRegistry()
    names = registry.load_module(str(AGENT_PROCEDURES))
    assert "sync_sleep_marked" in names and "sleep_marked" not in names
    marked = registry.get("sync_sleep_marked")
    assert marked is not None and not marked.is_async
    assert marked.source == ModuleSource("file", str(AGENT_PROCEDURES))
    assert marked.qualname == "sleep_marked"
    assert marked.resolve() is marked.function
    # the file's module is loaded once, under a stable name
    again = ProcedureRegistry()
    again.load_module(str(AGENT_PROCEDURES))
    assert again.get("sync_echo") is not None
    assert again.get("sync_echo").function is registry.get("sync_echo").function  # type: ignore[union-attr]


def test_module_without_procedures_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty_procs.py"
    empty.write_text("def plain():\n    return 1\n")
    with pytest.raises(ValueError, match="no procedures found"):
        ProcedureRegistry().load_module(str(empty))


def test_missing_or_broken_modules_raise_import_errors(tmp_path: Path) -> None:
    with pytest.raises(ImportError):
        ProcedureRegistry().load_module(str(tmp_path / "missing.py"))
    with pytest.raises(ImportError):
        ProcedureRegistry().load_module("runwire_no_such_module_here")
    broken = tmp_path / "broken_procs.py"
    broken.write_text("raise RuntimeError('at import')\n")
    with pytest.raises(RuntimeError, match="at import"):
        ProcedureRegistry().load_module(str(broken))
    assert ModuleSource.parse(str(broken)).module_name not in sys.modules


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    clash = tmp_path / "clash_procs.py"
    clash.write_text(
        "from runwire.reference_server.jobs.procedures import procedure\n"
        "@procedure('echo')\nasync def my_echo(*a):\n    return a\n"
    )
    registry = ProcedureRegistry()
    registry.load_module(CONFORMANCE)
    with pytest.raises(ValueError, match="registered twice"):
        registry.load_module(str(clash))


def test_register_plain_functions() -> None:
    registry = ProcedureRegistry()

    async def local_async(x: int) -> int:
        return x

    entry = registry.register(local_async, "double", timeout_s=3)
    assert (entry.name, entry.is_async, entry.timeout_s, entry.streaming) == (
        "double",
        True,
        3.0,
        False,
    )

    def local_sync() -> None:
        pass

    with pytest.raises(ValueError, match="child process"):
        registry.register(local_sync)
    # a module-level sync function of an importable module is fine
    entry = registry.register(json.dumps, "dumps")
    assert entry.source == ModuleSource("module", "json") and not entry.is_async


def test_module_source_parse() -> None:
    assert ModuleSource.parse("pkg.mod") == ModuleSource("module", "pkg.mod")
    parsed = ModuleSource.parse("examples/jobs/procedures.py")
    assert parsed.kind == "file" and Path(parsed.location).is_absolute()
    assert parsed.module_name.startswith("runwire_procedures_procedures_")


def test_encode_value_checks_json_and_size() -> None:
    assert json.loads(encode_value({"a": [1, 2.5, None, "é"]}, 100)) == {"a": [1, 2.5, None, "é"]}
    for bad in ({1, 2}, float("nan"), float("inf"), object(), "\ud800"):
        with pytest.raises(NotJson):
            encode_value(bad, 1000)
    with pytest.raises(NotJson, match="more than the limit of 10"):
        encode_value("x" * 20, 10)
    nested: Any = []
    for _ in range(100_000):
        nested = [nested]
    with pytest.raises(NotJson):
        encode_value(nested, 10**9)


def test_exception_info_shape() -> None:
    info = exception_info(ValueError("boom"))
    assert info == {
        "type": "ValueError",
        "message": "boom",
        "data": {"class": "ValueError", "module": "builtins"},
    }

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert exception_info(Unprintable())["message"] == "<unprintable Unprintable>"
    long = exception_info(RuntimeError("x" * 100_000))["message"]
    assert len(long) < 20_000 and long.endswith("[cut]")
