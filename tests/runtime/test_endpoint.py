"""Tests for runtime/endpoint.py: `recognise` and `SyncRunner` (no sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from runwire.generated.jobs import models
from runwire.generated.jobs.server import DispatcherServerBase
from runwire.runtime.endpoint import OperationSpec, SyncRunner, recognise
from runwire.runtime.errors import InvalidState, RemoteProtocolError

JOB_ID = "8ec71d6b-28d1-4c5e-9f1a-3b0c2d4e5f60"
DISPATCHER = DispatcherServerBase.OPERATIONS

# A made-up interface whose requests are const-tagged (as JSON-RPC-like families are).
TAGGED = (
    OperationSpec(
        name="start",
        pattern="request-reply",
        conformance_id="test/tagged/start",
        request_uri="https://runwire.dev/schemas/test/tagged.json#/$defs/Start",
        request_model=models.CancelRequest,
        tag=("op", "start"),
    ),
    OperationSpec(
        name="stop",
        pattern="request-reply",
        conformance_id="test/tagged/stop",
        request_uri="https://runwire.dev/schemas/test/tagged.json#/$defs/Stop",
        request_model=models.CancelRequest,
        tag=("op", "stop"),
    ),
)


# --- recognise -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "name"),
    [
        ({"harpcaller": 1, "host": "h", "procedure": "p", "arguments": []}, "call"),
        ({"harpcaller": 1, "cancel": JOB_ID}, "cancel"),
        ({"harpcaller": 1, "get_result": JOB_ID, "wait": True}, "get_result"),
        ({"harpcaller": 1, "get_status": JOB_ID}, "get_status"),
        ({"harpcaller": 1, "follow_stream": JOB_ID, "since": 3}, "follow_stream"),
        ({"harpcaller": 1, "read_stream": JOB_ID}, "read_stream"),
        ({"harpcaller": 1, "list_jobs": {}}, "list_jobs"),
        # recognition looks at keys only; validation comes later
        ({"cancel": None}, "cancel"),
    ],
)
def test_recognise_by_key(message: dict[str, Any], name: str) -> None:
    spec = recognise(message, DISPATCHER)
    assert spec.name == name
    assert spec is DispatcherServerBase.SPECS[name]


def test_recognise_by_const_tag() -> None:
    assert recognise({"op": "start", "x": 1}, TAGGED) is TAGGED[0]
    assert recognise({"op": "stop"}, TAGGED) is TAGGED[1]


def test_recognise_tag_value_must_match() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        recognise({"op": "pause"}, TAGGED)
    assert info.value.error_type == "bad_request"
    assert "op='start'" in info.value.message and "op='stop'" in info.value.message


def test_recognise_tag_key_absent() -> None:
    with pytest.raises(RemoteProtocolError, match="names no known operation"):
        recognise({"start": "op"}, TAGGED)


@pytest.mark.parametrize("message", [[], [{"cancel": JOB_ID}], "cancel", 1, 1.5, None, True])
def test_recognise_non_object(message: Any) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        recognise(message, DISPATCHER)
    assert info.value.error_type == "bad_request"
    assert "must be a JSON object" in info.value.message
    assert type(message).__name__ in info.value.message


def test_recognise_no_match_lists_the_keys() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        recognise({"harpcaller": 1, "frobnicate": JOB_ID}, DISPATCHER)
    assert info.value.error_type == "bad_request"
    for op in DISPATCHER:
        assert op.key is not None and op.key in info.value.message


def test_recognise_empty_object() -> None:
    with pytest.raises(RemoteProtocolError, match="names no known operation"):
        recognise({}, DISPATCHER)


def test_recognise_two_keys_is_an_error() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        recognise({"harpcaller": 1, "cancel": JOB_ID, "get_status": JOB_ID}, DISPATCHER)
    assert info.value.error_type == "bad_request"
    assert "several operations" in info.value.message
    assert "cancel" in info.value.message and "get_status" in info.value.message


def test_recognise_key_and_tag_together_is_an_error() -> None:
    mixed = (*TAGGED, DISPATCHER[1])  # tag op=start/stop, key "cancel"
    with pytest.raises(RemoteProtocolError, match="several operations: start, cancel"):
        recognise({"op": "start", "cancel": JOB_ID}, mixed)


# --- SyncRunner ----------------------------------------------------------------------------


async def _double(value: int) -> int:
    await asyncio.sleep(0)
    return 2 * value


async def _fail() -> None:
    await asyncio.sleep(0)
    raise KeyError("boom")


def test_run_returns_the_result() -> None:
    with SyncRunner() as runner:
        assert runner.run(_double(21)) == 42
        assert runner.run(_double(1)) == 2  # the loop is reused


def test_run_propagates_the_exception() -> None:
    with SyncRunner() as runner, pytest.raises(KeyError, match="boom"):
        runner.run(_fail())


def test_close_then_run_again_uses_a_new_loop() -> None:
    runner = SyncRunner()
    assert runner.run(_double(2)) == 4
    runner.close()
    runner.close()  # idempotent
    assert runner.run(_double(3)) == 6
    runner.close()


def test_context_manager_closes_the_loop() -> None:
    with SyncRunner() as runner:
        loop = runner.run(_running_loop())
        assert not loop.is_closed()
    assert loop.is_closed()


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


class Recorder:
    """An async generator of 0..count-1 that records how it ended."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.yielded = 0
        self.closed_early = False
        self.finished = False

    async def items(self) -> AsyncIterator[int]:
        try:
            for i in range(self.count):
                await asyncio.sleep(0)
                self.yielded += 1
                yield i
            self.finished = True
        except GeneratorExit:
            self.closed_early = True
            raise


