"""Transport-free pieces shared by generated clients and servers.

:class:`OperationSpec` is one row of a generated dispatch table (what the manifest says about
an operation); :func:`recognise` picks the operation a request belongs to;
:class:`SyncRunner` runs an async client on a private event loop for the sync facades.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from runwire.runtime.closing import ClosingContext
from runwire.runtime.errors import InvalidState, RemoteProtocolError
from runwire.runtime.model import WireModel

__all__ = ["OperationSpec", "SyncRunner", "recognise"]

T = TypeVar("T")

CLEANUP_TIMEOUT_S: Final = 5.0
"""Seconds a :class:`SyncRunner` gives an interrupted coroutine or iterator, and what is
left on its loop when it closes, to finish their clean-up (closing connections)."""


@dataclass(frozen=True)
class OperationSpec:
    """One operation of an interface, as the generated dispatch table gives it.

    Attributes:
        name: operation name, also the handler's method name on a server base.
        pattern: the manifest pattern (``request-reply``, ``request-stream``...).
        conformance_id: ``family/interface/operation``.
        key: for key-recognised requests, the key whose presence names the operation.
        tag: for const-tagged requests, (property, value).
        request_uri, reply_uri, ack_uri, item_uri, terminator_uri: absolute schema URIs of
            the operation's messages (None where the pattern has no such message).
        request_model: the generated model class of the request.
    """

    name: str
    pattern: str
    conformance_id: str
    request_uri: str
    request_model: type[WireModel]
    key: str | None = None
    tag: tuple[str, Any] | None = None
    reply_uri: str | None = None
    ack_uri: str | None = None
    item_uri: str | None = None
    terminator_uri: str | None = None


def recognise(message: Any, operations: Sequence[OperationSpec]) -> OperationSpec:
    """The operation ``message`` belongs to, by key presence or const tag.

    Raises:
        RemoteProtocolError: ``message`` is not a JSON object, names no operation, or names
            more than one (error_type ``bad_request``).
    """
    if not isinstance(message, Mapping):
        raise RemoteProtocolError(
            f"request must be a JSON object, not {type(message).__name__}", error_type="bad_request"
        )
    matches = [
        op
        for op in operations
        if (op.key is not None and op.key in message)
        or (op.tag is not None and message.get(op.tag[0]) == op.tag[1])
    ]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        names = ", ".join(_describe(op) for op in operations)
        raise RemoteProtocolError(
            f"request names no known operation (expected one of: {names})", error_type="bad_request"
        )
    raise RemoteProtocolError(
        "request names several operations: " + ", ".join(op.name for op in matches),
        error_type="bad_request",
    )


async def _finish_new_tasks(known: AbstractSet[asyncio.Future[Any]], rounds: int = 8) -> None:
    """Wait for the tasks started since ``known`` was taken, and for those they start
    (at most ``rounds`` generations, at most :data:`CLEANUP_TIMEOUT_S` in all)."""
    current = asyncio.current_task()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(CLEANUP_TIMEOUT_S):
            for _ in range(rounds):
                await asyncio.sleep(0)  # let scheduled create_task callbacks run
                new = {
                    task
                    for task in asyncio.all_tasks()
                    if task not in known and task is not current
                }
                if not new:
                    return
                await asyncio.wait(new)
                known = known | new


async def _aclose(iterator: Any, known: set[asyncio.Task[Any]]) -> None:
    """Close ``iterator`` (an async generator or anything with ``aclose``), then finish the
    tasks asyncio starts meanwhile to close the async generators it was iterating."""
    await iterator.aclose()
    await _finish_new_tasks(known)


async def _wind_down(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the loop's other tasks and close its async generators (as asyncio.run does
    before closing its loop), within :data:`CLEANUP_TIMEOUT_S` in all.

    Tasks that close a garbage-collected async generator (asyncio starts one per generator
    dropped unclosed) are left to finish, not cancelled: cancelling one would cut short, or
    skip, that generator's clean-up.
    """
    await asyncio.sleep(0)  # let scheduled create_task callbacks (generators' aclose) run
    current = asyncio.current_task()
    pending = {task for task in asyncio.all_tasks() if task is not current}
    for task in pending:
        if type(task.get_coro()).__name__ != "async_generator_athrow":
            task.cancel()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(CLEANUP_TIMEOUT_S):
            if pending:
                await asyncio.wait(pending)
            await loop.shutdown_asyncgens()


