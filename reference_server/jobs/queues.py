"""Named job queues: keyed FIFO semaphores, as HarpCaller's call queue behaves.

A queue is named by a JSON object (compared as canonical JSON). It is created on first
use with the concurrency of that first job; later ``concurrency`` values are ignored
while it exists; it is deleted when its last job leaves and nothing waits, so the next
job creates it afresh. Jobs leave a queue in FIFO order. The same FIFO semaphore, unnamed,
bounds how many jobs run at once in the whole dispatcher.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["FifoSemaphore", "QueueRegistry"]


@dataclass
class FifoSemaphore:
    """A semaphore that wakes its waiters strictly in arrival order.

    ``acquire`` is cancellable: a waiter cancelled before it got its slot stays in the line
    as a dead entry that :meth:`release` skips (so cancelling is O(1), and safe when a
    release and the cancellation happen in the same turn of the loop); one cancelled just
    after it was granted a slot hands the slot on. Invariant: while a live waiter waits,
    every slot is taken.
    """

    limit: int
    running: int = 0
    waiters: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)
    #: Jobs that joined (submitted to) this queue and have not left it yet.
    members: int = 0

    @property
    def waiting(self) -> int:
        """How many live waiters wait (O(n); for diagnostics)."""
        return sum(1 for waiter in self.waiters if not waiter.done())

    async def acquire(self) -> None:
        while self.waiters and self.waiters[0].done():
            self.waiters.popleft()  # dead entries of cancelled waiters
        if self.running < self.limit and not self.waiters:
            self.running += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted, then cancelled: pass the slot on
            # else: the cancelled future stays in the line; release() skips it
            raise

    def release(self) -> None:
        """Free one slot: the longest waiter gets it."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves to it; `running` is unchanged
                return
        self.running -= 1


class QueueRegistry:
    """The dispatcher's named queues, keyed by canonical JSON name.

    Args:
        on_idle: called with a queue's key when it is deleted (for tests and metrics).
    """

    def __init__(self, on_idle: Callable[[str], None] | None = None) -> None:
        self._queues: dict[str, FifoSemaphore] = {}
        self._on_idle = on_idle

    def __contains__(self, key: str) -> bool:
        return key in self._queues

    def __len__(self) -> int:
        return len(self._queues)

    def concurrency(self, key: str) -> int | None:
        """The concurrency a live queue was created with, or None if it does not exist."""
        queue = self._queues.get(key)
        return None if queue is None else queue.limit

    def waiting(self, key: str) -> int:
        """How many jobs wait in queue ``key`` (0 if it does not exist)."""
        queue = self._queues.get(key)
        return 0 if queue is None else queue.waiting

    def join(self, key: str, concurrency: int) -> FifoSemaphore:
        """The queue named ``key``, created with ``concurrency`` if it does not exist yet.

        Call it when the job is submitted, so the queue's concurrency is fixed by the first
        job submitted, as in the original.
        """
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = FifoSemaphore(concurrency)
        queue.members += 1
        return queue

    async def acquire(self, key: str, queue: FifoSemaphore) -> None:
        """Wait for a slot in ``queue`` (FIFO). Cancelled while waiting: the job leaves."""
        try:
            await queue.acquire()
        except asyncio.CancelledError:
            self.leave(key, queue, holding=False)
            raise

    def release(self, key: str, queue: FifoSemaphore) -> None:
        """A running job ends: give back its slot and leave the queue."""
        self.leave(key, queue, holding=True)

    def leave(self, key: str, queue: FifoSemaphore, *, holding: bool) -> None:
        """A job leaves ``queue`` (giving back its slot if ``holding``); the queue is
        deleted when its last member leaves."""
        if holding:
            queue.release()
        queue.members -= 1
        if queue.members == 0 and self._queues.get(key) is queue:
            del self._queues[key]
            if self._on_idle is not None:
                self._on_idle(key)
