"""End-to-end tests of the generated jobs bindings over loopback TCP (ports chosen at run time).

Small in-memory servers subclass the generated `DispatcherServerBase` and `AgentServerBase`;
the generated async clients, their sync facades and raw sockets drive them. Every test is
bounded (`run` puts a timeout on each scenario, every wait has its own bound) and nothing
sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import re
import threading
import time
import typing
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from runwire.generated.jobs import models
from runwire.generated.jobs.client import (
    AgentClient,
    AgentSyncClient,
    DispatcherClient,
    DispatcherSyncClient,
)
from runwire.generated.jobs.server import AgentServerBase, DispatcherServerBase
from runwire.runtime.errors import (
    ConnectionClosed,
    InvalidState,
    LimitExceeded,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    Timeout,
)
from runwire.runtime.transport.jsonlines_endpoint import JsonLinesServerBase
from runwire.runtime.transport.tcp import JsonLinesConnection, serve_jsonlines

T = TypeVar("T")
TEST_TIMEOUT_S = 5.0  # bound on one scenario
WAIT_S = 2.0  # bound on one wait inside a scenario
CLIENT_TIMEOUT_S = 2.0
MAX_MESSAGE_BYTES = 1024
SERVER_LOGGER = "runwire.runtime.transport.jsonlines_endpoint"

USER, PASSWORD = "alice", "secret"
AGENT_ERROR_TYPES = frozenset(
    typing.get_args(models.AgentErrorType.model_fields["root"].annotation)
)
UUID4 = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            return await coroutine

    return asyncio.run(bounded())


def unknown_id() -> str:
    return str(uuid.uuid4())


# --- the servers under test ----------------------------------------------------------------


@dataclass
class Job:
    """One job of the in-memory dispatcher. Procedures: "pending" never ends by itself,
    "broken_stream" and "no_terminator" make the stream handlers break the spec, anything
    else ends at once with its arguments as result. One packet per argument."""

    job_id: str
    request: models.CallRequest
    submit: int
    packets: list[Any]
    outcome: Any = None  # a JobOutcome member once the job has ended
    state: str = "running"
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def procedure(self) -> str:
        return self.request.procedure.root


class Dispatcher(DispatcherServerBase):
    """A tiny dispatcher: an in-memory job table, no agents."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.jobs: dict[str, Job] = {}
        self.connections = 0
        self.cancelled: list[str] = []  # handlers stopped (cancelled, closed) before the end
        self.handler_cancelled = asyncio.Event()
        self.handler_cancelled_sync = threading.Event()  # for servers in another thread

    async def serve_connection(self, connection: JsonLinesConnection) -> None:
        self.connections += 1
        await super().serve_connection(connection)

    def _record_cancel(self, name: str) -> None:
        self.cancelled.append(name)
        self.handler_cancelled.set()
        self.handler_cancelled_sync.set()

    @staticmethod
    def _no_such_job() -> models.ErrorReply:
        return models.ErrorReply(error={"type": "invalid_jobid", "message": "no job with this ID"})

    async def call(self, request: models.CallRequest) -> Any:
        if request.host.root == "broken":
            return {"harpcaller": 1, "job_id": "not-a-uuid"}  # breaks CallReply
        arguments = request.arguments.root
        values = arguments if isinstance(arguments, list) else list(arguments.values())
        job = Job(unknown_id(), request, int(time.time()), [{"arg": v} for v in values])
        if job.procedure != "pending":
            job.outcome = models.ResultReply(result=arguments)
            job.state = "finished"
            job.ended.set()
        self.jobs[job.job_id] = job
        return models.CallReply(harpcaller=1, job_id=job.job_id)

    async def cancel(self, request: models.CancelRequest) -> Any:
        job = self.jobs.get(request.cancel.root)
        if job is None:
            return self._no_such_job()
        if job.outcome is not None:
            return models.CancelReply(cancelled=False)
        job.outcome = models.CancelledReply(cancelled=True)
        job.state = "cancelled"
        job.ended.set()
        return models.CancelReply(cancelled=True)

    async def get_result(self, request: models.GetResultRequest) -> Any:
        job = self.jobs.get(request.get_result.root)
        if job is None:
            return self._no_such_job()
        if job.outcome is None and not request.wait:
            return models.NoResultReply(no_result=True)
        try:
            await job.ended.wait()
        except asyncio.CancelledError:
            self._record_cancel("get_result")
            raise
        return job.outcome

    async def get_status(self, request: models.GetStatusRequest) -> Any:
        job = self.jobs.get(request.get_status.root)
        if job is None:
            return self._no_such_job()
        return models.StatusReply.model_validate(self._summary(job))

    def _summary(self, job: Job) -> dict[str, Any]:
        request = job.request.to_wire()
        return {
            "call": {k: request[k] for k in ("procedure", "arguments", "host")},
            "time": {"submit": job.submit, "start": job.submit, "end": None},
            "info": request.get("info"),
            "state": job.state,
        }

    def _stream(self, job: Job, start: int) -> Iterator[Any]:
        for index in range(max(0, start), len(job.packets)):
            yield models.StreamPacket(packet=index, data=job.packets[index])
        if job.procedure == "broken_stream":
            yield {"packet": -1, "data": 1}  # breaks StreamPacket

    @staticmethod
    def _start(request: Any, count: int, default: int) -> int:
        if request.since is not None:
            return int(request.since.root)
        if request.recent is not None:
            return count - int(request.recent.root)
        return default

    async def follow_stream(self, request: models.FollowStreamRequest) -> AsyncIterator[Any]:
        job = self.jobs.get(request.follow_stream.root)
        if job is None:
            yield self._no_such_job()
            return
        finished = False
        try:
            for packet in self._stream(
                job, self._start(request, len(job.packets), len(job.packets))
            ):
                yield packet
            if job.procedure == "no_terminator":
                finished = True
                return
            await job.ended.wait()
            finished = True
            yield job.outcome
        finally:
            if not finished:
                self._record_cancel("follow_stream")

    async def read_stream(self, request: models.ReadStreamRequest) -> AsyncIterator[Any]:
        job = self.jobs.get(request.read_stream.root)
        if job is None:
            yield self._no_such_job()
            return
        for packet in self._stream(job, self._start(request, len(job.packets), 0)):
            yield packet
        yield job.outcome if job.outcome is not None else models.ContinueMarker(continue_=True)

    async def list_jobs(self, request: models.ListJobsRequest) -> Any:
        wanted = request.list_jobs
        rows = [
            {"job_id": job.job_id, **self._summary(job), "queue": None}
            for job in reversed(self.jobs.values())
            if (wanted.host is None or wanted.host.root == job.request.host.root)
            and (wanted.state is None or wanted.state.root == job.state)
        ]
        return models.JobList.model_validate(
            {"jobs": rows[: wanted.limit], "truncated": len(rows) > wanted.limit}
        )

    def malformed_reply(self, error: ProtocolError | LimitExceeded) -> models.ErrorReply:
        return models.ErrorReply(error={"type": "bad_request", "message": str(error)})


