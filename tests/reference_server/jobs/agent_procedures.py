"""Procedures the agent tests load by file path (plain ones run in child processes).

Procedures that must show what happened to them report to a TCP listener of the test on
127.0.0.1 (``port`` argument), one line per connection: ``pid N`` (the process running the
procedure, sent first), ``grandchild N``, ``started``, ``finished``, ``cancelled``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from runwire.reference_server.jobs.procedures import Result, procedure, streaming_procedure


def _notify(port: int, text: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(text.encode() + b"\n")


@procedure
def sync_echo(*args: Any, **kwargs: Any) -> Any:
    return kwargs if kwargs and not args else list(args)


@procedure
def sync_add(a: Any, b: Any) -> Any:
    return a + b


@procedure
def sync_fail(message: str) -> None:
    raise ValueError(message)


@procedure
def sync_not_json() -> Any:
    return object()


@procedure
def sync_big(size: int) -> str:
    return "x" * size


@procedure("sync_sleep_marked")
def sleep_marked(seconds: float, port: int) -> int:
    """Write pid, sleep, write finished."""
    _notify(port, f"pid {os.getpid()}")
    time.sleep(seconds)
    _notify(port, "finished")
    return os.getpid()


@procedure(timeout_s=0.5)
def sync_limited(port: int) -> None:
    """Write pid, then sleep far past the 0.5 s limit."""
    _notify(port, f"pid {os.getpid()}")
    time.sleep(60)
    _notify(port, "finished")


@streaming_procedure
def sync_stream(count: int) -> Iterator[Any]:
    for index in range(count):
        yield {"index": index}
    yield Result("done")


@streaming_procedure
def sync_stream_returns(count: int) -> Iterator[int]:
    yield from range(count)
    return count * 10  # the generator's return value is the end result


@streaming_procedure
def sync_stream_then_fail(count: int) -> Iterator[int]:
    yield from range(count)
    raise KeyError("gone")


@streaming_procedure(timeout_s=0.5)
def sync_stream_limited(port: int) -> Iterator[int]:
    _notify(port, f"pid {os.getpid()}")
    index = 0
    while True:
        yield index
        index += 1
        time.sleep(0.05)


@streaming_procedure
def sync_spawn(port: int) -> Iterator[str]:
    """Start a grandchild (sleep 60), report both pids, then wait for it."""
    child = subprocess.Popen(["sleep", "60"])
    _notify(port, f"pid {os.getpid()}")
    _notify(port, f"grandchild {child.pid}")
    yield "started"
    child.wait()
    _notify(port, "finished")


@procedure
def sync_exit() -> None:
    os._exit(3)


@procedure
async def async_wait(port: int) -> None:
    """Wait forever; write cancelled when cancelled."""
    _notify(port, "started")
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        _notify(port, "cancelled")
        raise


@streaming_procedure
async def async_stream_wait(port: int) -> AsyncIterator[int]:
    yield 0
    _notify(port, "started")
    try:
        await asyncio.sleep(3600)
    finally:
        _notify(port, "cancelled")
    yield 1


@procedure
async def async_big(size: int) -> str:
    return "x" * size


@procedure
async def async_nan() -> float:
    return float("nan")


@procedure(timeout_s=0.3)
async def async_stubborn() -> None:
    """Ignores cancellation (badly behaved): the time limit must still end the call."""
    for _ in range(3):
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            continue