def _describe(op: OperationSpec) -> str:
    if op.key is not None:
        return op.key
    if op.tag is not None:
        return f"{op.tag[0]}={op.tag[1]!r}"
    return op.name


class SyncRunner(ClosingContext):
    """Runs coroutines and async iterators to completion on a private event loop.

    The sync facades of generated clients own one. It cannot be used from inside a running
    event loop (use the async client there).
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise InvalidState(
                "a sync client cannot run inside an event loop; use the async client"
            )
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` and return its result (its exception propagates).

        An exception that stops the loop from outside the coroutine (KeyboardInterrupt on
        Ctrl-C, SystemExit) cancels the coroutine and lets it finish its clean-up (see
        :data:`CLEANUP_TIMEOUT_S`) before propagating.
        """
        loop = self._get_loop()
        known = asyncio.all_tasks(loop)
        return self._complete(loop, loop.create_task(coroutine), known)

    def iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        """Drive ``iterator``, yielding each item; closing the generator closes the iterator.

        As :meth:`run`, an exception that stops the loop while it waits for an item (Ctrl-C)
        cancels the wait, which ends ``iterator`` with its clean-up done, then propagates.
        """
        loop = self._get_loop()
        known = asyncio.all_tasks(loop)
        try:
            while True:
                step = asyncio.ensure_future(anext(iterator), loop=loop)
                try:
                    item = self._complete(loop, step, known)
                except StopAsyncIteration:
                    return
                yield item
        finally:
            # Skip an iterator still running: a clean-up cut short (a second Ctrl-C) left it
            # inside a step, where aclose() fails; close() cancels that step.
            if (
                hasattr(iterator, "aclose")
                and not loop.is_closed()
                and not getattr(iterator, "ag_running", False)
            ):
                # Closing `iterator` drops the async generators it was iterating (an
                # `async for` inside it, as generated clients have); asyncio closes those in
                # tasks it starts now. Finish them here, or what they hold (a connection)
                # stays open until the loop runs again.
                known = asyncio.all_tasks(loop)
                self._complete(loop, loop.create_task(_aclose(iterator, known)), known)

    def _complete(
        self,
        loop: asyncio.AbstractEventLoop,
        step: asyncio.Future[T],
        known: set[asyncio.Task[Any]],
    ) -> T:
        """Run the loop until ``step`` is done and return its result.

        When ``step`` fails, or something else stops the loop first (an exception raised
        outside ``step``: a KeyboardInterrupt from SIGINT while the loop waits), ``step`` is
        cancelled if it is still pending, and the loop runs until it and the tasks started
        since ``known`` was taken (async generators being closed) are done, bounded by
        :data:`CLEANUP_TIMEOUT_S`; then the exception propagates.
        """
        try:
            return loop.run_until_complete(step)
        except StopAsyncIteration:  # the normal end of an iteration
            raise
        except BaseException:
            if not step.done():
                step.cancel()
                loop.run_until_complete(asyncio.wait({step}, timeout=CLEANUP_TIMEOUT_S))
                if step.done() and not step.cancelled():
                    step.exception()  # retrieved: asyncio must not log it as unhandled
            loop.run_until_complete(_finish_new_tasks(known | {step}))
            raise

    def close(self) -> None:
        """Cancel what is still running on the private loop, close the async generators
        started on it, and close it (bounded by :data:`CLEANUP_TIMEOUT_S`). Idempotent."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # not inside a running loop: the private one can run
                loop.run_until_complete(_wind_down(loop))
        finally:
            loop.close()