def test_iterate_yields_every_item_in_order() -> None:
    recorder = Recorder(5)
    with SyncRunner() as runner:
        assert list(runner.iterate(recorder.items())) == [0, 1, 2, 3, 4]
    assert recorder.finished and not recorder.closed_early


def test_iterate_early_close_calls_aclose() -> None:
    recorder = Recorder(100)
    with SyncRunner() as runner:
        iterator = runner.iterate(recorder.items())
        assert next(iterator) == 0
        assert next(iterator) == 1
        iterator.close()
        assert recorder.closed_early
        assert recorder.yielded == 2
        assert not recorder.finished


def test_iterate_break_calls_aclose() -> None:
    recorder = Recorder(100)
    with SyncRunner() as runner:
        for item in runner.iterate(recorder.items()):
            if item == 3:
                break
        assert recorder.closed_early and recorder.yielded == 4


def test_iterate_early_close_finishes_nested_generators() -> None:
    """Closing an async generator that iterates another one (as the generated clients do)
    also closes the inner one before `close()` returns."""
    inner_closed = []

    async def inner() -> AsyncIterator[int]:
        try:
            for i in range(100):
                await asyncio.sleep(0)
                yield i
        finally:
            await asyncio.sleep(0)  # an async clean-up, as closing a connection is
            inner_closed.append(True)

    async def outer() -> AsyncIterator[int]:
        async for i in inner():  # no aclosing(): the inner one is closed by asyncio
            yield i

    with SyncRunner() as runner:
        iterator = runner.iterate(outer())
        assert next(iterator) == 0
        iterator.close()
        assert inner_closed == [True]


def test_iterate_exception_propagates() -> None:
    async def broken() -> AsyncIterator[int]:
        yield 1
        raise ValueError("bad item")

    with SyncRunner() as runner:
        iterator = runner.iterate(broken())
        assert next(iterator) == 1
        with pytest.raises(ValueError, match="bad item"):
            next(iterator)


def test_iterate_plain_async_iterator_without_aclose() -> None:
    class Countdown:
        def __init__(self) -> None:
            self.left = 3

        def __aiter__(self) -> Countdown:
            return self

        async def __anext__(self) -> int:
            if self.left == 0:
                raise StopAsyncIteration
            self.left -= 1
            return self.left

    with SyncRunner() as runner:
        assert list(runner.iterate(Countdown())) == [2, 1, 0]
        iterator = runner.iterate(Countdown())
        assert next(iterator) == 2
        iterator.close()  # no aclose to call: must not fail


def test_run_refuses_inside_a_running_loop() -> None:
    runner = SyncRunner()

    async def inside() -> None:
        coroutine = _double(1)
        try:
            with pytest.raises(InvalidState, match="inside an event loop"):
                runner.run(coroutine)
        finally:
            coroutine.close()

    asyncio.run(inside())
    assert runner._loop is None  # no private loop was made
    runner.close()


def test_iterate_refuses_inside_a_running_loop() -> None:
    runner = SyncRunner()
    recorder = Recorder(3)

    async def inside() -> None:
        items = recorder.items()
        iterator = runner.iterate(items)
        with pytest.raises(InvalidState, match="inside an event loop"):
            next(iterator)
        await items.aclose()

    asyncio.run(inside())
    assert recorder.yielded == 0
    runner.close()


