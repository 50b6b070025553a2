"""The runner against the fake family and its loopback server: verdicts, failure kinds,
time limits, isolation, selection, and how the run is judged (baseline ratchet included)."""

from __future__ import annotations

import dataclasses
import sys
import time
from types import ModuleType
from typing import Any

import pytest
import runwire_test_fakefamily as FAKE
from runwire_test_fakefamily import STEP_S, LoopbackServer

from runwire.conformance import (
    Baseline,
    BaselineStatus,
    CaseContext,
    CaseSet,
    FailureKind,
    Frame,
    RunConfig,
    RunResult,
    Verdict,
    load_family,
    parse_targets,
    resolve_options,
    run,
)
from runwire.conformance.report import render_result
from runwire.conformance.runner import matches, select_cases

FAMILY = load_family(FAKE.FAMILY)


def config(server: LoopbackServer | None, **overrides: Any) -> RunConfig:
    targets = parse_targets([server.target] if server else [], FAMILY.manifest)
    options = resolve_options(FAKE.FAMILY, overrides.pop("options", {}), environ={})
    return RunConfig(targets=targets, options=options, step_timeout_s=STEP_S, **overrides)


def run_selected(server: LoopbackServer | None, *select: str, **overrides: Any) -> RunResult:
    return run(FAMILY, config(server, select=select, **overrides))


def by_id(result: RunResult) -> dict[str, Any]:
    return {r.case.id.rsplit("/", 1)[1]: r for r in result.results}


FAST = (
    "fake/echo/echo/round-trip",
    "fake/echo/echo/bad-reply",
    "fake/echo/echo/wrong-value",
    "fake/echo/echo/should-be-loud",
    "fake/echo/echo/should-level",
    "fake/echo/echo/crashes",
    "fake/echo/echo/plain-assert",
    "fake/echo/echo/not-json",
    "fake/echo/echo/skips-itself",
    "fake/echo/count/three",
    "fake/other/ping/needs-target",
)


@pytest.fixture(scope="module")
def fast_run(server: LoopbackServer) -> RunResult:
    return run_selected(server, *FAST)


def test_every_verdict_and_failure_kind(fast_run: RunResult) -> None:
    got = {
        name: (r.verdict, r.failure.kind if r.failure else None)
        for name, r in by_id(fast_run).items()
    }
    assert got == {
        "round-trip": (Verdict.PASS, None),
        "three": (Verdict.PASS, None),
        "bad-reply": (Verdict.FAIL, FailureKind.SCHEMA),
        "wrong-value": (Verdict.FAIL, FailureKind.ASSERTION),
        "plain-assert": (Verdict.FAIL, FailureKind.ASSERTION),
        "crashes": (Verdict.FAIL, FailureKind.ERROR),
        "not-json": (Verdict.FAIL, FailureKind.PROTOCOL),
        "should-be-loud": (Verdict.WARN, None),
        "should-level": (Verdict.WARN, None),
        "skips-itself": (Verdict.SKIP, None),
        "needs-target": (Verdict.SKIP, None),
    }
    assert fast_run.exit_status == 1


def test_schema_violation_shows_the_frame_the_pointer_and_the_rule(fast_run: RunResult) -> None:
    result = by_id(fast_run)["bad-reply"]
    assert result.failure is not None
    message = result.failure.message
    assert "received frame #1 (echo, connection 1) does not match" in message
    assert "fake/echo.json#/$defs/EchoReply" in message
    assert 'frame: {"echo":1,"extra":"not allowed"}' in message
    assert "at (root): Additional properties are not allowed ('extra' was unexpected)" in message
    assert "rule: additionalProperties" in message
    assert result.failure.frame == 1
    (violation,) = result.failure.violations
    assert violation.keyword == "additionalProperties"
    frame = result.frames[1]
    assert (frame.direction, frame.valid, frame.value) == (
        "received",
        False,
        {"echo": 1, "extra": "not allowed"},
    )


def test_frames_are_recorded_in_both_directions_with_their_schemas(fast_run: RunResult) -> None:
    result = by_id(fast_run)["three"]
    directions = [f.direction for f in result.frames]
    assert directions == ["sent", "received", "received", "received", "received"]
    sent = result.frames[0]
    assert sent.value == {"count": 3}
    assert sent.schemas == ("https://runwire.dev/schemas/fake/echo.json#/$defs/CountRequest",)
    assert [f.matched.rsplit("/", 1)[1] for f in result.frames[1:]] == [  # type: ignore[union-attr]
        "CountItem",
        "CountItem",
        "CountItem",
        "CountEnd",
    ]
    offsets = [f.offset_s for f in result.frames]
    assert offsets == sorted(offsets)