class Agent(AgentServerBase):
    """A tiny agent. Procedures: echo (result = arguments), count (streams 0..n-1),
    raise (an exception), hang (acknowledges, then waits for ever)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.handler_cancelled = asyncio.Event()

    async def call(self, request: models.AgentRequest) -> AsyncIterator[Any]:
        if (request.auth.user, request.auth.password) != (USER, PASSWORD):
            yield models.AgentError(
                harp=1, error={"type": "auth_error", "message": "unknown user or wrong password"}
            )
            return
        procedure, arguments = request.procedure.root, request.arguments.root
        if procedure == "echo":
            yield models.AgentAck(harp=1, stream_result=False)
            yield models.AgentResult(result=arguments)
        elif procedure == "count":
            yield models.AgentAck(harp=1, stream_result=True)
            for i in range(arguments[0]):
                yield models.AgentStreamItem(stream=i)
            yield models.AgentResult(result=None)
        elif procedure == "raise":
            yield models.AgentAck(harp=1, stream_result=False)
            yield models.AgentException(exception={"type": "ValueError", "message": "boom"})
        elif procedure == "hang":
            yield models.AgentAck(harp=1, stream_result=True)
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.handler_cancelled.set()
                raise
        else:
            yield models.AgentError(
                harp=1,
                error={
                    "type": "no_such_procedure",
                    "message": "no such procedure",
                    "data": {"procedure": procedure},
                },
            )

    def malformed_reply(self, error: ProtocolError | LimitExceeded) -> models.AgentError:
        kind = error.error_type if error.error_type in AGENT_ERROR_TYPES else "invalid_request"
        return models.AgentError(harp=1, error={"type": kind, "message": str(error)})


@contextlib.asynccontextmanager
async def serving(server: JsonLinesServerBase) -> AsyncIterator[int]:
    """Serve on 127.0.0.1:<free port>, yield the port, close the server afterwards."""
    listening = await server.serve("127.0.0.1", 0)
    try:
        yield listening.sockets[0].getsockname()[1]
    finally:
        listening.close()
        await listening.wait_closed()


@contextlib.contextmanager
def serving_in_thread(server: JsonLinesServerBase) -> Iterator[int]:
    """Serve from a background thread running its own loop; yield the port."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-server", daemon=True)
    thread.start()
    try:
        listening = asyncio.run_coroutine_threadsafe(server.serve("127.0.0.1", 0), loop)
        port = listening.result(WAIT_S).sockets[0].getsockname()[1]
        yield port
    finally:

        async def stop() -> None:
            if listening.done() and listening.exception() is None:
                listening.result().close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), loop).result(WAIT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT_S)
        assert not thread.is_alive()
        loop.close()


def dispatcher_client(port: int, timeout_s: float = CLIENT_TIMEOUT_S) -> DispatcherClient:
    return DispatcherClient("127.0.0.1", port, timeout_s=timeout_s)


