"""Tests for runtime/closing.py: each mixin closes exactly once and never hides an exception."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from runwire.runtime.closing import AclosingContext, AsyncClosingContext, ClosingContext

T = TypeVar("T")
TEST_TIMEOUT_S = 5.0  # bound on one scenario


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            return await coroutine

    return asyncio.run(bounded())


class Boom(Exception):
    """Raised inside the block."""


class Counted(ClosingContext):
    def __init__(self) -> None:
        self.closes = 0

    def close(self) -> None:
        self.closes += 1


class AsyncCounted(AsyncClosingContext):
    def __init__(self) -> None:
        self.closes = 0
        self.finished = 0

    def close(self) -> None:
        self.closes += 1
        self.finished += 1


class Acounted(AclosingContext):
    def __init__(self) -> None:
        self.closes = 0
        self.finished = 0

    async def aclose(self) -> None:
        self.closes += 1
        # Suspend for one loop turn: leaving the block must await aclose() to the end.
        loop = asyncio.get_running_loop()
        turn = loop.create_future()
        loop.call_soon(turn.set_result, None)
        await turn
        self.finished += 1


ASYNC_MIXINS = pytest.mark.parametrize("make", [AsyncCounted, Acounted])


# --- ClosingContext -----------------------------------------------------------------------


def test_with_returns_the_object_and_closes_once() -> None:
    thing = Counted()
    with thing as entered:
        assert entered is thing
        assert thing.closes == 0
    assert thing.closes == 1


def test_with_closes_once_and_propagates_the_exception() -> None:
    thing = Counted()
    with pytest.raises(Boom), thing:
        raise Boom
    assert thing.closes == 1


def test_an_error_from_close_propagates_chained_to_the_block_error() -> None:
    class FailingClose(ClosingContext):
        def close(self) -> None:
            raise OSError("close failed")

    with pytest.raises(OSError, match="close failed") as caught, FailingClose():
        raise Boom
    assert isinstance(caught.value.__context__, Boom)


def test_the_close_of_a_later_base_is_the_one_called() -> None:
    class HasClose:
        def __init__(self) -> None:
            self.closed_by = ""

        def close(self) -> None:
            self.closed_by = "HasClose"

    class MixinFirst(ClosingContext, HasClose):
        pass

    class MixinLast(HasClose, ClosingContext):
        pass

    for cls in (MixinFirst, MixinLast):
        thing = cls()
        with thing:
            pass
        assert thing.closed_by == "HasClose", cls


# --- AsyncClosingContext (close()) and AclosingContext (await aclose()) ------------------


@ASYNC_MIXINS
def test_async_with_returns_the_object_and_closes_once(
    make: type[AsyncCounted | Acounted],
) -> None:
    async def scenario() -> AsyncCounted | Acounted:
        thing = make()
        async with thing as entered:
            assert entered is thing
            assert thing.closes == 0
        assert thing.finished == 1  # closed to the end before the block is left
        return thing

    assert run(scenario()).closes == 1


@ASYNC_MIXINS
def test_async_with_closes_once_and_propagates_the_exception(
    make: type[AsyncCounted | Acounted],
) -> None:
    thing = make()

    async def scenario() -> None:
        async with thing:
            raise Boom

    with pytest.raises(Boom):
        run(scenario())
    assert (thing.closes, thing.finished) == (1, 1)