def test_non_json_line_is_recorded_as_bytes(fast_run: RunResult) -> None:
    result = by_id(fast_run)["not-json"]
    received = result.frames[-1]
    assert (received.is_json, received.raw) == (False, b"this is not json")
    assert result.failure is not None and "is not a JSON line" in result.failure.message


def test_assertions_say_what_failed(fast_run: RunResult) -> None:
    results = by_id(fast_run)
    plain = results["plain-assert"].failure
    assert plain is not None
    assert plain.message.startswith("two is not three (fakefamily.py:")
    assert "assert value == 3" in plain.message
    checked = results["wrong-value"].failure
    assert checked is not None and checked.message == "the server should have said b"
    assert checked.frame == 1
    crash = results["crashes"].failure
    assert crash is not None and crash.message == "the case raised KeyError: 'missing'"
    assert crash.traceback is not None and "KeyError" in crash.traceback


def test_warnings_and_skips_carry_their_reasons(fast_run: RunResult) -> None:
    results = by_id(fast_run)
    assert [w.message for w in results["should-be-loud"].warnings] == ["the echo should be loud"]
    assert [w.message for w in results["should-level"].warnings] == ["a SHOULD-level rule"]
    assert results["skips-itself"].skip_reason == (
        "needs option token (--token): a value the skips-itself case needs"
    )
    assert results["needs-target"].skip_reason == (
        "no target for interface 'other' (give one as other=tls://HOST:PORT)"
    )
    assert results["needs-target"].frames == ()


def test_a_given_option_lets_the_case_run(server: LoopbackServer) -> None:
    result = run_selected(server, "fake/echo/echo/skips-itself", options={"token": "t"})
    assert [r.verdict for r in result.results] == [Verdict.PASS]
    assert result.results[0].log[-1].message == "token t"


def test_strict_counts_warnings_as_failures(server: LoopbackServer) -> None:
    lenient = run_selected(server, "fake/echo/echo/should-be-loud")
    strict = run_selected(server, "fake/echo/echo/should-be-loud", strict=True)
    assert (lenient.exit_status, strict.exit_status) == (0, 1)


def test_a_silent_server_fails_the_step(server: LoopbackServer) -> None:
    started = time.monotonic()
    result = run_selected(server, "fake/echo/echo/no-reply")
    (case,) = result.results
    assert case.verdict is Verdict.FAIL and case.failure is not None
    assert case.failure.kind is FailureKind.TIMEOUT
    assert case.failure.message == (
        f"no line from echo within {STEP_S:g} s while waiting for the echo reply"
    )
    assert time.monotonic() - started < 3


def test_a_hanging_case_times_out_and_the_run_goes_on(server: LoopbackServer) -> None:
    started = time.monotonic()
    result = run_selected(
        server, "fake/echo/echo/hangs", "fake/echo/echo/round-trip", case_timeout_s=0.5
    )
    hung, after = result.results
    assert hung.case.id.endswith("/hangs") and after.case.id.endswith("/round-trip")
    assert hung.verdict is Verdict.FAIL and hung.failure is not None
    assert (hung.failure.kind, hung.failure.message) == (
        FailureKind.TIMEOUT,
        "case did not finish within 0.5 s",
    )
    assert [e.message for e in hung.log] == ["about to wait forever"]
    assert after.verdict is Verdict.PASS
    assert time.monotonic() - started < 4


def test_a_case_blocking_its_loop_is_abandoned_and_the_run_goes_on(
    server: LoopbackServer,
) -> None:
    FAKE.RELEASE_BLOCKED.clear()
    try:
        started = time.monotonic()
        result = run_selected(
            server, "fake/echo/echo/blocks-loop", "fake/echo/echo/round-trip", case_timeout_s=0.3
        )
        elapsed = time.monotonic() - started
    finally:
        FAKE.RELEASE_BLOCKED.set()
    blocked, after = result.results
    assert blocked.verdict is Verdict.FAIL and blocked.failure is not None
    assert blocked.failure.kind is FailureKind.TIMEOUT
    assert "did not stop when cancelled" in blocked.failure.message
    assert "abandoned" in blocked.failure.message
    assert after.verdict is Verdict.PASS
    assert elapsed < 5


def test_a_refused_connection_is_a_transport_failure() -> None:
    targets = parse_targets(["echo=tcp://127.0.0.1:1"], FAMILY.manifest)
    result = run(
        FAMILY,
        RunConfig(targets=targets, step_timeout_s=STEP_S, select=("fake/echo/echo/round-trip",)),
    )
    (case,) = result.results
    assert case.failure is not None and case.failure.kind is FailureKind.TRANSPORT
    assert case.failure.message.startswith("cannot connect to echo at tcp://127.0.0.1:1: ")