def agent_client(port: int, timeout_s: float = CLIENT_TIMEOUT_S) -> AgentClient:
    return AgentClient("127.0.0.1", port, timeout_s=timeout_s)


def call_request(procedure: str = "echo", arguments: Any = None, **extra: Any) -> Any:
    return models.CallRequest(
        harpcaller=1,
        host=extra.pop("host", "web01"),
        procedure=procedure,
        arguments=[1, "a"] if arguments is None else arguments,
        **extra,
    )


async def submit(client: DispatcherClient, procedure: str = "echo", arguments: Any = None) -> str:
    reply = await client.call(call_request(procedure, arguments))
    assert isinstance(reply.root, models.CallReply)
    return reply.root.job_id.root


def follow(job_id: str, **options: int) -> models.FollowStreamRequest:
    return models.FollowStreamRequest(harpcaller=1, follow_stream=job_id, **options)


def read(job_id: str, **options: int) -> models.ReadStreamRequest:
    return models.ReadStreamRequest(harpcaller=1, read_stream=job_id, **options)


def agent_request(procedure: str, arguments: Any, password: str = PASSWORD) -> Any:
    return models.AgentRequest(
        harp=1, procedure=procedure, arguments=arguments, auth={"user": USER, "password": password}
    )


async def collect(stream: AsyncIterator[T], limit: int = 100) -> list[T]:
    """Every message of a reply stream (at most `limit`)."""
    items: list[T] = []
    async for item in stream:
        items.append(item)
        assert len(items) <= limit, "stream does not end"
    return items


def split_stream(messages: list[Any]) -> tuple[list[models.StreamPacket], Any]:
    """(packets, terminator) of a dispatcher stream, checking the order."""
    *packets, terminator = messages
    assert all(isinstance(p, models.StreamPacket) for p in packets)
    assert not isinstance(terminator, models.StreamPacket)
    return packets, terminator


