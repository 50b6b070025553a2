"""Tests for runtime/transport/zmq_endpoint.py and zmq_security.py over loopback ZeroMQ.

A small server on the generated ``WorkflowServerBase`` (controllable handlers: one that blocks
until released, one that raises, one whose reply breaks its schema) serves on 127.0.0.1 with
ports chosen at run time. Covered: CURVE accepted and rejected (no reply → client Timeout),
the Lazy Pirate recovery after a timeout (async and blocking clients), bad replies, every bad request kind, handler failures that keep
the server serving, the insecure-loopback rule, port ranges, and the publisher's seq,
heartbeat and shutdown with a subscriber's gap and dead-publisher detection. Every scenario
runs under an asyncio timeout; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import zmq
import zmq.asyncio

from runwire.generated.workflow import WorkflowServerBase, models
from runwire.runtime.errors import LocalProtocolError, RemoteProtocolError, Timeout
from runwire.runtime.transport.zmq_endpoint import (
    CommandError,
    PublisherDead,
    RequestContext,
    RequestError,
    ZmqClientBase,
    ZmqSubscriberBase,
    ZmqSyncClientBase,
)
from runwire.runtime.transport.zmq_security import (
    CurveClientSecurity,
    CurveKeyError,
    CurveServerSecurity,
    ServiceKeys,
    authorize_client_key,
    create_keypair,
    create_service_keys,
    is_loopback,
    load_keypair,
    require_loopback,
)

T = TypeVar("T")
SCENARIO_S = 10.0
SHORT_S = 0.3  # a client timeout that is meant to run out
WAIT_S = 3.0  # a bound on something that should happen soon


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(SCENARIO_S):
            return await coroutine

    return asyncio.run(bounded())


def ok(**fields: Any) -> models.ControlResult:
    values: dict[str, Any] = {
        "accepted": True,
        "command_id": None,
        "matched": [],
        "message": "Command queued",
    }
    values.update(fields)
    return models.ControlResult.model_validate(values)


class Server(WorkflowServerBase):
    """Handlers: ``hold`` blocks until :attr:`release_hold` is set; ``release`` raises
    ZeroDivisionError; ``resume`` raises CommandError; ``poll`` raises KeyError;
    ``entire_workflow`` returns data that breaks its schema; ``trigger`` returns data that is
    not JSON; the rest answer at once. Both kinds of handler are here: plain functions
    (``ping_workflow``, ``pause``, ``resume``, ``poll``, ``entire_workflow``...) answered as
    the request is read, and coroutine functions (``api``, ``hold``, ``release``,
    ``trigger``...) run in tasks."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.release_hold = asyncio.Event()
        self.hold_started = asyncio.Event()
        self.contexts: list[RequestContext] = []

    async def handle_api(self, args: models.ApiArgs, context: RequestContext) -> models.ApiData:
        if args.endpoint is None:
            return models.ApiData(self.command_names())
        return models.ApiData(self.describe_command(args.endpoint))

    def handle_ping_workflow(
        self, args: models.PingWorkflowArgs, context: RequestContext
    ) -> models.PingData:
        self.contexts.append(context)
        return models.PingData(True)

    def handle_pause(self, args: models.PauseArgs, context: RequestContext) -> models.ControlResult:
        return ok()

    def handle_resume(
        self, args: models.ResumeArgs, context: RequestContext
    ) -> models.ControlResult:
        raise CommandError("workflow is not paused", code="command_failed")

    async def handle_stop(
        self, args: models.StopArgs, context: RequestContext
    ) -> models.ControlResult:
        return ok()

    async def handle_hold(
        self, args: models.HoldArgs, context: RequestContext
    ) -> models.ControlResult:
        self.hold_started.set()
        await self.release_hold.wait()
        return ok(matched=["1/foo"])

    async def handle_release(
        self, args: models.ReleaseArgs, context: RequestContext
    ) -> models.ControlResult:
        raise ZeroDivisionError("handler bug")

    async def handle_trigger(
        self, args: models.TriggerArgs, context: RequestContext
    ) -> models.ControlResult:
        return {"accepted": True, "command_id": None, "matched": [], "message": object()}  # type: ignore[return-value]

    async def handle_kill(
        self, args: models.KillArgs, context: RequestContext
    ) -> models.ControlResult:
        return ok()

    def handle_poll(self, args: models.PollArgs, context: RequestContext) -> models.ControlResult:
        raise KeyError("plain handler bug")

    async def handle_remove(
        self, args: models.RemoveArgs, context: RequestContext
    ) -> models.ControlResult:
        return ok()

    async def handle_set(
        self, args: models.SetArgs, context: RequestContext
    ) -> models.ControlResult:
        return ok()

    async def handle_message(
        self, args: models.MessageArgs, context: RequestContext
    ) -> models.ControlResult:
        return ok()

    async def handle_broadcast(
        self, args: models.BroadcastArgs, context: RequestContext
    ) -> models.ControlResult:
        return ok()

    def handle_entire_workflow(
        self, args: models.EntireWorkflowArgs, context: RequestContext
    ) -> models.EntireWorkflow:
        return {"workflow": None}  # type: ignore[return-value]

    def handle_data_elements(
        self, args: models.DataElementsArgs, context: RequestContext
    ) -> models.DataElements:
        return models.DataElements.model_validate(
            {"element_type": args.element_type.root, "elements": []}
        )


