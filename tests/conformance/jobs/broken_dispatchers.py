"""Deliberately broken reference dispatchers, one fault each (not a test module).

Each is a small subclass of :class:`~runwire.reference_server.jobs.dispatcher.Dispatcher`
that breaks exactly one rule of the dispatcher protocol. ``test_broken_dispatchers.py`` runs
the conformance cases that guard the rule against it and asserts they FAIL: proof that the
suite has teeth. :data:`BROKEN` maps each variant to the case ids that must catch it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from runwire.generated.jobs import models
from runwire.reference_server.jobs.dispatcher import NO_SUCH_JOB, Dispatcher, DispatcherConfig
from runwire.reference_server.jobs.queues import FifoSemaphore, QueueRegistry
from runwire.runtime.errors import LimitExceeded, ProtocolError
from runwire.runtime.transport.tcp import JsonLinesConnection


def _renumbered(line: Any) -> Any:
    wire = line if isinstance(line, dict) else line.to_wire()
    if "packet" in wire:
        return {**wire, "packet": wire["packet"] + 1}
    return wire


class PacketsFromOne(Dispatcher):
    """Stream packets are numbered from 1 instead of 0."""

    async def follow_stream(self, request: models.FollowStreamRequest) -> AsyncIterator[Any]:
        async for line in super().follow_stream(request):
            yield _renumbered(line)

    async def read_stream(self, request: models.ReadStreamRequest) -> AsyncIterator[Any]:
        async for line in super().read_stream(request):
            yield _renumbered(line)


def _without_terminator(lines: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async def packets() -> AsyncIterator[Any]:
        async for line in lines:
            wire = line if isinstance(line, dict) else line.to_wire()
            if "packet" not in wire:
                return  # the terminator is dropped: the stream just ends
            yield wire

    return packets()


class MissingTerminator(Dispatcher):
    """Streams end after the last packet, without a terminator line."""

    def follow_stream(self, request: models.FollowStreamRequest) -> AsyncIterator[Any]:
        return _without_terminator(super().follow_stream(request))

    def read_stream(self, request: models.ReadStreamRequest) -> AsyncIterator[Any]:
        return _without_terminator(super().read_stream(request))


class SilentOnMalformed(Dispatcher):
    """A malformed request gets no error line: the connection just closes (as the
    original)."""

    async def _send_malformed(
        self, connection: JsonLinesConnection, error: ProtocolError | LimitExceeded
    ) -> None:
        return None


class _UnboundedQueues(QueueRegistry):
    def join(self, key: str, concurrency: int) -> FifoSemaphore:
        return super().join(key, 1_000_000)


class NoQueueLimit(Dispatcher):
    """Queue concurrency is not enforced: every job of a queue starts at once (the queue
    is still recorded and listed)."""

    def __init__(self, config: DispatcherConfig) -> None:
        super().__init__(config)
        self.queues = _UnboundedQueues()


class _LaterConcurrencyWins(QueueRegistry):
    def join(self, key: str, concurrency: int) -> FifoSemaphore:
        queue = super().join(key, concurrency)
        queue.limit = max(queue.limit, concurrency)
        return queue


class LaterConcurrencyWins(Dispatcher):
    """A later job's larger concurrency widens a queue that already exists (the first
    job's value must hold while the queue exists)."""

    def __init__(self, config: DispatcherConfig) -> None:
        super().__init__(config)
        self.queues = _LaterConcurrencyWins()


class IgnoresMaxExecTime(Dispatcher):
    """``max_exec_time`` is ignored (the original's defect): only the configured default
    bounds a job's total run time."""

    async def call(self, request: models.CallRequest) -> models.CallOrErrorReply:
        return await super().call(request.model_copy(update={"max_exec_time": None}))


class CancelFinishedTrue(Dispatcher):
    """Cancel of a job that has already ended answers true."""

    async def cancel(self, request: models.CancelRequest) -> models.CancelOrErrorReply:
        job_id = request.cancel.root
        if job_id not in self._live and self._db.get(job_id) is not None:
            return models.CancelOrErrorReply.model_validate({"cancelled": True})
        return await super().cancel(request)