async def raw_exchange(port: int, data: bytes, *, half_close: bool = False) -> list[Any]:
    """Write `data` on a fresh connection, read until the server closes, decode each line."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT_S)
    try:
        writer.write(data)
        if half_close:
            writer.write_eof()
        await writer.drain()
        received = await asyncio.wait_for(reader.read(), WAIT_S)  # until EOF: the server closed
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    assert received.endswith(b"\n"), received
    return [json.loads(line) for line in received.splitlines()]


# --- dispatcher: every operation -----------------------------------------------------------


def test_dispatcher_every_operation_round_trips() -> None:
    async def scenario() -> None:
        server = Dispatcher()
        async with serving(server) as port:
            client = dispatcher_client(port)
            request = call_request("echo", [10, 20, 30], info={"who": "ops"}, timeout=30)
            reply = await client.call(request)
            assert isinstance(reply, models.CallOrErrorReply)
            assert isinstance(reply.root, models.CallReply)
            assert reply.root.harpcaller == 1
            job_id = reply.root.job_id.root
            assert job_id in server.jobs
            assert server.jobs[job_id].request == request  # arrived intact
            assert re.match(UUID4, job_id)

            status = await client.get_status(
                models.GetStatusRequest(harpcaller=1, get_status=job_id)
            )
            assert isinstance(status, models.GetStatusReply)
            assert isinstance(status.root, models.StatusReply)
            assert status.root.call.to_wire() == {
                "procedure": "echo",
                "arguments": [10, 20, 30],
                "host": "web01",
            }
            assert status.root.info.root == {"who": "ops"}
            assert status.root.state is not None and status.root.state.root == "finished"

            result = await client.get_result(
                models.GetResultRequest(harpcaller=1, get_result=job_id, wait=True)
            )
            assert isinstance(result, models.GetResultReply)
            assert isinstance(result.root, models.ResultReply)
            assert result.root.result.root == [10, 20, 30]

            cancel = await client.cancel(models.CancelRequest(harpcaller=1, cancel=job_id))
            assert isinstance(cancel, models.CancelOrErrorReply)
            assert isinstance(cancel.root, models.CancelReply)
            assert cancel.root.cancelled is False  # already finished

            listed = await client.list_jobs(models.ListJobsRequest(harpcaller=1, list_jobs={}))
            assert isinstance(listed, models.ListJobsReply)
            assert isinstance(listed.root, models.JobList)
            assert [j.job_id.root for j in listed.root.jobs] == [job_id]
            assert listed.root.truncated is False

            followed = await collect(client.follow_stream(follow(job_id, since=0)))
            packets, terminator = split_stream(followed)
            assert [p.to_wire() for p in packets] == [
                {"packet": 0, "data": {"arg": 10}},
                {"packet": 1, "data": {"arg": 20}},
                {"packet": 2, "data": {"arg": 30}},
            ]
            assert isinstance(terminator, models.FollowStreamTerminator)
            assert isinstance(terminator.root, models.ResultReply)

            stored = await collect(client.read_stream(read(job_id)))
            packets, terminator = split_stream(stored)
            assert [p.packet.root for p in packets] == [0, 1, 2]
            assert isinstance(terminator, models.ReadStreamTerminator)
            assert terminator.root.to_wire() == {"result": [10, 20, 30]}
            assert server.connections == 7  # one connection per request

    run(scenario())


def test_dispatcher_unknown_job_id() -> None:
    async def scenario() -> None:
        async with serving(Dispatcher()) as port:
            client = dispatcher_client(port)
            job_id = unknown_id()
            replies = [
                await client.get_result(models.GetResultRequest(harpcaller=1, get_result=job_id)),
                await client.get_status(models.GetStatusRequest(harpcaller=1, get_status=job_id)),
                await client.cancel(models.CancelRequest(harpcaller=1, cancel=job_id)),
            ]
            for reply in replies:
                assert isinstance(reply.root, models.ErrorReply)
                assert reply.root.error.type.root == "invalid_jobid"
            for stream in (client.follow_stream(follow(job_id)), client.read_stream(read(job_id))):
                (only,) = await collect(stream)
                assert isinstance(only.root, models.ErrorReply)
                assert only.root.error.type.root == "invalid_jobid"

    run(scenario())


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"since": 0}, [0, 1, 2, 3, 4]),
        ({"since": 3}, [3, 4]),
        ({"since": 9}, []),
        ({"recent": 2}, [3, 4]),
        ({"recent": 9}, [0, 1, 2, 3, 4]),
        ({}, []),  # follow_stream: as recent 0
    ],
)
def test_follow_stream_packets_in_order_then_one_terminator(
    options: dict[str, int], expected: list[int]
) -> None:
    async def scenario() -> None:
        async with serving(Dispatcher()) as port:
            client = dispatcher_client(port)
            job_id = await submit(client, "echo", list("abcde"))
            messages = await collect(client.follow_stream(follow(job_id, **options)))
            packets, terminator = split_stream(messages)
            assert [p.packet.root for p in packets] == expected
            assert [p.data.root for p in packets] == [{"arg": "abcde"[i]} for i in expected]
            assert terminator.root.to_wire() == {"result": list("abcde")}

    run(scenario())


def test_read_stream_defaults_to_everything_and_continues_while_running() -> None:
    async def scenario() -> None:
        async with serving(Dispatcher()) as port:
            client = dispatcher_client(port)
            job_id = await submit(client, "pending", [1, 2, 3])
            packets, terminator = split_stream(await collect(client.read_stream(read(job_id))))
            assert [p.packet.root for p in packets] == [0, 1, 2]
            assert isinstance(terminator.root, models.ContinueMarker)
            assert terminator.to_wire() == {"continue": True}

            packets, _ = split_stream(await collect(client.read_stream(read(job_id, recent=1))))
            assert [p.packet.root for p in packets] == [2]

    run(scenario())


def test_pending_job_no_result_cancel_and_cancelled() -> None:
    async def scenario() -> None:
        async with serving(Dispatcher()) as port:
            client = dispatcher_client(port)
            job_id = await submit(client, "pending")
            no_wait = models.GetResultRequest(harpcaller=1, get_result=job_id, wait=False)
            assert isinstance((await client.get_result(no_wait)).root, models.NoResultReply)

            cancel = models.CancelRequest(harpcaller=1, cancel=job_id)
            assert (await client.cancel(cancel)).root.to_wire() == {"cancelled": True}
            assert (await client.cancel(cancel)).root.to_wire() == {"cancelled": False}
            assert isinstance((await client.get_result(no_wait)).root, models.CancelledReply)
            (terminator,) = await collect(client.follow_stream(follow(job_id)))
            assert isinstance(terminator.root, models.CancelledReply)

    run(scenario())


def test_waiting_get_result_gets_the_outcome_when_the_job_ends() -> None:
    async def scenario() -> None:
        server = Dispatcher()
        async with serving(server) as port:
            client = dispatcher_client(port)
            job_id = await submit(client, "pending")
            waiting = asyncio.ensure_future(
                client.get_result(
                    models.GetResultRequest(harpcaller=1, get_result=job_id, wait=True)
                )
            )
            await client.cancel(models.CancelRequest(harpcaller=1, cancel=job_id))
            reply = await asyncio.wait_for(waiting, WAIT_S)
            assert isinstance(reply.root, models.CancelledReply)
            assert server.cancelled == []

    run(scenario())


def test_list_jobs_filters_and_truncates() -> None:
    async def scenario() -> None:
        async with serving(Dispatcher()) as port:
            client = dispatcher_client(port)
            done = [await submit(client, "echo") for _ in range(3)]
            running = await submit(client, "pending")

            def listing(**job_filter: Any) -> models.ListJobsRequest:
                return models.ListJobsRequest(harpcaller=1, list_jobs=job_filter)

            page = (await client.list_jobs(listing(limit=2))).root
            assert isinstance(page, models.JobList)
            assert [j.job_id.root for j in page.jobs] == [running, done[2]]  # newest first
            assert page.truncated is True
            page = (await client.list_jobs(listing(state="running"))).root
            assert [j.job_id.root for j in page.jobs] == [running]
            assert page.jobs[0].state.root == "running" and page.truncated is False
            page = (await client.list_jobs(listing(host="elsewhere"))).root
            assert page.jobs == [] and page.truncated is False

    run(scenario())


# --- agent ---------------------------------------------------------------------------------


def test_agent_ack_then_result() -> None:
    async def scenario() -> None:
        async with serving(Agent()) as port:
            client = agent_client(port)
            ack, terminator = await collect(client.call(agent_request("echo", {"x": [1, 2]})))
            assert isinstance(ack, models.AgentAck)
            assert ack.to_wire() == {"harp": 1, "stream_result": False}
            assert isinstance(terminator, models.AgentTerminator)
            assert isinstance(terminator.root, models.AgentResult)
            assert terminator.to_wire() == {"result": {"x": [1, 2]}}

    run(scenario())


def test_agent_ack_items_in_order_then_one_terminator() -> None:
    async def scenario() -> None:
        async with serving(Agent()) as port:
            messages = await collect(agent_client(port).call(agent_request("count", [4])))
            ack, *items, terminator = messages
            assert isinstance(ack, models.AgentAck) and ack.stream_result is True
            assert all(isinstance(i, models.AgentStreamItem) for i in items)
            assert [i.stream.root for i in items] == [0, 1, 2, 3]
            assert terminator.to_wire() == {"result": None}

    run(scenario())


def test_agent_exception_after_ack() -> None:
    async def scenario() -> None:
        async with serving(Agent()) as port:
            ack, terminator = await collect(agent_client(port).call(agent_request("raise", [])))
            assert isinstance(ack, models.AgentAck)
            assert isinstance(terminator.root, models.AgentException)
            assert terminator.root.exception.type == "ValueError"

    run(scenario())


@pytest.mark.parametrize(
    ("procedure", "password", "error_type"),
    [
        ("echo", "wrong", "auth_error"),
        ("nope", PASSWORD, "no_such_procedure"),
    ],
)
def test_agent_error_in_place_of_the_ack(procedure: str, password: str, error_type: str) -> None:
    async def scenario() -> None:
        async with serving(Agent()) as port:
            client = agent_client(port)
            messages = await collect(client.call(agent_request(procedure, [], password)))
            (only,) = messages  # no ack, just the terminator
            assert isinstance(only, models.AgentTerminator)
            assert isinstance(only.root, models.AgentError)
            assert only.root.harp == 1
            assert only.root.error.type.root == error_type

    run(scenario())


def test_agent_ignores_unknown_request_keys() -> None:
    async def scenario() -> None:
        async with serving(Agent()) as port:
            request = {**agent_request("echo", [7]).to_wire(), "trace_id": "abc"}
            _, terminator = await collect(agent_client(port).call(request))
            assert terminator.to_wire() == {"result": [7]}

    run(scenario())


# --- malformed requests, sent with a raw socket ----------------------------------------------

JOB = "8ec71d6b-28d1-4c5e-9f1a-3b0c2d4e5f60"


def line(value: Any) -> bytes:
    return json.dumps(value).encode() + b"\n"


MALFORMED_DISPATCHER = {
    "not JSON": (b"this is not json\n", "parse_error"),
    "empty line": (b"\n", "parse_error"),
    "array": (line([{"harpcaller": 1, "get_status": JOB}]), "must be a JSON object"),
    "missing harpcaller": (line({"get_status": JOB}), "'harpcaller' is a required property"),
    "wrong harpcaller": (line({"harpcaller": 2, "get_status": JOB}), "at /harpcaller"),
    "unknown key": (
        line({"harpcaller": 1, "get_status": JOB, "colour": 1}),
        "'colour' was unexpected",
    ),
    "unknown operation": (line({"harpcaller": 1, "frobnicate": JOB}), "no known operation"),
    "two operations": (line({"harpcaller": 1, "cancel": JOB, "get_status": JOB}), "several"),
    "since and recent": (
        line({"harpcaller": 1, "follow_stream": JOB, "since": 1, "recent": 1}),
        "(keyword not,",
    ),
    "uppercase job id": (line({"harpcaller": 1, "get_status": JOB.upper()}), "at /get_status"),
    "too long": (
        line({"harpcaller": 1, "get_status": JOB, "pad": "x" * 2 * MAX_MESSAGE_BYTES}),
        "max_line_bytes",
    ),
    "two requests in one write": (
        line({"harpcaller": 1, "get_status": JOB}) * 2,
        "excessive data after request",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED_DISPATCHER))
def test_dispatcher_malformed_request_gets_one_error_line(case: str) -> None:
    data, expected_text = MALFORMED_DISPATCHER[case]

    async def scenario() -> None:
        server = Dispatcher(max_message_bytes=MAX_MESSAGE_BYTES)
        async with serving(server) as port:
            (reply,) = await raw_exchange(port, data)  # one line, then the server closes
            assert set(reply) == {"error"}
            assert reply["error"]["type"] == "bad_request"
            assert expected_text in reply["error"]["message"]
            assert models.ErrorReply.model_validate(reply)
            # the same server still serves
            client = dispatcher_client(port)
            job_id = await submit(client)
            status = await client.get_status(
                models.GetStatusRequest(harpcaller=1, get_status=job_id)
            )
            assert isinstance(status.root, models.StatusReply)

    run(scenario())


def test_dispatcher_request_cut_short_by_eof() -> None:
    async def scenario() -> None:
        async with serving(Dispatcher()) as port:
            data = line({"harpcaller": 1, "get_status": JOB})[:-5]
            (reply,) = await raw_exchange(port, data, half_close=True)
            assert reply["error"]["type"] == "bad_request"
            assert "stream ended inside a line" in reply["error"]["message"]

    run(scenario())


def test_dispatcher_accepts_integral_float_where_schema_says_integer() -> None:
    """JSON Schema counts 1.0 as an integer; the server must not choke on it."""

    async def scenario() -> None:
        async with serving(Dispatcher()) as port:
            job_id = await submit(dispatcher_client(port), "echo", [1, 2, 3])
            request = {"harpcaller": 1.0, "follow_stream": job_id, "since": 1.0}
            replies = await raw_exchange(port, line(request))
            assert replies == [
                {"packet": 1, "data": {"arg": 2}},
                {"packet": 2, "data": {"arg": 3}},
                {"result": [1, 2, 3]},
            ]

    run(scenario())


MALFORMED_AGENT = {
    "not JSON": (b"{harp: 1}\n", "parse_error", "line is not JSON"),
    "array": (line([1, 2]), "invalid_request", "must be a JSON object"),
    "missing auth": (
        line({"harp": 1, "procedure": "echo", "arguments": []}),
        "invalid_request",
        "'auth' is a required property",
    ),
    "arguments not list or object": (
        line(
            {"harp": 1, "procedure": "echo", "arguments": 1, "auth": {"user": "a", "password": ""}}
        ),
        "invalid_request",
        "at /arguments",
    ),
    "too long": (b"[" + b"1," * MAX_MESSAGE_BYTES + b"1]\n", "invalid_request", "max_line_bytes"),
    "two requests in one write": (
        line(agent_request("echo", []).to_wire()) * 2,
        "invalid_request",
        "excessive data after request",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED_AGENT))
def test_agent_malformed_request_gets_one_error_line(case: str) -> None:
    data, error_type, expected_text = MALFORMED_AGENT[case]

    async def scenario() -> None:
        async with serving(Agent(max_message_bytes=MAX_MESSAGE_BYTES)) as port:
            (reply,) = await raw_exchange(port, data)
            assert set(reply) == {"harp", "error"} and reply["harp"] == 1
            assert reply["error"]["type"] == error_type
            assert expected_text in reply["error"]["message"]
            models.AgentError.model_validate(reply)
            ack, _ = await collect(agent_client(port).call(agent_request("echo", [])))
            assert isinstance(ack, models.AgentAck)

    run(scenario())


# --- the server never sends what the spec forbids ------------------------------------------


def test_reply_breaking_its_schema_is_not_sent(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        server = Dispatcher()
        async with serving(server) as port:
            client = dispatcher_client(port)
            with (
                caplog.at_level(logging.ERROR, logger=SERVER_LOGGER),
                pytest.raises(ConnectionClosed) as info,
            ):
                await client.call(call_request(host="broken"))
            assert info.value.by == "peer"
            assert "closed without a reply" in info.value.reason
            assert any("reply not sent" in r.getMessage() for r in caplog.records)
            assert isinstance((await client.call(call_request())).root, models.CallReply)

    run(scenario())


def test_reply_breaking_its_schema_connection_closes_silently() -> None:
    async def scenario() -> None:
        server = Dispatcher()
        async with serving(server) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(line(call_request(host="broken").to_wire()))
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), WAIT_S) == b""
            writer.close()
            await writer.wait_closed()
            assert server.jobs == {}
            assert isinstance(
                (await dispatcher_client(port).call(call_request())).root, models.CallReply
            )

    run(scenario())


@pytest.mark.parametrize("procedure", ["broken_stream", "no_terminator"])
def test_stream_breaking_its_schema_stops(procedure: str, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with serving(Dispatcher()) as port:
            client = dispatcher_client(port)
            job_id = await submit(client, procedure, ["only"])
            received: list[Any] = []
            with (
                caplog.at_level(logging.ERROR, logger=SERVER_LOGGER),
                pytest.raises(RemoteProtocolError) as info,
            ):
                async for message in client.follow_stream(follow(job_id, since=0)):
                    received.append(message.to_wire())
                    assert len(received) < 10
            assert received == [{"packet": 0, "data": {"arg": "only"}}]  # the valid one only
            assert "without a terminator" in info.value.message
            assert any("reply not sent" in r.getMessage() for r in caplog.records)
            assert isinstance((await client.call(call_request())).root, models.CallReply)

    run(scenario())


# --- the client checks both directions ------------------------------------------------------


def test_client_refuses_invalid_requests() -> None:
    async def scenario() -> None:
        server = Dispatcher()
        async with serving(server) as port:
            client = dispatcher_client(port)
            both = models.FollowStreamRequest.model_construct(
                harpcaller=1,
                follow_stream=models.JobId(JOB),
                since=models.PacketIndex(1),
                recent=models.PacketIndex(2),
            )
            with pytest.raises(LocalProtocolError) as info:
                await collect(client.follow_stream(both))
            assert info.value.violation is not None and info.value.violation.keyword == "not"
            with pytest.raises(LocalProtocolError):
                await collect(client.read_stream({"harpcaller": 1, "read_stream": JOB, "x": 1}))
            with pytest.raises(LocalProtocolError) as info:
                await client.get_status({"harpcaller": 1, "get_status": JOB.upper()})
            assert info.value.violation is not None
            assert info.value.violation.instance_pointer == "/get_status"
            with pytest.raises(LocalProtocolError):
                await client.cancel({"cancel": JOB})
            with pytest.raises(LocalProtocolError):
                await collect(agent_client(port).call({"harp": 1, "procedure": "echo"}))
            assert server.connections == 0  # nothing was sent

    run(scenario())


@contextlib.asynccontextmanager
async def fake_server(*lines: Any) -> AsyncIterator[int]:
    """A server that answers any request with `lines` (unchecked), then closes."""

    async def answer(connection: JsonLinesConnection) -> None:
        await connection.receive()
        for value in lines:
            await connection.send(value)

    listening = await serve_jsonlines(answer, "127.0.0.1", 0)
    try:
        yield listening.sockets[0].getsockname()[1]
    finally:
        listening.close()
        await listening.wait_closed()


def test_client_rejects_invalid_replies() -> None:
    async def scenario() -> None:
        async with fake_server({"harpcaller": 1, "job_id": "nope"}) as port:
            with pytest.raises(RemoteProtocolError, match="/job_id"):
                await dispatcher_client(port).call(call_request())
        async with fake_server({"packet": 0, "data": 1}, {"continue": True}) as port:
            with pytest.raises(RemoteProtocolError, match="neither item nor terminator"):
                await collect(dispatcher_client(port).follow_stream(follow(JOB)))
        async with fake_server({"stream": 1}, {"result": 1}) as port:
            with pytest.raises(RemoteProtocolError, match="neither ack nor terminator"):
                await collect(agent_client(port).call(agent_request("echo", [])))
        async with fake_server({"harp": 1, "stream_result": True}, {"stream": 1}) as port:
            with pytest.raises(RemoteProtocolError, match="without a terminator"):
                await collect(agent_client(port).call(agent_request("echo", [])))

    run(scenario())


def test_client_accepts_integral_float_reply() -> None:
    async def scenario() -> None:
        async with fake_server({"packet": 1.0, "data": 1}, {"result": None}) as port:
            packet, _ = await collect(dispatcher_client(port).follow_stream(follow(JOB)))
            assert packet.packet.root == 1

    run(scenario())


# --- cancellation and time limits -----------------------------------------------------------


def test_closing_a_stream_cancels_the_handler() -> None:
    async def scenario() -> None:
        server = Dispatcher()
        async with serving(server) as port:
            client = dispatcher_client(port)
            job_id = await submit(client, "pending", ["a", "b"])
            stream = client.follow_stream(follow(job_id, since=0))
            first = await anext(stream)
            assert first.to_wire() == {"packet": 0, "data": {"arg": "a"}}
            assert server.cancelled == []
            await stream.aclose()
            await asyncio.wait_for(server.handler_cancelled.wait(), WAIT_S)
            assert server.cancelled == ["follow_stream"]
            assert isinstance((await client.call(call_request())).root, models.CallReply)

    run(scenario())


def test_closing_an_agent_call_cancels_the_procedure() -> None:
    async def scenario() -> None:
        server = Agent()
        async with serving(server) as port:
            call = agent_client(port).call(agent_request("hang", []))
            ack = await anext(call)
            assert isinstance(ack, models.AgentAck)
            await call.aclose()
            await asyncio.wait_for(server.handler_cancelled.wait(), WAIT_S)

    run(scenario())


def test_silent_server_times_out_request_reply() -> None:
    async def scenario() -> None:
        server = Dispatcher()
        async with serving(server) as port:
            job_id = await submit(dispatcher_client(port), "pending")
            client = dispatcher_client(port, timeout_s=0.2)
            wait = models.GetResultRequest(harpcaller=1, get_result=job_id, wait=True)
            started = time.monotonic()
            with pytest.raises(Timeout) as info:
                await client.get_result(wait)
            assert 0.15 < time.monotonic() - started < WAIT_S
            assert info.value.timeout_s == 0.2 and info.value.operation == "receive"
            # the client closed its connection, so the waiting handler is cancelled
            await asyncio.wait_for(server.handler_cancelled.wait(), WAIT_S)
            assert server.cancelled == ["get_result"]

    run(scenario())


def test_silent_server_times_out_stream() -> None:
    async def scenario() -> None:
        server = Dispatcher()
        async with serving(server) as port:
            job_id = await submit(dispatcher_client(port), "pending", [1])
            client = dispatcher_client(port, timeout_s=0.2)
            received = []
            with pytest.raises(Timeout):
                async for message in client.follow_stream(follow(job_id, since=0)):
                    received.append(message.to_wire())
                    assert len(received) < 10
            assert received == [{"packet": 0, "data": {"arg": 1}}]
            await asyncio.wait_for(server.handler_cancelled.wait(), WAIT_S)

    run(scenario())


# --- sync facades --------------------------------------------------------------------------


def test_sync_dispatcher_client() -> None:
    server = Dispatcher()
    with (
        serving_in_thread(server) as port,
        DispatcherSyncClient("127.0.0.1", port, timeout_s=CLIENT_TIMEOUT_S) as client,
    ):
        reply = client.call(call_request("echo", ["x", "y"]))
        assert isinstance(reply.root, models.CallReply)
        job_id = reply.root.job_id.root
        status = client.get_status(models.GetStatusRequest(harpcaller=1, get_status=job_id))
        assert isinstance(status.root, models.StatusReply)
        result = client.get_result(models.GetResultRequest(harpcaller=1, get_result=job_id))
        assert result.root.to_wire() == {"result": ["x", "y"]}
        cancel = client.cancel(models.CancelRequest(harpcaller=1, cancel=job_id))
        assert cancel.root.to_wire() == {"cancelled": False}
        listed = client.list_jobs(models.ListJobsRequest(harpcaller=1, list_jobs={}))
        assert isinstance(listed.root, models.JobList) and len(listed.root.jobs) == 1
        packets, terminator = split_stream(list(client.follow_stream(follow(job_id, since=0))))
        assert [p.packet.root for p in packets] == [0, 1]
        assert isinstance(terminator, models.FollowStreamTerminator)
        packets, terminator = split_stream(list(client.read_stream(read(job_id, since=1))))
        assert [p.packet.root for p in packets] == [1]
        assert isinstance(terminator, models.ReadStreamTerminator)
        with pytest.raises(LocalProtocolError):
            client.get_status({"harpcaller": 1, "get_status": "nope"})
    assert server.connections == 7


def test_sync_stream_break_closes_the_connection() -> None:
    server = Dispatcher()
    with (
        serving_in_thread(server) as port,
        DispatcherSyncClient("127.0.0.1", port, timeout_s=CLIENT_TIMEOUT_S) as client,
    ):
        job_id = client.call(call_request("pending", [1, 2, 3])).root.job_id.root
        for packet in client.follow_stream(follow(job_id, since=0)):
            assert packet.to_wire() == {"packet": 0, "data": {"arg": 1}}
            break
        # the break closed the connection at once, not at the next call or at close()
        assert server.handler_cancelled_sync.wait(WAIT_S)


def test_sync_client_timeout() -> None:
    server = Dispatcher()
    with (
        serving_in_thread(server) as port,
        DispatcherSyncClient("127.0.0.1", port, timeout_s=0.2) as client,
    ):
        job_id = client.call(call_request("pending")).root.job_id.root
        with pytest.raises(Timeout):
            client.get_result(models.GetResultRequest(harpcaller=1, get_result=job_id, wait=True))
        assert server.handler_cancelled_sync.wait(WAIT_S)


def test_sync_agent_client() -> None:
    with (
        serving_in_thread(Agent()) as port,
        AgentSyncClient("127.0.0.1", port, timeout_s=CLIENT_TIMEOUT_S) as client,
    ):
        messages = list(client.call(agent_request("count", [2])))
        assert [m.to_wire() for m in messages] == [
            {"harp": 1, "stream_result": True},
            {"stream": 0},
            {"stream": 1},
            {"result": None},
        ]
        (only,) = client.call(agent_request("echo", [], password="nope"))
        assert only.root.error.type.root == "auth_error"


# SyncRunner.run refuses the coroutine the facade made without closing it.
@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
def test_sync_client_refuses_to_run_inside_a_loop() -> None:
    async def scenario() -> None:
        with (
            DispatcherSyncClient("127.0.0.1", 9, timeout_s=0.2) as client,
            pytest.raises(InvalidState, match="use the async client"),
        ):
            client.get_status(models.GetStatusRequest(harpcaller=1, get_status=JOB))

    run(scenario())
    gc.collect()  # emit the warning now, under this test's filter
