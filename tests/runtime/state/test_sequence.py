"""Tests for runtime/state/sequence.py: sequence gaps and publisher liveness, time as an argument."""

from __future__ import annotations

import pytest

from runwire.runtime.state.sequence import Liveness, SequenceStep, SequenceTracker


def test_in_order_messages_have_no_gap() -> None:
    tracker = SequenceTracker()
    steps = [tracker.receive(seq) for seq in (5, 6, 7)]
    assert steps == [SequenceStep(5, first=True), SequenceStep(6), SequenceStep(7)]
    assert tracker.missed_total == 0


def test_a_jump_counts_the_missed_messages() -> None:
    tracker = SequenceTracker()
    tracker.receive(0)
    assert tracker.receive(4).missed == 3
    assert tracker.receive(5).missed == 0
    assert tracker.receive(10).missed == 4
    assert tracker.missed_total == 7


def test_going_backwards_is_a_restart() -> None:
    tracker = SequenceTracker()
    tracker.receive(41)
    step = tracker.receive(0)
    assert step.restarted and step.missed == 0
    assert tracker.receive(1) == SequenceStep(1)
    assert tracker.restarts == 1
    assert tracker.receive(1).restarted  # a duplicate too


def test_liveness_is_unknown_until_an_interval_is_known() -> None:
    liveness = Liveness(None, now_s=0.0)
    assert liveness.deadline_s() is None
    assert not liveness.is_dead(1e9)
    liveness.message(10.0, interval_s=2.0)
    assert liveness.deadline_s() == 16.0
    assert not liveness.is_dead(16.0)
    assert liveness.is_dead(16.01)


def test_any_message_resets_the_silence() -> None:
    liveness = Liveness(1.0, dead_after=3, now_s=0.0)
    assert liveness.is_dead(3.5)
    liveness.message(3.0)
    assert not liveness.is_dead(5.9)
    assert liveness.is_dead(6.1)
    assert liveness.silence_limit_s == 3.0


@pytest.mark.parametrize(("interval", "dead_after"), [(0.0, 3.0), (-1.0, 3.0), (1.0, 1.0)])
def test_bad_liveness_settings_are_refused(interval: float, dead_after: float) -> None:
    with pytest.raises(ValueError):
        Liveness(interval, dead_after=dead_after, now_s=0.0)
