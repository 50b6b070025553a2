"""Transport-free pieces shared by generated clients and servers.

:class:`OperationSpec` is one row of a generated dispatch table (what the manifest says about
an operation); :func:`recognise` picks the operation a request belongs to;
:class:`SyncRunner` runs an async client on a private event loop for the sync facades.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from runwire.runtime.closing import ClosingContext
from runwire.runtime.errors import InvalidState, RemoteProtocolError
from runwire.runtime.model import WireModel

__all__ = ["OperationSpec", "SyncRunner", "recognise"]

T = TypeVar("T")


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


async def _finish_new_tasks(known: set[asyncio.Task[Any]], rounds: int = 8) -> None:
    """Wait for the tasks started since ``known`` was taken, and for those they start
    (at most ``rounds`` generations)."""
    current = asyncio.current_task()
    for _ in range(rounds):
        await asyncio.sleep(0)  # let scheduled create_task callbacks run
        new = {task for task in asyncio.all_tasks() if task not in known and task is not current}
        if not new:
            return
        await asyncio.wait(new)
        known = known | new


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
        """Run ``coroutine`` and return its result (its exception propagates)."""
        return self._get_loop().run_until_complete(coroutine)

    def iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        """Drive ``iterator``, yielding each item; closing the generator closes the iterator."""
        loop = self._get_loop()
        try:
            while True:
                try:
                    item = loop.run_until_complete(anext(iterator))
                except StopAsyncIteration:
                    return
                yield item
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None and not loop.is_closed():
                known = asyncio.all_tasks(loop)
                loop.run_until_complete(aclose())
                # Closing `iterator` drops the async generators it was iterating (an
                # `async for` inside it, as generated clients have); asyncio closes those in
                # tasks it starts now. Finish them here, or what they hold (a connection)
                # stays open until the loop runs again.
                loop.run_until_complete(_finish_new_tasks(known))

    def close(self) -> None:
        """Close the private loop."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.close()