@pytest.mark.parametrize(
    ("pattern", "selected"),
    [
        ("fake/echo/echo/round-trip", ["fake/echo/echo/round-trip"]),
        ("fake/echo/count", ["fake/echo/count/three"]),
        ("fake/echo/count/", ["fake/echo/count/three"]),
        ("fake/*/ping/*", ["fake/other/ping/needs-target"]),
        ("*/three", ["fake/echo/count/three"]),
        ("fake/echo/echo/r*", ["fake/echo/echo/round-trip"]),
        ("fake/echo/ec", []),
        ("fake/echo/echo/round-trip/x", []),
    ],
)
def test_select_globs(pattern: str, selected: list[str]) -> None:
    assert [c.id for c in select_cases(FAMILY.cases, [pattern], [])] == selected


def test_exclude_wins_over_select() -> None:
    chosen = select_cases(FAMILY.cases, ["fake/echo"], ["fake/echo/echo/*", "*/misc/*"])
    assert [c.id for c in chosen] == ["fake/echo/count/three"]
    assert len(select_cases(FAMILY.cases, [], [])) == len(FAMILY.cases)
    assert matches("a/b/c/d", "a/b") and not matches("a/bc/d/e", "a/b")


def test_zero_selected_fails_the_run() -> None:
    result = run_selected(None, "fake/nothing/*")
    assert result.results == ()
    assert result.exit_status == 1
    assert result.reasons == [
        f"no case selected ({len(FAMILY.cases)} available; check --select and --exclude)"
    ]


def test_nothing_checked_fails_the_run() -> None:
    result = run_selected(None, "fake/echo/echo/round-trip", "fake/echo/count/three")
    assert [r.verdict for r in result.results] == [Verdict.SKIP, Verdict.SKIP]
    assert result.exit_status == 1
    assert result.reasons[0].startswith("no case ran: all 2 were skipped (first: no target")


def test_passing_run_exits_zero(server: LoopbackServer) -> None:
    result = run_selected(server, "fake/echo/echo/round-trip", "fake/other")
    assert [r.verdict for r in result.results] == [Verdict.PASS, Verdict.SKIP]
    assert (result.exit_status, result.reasons) == (0, [])


# -- the baseline ratchet ------------------------------------------------------------------

RATCHET = ("fake/echo/echo/round-trip", "fake/echo/echo/wrong-value", "fake/echo/echo/crashes")


def with_baseline(server: LoopbackServer, *entries: str) -> RunResult:
    baseline = Baseline.from_entries(list(entries), "baseline.yaml")
    return run_selected(server, *RATCHET, baseline=baseline)


def test_listed_failures_do_not_fail_the_run(server: LoopbackServer) -> None:
    result = with_baseline(server, "fake/echo/echo/wrong-value", "fake/echo/echo/crashes")
    assert result.exit_status == 0, result.reasons
    statuses = {r.case.id: result.status(r) for r in result.results}
    assert statuses["fake/echo/echo/crashes"] is BaselineStatus.EXPECTED_FAILURE
    assert statuses["fake/echo/echo/round-trip"] is BaselineStatus.NOT_LISTED
    assert (result.summary.expected_failures, result.summary.unexpected_failures) == (2, 0)


def test_an_unlisted_failure_fails_the_run(server: LoopbackServer) -> None:
    result = with_baseline(server, "fake/echo/echo/wrong-value")
    assert result.exit_status == 1
    assert result.reasons == ["1 unexpected failure: fake/echo/echo/crashes"]


def test_a_listed_case_that_passes_is_stale_and_fails_the_run(server: LoopbackServer) -> None:
    result = with_baseline(
        server,
        "fake/echo/echo/wrong-value",
        "fake/echo/echo/crashes",
        "fake/echo/echo/round-trip",
    )
    assert result.exit_status == 1
    assert result.reasons == [
        "1 stale baseline entry (the case passes now; delete it from baseline.yaml): "
        "fake/echo/echo/round-trip"
    ]
    stale = next(r for r in result.results if r.case.id.endswith("round-trip"))
    assert result.status(stale) is BaselineStatus.STALE and result.fails_run(stale)


