"""The reference dispatcher against a controllable agent, over loopback TLS and TCP.

The agent here is a small server on the generated ``AgentServerBase`` whose procedures
wait on events the test sets, so the tests decide when a job starts, streams and ends,
without sleeping. Time limits are integer seconds on the wire, so the two limit tests
take about a second each. Every scenario runs under ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from runwire.generated.jobs import models
from runwire.generated.jobs.client import DispatcherClient
from runwire.generated.jobs.server import AgentServerBase
from runwire.reference_server.jobs.dispatcher import Dispatcher, DispatcherConfig, HostEntry
from runwire.reference_server.jobs.store import RESTART_MESSAGE
from runwire.reference_server.jobs.tls import ensure_dev_certificate
from runwire.runtime.transport.tcp import open_jsonlines

T = TypeVar("T")
SCENARIO_S = 10.0
WAIT_S = 5.0


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(SCENARIO_S):
            return await coroutine

    return asyncio.run(bounded())


@dataclass
class Gate:
    """One running call of the controlled agent: the test feeds it packets and ends it."""

    packets: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)


END = object()


class ControlledAgent(AgentServerBase):
    """Procedures: ``echo(*args)`` returns its arguments; ``gate(name)`` streams whatever
    the test puts in ``gates[name].packets`` until ``END``, then returns ``name``;
    ``silent()`` acknowledges and never answers; ``fail()`` sends an agent error."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: dict[str, Gate] = {}
        self.order: list[str] = []

    def gate(self, name: str) -> Gate:
        return self.gates.setdefault(name, Gate())

    def malformed_reply(self, error: Any) -> models.AgentError:
        return models.AgentError.model_validate(
            {"harp": 1, "error": {"type": "invalid_request", "message": str(error)}}
        )

    async def call(self, request: models.AgentRequest) -> AsyncIterator[Any]:  # type: ignore[override]
        procedure, args = request.procedure.root, request.arguments.root
        if procedure == "fail":
            yield {"harp": 1, "error": {"type": "no_such_procedure", "message": "nope"}}
            return
        yield {"harp": 1, "stream_result": procedure == "gate"}
        if procedure == "silent":
            await asyncio.Event().wait()
        if procedure == "gate":
            gate = self.gate(args[0])
            self.order.append(args[0])
            gate.started.set()
            try:
                while (packet := await gate.packets.get()) is not END:
                    yield {"stream": packet}
            except asyncio.CancelledError:
                gate.cancelled.set()
                raise
            yield {"result": args[0]}
            return
        yield {"result": args}


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return ensure_dev_certificate(tmp_path_factory.mktemp("tls"))


@dataclass
class Bench:
    agent: ControlledAgent
    dispatcher: Dispatcher
    client: DispatcherClient

    async def submit(self, procedure: str, arguments: Any = (), **options: Any) -> str:
        request = {"harpcaller": 1, "host": "localhost", "procedure": procedure}
        request["arguments"] = list(arguments) if isinstance(arguments, tuple) else arguments
        request.update(options)
        reply = await self.client.call(models.CallRequest.model_validate(request))
        assert isinstance(reply.root, models.CallReply), reply
        return reply.root.job_id.root

    async def result(self, job_id: str, *, wait: bool = True) -> Any:
        request = {"harpcaller": 1, "get_result": job_id, "wait": wait}
        reply = await self.client.get_result(models.GetResultRequest.model_validate(request))
        return reply.to_wire()

    async def status(self, job_id: str) -> Any:
        request = {"harpcaller": 1, "get_status": job_id}
        reply = await self.client.get_status(models.GetStatusRequest.model_validate(request))
        return reply.to_wire()

    async def cancel(self, job_id: str) -> Any:
        reply = await self.client.cancel(
            models.CancelRequest.model_validate({"harpcaller": 1, "cancel": job_id})
        )
        return reply.to_wire()

    async def follow(self, job_id: str, **options: Any) -> list[Any]:
        request = models.FollowStreamRequest.model_validate(
            {"harpcaller": 1, "follow_stream": job_id, **options}
        )
        return [line.to_wire() async for line in self.client.follow_stream(request)]

    async def read(self, job_id: str, **options: Any) -> list[Any]:
        request = models.ReadStreamRequest.model_validate(
            {"harpcaller": 1, "read_stream": job_id, **options}
        )
        return [line.to_wire() async for line in self.client.read_stream(request)]

    async def state(self, job_id: str) -> str:
        status: dict[str, Any] = await self.status(job_id)
        return str(status["state"])

    async def wait_state(self, job_id: str, state: str) -> None:
        """Poll get_status until ``state`` (bounded count; each poll yields to the loop)."""
        for _ in range(500):
            if await self.state(job_id) == state:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{job_id} never reached {state}")


