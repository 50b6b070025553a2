"""Procedures the compat.harp and ``runwire jobs`` tests run on a real reference agent.

The four the harp(3) synopsis calls (``stream_infinity``, ``return_immediate``,
``current_time``, ``logs_in_next_minutes``), plus ``gate``: a streaming procedure the test
drives over a loopback socket, so a test decides when a job starts streaming and how it
ends without sleeping. ``return_immediate`` is a plain function (it runs in a child process,
the agent's path for sync procedures); the others are async (they run in the agent's loop).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from runwire.reference_server.jobs.procedures import Result, procedure, streaming_procedure

#: Most packets stream_infinity sends: "infinite" for a test, finite for safety.
INFINITY_CAP = 100_000
#: Seconds between stream_infinity packets.
INFINITY_INTERVAL_S = 0.01


@streaming_procedure
async def stream_infinity() -> AsyncIterator[Any]:
    """Packets ``{"n": 0}``, ``{"n": 1}``... every 10 ms until cancelled or limited."""
    for n in range(INFINITY_CAP):
        yield {"n": n}
        await asyncio.sleep(INFINITY_INTERVAL_S)


@procedure
def return_immediate(a: Any, b: Any) -> Any:
    """Its two arguments, as a list."""
    return [a, b]


@procedure
async def current_time() -> int:
    """The agent's clock, Unix seconds."""
    return int(time.time())


@streaming_procedure
async def logs_in_next_minutes(n: int) -> AsyncIterator[Any]:
    """Three log lines, then the end result ``{"minutes": n, "lines": 3}``."""
    for i in range(3):
        yield f"log line {i}"
    yield Result({"minutes": n, "lines": 3})


@procedure
async def sleep_for(seconds: float) -> float:
    """Return ``seconds`` after sleeping that long."""
    await asyncio.sleep(seconds)
    return seconds


@streaming_procedure
async def slow_stream(count: int, gap_s: float) -> AsyncIterator[Any]:
    """``count`` packets 0, 1, ... with ``gap_s`` seconds of silence before each; end result
    ``"done"``."""
    for i in range(count):
        await asyncio.sleep(gap_s)
        yield i
    yield Result("done")


@streaming_procedure
async def gate(port: int) -> AsyncIterator[Any]:
    """Connect to 127.0.0.1:``port`` (the test accepts: the job has started), then obey one
    JSON line at a time: ``{"stream": v}`` yields v, ``{"result": v}`` ends with v,
    ``{"raise": text}`` raises RuntimeError(text). EOF ends with result null."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while line := await reader.readline():
            order = json.loads(line)
            if "stream" in order:
                yield order["stream"]
            elif "result" in order:
                yield Result(order["result"])
                return
            else:
                raise RuntimeError(order["raise"])
    finally:
        writer.close()