class Client(ZmqClientBase):
    COMMANDS = WorkflowServerBase.COMMANDS
    ERROR_REPLY_URI = WorkflowServerBase.ERROR_REPLY_URI


class SyncClient(ZmqSyncClientBase):
    COMMANDS = WorkflowServerBase.COMMANDS
    ERROR_REPLY_URI = WorkflowServerBase.ERROR_REPLY_URI


class Subscriber(ZmqSubscriberBase):
    TOPICS = WorkflowServerBase.TOPICS
    HEARTBEAT_TOPIC = WorkflowServerBase.HEARTBEAT_TOPIC
    SHUTDOWN_TOPIC = WorkflowServerBase.SHUTDOWN_TOPIC


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> ServiceKeys:
    return create_service_keys(tmp_path_factory.mktemp("service"))


def error_of(frame: bytes) -> dict[str, Any]:
    reply = json.loads(frame)
    assert set(reply) <= {"error", "id"}, reply
    error: dict[str, Any] = reply["error"]
    return error


# --- CURVE --------------------------------------------------------------------------------


def test_an_authorised_curve_client_is_served(keys: ServiceKeys) -> None:
    async def scenario() -> None:
        server = Server()
        endpoints = await server.start(port=0, publish=False, security=keys.server_security())
        assert endpoints.security == "curve" and endpoints.server_public_key is not None
        client = Client("127.0.0.1", endpoints.port, security=keys.client_security())
        try:
            assert await client.request("ping_workflow") is True
        finally:
            client.close()
            await server.stop()

    run(scenario())


def test_clients_without_an_authorised_key_get_no_reply(keys: ServiceKeys, tmp_path: Path) -> None:
    """As the original: CURVE drops them silently, so they time out; the server serves on."""
    stranger_public, stranger_secret = create_keypair(tmp_path / "stranger", "stranger")
    wrong_server_public, _ = create_keypair(tmp_path / "other", "server")

    async def scenario() -> None:
        server = Server()
        endpoints = await server.start(port=0, publish=False, security=keys.server_security())
        port = endpoints.port
        intruders = [
            Client(  # a key the server does not know
                "127.0.0.1",
                port,
                security=CurveClientSecurity.from_files(stranger_secret, keys.server_public),
                timeout_s=SHORT_S,
            ),
            Client(  # a plaintext client
                "127.0.0.1", port, timeout_s=SHORT_S
            ),
            Client(  # the right client key, the wrong server key
                "127.0.0.1",
                port,
                security=CurveClientSecurity.from_files(keys.client_secret, wrong_server_public),
                timeout_s=SHORT_S,
            ),
        ]
        friend = Client("127.0.0.1", port, security=keys.client_security())
        try:
            for intruder in intruders:
                with pytest.raises(Timeout):
                    await intruder.request("ping_workflow")
            assert await friend.request("ping_workflow") is True
            assert server.requests_served == 1
            # authorising the stranger's key takes effect on reload
            authorize_client_key(keys.authorized_keys_dir, stranger_public, "stranger")
            server.reload_authorized_keys()
            intruders[0].timeout_s = WAIT_S
            assert await intruders[0].request("ping_workflow") is True
        finally:
            (keys.authorized_keys_dir / "stranger.key").unlink(missing_ok=True)
            for client in [*intruders, friend]:
                client.close()
            await server.stop()

    run(scenario())