# --- SyncRunner interrupted (Ctrl-C) ------------------------------------------------------------


@pytest.fixture
def leftovers(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Callable[[], list[str]]:
    """Call it at the end of a test: what asyncio and the interpreter complained about
    (unraisable exceptions such as "Exception ignored ... aclose()", "Task was destroyed but
    it is pending", "Task exception was never retrieved"), after a garbage collection."""
    unraisable: list[str] = []
    monkeypatch.setattr(
        sys, "unraisablehook", lambda report: unraisable.append(repr(report.exc_value))
    )
    caplog.set_level(logging.ERROR, logger="asyncio")

    def collect() -> list[str]:
        gc.collect()
        return unraisable + [record.getMessage() for record in caplog.records]

    return collect


def _interrupt_soon() -> None:
    """Make the running loop raise KeyboardInterrupt on its next turn, outside any task: what
    SIGINT does when it arrives while the loop waits in select()."""

    def interrupt() -> None:
        raise KeyboardInterrupt

    asyncio.get_running_loop().call_soon(interrupt)


async def _wait_forever() -> None:
    await asyncio.Event().wait()  # as a follow waits for the next packet


def test_iterate_interrupted_while_waiting_ends_the_iterator_cleanly(
    leftovers: Callable[[], list[str]],
) -> None:
    cleaned: list[str] = []

    async def inner() -> AsyncIterator[int]:
        try:
            yield 0
            _interrupt_soon()
            await _wait_forever()
            yield 1
        finally:
            await asyncio.sleep(0)  # an async clean-up, as closing a connection is
            cleaned.append("inner")

    async def outer() -> AsyncIterator[int]:
        async with contextlib.aclosing(inner()) as items:
            async for item in items:
                yield item

    items = outer()
    runner = SyncRunner()
    iterator = runner.iterate(items)
    assert next(iterator) == 0
    with pytest.raises(KeyboardInterrupt):  # not "aclose(): ... already running"
        next(iterator)
    assert cleaned == ["inner"]
    assert items.ag_frame is None  # finished: nothing left for asyncio to close later
    assert runner.run(_double(4)) == 8  # the runner still works
    runner.close()
    assert leftovers() == []


def test_run_interrupted_while_waiting_finishes_the_coroutine(
    leftovers: Callable[[], list[str]],
) -> None:
    cleaned: list[str] = []

    async def lines() -> AsyncIterator[str]:
        try:
            _interrupt_soon()
            await _wait_forever()
            yield "reply"
        finally:
            await asyncio.sleep(0)
            cleaned.append("lines")

    async def request() -> str:
        try:
            async for line in lines():  # no aclosing: asyncio closes it in a task of its own
                return line
            return "no reply"
        finally:
            await asyncio.sleep(0)
            cleaned.append("request")

    with SyncRunner() as runner:
        with pytest.raises(KeyboardInterrupt):
            runner.run(request())
        assert cleaned == ["lines", "request"]
        assert runner.run(_double(5)) == 10
    assert leftovers() == []


def test_keyboard_interrupt_raised_inside_the_iterator_propagates_as_is(
    leftovers: Callable[[], list[str]],
) -> None:
    async def items() -> AsyncIterator[int]:
        yield 0
        raise KeyboardInterrupt

    with SyncRunner() as runner:
        iterator = runner.iterate(items())
        assert next(iterator) == 0
        with pytest.raises(KeyboardInterrupt):
            next(iterator)
    assert leftovers() == []


def test_close_finishes_what_is_left_on_the_loop(leftovers: Callable[[], list[str]]) -> None:
    """A task still pending and an async generator left suspended are cancelled and closed
    on the loop before it closes, not garbage-collected after."""
    cleaned: list[str] = []

    async def background() -> None:
        try:
            await _wait_forever()
        finally:
            await asyncio.sleep(0)
            cleaned.append("task")

    async def numbers() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            await asyncio.sleep(0)
            cleaned.append("generator")

    async def start(items: AsyncIterator[int]) -> int:
        asyncio.get_running_loop().create_task(background())
        return await anext(items)

    runner = SyncRunner()
    assert runner.run(start(numbers())) == 1
    runner.close()
    assert sorted(cleaned) == ["generator", "task"]
    assert leftovers() == []