@contextlib.asynccontextmanager
async def bench(
    certificate: tuple[Path, Path], database: str = ":memory:", **config: Any
) -> AsyncIterator[Bench]:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    agent = ControlledAgent()
    agent_server = await agent.serve("127.0.0.1", 0, ssl=context)
    agent_port = agent_server.sockets[0].getsockname()[1]
    host = HostEntry(
        "127.0.0.1", agent_port, "dispatcher", "pw", ca_file=str(cert), server_name="localhost"
    )
    settings: dict[str, Any] = {"port": 0, "database": database, "hosts": {"localhost": host}}
    settings.update(config)
    dispatcher = Dispatcher(DispatcherConfig(**settings))
    await dispatcher.start()
    try:
        yield Bench(
            agent, dispatcher, DispatcherClient("127.0.0.1", dispatcher.port, timeout_s=WAIT_S)
        )
    finally:
        await dispatcher.aclose()
        agent_server.close()


def scenario(
    certificate: tuple[Path, Path],
    body: Callable[[Bench], Coroutine[Any, Any, None]],
    **config: Any,
) -> None:
    async def main() -> None:
        async with bench(certificate, **config) as b:
            await body(b)

    run(main())


# --- call, result, status ---------------------------------------------------------------------


def test_call_returns_uuid4_and_result_and_status(certificate: tuple[Path, Path]) -> None:
    async def body(b: Bench) -> None:
        job_id = await b.submit("echo", [1, "a"], info={"who": "ops"})
        assert uuid.UUID(job_id).version == 4
        assert await b.result(job_id) == {"result": [1, "a"]}
        status = await b.status(job_id)
        assert status["call"] == {"procedure": "echo", "arguments": [1, "a"], "host": "localhost"}
        assert status["info"] == {"who": "ops"}
        assert status["state"] == "finished"
        times = status["time"]
        assert times["submit"] <= times["start"] <= times["end"]

    scenario(certificate, body)


def test_result_without_wait_is_no_result_then_the_outcome(certificate: tuple[Path, Path]) -> None:
    async def body(b: Bench) -> None:
        job_id = await b.submit("gate", ["g"])
        await asyncio.wait_for(b.agent.gate("g").started.wait(), WAIT_S)
        assert await b.result(job_id, wait=False) == {"no_result": True}
        status = await b.status(job_id)
        assert status["state"] == "running" and status["time"]["end"] is None
        waiter = asyncio.ensure_future(b.result(job_id, wait=True))
        b.agent.gate("g").packets.put_nowait(END)
        assert await waiter == {"result": "g"}

    scenario(certificate, body)


def test_unknown_host_and_agent_error_become_the_job_result(certificate: tuple[Path, Path]) -> None:
    async def body(b: Bench) -> None:
        request = {"harpcaller": 1, "host": "nowhere", "procedure": "echo", "arguments": []}
        reply = await b.client.call(models.CallRequest.model_validate(request))
        job_id = reply.to_wire()["job_id"]
        assert await b.result(job_id) == {
            "error": {"type": "unknown_host", "message": "host unknown"}
        }
        failed = await b.submit("fail")
        outcome = await b.result(failed)
        assert outcome["error"]["type"] == "no_such_procedure"  # passed through from the agent
        assert await b.state(failed) == "failed"

    scenario(certificate, body)


@pytest.mark.parametrize(
    "operation", ["get_result", "get_status", "cancel", "follow_stream", "read_stream"]
)
def test_unknown_job_id_gets_invalid_jobid_on_every_operation(
    certificate: tuple[Path, Path], operation: str
) -> None:
    async def body(b: Bench) -> None:
        connection = await open_jsonlines("127.0.0.1", b.dispatcher.port, timeout_s=WAIT_S)
        async with connection:
            await connection.send({"harpcaller": 1, operation: str(uuid.uuid4())})
            line = await connection.receive()
        assert line == {"error": {"type": "invalid_jobid", "message": "no job with this ID"}}

    scenario(certificate, body)