def _silent_if_unknown(lines: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async def checked() -> AsyncIterator[Any]:
        async for line in lines:
            if line == NO_SUCH_JOB:
                return  # close without a word (the original's behaviour)
            yield line

    return checked()


class SilentOnUnknownJob(Dispatcher):
    """Stream requests for an unknown job id close silently (the original's defect)."""

    def follow_stream(self, request: models.FollowStreamRequest) -> AsyncIterator[Any]:
        return _silent_if_unknown(super().follow_stream(request))

    def read_stream(self, request: models.ReadStreamRequest) -> AsyncIterator[Any]:
        return _silent_if_unknown(super().read_stream(request))


class ReadDefaultsToRecent(Dispatcher):
    """read_stream without since or recent sends only new packets (recent 0), as
    follow_stream does, instead of everything stored (since 0)."""

    def read_stream(self, request: models.ReadStreamRequest) -> AsyncIterator[Any]:
        if request.since is None and request.recent is None:
            request = request.model_copy(update={"recent": models.PacketIndex(0)})
        return super().read_stream(request)


@dataclass(frozen=True)
class Broken:
    """A broken variant and the dispatcher cases that must FAIL against it.

    Attributes:
        cls: the broken dispatcher class.
        caught_by: case ids that must FAIL.
        also_run: further case ids to run (they may pass: the fault is not theirs).
    """

    cls: type[Dispatcher]
    caught_by: tuple[str, ...]
    also_run: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.cls.__name__


C = "jobs/dispatcher/"

BROKEN: tuple[Broken, ...] = (
    Broken(
        PacketsFromOne,
        (
            C + "follow_stream/live",
            C + "follow_stream/since",
            C + "read_stream/default-since-zero",
            C + "read_stream/since",
            C + "read_stream/unfinished-continue",
        ),
    ),
    Broken(
        MissingTerminator,
        (
            C + "follow_stream/live",
            C + "follow_stream/default-recent-zero",
            C + "follow_stream/unknown-job",
            C + "read_stream/default-since-zero",
            C + "read_stream/unknown-job",
        ),
    ),
    Broken(
        SilentOnMalformed,
        (
            C + "malformed/bad-json",
            C + "malformed/non-object",
            C + "malformed/missing-version",
            C + "malformed/unknown-key",
            C + "malformed/since-and-recent",
            C + "malformed/oversize",
        ),
    ),
    Broken(
        NoQueueLimit,
        (
            C + "call/queue-serialises",
            C + "call/queue-fifo",
            C + "call/queue-concurrency-fixed-by-first-job",
            C + "call/queue-name-canonical",
            C + "call/limits-count-from-start",
            C + "cancel/queued",
            C + "get_status/times-queued-and-running",
        ),
        also_run=(C + "list_jobs/by-queue",),
    ),
    Broken(
        LaterConcurrencyWins,
        (C + "call/queue-concurrency-fixed-by-first-job",),
        also_run=(C + "call/queue-serialises", C + "call/queue-fifo"),
    ),
    Broken(IgnoresMaxExecTime, (C + "call/max-exec-time",), also_run=(C + "call/timeout",)),
    Broken(
        CancelFinishedTrue,
        (C + "cancel/finished",),
        also_run=(C + "cancel/running", C + "cancel/unknown-job"),
    ),
    Broken(
        SilentOnUnknownJob,
        (C + "follow_stream/unknown-job", C + "read_stream/unknown-job"),
        also_run=(C + "get_status/unknown-job", C + "read_stream/since"),
    ),
    Broken(
        ReadDefaultsToRecent,
        (C + "read_stream/default-since-zero",),
        also_run=(C + "read_stream/since", C + "follow_stream/default-recent-zero"),
    ),
)
"""Every broken variant, with the cases that must catch it."""