def test_key_files_are_private_and_fail_loudly(keys: ServiceKeys, tmp_path: Path) -> None:
    for path in (keys.server_secret, keys.client_secret, keys.authorized_keys_dir):
        mode = path.stat().st_mode & 0o777
        assert mode in (0o600, 0o700), (path, oct(mode))
    assert load_keypair(keys.client_secret).public != load_keypair(keys.server_secret).public
    with pytest.raises(CurveKeyError, match="no secret key"):
        load_keypair(keys.server_public)
    with pytest.raises(CurveKeyError, match="cannot load"):
        load_keypair(tmp_path / "missing.key_secret")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CurveKeyError, match="holds no"):
        CurveServerSecurity.from_files(keys.server_secret, tmp_path / "empty")
    with pytest.raises(CurveKeyError, match="does not exist"):
        CurveServerSecurity.from_files(keys.server_secret, tmp_path / "nowhere")


# --- plain TCP only on loopback, ports ------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.4.5", "::1", "localhost", "[::1]"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)
    require_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "*", "::", "192.168.1.10", "example.org", ""])
def test_other_addresses_are_refused_without_curve(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(ValueError, match="loopback"):
        require_loopback(host)

    async def scenario() -> None:
        server = Server()
        with pytest.raises(ValueError, match="loopback"):
            await server.start(host, port=0, insecure_loopback=True)

    run(scenario())


def test_security_must_be_chosen(keys: ServiceKeys) -> None:
    async def scenario() -> None:
        server = Server()
        with pytest.raises(ValueError, match="CurveZMQ keys are required"):
            await server.start(port=0)
        with pytest.raises(ValueError, match="not both"):
            await server.start(port=0, security=keys.server_security(), insecure_loopback=True)

    run(scenario())


def test_ports_come_from_the_configured_range() -> None:
    with socket.socket() as probe:  # a port that is free now
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]

    async def scenario() -> None:
        server = Server()
        endpoints = await server.start(
            port_range=(free, free), insecure_loopback=True, publish=False
        )
        try:
            assert endpoints.port == free
            assert endpoints.address() == f"tcp://127.0.0.1:{free}"
        finally:
            await server.stop()

    run(scenario())


def test_ipv6_loopback() -> None:
    async def scenario() -> None:
        server = Server()
        endpoints = await server.start("::1", port=0, insecure_loopback=True, publish=False)
        client = Client("::1", endpoints.port)
        try:
            assert endpoints.address().startswith("tcp://[::1]:")
            assert await client.request("ping_workflow") is True
        finally:
            client.close()
            await server.stop()

    run(scenario())


# --- Lazy Pirate ----------------------------------------------------------------------------


def test_a_timeout_resets_the_socket_and_the_next_call_works() -> None:
    async def scenario() -> None:
        server = Server()
        endpoints = await server.start(port=0, insecure_loopback=True, publish=False)
        client = Client("127.0.0.1", endpoints.port, timeout_s=SHORT_S)
        try:
            with pytest.raises(Timeout) as caught:
                await client.request("hold", {"tasks": ["1/foo"]})
            assert caught.value.timeout_s == SHORT_S and "hold" in caught.value.operation
            assert client.resets == 1
            assert await client.request("ping_workflow", timeout_s=WAIT_S) is True
            # the late reply to the abandoned request goes nowhere and breaks nothing
            server.release_hold.set()
            assert await client.request("pause", timeout_s=WAIT_S) == ok().to_wire()
            assert await client.request("ping_workflow") is True
        finally:
            client.close()
            await server.stop()

    run(scenario())


def test_a_request_to_nobody_times_out_and_the_client_recovers() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario() -> None:
        client = Client("127.0.0.1", port, timeout_s=SHORT_S)
        try:
            with pytest.raises(Timeout):
                await client.request("ping_workflow")
            server = Server()
            await server.start(port=port, insecure_loopback=True, publish=False)
            try:
                assert await client.request("ping_workflow", timeout_s=WAIT_S) is True
            finally:
                await server.stop()
        finally:
            client.close()

    run(scenario())


def test_a_cancelled_call_leaves_the_client_usable() -> None:
    async def scenario() -> None:
        server = Server()
        endpoints = await server.start(port=0, insecure_loopback=True, publish=False)
        client = Client("127.0.0.1", endpoints.port, timeout_s=WAIT_S)
        try:
            call = asyncio.create_task(client.request("hold", {"tasks": ["1/foo"]}))
            await server.hold_started.wait()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert await client.request("ping_workflow") is True
        finally:
            server.release_hold.set()
            client.close()
            await server.stop()

    run(scenario())


