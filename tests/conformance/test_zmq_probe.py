"""The recording ZeroMQ probes (``conformance/zmq.py``) against raw pyzmq peers: what they
record, what they judge, and how they fail.

Each scenario runs as a case of the workflow family (for its manifest and schemas), through
the runner, against a tiny peer on a thread: a ROUTER that answers as told, or a PUB that
sends given frames.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq

from runwire.conformance import (
    PLAIN,
    CaseContext,
    CaseResult,
    CaseSet,
    FailureKind,
    RunConfig,
    Verdict,
    load_family,
    parse_targets,
    resolve_options,
    run_case,
)
from runwire.conformance.workflow import FAMILY

WORKFLOW = load_family(FAMILY)
STEP_S = 1.0
HEARTBEAT = {"seq": 0, "time": 1700000000.0, "interval_s": 1.0}


class Router:
    """A ROUTER on a thread: answers each request with ``answer(body)`` (None: no reply)."""

    def __init__(self, answer: Callable[[bytes], list[bytes] | None]) -> None:
        self.context: zmq.Context[Any] = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        self.answer = answer
        self.received: list[list[bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self.socket.poll(50):
                continue
            frames = self.socket.recv_multipart()
            route, body = frames[:2], frames[2:]
            self.received.append(body)
            reply = self.answer(b"".join(body))
            if reply is not None:
                self.socket.send_multipart([*route, *reply])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.context.destroy(linger=0)


@pytest.fixture
def pub() -> Iterator[tuple[zmq.Socket[Any], int]]:
    context: zmq.Context[Any] = zmq.Context()
    socket = context.socket(zmq.PUB)
    socket.setsockopt(zmq.LINGER, 0)
    port = socket.bind_to_random_port("tcp://127.0.0.1")
    yield socket, port
    context.destroy(linger=0)


def run_one(
    func: Callable[[CaseContext], Any], runtime_port: int = 1, publish_port: int = 2
) -> CaseResult:
    cases = CaseSet("workflow")
    cases.case("workflow/runtime/probe/scenario", "a probe scenario")(func)
    (case,) = cases
    family = dataclasses.replace(WORKFLOW, cases=(case,))
    config = RunConfig(
        targets=parse_targets(
            [f"runtime=tcp://127.0.0.1:{runtime_port}", f"publish=tcp://127.0.0.1:{publish_port}"],
            WORKFLOW.manifest,
        ),
        options=resolve_options(FAMILY, {"insecure": True}),
        step_timeout_s=STEP_S,
    )
    return run_case(family, case, config)


def received(result: CaseResult) -> list[Any]:
    return [f.value if f.is_json else f.raw for f in result.frames if f.direction == "received"]


def test_a_reply_is_recorded_validated_and_returned() -> None:
    router = Router(lambda body: [json.dumps({"data": True, "id": "r1"}).encode()])
    try:

        async def scenario(ctx: CaseContext) -> None:
            conn = await ctx.open_zmq("runtime")
            data = await conn.request_reply(
                "ping_workflow", {"command": "ping_workflow", "args": {}, "id": "r1"}
            )
            assert data == {"data": True, "id": "r1"}
            assert conn.last_received is not None and conn.last_received.valid

        result = run_one(scenario, router.port)
    finally:
        router.close()
    assert result.verdict is Verdict.PASS, result.failure
    sent = [f for f in result.frames if f.direction == "sent"]
    assert sent[0].value["command"] == "ping_workflow" and sent[0].valid
    assert received(result) == [{"data": True, "id": "r1"}]


def test_an_error_reply_where_data_is_due_fails_showing_it() -> None:
    error = {"error": {"message": "no", "code": "command_failed"}}
    router = Router(lambda body: [json.dumps(error).encode()])
    try:

        async def scenario(ctx: CaseContext) -> None:
            conn = await ctx.open_zmq("runtime")
            await conn.request_reply("ping_workflow", {"command": "ping_workflow", "args": {}})

        result = run_one(scenario, router.port)
    finally:
        router.close()
    assert result.verdict is Verdict.FAIL and result.failure is not None
    assert "expected the ping_workflow reply, got an error reply" in result.failure.message


@pytest.mark.parametrize(
    ("reply", "kind", "text"),
    [
        ([b"not json"], FailureKind.PROTOCOL, "is not one frame of JSON"),
        ([b"{}", b"{}"], FailureKind.PROTOCOL, "is not one frame of JSON"),
        ([b'{"data": 5}'], FailureKind.SCHEMA, "does not match"),
    ],
)
def test_bad_replies_fail_with_their_kind(reply: list[bytes], kind: FailureKind, text: str) -> None:
    router = Router(lambda body: reply)
    try:

        async def scenario(ctx: CaseContext) -> None:
            conn = await ctx.open_zmq("runtime")
            await conn.exchange("ping_workflow", {"command": "ping_workflow", "args": {}})

        result = run_one(scenario, router.port)
    finally:
        router.close()
    assert result.verdict is Verdict.FAIL and result.failure is not None
    assert result.failure.kind is kind and text in result.failure.message, result.failure


def test_no_reply_is_checked_then_the_probe_recovers() -> None:
    answered = iter([None, [b'{"data": true}']])
    router = Router(lambda body: next(answered))
    try:

        async def scenario(ctx: CaseContext) -> None:
            conn = await ctx.open_zmq("runtime", security=PLAIN)
            await conn.send_raw(b"first", b"second", note="two frames")
            await conn.expect_no_reply(0.3)
            assert conn.resets == 1
            await conn.send({"command": "ping_workflow", "args": {}})
            frame = await conn.receive_frame()
            assert frame.value == {"data": True}

        result = run_one(scenario, router.port)
    finally:
        router.close()
    assert result.verdict is Verdict.PASS, result.failure
    assert router.received[0] == [b"first", b"second"]
    notes = [f.note for f in result.frames if f.direction == "sent"]
    assert notes[:2] == ["two frames (1/2)", "two frames (2/2)"]


def test_an_unexpected_reply_fails_expect_no_reply() -> None:
    router = Router(lambda body: [b'{"data": true}'])
    try:

        async def scenario(ctx: CaseContext) -> None:
            conn = await ctx.open_zmq("runtime")
            await conn.send({"command": "ping_workflow", "args": {}})
            await conn.expect_no_reply(0.5, what="a ping from a stranger")

        result = run_one(scenario, router.port)
    finally:
        router.close()
    assert result.verdict is Verdict.FAIL and result.failure is not None
    assert "expected no reply to a ping from a stranger within 0.5 s" in result.failure.message


def test_a_silent_server_times_out() -> None:
    router = Router(lambda body: None)
    try:

        async def scenario(ctx: CaseContext) -> None:
            conn = await ctx.open_zmq("runtime")
            await conn.exchange("api", {"command": "api", "args": {}})

        result = run_one(scenario, router.port)
    finally:
        router.close()
    assert result.verdict is Verdict.FAIL and result.failure is not None
    assert result.failure.kind is FailureKind.TIMEOUT
    assert "no reply from runtime within 1 s while waiting for the api reply" in (
        result.failure.message
    )


def publishing(socket: zmq.Socket[Any], messages: list[list[bytes]]) -> Callable[[], None]:
    """Start sending `messages` over and over (a slow joiner misses the first ones)."""
    stop = threading.Event()

    def send() -> None:
        while not stop.wait(0.05):
            for message in messages:
                socket.send_multipart(message)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()

    def end() -> None:
        stop.set()
        thread.join(5)

    return end


def test_published_messages_are_validated_by_topic(pub: tuple[zmq.Socket[Any], int]) -> None:
    socket, port = pub
    end = publishing(
        socket,
        [[b"heartbeat", json.dumps(HEARTBEAT).encode()], [b"extension", b'{"any": 1}']],
    )
    try:

        async def scenario(ctx: CaseContext) -> None:
            sub = await ctx.subscribe_zmq("publish")
            heartbeat = await sub.wait_for(lambda m: m.topic == "heartbeat", what="a heartbeat")
            assert heartbeat.payload["interval_s"] == 1.0 and heartbeat.frame.valid
            other = await sub.first(lambda m: m.topic == "extension", what="the extension")
            assert other.frame.valid is None  # a topic the manifest lacks: not judged
            assert other.frame.note == "topic extension (not in the manifest)"

        result = run_one(scenario, publish_port=port)
    finally:
        end()
    assert result.verdict is Verdict.PASS, result.failure


@pytest.mark.parametrize(
    ("message", "kind", "text"),
    [
        ([b"heartbeat"], FailureKind.PROTOCOL, "must be two frames"),
        ([b"heartbeat", b"{", b"x"], FailureKind.PROTOCOL, "must be two frames"),
        ([b"heartbeat", b"not json"], FailureKind.PROTOCOL, "the payload is not JSON"),
        (
            [b"heartbeat", json.dumps({**HEARTBEAT, "interval_s": -1}).encode()],
            FailureKind.SCHEMA,
            "does not match",
        ),
    ],
)
def test_malformed_published_messages_fail(
    pub: tuple[zmq.Socket[Any], int], message: list[bytes], kind: FailureKind, text: str
) -> None:
    socket, port = pub
    end = publishing(socket, [message])
    try:

        async def scenario(ctx: CaseContext) -> None:
            sub = await ctx.subscribe_zmq("publish")
            await sub.receive()

        result = run_one(scenario, publish_port=port)
    finally:
        end()
    assert result.verdict is Verdict.FAIL and result.failure is not None
    assert result.failure.kind is kind and text in result.failure.message, result.failure


def test_silence_and_waiting_in_vain(pub: tuple[zmq.Socket[Any], int]) -> None:
    _, port = pub

    async def scenario(ctx: CaseContext) -> None:
        sub = await ctx.subscribe_zmq("publish")
        await sub.expect_silence(0.2, why="nothing is published")
        assert await sub.collect(0.1) == []
        await sub.wait_for(lambda m: True, what="anything", timeout_s=0.2)

    result = run_one(scenario, publish_port=port)
    assert result.verdict is Verdict.FAIL and result.failure is not None
    assert result.failure.kind is FailureKind.TIMEOUT
    assert "publish: waited 0.2 s for anything, in vain" in result.failure.message