# --- cancel -----------------------------------------------------------------------------------


def test_cancel_running_queued_and_finished_jobs(certificate: tuple[Path, Path]) -> None:
    async def body(b: Bench) -> None:
        queue = {"name": {"q": "cancel"}, "concurrency": 1}
        running = await b.submit("gate", ["r"], queue=queue)
        queued = await b.submit("gate", ["q"], queue=queue)
        await asyncio.wait_for(b.agent.gate("r").started.wait(), WAIT_S)
        assert await b.state(queued) == "queued"

        assert await b.cancel(queued) == {"cancelled": True}
        status = await b.status(queued)
        assert status["state"] == "cancelled"
        assert status["time"]["start"] is None and status["time"]["end"] is not None

        assert await b.cancel(running) == {"cancelled": True}
        await asyncio.wait_for(b.agent.gate("r").cancelled.wait(), WAIT_S)  # the agent call stopped
        assert await b.result(running) == {"cancelled": True}
        assert await b.cancel(running) == {"cancelled": False}
        assert "q" not in b.agent.order  # the cancelled queued job never ran

    scenario(certificate, body)


# --- queues -----------------------------------------------------------------------------------


def test_queue_runs_fifo_with_the_first_jobs_concurrency(certificate: tuple[Path, Path]) -> None:
    async def body(b: Bench) -> None:
        name = {"host": "web01"}
        first = await b.submit("gate", ["a"], queue={"name": name, "concurrency": 2})
        rest = [
            await b.submit("gate", [tag], queue={"name": name, "concurrency": 5}) for tag in "bcde"
        ]
        for tag in "ab":
            await asyncio.wait_for(b.agent.gate(tag).started.wait(), WAIT_S)
        # concurrency stays 2 (fixed by the first job), so c, d, e wait
        assert [await b.state(job) for job in rest] == ["running", "queued", "queued", "queued"]
        for tag in "abcde":
            await asyncio.wait_for(b.agent.gate(tag).started.wait(), WAIT_S)
            b.agent.gate(tag).packets.put_nowait(END)
        for job in [first, *rest]:
            assert (await b.result(job))["result"] in "abcde"
        assert b.agent.order == list("abcde")
        assert len(b.dispatcher.queues) == 0  # deleted when idle

    scenario(certificate, body)


def test_global_limit_bounds_jobs_without_queue(certificate: tuple[Path, Path]) -> None:
    async def body(b: Bench) -> None:
        jobs = [await b.submit("gate", [tag]) for tag in "xyz"]
        await asyncio.wait_for(b.agent.gate("x").started.wait(), WAIT_S)
        await asyncio.wait_for(b.agent.gate("y").started.wait(), WAIT_S)
        assert await b.state(jobs[2]) == "queued"
        b.agent.gate("x").packets.put_nowait(END)
        await asyncio.wait_for(b.agent.gate("z").started.wait(), WAIT_S)
        for tag in "yz":
            b.agent.gate(tag).packets.put_nowait(END)
        assert [(await b.result(job))["result"] for job in jobs] == ["x", "y", "z"]

    scenario(certificate, body, max_running=2)


def test_overloaded_when_too_many_jobs_are_pending(certificate: tuple[Path, Path]) -> None:
    async def body(b: Bench) -> None:
        await b.submit("gate", ["one"])
        request = {"harpcaller": 1, "host": "localhost", "procedure": "echo", "arguments": []}
        reply = (await b.client.call(models.CallRequest.model_validate(request))).to_wire()
        assert reply["error"]["type"] == "overloaded"
        b.agent.gate("one").packets.put_nowait(END)

    scenario(certificate, body, max_pending=1)


# --- time limits --------------------------------------------------------------------------------


def test_idle_timeout_counts_from_the_last_packet(certificate: tuple[Path, Path]) -> None:
    async def body(b: Bench) -> None:
        job_id = await b.submit("silent", timeout=1)
        outcome = await b.result(job_id)
        assert outcome == {"error": {"type": "timeout", "message": "reading result timed out"}}
        assert await b.state(job_id) == "failed"

    scenario(certificate, body)