# --- bad requests, handler failures ---------------------------------------------------------


BAD_REQUESTS = [
    (b"not json", "parse_error", "Expecting value"),
    (b"\xff", "parse_error", "UTF-8"),
    (b"[1, 2]", "invalid_request", "not array"),
    (b"[]", "invalid_request", "not array"),
    (b"42", "invalid_request", "not number"),
    (b'{"args": {}}', "invalid_request", "missing field 'command'"),
    (b'{"command": "ping_workflow"}', "invalid_request", "missing field 'args'"),
    (b'{"command": ["api"], "args": {}}', "invalid_request", "must be a string"),
    (b'{"command": "ping_workflow", "args": {}, "extra": 1}', "invalid_request", "extra"),
    (b'{"command": "ping_workflow", "args": []}', "invalid_request", "object"),
    (b'{"command": "hold", "args": {}}', "invalid_args", "tasks"),
    (b'{"command": "hold", "args": {"tasks": ["1/foo"], "x": 1}}', "invalid_args", "x"),
    (b'{"command": "data_elements", "args": {"element_type": "all"}}', "invalid_args", "all"),
    (b'{"command": "nosuch", "args": {}}', "unknown_command", "No method by the name 'nosuch'"),
    (b'{"command": "__dir__", "args": {}}', "unknown_command", "'__dir__'"),
    (b'{"command": "__init__", "args": {}}', "unknown_command", "'__init__'"),
    (b'{"command": "register_endpoints", "args": {}}', "unknown_command", "register"),
    (b'{"command": "port", "args": {}}', "unknown_command", "'port'"),
    (b'{"command": "stop_serving", "args": {}}', "unknown_command", "stop_serving"),
    (b'{"command": "handle_pause", "args": {}}', "unknown_command", "handle_pause"),
    (b'{"command": "serve_frame", "args": {}}', "unknown_command", "serve_frame"),
    (b'{"command": "resume", "args": {}}', "command_failed", "workflow is not paused"),
    (b'{"command": "release", "args": {"tasks": ["1"]}}', "internal_error", "ZeroDivisionError"),
    (b'{"command": "poll", "args": {"tasks": ["1"]}}', "internal_error", "KeyError"),
    (b'{"command": "entire_workflow", "args": {}}', "internal_error", "breaks its schema"),
]


def test_every_bad_request_gets_an_error_envelope_and_serving_goes_on() -> None:
    async def scenario() -> None:
        server = Server(max_message_bytes=4096, hard_max_message_bytes=1 << 20)
        endpoints = await server.start(port=0, insecure_loopback=True, publish=False)
        client = Client("127.0.0.1", endpoints.port, timeout_s=WAIT_S)
        registry = server.registry
        try:
            frames = [*BAD_REQUESTS, (b"x" * 5000, "too_large", "over the limit of 4096")]
            for frame, code, text in frames:
                reply = await client.exchange(frame)
                registry.validator(server.ERROR_REPLY_URI or "").check(json.loads(reply))
                error = error_of(reply)
                assert error["code"] == code, (frame[:60], error)
                assert text in error["message"], (frame[:60], error)
                assert await client.request("ping_workflow") is True
            assert server.errors_sent == len(frames)
        finally:
            client.close()
            await server.stop()

    run(scenario())


def test_the_request_id_is_echoed_on_data_and_errors() -> None:
    async def scenario() -> None:
        server = Server()
        endpoints = await server.start(port=0, insecure_loopback=True, publish=False)
        client = Client("127.0.0.1", endpoints.port)
        try:
            good = await client.exchange(b'{"command": "ping_workflow", "args": {}, "id": "a1"}')
            assert json.loads(good) == {"data": True, "id": "a1"}
            bad = await client.exchange(b'{"command": "nosuch", "args": {}, "id": "a2"}')
            assert json.loads(bad)["id"] == "a2"
            plain = await client.exchange(b'{"command": "ping_workflow", "args": {}}')
            assert json.loads(plain) == {"data": True}
        finally:
            client.close()
            await server.stop()

    run(scenario())


