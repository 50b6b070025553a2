"""The fixed procedures the jobs conformance suite calls on an agent.

The reference agent loads this module by default (``--no-conformance-procedures`` leaves it
out). An agent under test should offer the same names with the same behaviour. All are
``async`` (cheap, and cancelled at once when the call ends). "Arguments" below are the
request's ``arguments``: a list gives positional arguments, an object keyword arguments,
and nothing else checks them (Python's call semantics do).

``echo(*args, **kwargs)``
    Returns the positional arguments as a list (``[1, "a"]`` → ``[1, "a"]``), or the keyword
    arguments as an object (``{"x": 1}`` → ``{"x": 1}``). No arguments (``[]`` or ``{}``)
    → ``[]``. Ack ``stream_result: false``.

``add(a, b)``
    Returns ``a + b`` (``[2, 3]`` → ``5``; ``{"a": "x", "b": "y"}`` → ``"xy"``). Fixed
    arity: ``[1]`` or ``[1, 2, 3]`` → ack, then ``{"exception": {"type": "TypeError", ...}}``.
    Adding a number to a string also raises TypeError.

``stream(count, interval_s=0)``
    Streaming: yields the integers ``0 .. count-1`` as ``{"stream": i}`` lines, sleeping
    ``interval_s`` seconds between them, then ``{"result": count}``. Ack
    ``stream_result: true``.

``sleep(seconds)``
    Sleeps ``seconds`` (a number), then returns ``seconds``. Closing the connection cancels
    the sleep.

``fail(message)``
    Raises ``RuntimeError(message)`` → ack, then
    ``{"exception": {"type": "RuntimeError", "message": message,
    "data": {"class": "RuntimeError", "module": "builtins"}}}``.

``not_json()``
    Returns a value that is not JSON-serialisable (a set) → ack, then
    ``{"harp": 1, "error": {"type": "invalid_message", "message": ...}}``.

``stream_limited(interval_s=0.1)``
    Streaming, registered with a 1 second time limit; yields ``0, 1, 2, ...`` every
    ``interval_s`` seconds forever → after about 1 s,
    ``{"harp": 1, "error": {"type": "timeout", "message": "maximum execution time exceeded"}}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from .procedures import Result, procedure, streaming_procedure

__all__ = ["add", "echo", "fail", "not_json", "sleep", "stream", "stream_limited"]

STREAM_LIMITED_TIMEOUT_S = 1.0
"""Time limit of ``stream_limited``, in seconds."""


@procedure
async def echo(*args: Any, **kwargs: Any) -> Any:
    """Positional arguments as a list, else keyword arguments as an object."""
    if kwargs and not args:
        return kwargs
    return list(args)


@procedure
async def add(a: Any, b: Any) -> Any:
    """``a + b``."""
    return a + b


@streaming_procedure
async def stream(count: int, interval_s: float = 0) -> AsyncIterator[Any]:
    """Yield ``0 .. count-1`` with ``interval_s`` seconds between, end result ``count``."""
    for index in range(count):
        if index and interval_s:
            await asyncio.sleep(interval_s)
        yield index
    yield Result(count)


@procedure
async def sleep(seconds: float) -> float:
    """Sleep ``seconds``, return them."""
    await asyncio.sleep(seconds)
    return seconds


@procedure
async def fail(message: str) -> None:
    """Raise ``RuntimeError(message)``."""
    raise RuntimeError(message)


@procedure
async def not_json() -> Any:
    """Return a set, which JSON cannot carry."""
    return {1, 2, 3}


@streaming_procedure(timeout_s=STREAM_LIMITED_TIMEOUT_S)
async def stream_limited(interval_s: float = 0.1) -> AsyncIterator[int]:
    """Yield 0, 1, 2, ... every ``interval_s`` seconds, forever (the time limit ends it)."""
    index = 0
    while True:
        yield index
        index += 1
        await asyncio.sleep(interval_s)