def test_max_exec_time_holds_while_packets_keep_coming(certificate: tuple[Path, Path]) -> None:
    async def body(b: Bench) -> None:
        job_id = await b.submit("gate", ["busy"], max_exec_time=1, timeout=30)
        gate = b.agent.gate("busy")
        await asyncio.wait_for(gate.started.wait(), WAIT_S)
        waiter = asyncio.ensure_future(b.result(job_id))
        for n in range(100):  # a packet every 50 ms: never idle, but longer than 1 s
            if waiter.done():
                break
            gate.packets.put_nowait(n)
            await asyncio.sleep(0.05)
        outcome = await asyncio.wait_for(waiter, WAIT_S)
        assert outcome == {
            "error": {"type": "timeout", "message": "maximum execution time exceeded"}
        }
        await asyncio.wait_for(gate.cancelled.wait(), WAIT_S)

    scenario(certificate, body)


def test_limits_are_capped_by_the_configuration(certificate: tuple[Path, Path]) -> None:
    async def body(b: Bench) -> None:
        job_id = await b.submit("silent", timeout=3600)
        assert (await b.result(job_id))["error"]["message"] == "reading result timed out"

    scenario(certificate, body, timeout_s=1)


# --- streams --------------------------------------------------------------------------------------


def test_read_stream_since_recent_defaults_and_continue(certificate: tuple[Path, Path]) -> None:
    async def body(b: Bench) -> None:
        job_id = await b.submit("gate", ["s"])
        gate = b.agent.gate("s")
        for n in range(5):
            gate.packets.put_nowait({"n": n})
        for _ in range(200):
            if len(await b.read(job_id)) == 6:
                break
            await asyncio.sleep(0.01)
        lines = await b.read(job_id)
        assert lines == [{"packet": n, "data": {"n": n}} for n in range(5)] + [{"continue": True}]
        assert [line.get("packet") for line in await b.read(job_id, since=3)] == [3, 4, None]
        assert [line.get("packet") for line in await b.read(job_id, recent=2)] == [3, 4, None]
        assert await b.read(job_id, since=10) == [{"continue": True}]
        assert [line.get("packet") for line in await b.read(job_id, recent=10)][:5] == list(
            range(5)
        )
        gate.packets.put_nowait(END)
        await b.result(job_id)
        assert (await b.read(job_id, since=4)) == [{"packet": 4, "data": {"n": 4}}, {"result": "s"}]

    scenario(certificate, body)


def test_concurrent_followers_see_identical_gapless_streams(certificate: tuple[Path, Path]) -> None:
    async def body(b: Bench) -> None:
        job_id = await b.submit("gate", ["f"])
        gate = b.agent.gate("f")
        await asyncio.wait_for(gate.started.wait(), WAIT_S)
        gate.packets.put_nowait("early")
        followers = [asyncio.ensure_future(b.follow(job_id, since=0)) for _ in range(5)]
        late = asyncio.ensure_future(b.follow(job_id))  # default recent 0: new packets only
        for n in range(200):
            gate.packets.put_nowait(n)
            if n % 50 == 0:
                await asyncio.sleep(0)
        gate.packets.put_nowait(END)
        streams = await asyncio.gather(*followers)
        expected = [{"packet": 0, "data": "early"}]
        expected += [{"packet": n + 1, "data": n} for n in range(200)]
        expected += [{"result": "f"}]
        for stream in streams:
            assert stream == expected
        late_stream = await late
        numbers = [line["packet"] for line in late_stream[:-1]]
        assert numbers == list(range(201 - len(numbers), 201))  # a gapless suffix
        assert late_stream[-1] == {"result": "f"}

    scenario(certificate, body)


def test_follow_after_the_end_replays_then_terminates(certificate: tuple[Path, Path]) -> None:
    async def body(b: Bench) -> None:
        job_id = await b.submit("gate", ["done"])
        gate = b.agent.gate("done")
        for n in range(3):
            gate.packets.put_nowait(n)
        gate.packets.put_nowait(END)
        await b.result(job_id)
        assert await b.follow(job_id) == [{"result": "done"}]  # recent 0 by default
        assert [line.get("packet") for line in await b.follow(job_id, recent=2)] == [1, 2, None]
        assert [line.get("packet") for line in await b.follow(job_id, since=0)] == [0, 1, 2, None]

    scenario(certificate, body)