def test_meta_reaches_the_handler_and_the_client_header_is_merged() -> None:
    async def scenario() -> None:
        server = Server()
        endpoints = await server.start(port=0, insecure_loopback=True, publish=False)
        client = Client("127.0.0.1", endpoints.port, header={"prog": "test", "host": "vm"})
        try:
            await client.request("ping_workflow", meta={"auth_user": "alice", "custom": 1})
            context = server.contexts[-1]
            assert context.meta == {"prog": "test", "host": "vm", "auth_user": "alice", "custom": 1}
            assert context.command == "ping_workflow" and context.peer
            assert context.request_id is not None and len(context.request_id) == 32
        finally:
            client.close()
            await server.stop()

    run(scenario())


def test_client_side_errors() -> None:
    async def scenario() -> None:
        server = Server()
        endpoints = await server.start(port=0, insecure_loopback=True, publish=False)
        client = Client("127.0.0.1", endpoints.port)
        try:
            with pytest.raises(LocalProtocolError, match="tasks"):
                await client.request("hold", {"tasks": []})
            assert server.requests_served == 0  # nothing was sent
            with pytest.raises(RequestError) as caught:
                await client.request("resume")
            assert caught.value.code == "command_failed"
            assert caught.value.message == "workflow is not paused"
            assert caught.value.command == "resume"
            with pytest.raises(RequestError) as unknown:
                await client.request("nosuch")  # not in the table: sent unchecked
            assert unknown.value.code == "unknown_command"
        finally:
            client.close()
            await server.stop()

    run(scenario())


def test_a_reply_that_is_not_json_is_an_internal_error_and_serving_goes_on() -> None:
    async def scenario() -> None:
        server = Server(validate_replies=False)
        endpoints = await server.start(port=0, insecure_loopback=True, publish=False)
        client = Client("127.0.0.1", endpoints.port)
        try:
            error = error_of(
                await client.exchange(b'{"command": "trigger", "args": {"tasks": ["1"]}}')
            )
            assert error["code"] == "internal_error" and "not JSON" in error["message"]
            assert await client.request("ping_workflow") is True
        finally:
            client.close()
            await server.stop()

    run(scenario())


def test_a_slow_handler_times_out_and_does_not_block_others() -> None:
    async def scenario() -> None:
        server = Server(handler_timeout_s=SHORT_S * 3)
        endpoints = await server.start(port=0, insecure_loopback=True, publish=False)
        slow = Client("127.0.0.1", endpoints.port, timeout_s=WAIT_S)
        fast = Client("127.0.0.1", endpoints.port, timeout_s=WAIT_S)
        try:
            hold = asyncio.create_task(
                slow.exchange(b'{"command": "hold", "args": {"tasks": ["1"]}}')
            )
            await server.hold_started.wait()
            started = time.monotonic()
            assert await fast.request("ping_workflow") is True
            assert time.monotonic() - started < SHORT_S * 3
            error = error_of(await hold)
            assert error["code"] == "internal_error" and "did not finish" in error["message"]
        finally:
            slow.close()
            fast.close()
            await server.stop()

    run(scenario())


def test_frames_over_the_hard_bound_are_dropped_and_serving_goes_on() -> None:
    async def scenario() -> None:
        server = Server(max_message_bytes=1024, hard_max_message_bytes=2048)
        endpoints = await server.start(port=0, insecure_loopback=True, publish=False)
        client = Client("127.0.0.1", endpoints.port, timeout_s=SHORT_S)
        try:
            with pytest.raises(Timeout):
                await client.exchange(b"x" * 4096)
            assert await client.request("ping_workflow", timeout_s=WAIT_S) is True
        finally:
            client.close()
            await server.stop()

    run(scenario())


def test_a_multi_frame_request_is_refused() -> None:
    async def scenario() -> None:
        server = Server()
        endpoints = await server.start(port=0, insecure_loopback=True, publish=False)
        context = zmq.asyncio.Context()
        req = context.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(endpoints.address())
        try:
            await req.send_multipart([b'{"command": "ping_workflow", "args": {}}', b"more"])
            async with asyncio.timeout(WAIT_S):
                reply = await req.recv()
            assert error_of(reply)["code"] == "invalid_request"
        finally:
            req.close()
            context.term()
            await server.stop()

    run(scenario())


