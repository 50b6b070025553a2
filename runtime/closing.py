"""Context-manager mixins for classes that already know how to close themselves.

Each mixin adds only the ``with`` (or ``async with``) protocol: entering returns the
object itself, leaving calls its close method exactly once, whether the block ended
normally or by an exception, and never suppresses that exception. The close method is
the class's own; no mixin defines one, so none can shadow it whatever the base order.
mypy checks that a class using a mixin has the method: ``__exit__``'s ``self`` is typed
with a protocol naming it (mypy's "mixin with a self-type protocol" pattern), so a
``with`` on a class without it is a type error.

================================  =================  ==============================
mixin                             statement          leaving the block
================================  =================  ==============================
:class:`ClosingContext`           ``with``           ``self.close()``
:class:`AsyncClosingContext`      ``async with``     ``self.close()`` (a plain method)
:class:`AclosingContext`          ``async with``     ``await self.aclose()``
================================  =================  ==============================

(The names follow :func:`contextlib.closing` and :func:`contextlib.aclosing`, which wrap
an object instead of being a base of its class.)
"""

from __future__ import annotations

from collections.abc import Awaitable
from types import TracebackType
from typing import Protocol, Self

__all__ = ["AclosingContext", "AsyncClosingContext", "ClosingContext"]


class _SupportsClose(Protocol):
    """Anything with a plain ``close()`` taking no arguments (its result is ignored)."""

    def close(self) -> object: ...


class _SupportsAclose(Protocol):
    """Anything with an ``aclose()`` taking no arguments and returning an awaitable."""

    def aclose(self) -> Awaitable[object]: ...


class ClosingContext:
    """``with obj as same_obj:``; leaving the block calls ``obj.close()`` once.

    For a class with a plain (blocking) ``close()``. ``__enter__`` returns the object
    itself. ``__exit__`` returns None, so an exception raised in the block propagates after
    ``close()`` has run; an exception raised by ``close()`` propagates too (chained onto
    the block's exception, if there was one).
    """

    __slots__ = ()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self: _SupportsClose,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClosingContext:
    """``async with obj as same_obj:``; leaving the block calls ``obj.close()`` once.

    For an asyncio class whose ``close()`` is a plain method (it releases sockets at once
    and is not awaited). Entering and leaving behave as for :class:`ClosingContext`.
    """

    __slots__ = ()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self: _SupportsClose,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AclosingContext:
    """``async with obj as same_obj:``; leaving the block awaits ``obj.aclose()`` once.

    For an asyncio class whose closing must be awaited (a stream writer's
    ``wait_closed``, for one). Entering and leaving behave as for :class:`ClosingContext`;
    a cancellation while ``aclose()`` runs propagates like any other exception.
    """

    __slots__ = ()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self: _SupportsAclose,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