# --- malformed requests -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"not json\n",
        b"[1, 2]\n",
        b'{"get_result": "8ec71d6b-28d1-4c5e-9f1a-3b0c2d4e5f60"}\n',
        b'{"harpcaller": 1, "get_status": "8ec71d6b-28d1-4c5e-9f1a-3b0c2d4e5f60", "x": 1}\n',
        b'{"harpcaller": 1, "read_stream": "8ec71d6b-28d1-4c5e-9f1a-3b0c2d4e5f60", "since": 1, "recent": 1}\n',
        b'{"harpcaller": 1, "get_status": "8EC71D6B-28D1-4C5E-9F1A-3B0C2D4E5F60"}\n',
    ],
    ids=["bad-json", "non-object", "no-version", "unknown-key", "since-and-recent", "bad-id"],
)
def test_malformed_request_gets_one_error_line_and_the_server_keeps_serving(
    certificate: tuple[Path, Path], line: bytes
) -> None:
    async def body(b: Bench) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", b.dispatcher.port)
        writer.write(line)
        await writer.drain()
        replies = (await asyncio.wait_for(reader.read(), WAIT_S)).splitlines()
        writer.close()
        assert len(replies) == 1
        reply = json.loads(replies[0])
        assert reply["error"]["type"] == "bad_request"
        assert reply["error"]["message"]
        assert (await b.result(await b.submit("echo", [1])))["result"] == [1]

    scenario(certificate, body)


def test_oversize_request_line_is_refused(certificate: tuple[Path, Path]) -> None:
    async def body(b: Bench) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", b.dispatcher.port)
        writer.write(b'{"harpcaller": 1, "info": "' + b"x" * 5000 + b'"}\n')
        await writer.drain()
        replies = (await asyncio.wait_for(reader.read(), WAIT_S)).splitlines()
        writer.close()
        assert json.loads(replies[0])["error"]["type"] == "bad_request"

    scenario(certificate, body, max_message_bytes=1024)


# --- persistence ----------------------------------------------------------------------------------