def test_a_burst_longer_than_one_read_batch_is_answered_in_full() -> None:
    """More requests than the server reads in one loop turn, all queued at once: every one
    is answered (the server reads on by itself; the FD signals only once)."""
    count = 300

    async def scenario() -> None:
        server = Server()
        endpoints = await server.start(port=0, insecure_loopback=True, publish=False)
        context = zmq.asyncio.Context()
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(endpoints.address())
        try:
            for index in range(count):
                frame = json.dumps({"command": "ping_workflow", "args": {}, "id": f"r{index}"})
                await dealer.send_multipart([b"", frame.encode()])
            seen = set()
            for _ in range(count):
                _, reply = await asyncio.wait_for(dealer.recv_multipart(), WAIT_S)
                answer = json.loads(reply)
                assert answer["data"] is True
                seen.add(answer["id"])
            assert seen == {f"r{index}" for index in range(count)}
        finally:
            dealer.close()
            context.term()
            await server.stop()

    run(scenario())


def test_a_handler_s_own_timeout_error_is_not_taken_for_the_time_bound() -> None:
    class RaisesTimeoutError(Server):
        async def handle_kill(
            self, args: models.KillArgs, context: RequestContext
        ) -> models.ControlResult:
            raise TimeoutError("the cluster did not answer")

    async def scenario() -> None:
        server = RaisesTimeoutError(handler_timeout_s=WAIT_S)
        error = error_of(await server.serve_frame(b'{"command":"kill","args":{"tasks":["1"]}}'))
        assert error["code"] == "internal_error"
        assert "TimeoutError: the cluster did not answer" in error["message"]

    run(scenario())


def test_serve_frame_needs_no_socket() -> None:
    async def scenario() -> None:
        server = Server()
        assert json.loads(await server.serve_frame(b'{"command":"ping_workflow","args":{}}')) == {
            "data": True
        }
        assert error_of(await server.serve_frame(b"[]"))["code"] == "invalid_request"

    run(scenario())


def test_api_lists_the_registered_commands_only() -> None:
    async def scenario() -> None:
        server = Server()
        names = json.loads(await server.serve_frame(b'{"command":"api","args":{}}'))["data"]
        assert names == list(WorkflowServerBase.COMMANDS)
        assert "handle_pause" not in names and "start" not in names
        doc = json.loads(await server.serve_frame(b'{"command":"api","args":{"endpoint":"x"}}'))
        assert doc == {"data": 'No method by name "x"'}

    run(scenario())


# --- the blocking client --------------------------------------------------------------------


def test_the_blocking_client_times_out_resets_and_recovers(background_loop: Any) -> None:
    server = Server()
    endpoints = background_loop.run(server.start(port=0, insecure_loopback=True, publish=False))
    try:
        with SyncClient("127.0.0.1", endpoints.port, timeout_s=SHORT_S) as client:
            started = time.monotonic()
            with pytest.raises(Timeout) as caught:
                client.request("hold", {"tasks": ["1/foo"]})
            assert time.monotonic() - started >= SHORT_S
            assert caught.value.timeout_s == SHORT_S and "hold" in caught.value.operation
            assert client.resets == 1
            assert client.request("ping_workflow", timeout_s=WAIT_S) is True
            # the late reply to the abandoned request goes nowhere and breaks nothing
            background_loop.loop.call_soon_threadsafe(server.release_hold.set)
            assert client.request("pause", timeout_s=WAIT_S) == ok().to_wire()
            assert client.resets == 1
    finally:
        background_loop.run(server.stop())