def test_unknown_entries_fail_and_skipped_entries_are_not_judged(server: LoopbackServer) -> None:
    result = run_selected(
        server,
        "fake/echo/echo/round-trip",
        "fake/other/ping/needs-target",
        baseline=Baseline.from_entries(
            ["fake/other/ping/needs-target", "fake/echo/echo/renamed-long-ago"]
        ),
    )
    skipped = next(r for r in result.results if r.verdict is Verdict.SKIP)
    assert result.status(skipped) is BaselineStatus.NOT_EVALUATED
    assert result.reasons == [
        "1 baseline entry name no case of family fake (renamed or removed? delete them): "
        "fake/echo/echo/renamed-long-ago"
    ]


def test_fake_module_is_the_family_module(fake_family: ModuleType) -> None:
    assert load_family("fake").cases == FAMILY.cases


# -- helpers for state that changes on its own ----------------------------------------------

EXTRA = CaseSet("fake")


@EXTRA.case("fake/echo/echo/polls", "poll until the echo reaches 2")
async def polls(ctx: CaseContext) -> None:
    frames: list[Frame | None] = []

    async def attempt() -> Any:
        async with await ctx.open_jsonlines() as conn:
            reply = await conn.request_reply("echo", {"echo": len(frames)})
            frames.append(conn.last_received)
        return reply

    result = await ctx.poll(attempt, lambda r: r["echo"] == 2, "the echo is 2", interval_s=0.01)
    ctx.check(result == {"echo": 2}, f"got {result!r}")
    ctx.check([f.index for f in frames if f] == [1, 3, 5], f"frames {frames!r}")


@EXTRA.case("fake/echo/echo/polls-in-vain", "poll for what never happens")
async def polls_in_vain(ctx: CaseContext) -> None:
    async def attempt() -> int:
        return 1

    await ctx.poll(attempt, lambda r: r == 2, "one is two", interval_s=0.01)


def test_poll_and_last_received(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    module = ModuleType("runwire_test_extra_cases")
    module.CASES = EXTRA  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    family = load_family(dataclasses.replace(FAKE.FAMILY, case_modules=(module.__name__,)))
    config = RunConfig(
        targets=parse_targets([server.target], family.manifest), step_timeout_s=STEP_S
    )
    result = run(family, dataclasses.replace(config, select=("fake/echo/echo/polls*",)))
    found, vain = result.results
    assert found.verdict is Verdict.PASS, found.failure
    assert vain.failure is not None and vain.failure.kind is FailureKind.TIMEOUT
    assert vain.failure.message == f"one is two: still not so after {STEP_S:g} s; last: 1"
    assert [e.message for e in vain.log] == ["step: wait until one is two"]


@EXTRA.case("fake/echo/echo/echoes-a-secret", "the secret option's value never reaches a report")
async def echoes_a_secret(ctx: CaseContext) -> None:
    secret = ctx.require_option("secret_word")
    async with await ctx.open_jsonlines() as conn:
        reply = await conn.request_reply("echo", {"echo": [secret, f"the {secret}!"]})
    ctx.check(reply == {"echo": [secret, f"the {secret}!"]}, "the case sees the real value")
    ctx.log(f"sent {secret}")
    ctx.fail(f"fails on purpose, showing {secret}", frame=conn.last_received)


def test_secret_option_values_are_masked_in_frames(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = ModuleType("runwire_test_extra_cases")
    module.CASES = EXTRA  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    family = load_family(dataclasses.replace(FAKE.FAMILY, case_modules=(module.__name__,)))
    config = RunConfig(
        targets=parse_targets([server.target], family.manifest),
        options=resolve_options(FAKE.FAMILY, {"secret_word": "hunter2"}, environ={}),
        step_timeout_s=STEP_S,
        select=("fake/echo/echo/echoes-a-secret",),
    )
    (result,) = run(family, config).results
    assert result.failure is not None
    assert result.failure.message == "fails on purpose, showing ***"
    assert result.log[-1].message == "sent ***"
    assert [f.value for f in result.frames] == [
        {"echo": ["***", "the ***!"]},
        {"echo": ["***", "the ***!"]},
    ]
    assert "hunter2" not in render_result(result, with_frames=True)


def test_an_interrupted_run_keeps_what_ran_and_fails(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runwire.conformance import runner

    real = runner.run_case
    calls: list[str] = []

    def interrupt_second(family: Any, case: Any, config: Any) -> Any:
        calls.append(case.id)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(family, case, config)

    monkeypatch.setattr(runner, "run_case", interrupt_second)
    result = run_selected(server, "fake/echo/count/three", "fake/echo/echo/round-trip")
    assert [r.verdict for r in result.results] == [Verdict.PASS]
    assert result.interrupted_after == 1
    assert (result.exit_status, result.reasons) == (1, ["interrupted after 1 case(s)"])