def test_restart_keeps_finished_jobs_and_interrupts_live_ones(
    certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    database = str(tmp_path / "jobs.sqlite3")

    async def first_run() -> tuple[str, str, str]:
        async with bench(certificate, database=database) as b:
            finished = await b.submit("gate", ["done"])
            gate = b.agent.gate("done")
            for n in range(3):
                gate.packets.put_nowait(n)
            gate.packets.put_nowait(END)
            await b.result(finished)
            queue = {"name": {"restart": True}}
            running = await b.submit("gate", ["live"], queue=queue)
            queued = await b.submit("gate", ["waiting"], queue=queue)
            await asyncio.wait_for(b.agent.gate("live").started.wait(), WAIT_S)
            return finished, running, queued

    async def second_run(finished: str, running: str, queued: str) -> None:
        async with bench(certificate, database=database) as b:
            assert await b.read(finished) == [
                {"packet": 0, "data": 0},
                {"packet": 1, "data": 1},
                {"packet": 2, "data": 2},
                {"result": "done"},
            ]
            for job_id in (running, queued):
                outcome = await b.result(job_id)
                assert outcome == {"error": {"type": "missing_result", "message": RESTART_MESSAGE}}
                status = await b.status(job_id)
                assert status["state"] == "interrupted" and status["time"]["end"] is not None
                assert await b.cancel(job_id) == {"cancelled": False}

    finished, running, queued = run(first_run())
    run(second_run(finished, running, queued))


def test_retention_prunes_old_finished_jobs(certificate: tuple[Path, Path]) -> None:
    async def body(b: Bench) -> None:
        job_id = await b.submit("echo", [1])
        await b.result(job_id)
        assert b.dispatcher.store is not None
        assert b.dispatcher.store.prune(older_than=0) == 0
        assert b.dispatcher.store.prune(older_than=2**40) == 1
        assert (await b.result(job_id))["error"]["type"] == "invalid_jobid"

    scenario(certificate, body)


# --- the invalid fixture corpus ---------------------------------------------------------------------

REQUEST_DEFINITIONS = (
    "DispatcherRequest",
    "CallRequest",
    "CancelRequest",
    "GetResultRequest",
    "GetStatusRequest",
    "FollowStreamRequest",
    "ReadStreamRequest",
    "ListJobsRequest",
)


def invalid_request_fixtures() -> list[Path]:
    from importlib.resources import files

    root = Path(str(files("runwire.generated").joinpath("jobs", "fixtures")))
    return sorted(
        path
        for definition in REQUEST_DEFINITIONS
        for path in (root / definition).glob("invalid-*.json")
    )


def test_every_invalid_request_fixture_gets_an_error_and_the_server_keeps_serving(
    certificate: tuple[Path, Path],
) -> None:
    fixtures = invalid_request_fixtures()
    assert len(fixtures) > 50

    async def body(b: Bench) -> None:
        for path in fixtures:
            instance = json.loads(path.read_text())["instance"]
            connection = await open_jsonlines("127.0.0.1", b.dispatcher.port, timeout_s=WAIT_S)
            async with connection:
                await connection.send(instance)
                reply = await connection.receive()
            assert reply["error"]["type"] == "bad_request", (path.name, reply)
            assert set(reply) == {"error"}
        assert (await b.result(await b.submit("echo", ["still serving"])))["result"] == [
            "still serving"
        ]

    scenario(certificate, body)


# --- SIGKILL and restart of the real command ----------------------------------------------------------


async def start_dispatcher_process(config: Path) -> tuple[asyncio.subprocess.Process, int]:
    """Run ``runwire serve jobs-dispatcher --config CONFIG --port 0``; return it and its port
    (read from the line it prints when it listens)."""
    import re
    import sys

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runwire",
        "serve",
        "jobs-dispatcher",
        "--config",
        str(config),
        "--port",
        "0",
        "--log-level",
        "WARNING",
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
    match = re.search(r"listening on [\d.]+:(\d+)", line)
    assert match, line
    return process, int(match.group(1))


def test_sigkill_then_restart_on_the_same_database(
    certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    cert, key = certificate

    async def main() -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        agent = ControlledAgent()
        agent_server = await agent.serve("127.0.0.1", 0, ssl=context)
        agent_port = agent_server.sockets[0].getsockname()[1]
        config = tmp_path / "dispatcher.toml"
        config.write_text(
            f'[dispatcher]\ndatabase = "jobs.sqlite3"\n\n[hosts.localhost]\n'
            f'address = "127.0.0.1"\nport = {agent_port}\nuser = "d"\npassword = "p"\n'
            f'ca_file = "{cert}"\nserver_name = "localhost"\n'
        )
        process, port = await start_dispatcher_process(config)
        try:
            b = Bench(agent, None, DispatcherClient("127.0.0.1", port, timeout_s=WAIT_S))  # type: ignore[arg-type]
            finished = await b.submit("gate", ["done"])
            gate = agent.gate("done")
            for n in range(20):
                gate.packets.put_nowait({"n": n})
            gate.packets.put_nowait(END)
            assert await b.result(finished) == {"result": "done"}
            queue = {"name": {"kill": 1}}
            running = await b.submit("gate", ["live"], queue=queue)
            queued = await b.submit("gate", ["waiting"], queue=queue)
            await asyncio.wait_for(agent.gate("live").started.wait(), WAIT_S)
            before = await b.read(finished)
            status_before = await b.status(finished)
        finally:
            process.kill()
            await process.wait()

        process, port = await start_dispatcher_process(config)
        try:
            b = Bench(agent, None, DispatcherClient("127.0.0.1", port, timeout_s=WAIT_S))  # type: ignore[arg-type]
            assert await b.read(finished) == before
            assert len(before) == 21 and before[-1] == {"result": "done"}
            assert await b.status(finished) == status_before
            for job_id in (running, queued):
                assert await b.result(job_id) == {
                    "error": {"type": "missing_result", "message": RESTART_MESSAGE}
                }
                status = await b.status(job_id)
                assert status["state"] == "interrupted"
                assert status["time"]["end"] is not None
        finally:
            process.terminate()
            assert await asyncio.wait_for(process.wait(), 20) == 0
            agent_server.close()

    async def bounded() -> None:
        async with asyncio.timeout(60):
            await main()

    asyncio.run(bounded())