def test_a_blocking_request_to_nobody_times_out_and_the_client_recovers(
    background_loop: Any,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with SyncClient("127.0.0.1", port, timeout_s=SHORT_S) as client:
        with pytest.raises(Timeout):
            client.request("ping_workflow")
        server = Server()
        background_loop.run(server.start(port=port, insecure_loopback=True, publish=False))
        try:
            assert client.request("ping_workflow", timeout_s=WAIT_S) is True
        finally:
            background_loop.run(server.stop())


def test_the_blocking_client_raises_what_the_async_one_raises(background_loop: Any) -> None:
    server = Server()
    endpoints = background_loop.run(server.start(port=0, insecure_loopback=True, publish=False))
    try:
        with SyncClient(
            "127.0.0.1", endpoints.port, timeout_s=WAIT_S, header={"prog": "t"}
        ) as client:
            with pytest.raises(LocalProtocolError, match="tasks"):
                client.request("hold", {"tasks": []})
            assert server.requests_served == 0  # nothing was sent
            with pytest.raises(RequestError) as caught:
                client.request("resume")
            assert (caught.value.code, caught.value.message) == (
                "command_failed",
                "workflow is not paused",
            )
            with pytest.raises(RequestError) as unknown:
                client.request("nosuch")  # not in the table: sent unchecked
            assert unknown.value.code == "unknown_command"
            client.request("ping_workflow", meta={"auth_user": "alice"})
            assert server.contexts[-1].meta == {"prog": "t", "auth_user": "alice"}
    finally:
        background_loop.run(server.stop())


def test_the_blocking_client_works_where_an_event_loop_runs(background_loop: Any) -> None:
    server = Server()
    endpoints = background_loop.run(server.start(port=0, insecure_loopback=True, publish=False))

    async def in_a_loop() -> Any:
        with SyncClient("127.0.0.1", endpoints.port, timeout_s=WAIT_S) as client:
            return client.request("ping_workflow")

    try:
        assert run(in_a_loop()) is True
    finally:
        background_loop.run(server.stop())


LYING_REPLIES = [
    (b"not json", RemoteProtocolError, "not JSON"),
    (b"[true]", RemoteProtocolError, "must be a JSON object"),
    (b'{"data": true, "id": "someone-else"}', RemoteProtocolError, "echoes id"),
    (b'{"data": "yes"}', RemoteProtocolError, "data"),
    (b'{"error": {"message": "no", "code": "command_failed"}}', RequestError, "no"),
]


def liar(replies: list[bytes]) -> tuple[threading.Thread, int]:
    """A raw ROUTER in a thread that answers each request with the next of ``replies``
    (each receive bounded), then stops."""
    context = zmq.Context.instance()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.RCVTIMEO, int(WAIT_S * 1000))
    port = router.bind_to_random_port("tcp://127.0.0.1")

    def serve() -> None:
        try:
            for reply in replies:
                *route, _ = router.recv_multipart()
                router.send_multipart([*route, reply])
        finally:
            router.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread, port


@pytest.mark.parametrize("blocking", [False, True], ids=["async", "blocking"])
def test_both_clients_refuse_bad_replies_and_recover(blocking: bool) -> None:
    thread, port = liar([reply for reply, _, _ in LYING_REPLIES])
    try:
        if blocking:
            with SyncClient("127.0.0.1", port, timeout_s=WAIT_S) as sync_client:
                for _, error, text in LYING_REPLIES:
                    with pytest.raises(error, match=text):
                        sync_client.request("ping_workflow")
        else:

            async def scenario() -> None:
                async with Client("127.0.0.1", port, timeout_s=WAIT_S) as client:
                    for _, error, text in LYING_REPLIES:
                        with pytest.raises(error, match=text):
                            await client.request("ping_workflow")

            run(scenario())
    finally:
        thread.join(WAIT_S * 2)
    assert not thread.is_alive()


# --- publisher and subscriber -------------------------------------------------------------


async def first_heartbeat(subscriber: ZmqSubscriberBase) -> Any:
    """Wait (bounded) until the subscription is live: the first heartbeat arrives."""
    while True:
        published = await subscriber.receive(timeout_s=WAIT_S)
        if published.topic == "heartbeat":
            return published


def test_published_messages_carry_seq_and_heartbeats_and_end_with_shutdown(
    keys: ServiceKeys,
) -> None:
    async def scenario() -> None:
        server = Server(heartbeat_interval_s=0.05)
        endpoints = await server.start(port=0, security=keys.server_security())
        assert endpoints.publish_port is not None
        subscriber = Subscriber(
            "127.0.0.1", endpoints.publish_port, security=keys.client_security()
        )
        try:
            subscriber.connect()
            beat = await first_heartbeat(subscriber)
            assert beat.payload["interval_s"] == 0.05
            assert isinstance(beat.message, models.Heartbeat)
            assert subscriber.liveness.interval_s == 0.05
            body = {"added": [], "updated": [], "pruned": ["1/foo"]}
            sent = await server.publish("task_proxies", body)
            assert sent["pruned"] == ["1/foo"] and isinstance(sent["time"], float)
            with pytest.raises(LocalProtocolError):
                await server.publish("task_proxies", {"added": "nope"})
            seen: list[int] = []
            while True:
                published = await subscriber.receive(timeout_s=WAIT_S)
                seen.append(published.payload["seq"])
                assert published.missed == 0
                if published.topic == "task_proxies":
                    assert isinstance(published.message, models.TaskProxiesDelta)
                    assert published.payload == sent
                    break
            # several heartbeats go by on their own
            beats = 0
            while beats < 3:
                beats += (await subscriber.receive(timeout_s=WAIT_S)).topic == "heartbeat"
            await server.stop("REQUEST(CLEAN)")
            remaining = [published async for published in subscriber]
            assert remaining[-1].topic == "shutdown"
            assert remaining[-1].payload["reason"] == "REQUEST(CLEAN)"
            assert seen == list(range(beat.payload["seq"] + 1, beat.payload["seq"] + 1 + len(seen)))
            assert subscriber.tracker.missed_total == 0
            assert subscriber.tracker.last_seq == server.publisher.next_seq - 1
        finally:
            subscriber.close()
            await server.stop()

    run(scenario())


