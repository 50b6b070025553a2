"""Sans-I/O state of a publish subscriber: sequence gaps and publisher liveness.

The original's PUB channel has neither a sequence number nor a heartbeat, so slow joiners
and broken subscriptions go unnoticed (``reference/workflow.md``, defect 9). runwire's
publisher stamps every message with ``seq`` (per publisher, +1 per message on any topic,
from 0) and publishes a ``heartbeat`` every ``interval_s`` seconds. A subscriber feeds each
message's ``seq`` to :class:`SequenceTracker` and each arrival time to :class:`Liveness`;
time always comes in as an argument (``now_s``, monotonic seconds), so both test without
sockets or sleeps.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Liveness", "SequenceStep", "SequenceTracker"]


@dataclass(frozen=True)
class SequenceStep:
    """What one received ``seq`` says.

    Attributes:
        seq: the sequence number received.
        missed: messages lost just before this one (0 when in order, and for the first one).
        restarted: True when ``seq`` went backwards or repeated: the publisher restarted (or
            a message was duplicated); counting starts again from it.
        first: True for the first message seen.
    """

    seq: int
    missed: int = 0
    restarted: bool = False
    first: bool = False


class SequenceTracker:
    """Follows one publisher's sequence numbers.

    A subscriber must see every topic for this to be meaningful (the sequence counts
    messages on all topics), so subscriber helpers subscribe to everything and filter after.

    Attributes:
        last_seq: the last ``seq`` received, or None before the first.
        missed_total: messages lost so far, summed over every gap.
        restarts: how many times the sequence went backwards.
    """

    def __init__(self) -> None:
        self.last_seq: int | None = None
        self.missed_total = 0
        self.restarts = 0

    def receive(self, seq: int) -> SequenceStep:
        """Record ``seq`` and say whether messages were missed before it."""
        last, self.last_seq = self.last_seq, seq
        if last is None:
            return SequenceStep(seq, first=True)
        if seq <= last:
            self.restarts += 1
            return SequenceStep(seq, restarted=True)
        missed = seq - last - 1
        self.missed_total += missed
        return SequenceStep(seq, missed=missed)


class Liveness:
    """Decides when a publisher is dead: no message on any topic for more than
    ``dead_after`` × the heartbeat interval.

    Args:
        interval_s: the heartbeat interval in seconds if known in advance, else None (it is
            learned from the first heartbeat; until then the publisher is never called dead).
        dead_after: how many intervals of silence mean dead (more than 1; default 3).
        now_s: the current monotonic time (seconds): silence is counted from here until the
            first message.
    """

    def __init__(self, interval_s: float | None, *, dead_after: float = 3.0, now_s: float) -> None:
        if dead_after <= 1:
            raise ValueError(f"dead_after must be more than 1 interval, not {dead_after}")
        if interval_s is not None and interval_s <= 0:
            raise ValueError(f"interval_s must be positive, not {interval_s}")
        self.interval_s = interval_s
        self.dead_after = dead_after
        self.last_seen_s = now_s

    def message(self, now_s: float, interval_s: float | None = None) -> None:
        """A message arrived at ``now_s``; ``interval_s`` when it was a heartbeat."""
        self.last_seen_s = now_s
        if interval_s is not None and interval_s > 0:
            self.interval_s = interval_s

    def deadline_s(self) -> float | None:
        """The monotonic time after which, without a message, the publisher is dead."""
        if self.interval_s is None:
            return None
        return self.last_seen_s + self.dead_after * self.interval_s

    def is_dead(self, now_s: float) -> bool:
        """True when the silence has lasted past :meth:`deadline_s`."""
        deadline = self.deadline_s()
        return deadline is not None and now_s > deadline

    @property
    def silence_limit_s(self) -> float | None:
        """How long a silence means dead, in seconds (None while the interval is unknown)."""
        return None if self.interval_s is None else self.dead_after * self.interval_s