async def raw_publisher() -> tuple[zmq.asyncio.Context, zmq.asyncio.Socket, int]:
    """An XPUB socket on loopback: it hears the subscription, so sends are not lost."""
    context = zmq.asyncio.Context()
    xpub = context.socket(zmq.XPUB)
    xpub.setsockopt(zmq.LINGER, 0)
    port = xpub.bind_to_random_port("tcp://127.0.0.1")
    return context, xpub, port


async def send(xpub: zmq.asyncio.Socket, topic: str, payload: Any) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    await xpub.send_multipart([topic.encode(), data])


def test_the_subscriber_reports_gaps_restarts_and_bad_messages() -> None:
    async def scenario() -> None:
        context, xpub, port = await raw_publisher()
        subscriber = Subscriber("127.0.0.1", port, topics=["heartbeat", "shutdown"])
        try:
            subscriber.connect()
            async with asyncio.timeout(WAIT_S):
                assert await xpub.recv() == b"\x01"  # the subscription (to everything)
            for seq in (0, 1, 5):
                await send(xpub, "heartbeat", {"seq": seq, "time": 1.0, "interval_s": 60.0})
            steps = [(await subscriber.receive(timeout_s=WAIT_S)).step for _ in range(3)]
            assert [s.missed for s in steps if s] == [0, 0, 3]
            await send(xpub, "workflow", {"seq": 6})  # not handed out, still counted
            await send(xpub, "heartbeat", {"seq": 0, "time": 2.0, "interval_s": 60.0})
            restarted = await subscriber.receive(timeout_s=WAIT_S)
            assert restarted.step is not None and restarted.step.restarted
            await send(xpub, "heartbeat", b"not json")
            with pytest.raises(RemoteProtocolError, match="not JSON"):
                await subscriber.receive(timeout_s=WAIT_S)
            await send(xpub, "heartbeat", {"seq": 1, "time": 2.0})  # breaks the schema
            with pytest.raises(RemoteProtocolError, match="interval_s"):
                await subscriber.receive(timeout_s=WAIT_S)
            await xpub.send_multipart([b"heartbeat"])
            with pytest.raises(RemoteProtocolError, match="1 frames"):
                await subscriber.receive(timeout_s=WAIT_S)
            with pytest.raises(Timeout) as quiet:
                await subscriber.receive(timeout_s=0.05)
            assert not isinstance(quiet.value, PublisherDead)
            await send(xpub, "heartbeat", {"seq": 2, "time": 3.0, "interval_s": 60.0})
            step = (await subscriber.receive(timeout_s=WAIT_S)).step
            assert step is not None and (step.seq, step.missed, step.restarted) == (2, 0, False)
            assert subscriber.tracker.missed_total == 3
        finally:
            subscriber.close()
            xpub.close()
            context.term()

    run(scenario())


def test_a_silent_publisher_is_declared_dead() -> None:
    async def scenario() -> None:
        context, xpub, port = await raw_publisher()
        subscriber = Subscriber("127.0.0.1", port, dead_after=3)
        try:
            subscriber.connect()
            async with asyncio.timeout(WAIT_S):
                await xpub.recv()
            await send(xpub, "heartbeat", {"seq": 0, "time": 1.0, "interval_s": 0.05})
            assert (await subscriber.receive(timeout_s=WAIT_S)).topic == "heartbeat"
            started = time.monotonic()
            with pytest.raises(PublisherDead) as caught:
                await subscriber.receive(timeout_s=WAIT_S)
            silence = time.monotonic() - started
            assert 0.1 <= silence < WAIT_S
            assert caught.value.timeout_s == pytest.approx(0.15)
        finally:
            subscriber.close()
            xpub.close()
            context.term()

    run(scenario())
