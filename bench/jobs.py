#!/usr/bin/env python3
"""Benchmark of the jobs family: the reference dispatcher and agent against raw sockets.

Run it with ``tox -e bench`` (or ``python bench/jobs.py [--quick]`` in an environment where
runwire is installed). It prints one table; every speed is a ratio to a raw baseline measured
in the same run, on the same machine, doing the same I/O with nothing but asyncio, socket,
ssl and json (the same connections, TLS handshakes and lines, with no runwire code):

- a raw agent (TLS server: reads one request line, writes an ack line and a result line, or
  an ack, N stream lines and a result; closes), using the same certificate as our agent;
- a raw dispatcher (TCP server: on a call line it replies a job id, opens a TLS connection to
  the raw agent, sends the request line, keeps the lines it reads in memory; ``get_result``
  waits for the end; ``follow_stream`` writes the stored lines, then live ones; ``cancel``;
  named queues as in-memory semaphores);
- raw clients: one connection per request, one JSON line out, lines in until EOF.

Our side is ``runwire serve jobs-dispatcher`` (SQLite database in a file, as deployed) and
``runwire serve jobs-agent`` (development certificate, password file), each in its own
process, like the raw servers; the client runs in this process and is the generated
:class:`~runwire.generated.jobs.client.DispatcherClient` (what users use).

Rows (``id`` column), their targets (from the issue) and what is measured:

``latency``       submit → result of a no-op procedure (``echo``): ``call``, then
                  ``get_result`` with ``wait``; median (p50) over many sequential jobs.
                  Target: at most 2× raw.
``follow``        ``follow_stream`` of a finished job with ``since: 0`` (its whole stored
                  stream) read with the generated client, packets per second (median over
                  repeats). Target: at least 50% of raw.
``follow-plain``  the same stream from our dispatcher read with the raw reader: server
                  throughput without client overhead (information).
``follow-live``   submit a streaming job and follow it at once to its end with the
                  generated client: agent, ingestion and delivery together (information).
``submit-small``  ``call`` time (p50) while 10 jobs wait in a queue behind a running job;
                  each measured job is cancelled afterwards (not timed), so the queue
                  length stays the same (information; the ratio is to raw).
``submit-large``  the same while 10,000 jobs wait (information). Short and long queues
                  live in two fresh dispatchers per side, measured in alternating blocks,
                  so both see the same machine load.
``submit-flat``   submit time with the long queue / with the short one, ours (and raw).
                  Target: at most 1.5×.
``memory``        growth of the dispatcher's resident memory (VmRSS of its process) over
                  10,000 finished jobs of 100 packets each (32 live at a time), on a fresh
                  dispatcher after a warm-up; the raw agent serves these jobs, so the CPU
                  goes to the dispatcher. Target: under 50 MB (job data lives in the
                  database).

Below the table, details: p90s, CPU time per operation of each server and of this process
("client"; steadier than rates on a busy machine), our dispatcher with the raw agent (splits
dispatcher from agent cost), the generated client reading the raw dispatcher (client cost),
sizes. Verdicts are printed, never asserted: the exit status is 0 whenever the run
completes. A default run takes 3 to 4 minutes on a 2-core VM, two thirds of it the 10,000
jobs of the memory row; ``--quick`` (with optional size overrides) makes a run of about 15
seconds. ``--profile DIR`` runs our servers under cProfile and writes ``dispatcher.prof``,
``agent.prof`` (one file per dispatcher started) and this process's ``client.prof`` to DIR.
Other load on the machine moves the numbers: compare runs only on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import platform
import re
import secrets
import signal
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from benchlib import Row, ServerProcess, percentile, print_table, progress, verdict

LOCALHOST = "127.0.0.1"
AGENT_USER = "bench"
PASSWORD_ENV = "RUNWIRE_BENCH_AGENT_PASSWORD"
HOST_OURS = "bench"  # our dispatcher's name for our agent
HOST_RAW_AGENT = "rawagent"  # our dispatcher's name for the raw agent
IO_TIMEOUT_S = 120.0
LISTENING = re.compile(r"listening on (\S+?):(\d+)\b")


# --- sizes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does."""

    latency_jobs: int = 200
    """Measured submit → result jobs per variant (after a warm-up)."""
    follow_packets: int = 20_000
    """Packets of the streamed job read with follow_stream."""
    follow_repeats: int = 5
    """Reads of that stream per reader (median taken)."""
    live_packets: int = 5_000
    """Packets of each job followed live."""
    live_repeats: int = 2
    """Live follows (submit + follow) per side."""
    submit_jobs: int = 300
    """Measured submits per side and queue length."""
    queued_small: int = 10
    queued_large: int = 10_000
    memory_jobs: int = 10_000
    memory_packets: int = 100
    block: int = 25
    """Measurements per variant before switching to the next (interleaving)."""


DEFAULT_SIZES = Sizes()
QUICK_SIZES = Sizes(
    latency_jobs=30,
    follow_packets=2_000,
    follow_repeats=3,
    live_packets=1_000,
    live_repeats=1,
    submit_jobs=30,
    queued_small=10,
    queued_large=500,
    memory_jobs=200,
    memory_packets=100,
    block=10,
)


# --- small helpers -------------------------------------------------------------------------


def encode(value: Any) -> bytes:
    """One compact JSON line (the same encoding runwire uses)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# --- server processes ----------------------------------------------------------------------


class JobsServer(ServerProcess):
    """A jobs server (ours or raw) in its own process; ``host`` and ``port`` come from its
    "listening on HOST:PORT" line."""

    def __init__(
        self, name: str, argv: list[str], *, log_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        super().__init__(name, argv, LISTENING, log_dir, env)
        self.host, self.port = self.match.group(1), int(self.match.group(2))


def runwire_argv(profile_to: Path | None) -> list[str]:
    """How to run the ``runwire`` command (under cProfile when asked)."""
    if profile_to is None:
        return [sys.executable, "-m", "runwire"]
    return [sys.executable, "-m", "cProfile", "-o", str(profile_to), "-m", "runwire"]


# --- raw servers (only asyncio, socket, ssl, json) -------------------------------------------


async def raw_agent_main(certfile: str, keyfile: str) -> None:
    """The raw agent: TLS, one request line, ack + result (or + N stream lines), close."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = json.loads(await reader.readline())
            procedure, arguments = request["procedure"], request["arguments"]
            args = arguments if isinstance(arguments, list) else []
            kwargs = arguments if isinstance(arguments, dict) else {}
            if procedure == "echo":
                writer.write(
                    encode({"harp": 1, "stream_result": False})
                    + encode({"result": kwargs if kwargs and not args else args})
                )
            elif procedure == "stream":
                count = int(args[0] if args else kwargs["count"])
                lines = [encode({"harp": 1, "stream_result": True})]
                lines += [encode({"stream": index}) for index in range(count)]
                lines.append(encode({"result": count}))
                writer.write(b"".join(lines))
            elif procedure == "sleep":
                seconds = float(args[0] if args else kwargs["seconds"])
                writer.write(encode({"harp": 1, "stream_result": False}))
                await writer.drain()
                await asyncio.sleep(seconds)
                writer.write(encode({"result": seconds}))
            else:
                error = {"type": "no_such_procedure", "message": "no such procedure"}
                writer.write(encode({"harp": 1, "error": error}))
            await writer.drain()
        except (OSError, ValueError, KeyError, IndexError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    server = await asyncio.start_server(on_client, LOCALHOST, 0, ssl=context, backlog=1024)
    await _serve_until_signal(server)


@dataclass
class RawJob:
    """What the raw dispatcher keeps of one job: its packet lines, already encoded."""

    lines: list[bytes] = field(default_factory=list)
    result: bytes | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


async def raw_dispatcher_main(
    agent_host: str, agent_port: int, cafile: str, user: str, password: str
) -> None:
    """The raw dispatcher: jobs in memory, one TLS connection to the raw agent per job."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile)
    jobs: dict[str, RawJob] = {}
    queues: dict[str, asyncio.Semaphore] = {}
    auth = {"user": user, "password": password}

    async def run(job: RawJob, request: dict[str, Any]) -> None:
        queue = request.get("queue")
        gate: contextlib.AbstractAsyncContextManager[Any] = contextlib.nullcontext()
        if queue is not None:
            key = canonical(queue["name"])
            if key not in queues:
                queues[key] = asyncio.Semaphore(queue.get("concurrency", 1))
            gate = queues[key]
        try:
            async with gate:
                reader, writer = await asyncio.open_connection(
                    agent_host, agent_port, ssl=context, server_hostname="localhost"
                )
                try:
                    call = {
                        "harp": 1,
                        "procedure": request["procedure"],
                        "arguments": request["arguments"],
                        "auth": auth,
                    }
                    writer.write(encode(call))
                    buffer = b""
                    while chunk := await reader.read(65536):
                        buffer += chunk
                        *complete, buffer = buffer.split(b"\n")
                        for line in complete:
                            message = json.loads(line)
                            if "stream" in message:
                                packet = {"packet": len(job.lines), "data": message["stream"]}
                                job.lines.append(encode(packet))
                                job.changed.set()
                            elif "result" in message or "exception" in message:
                                job.result = encode(message)
                            elif "error" in message:
                                job.result = encode({"error": message["error"]})
                finally:
                    writer.close()
                    with contextlib.suppress(OSError, ssl.SSLError):
                        await writer.wait_closed()
        except asyncio.CancelledError:
            job.result = encode({"cancelled": True})
        except (OSError, ValueError) as exc:
            job.result = encode({"error": {"type": "network_error", "message": str(exc)}})
        finally:
            if job.result is None:
                job.result = encode({"error": {"type": "closed", "message": "no result"}})
            job.done.set()
            job.changed.set()

    async def follow(job: RawJob, index: int, writer: asyncio.StreamWriter) -> None:
        while True:
            if index < len(job.lines):
                writer.write(b"".join(job.lines[index:]))
                index = len(job.lines)
                await writer.drain()
                continue
            if job.done.is_set():
                assert job.result is not None
                writer.write(job.result)
                return
            job.changed.clear()
            await job.changed.wait()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = json.loads(await reader.readline())
            if "arguments" in request:
                job_id = str(uuid.uuid4())
                job = jobs[job_id] = RawJob()
                job.task = asyncio.ensure_future(run(job, request))
                writer.write(encode({"harpcaller": 1, "job_id": job_id}))
            elif "get_result" in request:
                job = jobs[request["get_result"]]
                if request.get("wait"):
                    await job.done.wait()
                result = job.result if job.done.is_set() else None
                writer.write(encode({"no_result": True}) if result is None else result)
            elif "follow_stream" in request:
                job = jobs[request["follow_stream"]]
                since = request.get("since")
                await follow(job, len(job.lines) if since is None else since, writer)
            elif "cancel" in request:
                job = jobs[request["cancel"]]
                alive = not job.done.is_set()
                if alive and job.task is not None:
                    job.task.cancel()
                    await job.done.wait()
                writer.write(encode({"cancelled": alive}))
            await writer.drain()
        except (OSError, ValueError, KeyError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_server(on_client, LOCALHOST, 0, backlog=1024)
    await _serve_until_signal(server)


async def _serve_until_signal(server: asyncio.Server) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    await stop.wait()
    server.close()


# --- raw client ----------------------------------------------------------------------------


async def plain_request(host: str, port: int, request: Any) -> list[Any]:
    """One request on a new connection: its reply lines until the server closes."""
    async with asyncio.timeout(IO_TIMEOUT_S):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(encode(request))
            data = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return [json.loads(line) for line in data.splitlines() if line]


async def plain_submit(host: str, port: int, request: dict[str, Any]) -> str:
    (reply,) = await plain_request(host, port, request)
    job_id = reply.get("job_id")
    if not isinstance(job_id, str):
        raise RuntimeError(f"call refused: {reply}")
    return job_id


async def plain_follow(host: str, port: int, job_id: str) -> tuple[int, Any]:
    """Read a job's whole stream (``since: 0``) as a plain line reader: (packets, terminator)."""
    packets, terminator = 0, None
    async with asyncio.timeout(IO_TIMEOUT_S):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(encode({"harpcaller": 1, "follow_stream": job_id, "since": 0}))
            buffer = b""
            while chunk := await reader.read(65536):
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    message = json.loads(line)
                    if "packet" in message:
                        packets += 1
                    else:
                        terminator = message
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return packets, terminator


async def bounded_gather(
    count: int, concurrency: int, work: Callable[[int], Awaitable[Any]]
) -> list[Any]:
    """``await work(i)`` for i in range(count), at most ``concurrency`` at once, in order."""
    results: list[Any] = [None] * count
    indices = iter(range(count))

    async def worker() -> None:
        for index in indices:
            results[index] = await work(index)

    await asyncio.gather(*(worker() for _ in range(min(count, concurrency))))
    return results


def call_request(
    host: str, procedure: str, arguments: Any, queue: Any = None, concurrency: int = 1
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "harpcaller": 1,
        "host": host,
        "procedure": procedure,
        "arguments": arguments,
    }
    if queue is not None:
        request["queue"] = {"name": queue, "concurrency": concurrency}
    return request


# --- results -------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


def rate(per_s: float) -> str:
    return f"{per_s / 1e3:.1f}k/s"


class CpuMeter:
    """Accumulates the CPU time the servers (and this process, "client") spend inside
    measured blocks, per variant."""

    def __init__(self) -> None:
        self.totals: dict[tuple[str, str], float] = {}
        self.ops: dict[str, int] = {}

    @contextlib.contextmanager
    def measure(self, variant: str, servers: Sequence[JobsServer], ops: int) -> Iterator[None]:
        before = [server.cpu_s() for server in servers]
        client_before = time.process_time()
        yield
        used = [
            (server.name, server.cpu_s() - start)
            for server, start in zip(servers, before, strict=True)
        ]
        used.append(("client", time.process_time() - client_before))
        for name, seconds in used:
            self.totals[variant, name] = self.totals.get((variant, name), 0.0) + seconds
        self.ops[variant] = self.ops.get(variant, 0) + ops

    def per_op_us(self, variant: str) -> dict[str, float]:
        ops = max(1, self.ops.get(variant, 0))
        return {
            name: total / ops * 1e6
            for (which, name), total in self.totals.items()
            if which == variant
        }


# --- the benchmark -------------------------------------------------------------------------


class Bench:
    """Starts the servers, runs every measurement, prints the table."""

    def __init__(self, sizes: Sizes, workdir: Path, profile_dir: Path | None) -> None:
        self.sizes = sizes
        self.workdir = workdir
        self.profile_dir = profile_dir
        self.password = secrets.token_urlsafe(18)
        self.env = dict(os.environ, **{PASSWORD_ENV: self.password})
        self.servers: list[JobsServer] = []
        self.rows: list[Row] = []
        self.details: list[str] = []
        self.cpu = CpuMeter()
        self.raw_queue_counter = 0

    # -- servers --

    def start(self, name: str, argv: list[str]) -> JobsServer:
        progress(f"starting {name}")
        server = JobsServer(name, argv, log_dir=self.workdir, env=self.env)
        self.servers.append(server)
        return server

    def profile_path(self, name: str) -> Path | None:
        return None if self.profile_dir is None else self.profile_dir / f"{name}.prof"

    def start_all(self) -> None:
        state = self.workdir / "state"
        self.agent = self.start(
            "agent",
            [
                *runwire_argv(self.profile_path("agent")),
                "serve",
                "jobs-agent",
                "--port",
                "0",
                "--state-dir",
                str(state),
                "--user",
                AGENT_USER,
                "--password-env",
                PASSWORD_ENV,
            ],
        )
        agent_dir = state / "jobs-agent"
        self.certfile, keyfile = agent_dir / "dev-cert.pem", agent_dir / "dev-key.pem"
        self.raw_agent = self.start(
            "raw-agent",
            [sys.executable, __file__, "--role", "raw-agent", str(self.certfile), str(keyfile)],
        )
        self.raw_dispatcher = self.start_raw_dispatcher("raw-dispatcher")
        self.dispatcher = self.start_dispatcher("dispatcher")

    def start_raw_dispatcher(self, name: str) -> JobsServer:
        return self.start(
            name,
            [
                sys.executable,
                __file__,
                "--role",
                "raw-dispatcher",
                self.raw_agent.host,
                str(self.raw_agent.port),
                str(self.certfile),
                AGENT_USER,
                PASSWORD_ENV,
            ],
        )

    def start_dispatcher(self, name: str) -> JobsServer:
        folder = self.workdir / name
        folder.mkdir()
        (folder / "agent.password").write_text(self.password)
        hosts = ""
        for host_name, server in ((HOST_OURS, self.agent), (HOST_RAW_AGENT, self.raw_agent)):
            hosts += (
                f"\n[hosts.{host_name}]\naddress = {json.dumps(server.host)}\n"
                f"port = {server.port}\nuser = {json.dumps(AGENT_USER)}\n"
                f'password_file = "agent.password"\nca_file = {json.dumps(str(self.certfile))}\n'
                f'server_name = "localhost"\n'
            )
        config = folder / "dispatcher.toml"
        config.write_text(f'[dispatcher]\ndatabase = "jobs.sqlite3"\n{hosts}')
        return self.start(
            name,
            [
                *runwire_argv(self.profile_path(name)),
                "serve",
                "jobs-dispatcher",
                "--config",
                str(config),
                "--port",
                "0",
                "--state-dir",
                str(folder / "state"),
            ],
        )

    def stop_all(self) -> None:
        for server in reversed(self.servers):
            server.stop()

    # -- clients --

    def client(self, server: JobsServer) -> Any:
        from runwire.generated.jobs.client import DispatcherClient

        return DispatcherClient(server.host, server.port, timeout_s=IO_TIMEOUT_S)

    async def ours_submit(self, client: Any, request: dict[str, Any]) -> str:
        from runwire.generated.jobs import models

        reply = await client.call(models.CallRequest.model_validate(request))
        if not isinstance(reply.root, models.CallReply):
            raise RuntimeError(f"call refused: {reply.to_wire()}")
        job_id: str = reply.root.job_id.root
        return job_id

    async def ours_result(self, client: Any, job_id: str) -> Any:
        from runwire.generated.jobs import models

        request = models.GetResultRequest.model_validate(
            {"harpcaller": 1, "get_result": job_id, "wait": True}
        )
        return (await client.get_result(request)).to_wire()

    async def ours_cancel(self, client: Any, job_id: str) -> Any:
        from runwire.generated.jobs import models

        request = models.CancelRequest.model_validate({"harpcaller": 1, "cancel": job_id})
        return (await client.cancel(request)).to_wire()

    async def ours_follow(self, client: Any, job_id: str) -> tuple[int, Any]:
        from runwire.generated.jobs import models

        request = models.FollowStreamRequest.model_validate(
            {"harpcaller": 1, "follow_stream": job_id, "since": 0}
        )
        packets, terminator = 0, None
        async for line in client.follow_stream(request):
            if isinstance(line, models.StreamPacket):
                packets += 1
            else:
                terminator = line.to_wire()
        return packets, terminator

    async def raw_result(self, server: JobsServer, job_id: str) -> Any:
        (reply,) = await plain_request(
            server.host, server.port, {"harpcaller": 1, "get_result": job_id, "wait": True}
        )
        return reply

    # -- measurements --

    async def interleaved(
        self,
        variants: dict[str, tuple[Callable[[], Awaitable[float]], Sequence[JobsServer]]],
        count: int,
        warmup: int,
    ) -> dict[str, list[float]]:
        """Run each variant's measurement ``count`` times, in blocks, rotating variants."""
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for measure, _servers in variants.values():
            for _ in range(min(warmup, count)):
                await measure()
        while any(len(values) < count for values in samples.values()):
            for name, (measure, servers) in variants.items():
                todo = min(self.sizes.block, count - len(samples[name]))
                with self.cpu.measure(name, servers, todo):
                    for _ in range(todo):
                        samples[name].append(await measure())
        return samples

    async def measure_latency(self) -> None:
        progress("submit → result of a no-op procedure")
        ours_client = self.client(self.dispatcher)
        expected: dict[str, Any] = {"result": []}

        def ours_on(host: str) -> Callable[[], Awaitable[float]]:
            async def measure() -> float:
                start = time.perf_counter()
                job_id = await self.ours_submit(ours_client, call_request(host, "echo", []))
                result = await self.ours_result(ours_client, job_id)
                elapsed = time.perf_counter() - start
                if result != expected:
                    raise RuntimeError(f"unexpected result {result}")
                return elapsed

            return measure

        async def raw() -> float:
            server = self.raw_dispatcher
            start = time.perf_counter()
            job_id = await plain_submit(
                server.host, server.port, call_request(HOST_OURS, "echo", [])
            )
            result = await self.raw_result(server, job_id)
            elapsed = time.perf_counter() - start
            if result != expected:
                raise RuntimeError(f"unexpected raw result {result}")
            return elapsed

        samples = await self.interleaved(
            {
                "latency ours": (ours_on(HOST_OURS), [self.dispatcher, self.agent]),
                "latency raw": (raw, [self.raw_dispatcher, self.raw_agent]),
                "latency ours+raw-agent": (ours_on(HOST_RAW_AGENT), [self.dispatcher]),
            },
            self.sizes.latency_jobs,
            warmup=10,
        )
        ours, raw_, hybrid = (
            statistics.median(samples[k])
            for k in ("latency ours", "latency raw", "latency ours+raw-agent")
        )
        ratio = ours / raw_
        self.rows.append(
            Row(
                "latency",
                "submit → result, no-op procedure (p50)",
                ms(ours),
                ms(raw_),
                f"{ratio:.2f}×",
                "≤ 2×",
                verdict(ratio <= 2.0),
                {"ours_s": ours, "raw_s": raw_, "ratio": ratio},
            )
        )
        self.details.append(
            f"latency p90: ours {ms(percentile(samples['latency ours'], 0.9))}, raw "
            f"{ms(percentile(samples['latency raw'], 0.9))}; our dispatcher with the raw agent: "
            f"p50 {ms(hybrid)} ({hybrid / raw_:.2f}× raw)"
        )
        for variant in ("latency ours", "latency raw", "latency ours+raw-agent"):
            self.details.append(f"  CPU per job, {variant}: " + self.cpu_text(variant))

    def cpu_text(self, variant: str) -> str:
        return ", ".join(
            f"{name} {value:.0f} µs" for name, value in self.cpu.per_op_us(variant).items()
        )

    async def measure_follow(self) -> None:
        count = self.sizes.follow_packets
        progress(f"follow_stream of a finished job with {count} packets")
        ours_client = self.client(self.dispatcher)
        ours_id = await self.ours_submit(ours_client, call_request(HOST_OURS, "stream", [count]))
        raw_server = self.raw_dispatcher
        raw_id = await plain_submit(
            raw_server.host, raw_server.port, call_request(HOST_OURS, "stream", [count])
        )
        expected = {"result": count}
        for outcome in (
            await self.ours_result(ours_client, ours_id),
            await self.raw_result(raw_server, raw_id),
        ):
            if outcome != expected:
                raise RuntimeError(f"stream job ended with {outcome}")

        def timed(read: Callable[[], Awaitable[tuple[int, Any]]]) -> Callable[[], Awaitable[float]]:
            async def measure() -> float:
                start = time.perf_counter()
                packets, terminator = await read()
                elapsed = time.perf_counter() - start
                if packets != count or terminator != expected:
                    raise RuntimeError(f"follow read {packets} packets, then {terminator}")
                return count / elapsed

            return measure

        d = self.dispatcher
        raw_client = self.client(raw_server)
        samples = await self.interleaved(
            {
                "follow ours": (timed(lambda: self.ours_follow(ours_client, ours_id)), [d]),
                "follow plain→ours": (timed(lambda: plain_follow(d.host, d.port, ours_id)), [d]),
                "follow generated→raw": (
                    timed(lambda: self.ours_follow(raw_client, raw_id)),
                    [raw_server],
                ),
                "follow raw": (
                    timed(lambda: plain_follow(raw_server.host, raw_server.port, raw_id)),
                    [raw_server],
                ),
            },
            self.sizes.follow_repeats,
            warmup=1,
        )
        ours, plain, client_only, raw_ = (
            statistics.median(samples[k])
            for k in ("follow ours", "follow plain→ours", "follow generated→raw", "follow raw")
        )
        self.details.append(
            f"follow_stream, generated client reading the raw dispatcher: {rate(client_only)} "
            f"({client_only / raw_:.0%} of raw): the client's own limit"
        )
        self.rows.append(
            Row(
                "follow",
                "follow_stream, stored stream, generated client (packets/s)",
                rate(ours),
                rate(raw_),
                f"{ours / raw_:.0%}",
                "≥ 50%",
                verdict(ours / raw_ >= 0.5),
                {"ours_per_s": ours, "raw_per_s": raw_, "ratio": ours / raw_},
            )
        )
        self.rows.append(
            Row(
                "follow-plain",
                "follow_stream, stored stream, plain-socket reader (packets/s)",
                rate(plain),
                rate(raw_),
                f"{plain / raw_:.0%}",
                "(server only)",
                "info",
                {"ours_per_s": plain, "raw_per_s": raw_, "ratio": plain / raw_},
            )
        )
        for variant in samples:
            per_packet = {
                name: value / count for name, value in self.cpu.per_op_us(variant).items()
            }
            text = ", ".join(f"{name} {value:.2f} µs" for name, value in per_packet.items())
            self.details.append(f"CPU per packet, {variant}: {text}")

    async def measure_live_follow(self) -> None:
        count = self.sizes.live_packets
        progress(f"live follow_stream of a job streaming {count} packets")
        ours_client = self.client(self.dispatcher)
        raw_server = self.raw_dispatcher
        expected = {"result": count}

        async def ours() -> float:
            start = time.perf_counter()
            job_id = await self.ours_submit(ours_client, call_request(HOST_OURS, "stream", [count]))
            packets, terminator = await self.ours_follow(ours_client, job_id)
            elapsed = time.perf_counter() - start
            if packets != count or terminator != expected:
                raise RuntimeError(f"live follow read {packets} packets, then {terminator}")
            return count / elapsed

        async def raw() -> float:
            start = time.perf_counter()
            job_id = await plain_submit(
                raw_server.host, raw_server.port, call_request(HOST_OURS, "stream", [count])
            )
            packets, terminator = await plain_follow(raw_server.host, raw_server.port, job_id)
            elapsed = time.perf_counter() - start
            if packets != count or terminator != expected:
                raise RuntimeError(f"raw live follow read {packets} packets, then {terminator}")
            return count / elapsed

        samples = await self.interleaved(
            {
                "live ours": (ours, [self.dispatcher, self.agent]),
                "live raw": (raw, [raw_server, self.raw_agent]),
            },
            self.sizes.live_repeats,
            warmup=0,
        )
        ours_rate = statistics.median(samples["live ours"])
        raw_rate = statistics.median(samples["live raw"])
        self.rows.append(
            Row(
                "follow-live",
                "follow_stream, live job from submit to end, generated client (packets/s)",
                rate(ours_rate),
                rate(raw_rate),
                f"{ours_rate / raw_rate:.0%}",
                "(end to end)",
                "info",
                {"ours_per_s": ours_rate, "raw_per_s": raw_rate},
            )
        )
        for variant in samples:
            per_packet = {
                name: value / count for name, value in self.cpu.per_op_us(variant).items()
            }
            text = ", ".join(f"{name} {value:.2f} µs" for name, value in per_packet.items())
            self.details.append(f"CPU per packet, {variant}: {text}")

    async def fill(self, server: JobsServer, request: dict[str, Any], count: int) -> list[str]:
        """Submit ``count`` copies of ``request`` with plain sockets, 16 at a time."""

        async def submit(_index: int) -> str:
            return await plain_submit(server.host, server.port, request)

        return await bounded_gather(count, 16, submit)

    async def measure_submit(self) -> None:
        """Submit time with a short and a long queue, measured on two fresh dispatchers per
        side (one holding the short queue, one the long), in alternating blocks, so that
        both see the same machine load; each measured job is cancelled (not timed)."""
        sizes = self.sizes
        small_n, large_n = sizes.queued_small, sizes.queued_large
        progress(f"four fresh dispatchers with {small_n} and {large_n:,} queued jobs")
        ours_small = self.start_dispatcher("dispatcher-small-queue")
        ours_large = self.start_dispatcher("dispatcher-large-queue")
        raw_small = self.start_raw_dispatcher("raw-dispatcher-small-queue")
        raw_large = self.start_raw_dispatcher("raw-dispatcher-large-queue")
        queue = {"bench": "queued"}
        blocker = call_request(HOST_OURS, "sleep", [3600], queue)
        queued = call_request(HOST_OURS, "echo", [], queue)

        async def prepare(server: JobsServer, count: int) -> list[str]:
            await self.fill(server, blocker, 1)
            return await self.fill(server, queued, count)

        ids = await asyncio.gather(
            prepare(ours_small, small_n),
            prepare(ours_large, large_n),
            prepare(raw_small, small_n),
            prepare(raw_large, large_n),
        )
        for server, job_ids in ((ours_small, ids[0]), (ours_large, ids[1])):
            await self.check_queued(self.client(server), job_ids[-1])
        progress(f"submit time with {small_n} and with {large_n:,} queued jobs")

        def ours_on(server: JobsServer) -> Callable[[], Awaitable[float]]:
            client = self.client(server)

            async def measure() -> float:
                start = time.perf_counter()
                job_id = await self.ours_submit(client, queued)
                elapsed = time.perf_counter() - start
                await self.ours_cancel(client, job_id)
                return elapsed

            return measure

        def raw_on(server: JobsServer) -> Callable[[], Awaitable[float]]:
            async def measure() -> float:
                start = time.perf_counter()
                job_id = await plain_submit(server.host, server.port, queued)
                elapsed = time.perf_counter() - start
                await plain_request(server.host, server.port, {"harpcaller": 1, "cancel": job_id})
                return elapsed

            return measure

        samples = await self.interleaved(
            {
                "submit ours, short queue": (ours_on(ours_small), [ours_small]),
                "submit ours, long queue": (ours_on(ours_large), [ours_large]),
                "submit raw, short queue": (raw_on(raw_small), [raw_small]),
                "submit raw, long queue": (raw_on(raw_large), [raw_large]),
            },
            sizes.submit_jobs,
            warmup=10,
        )
        p50 = {name: statistics.median(values) for name, values in samples.items()}
        p90 = {name: percentile(values, 0.9) for name, values in samples.items()}
        for row_id, n, kind in (
            ("submit-small", small_n, "short queue"),
            ("submit-large", large_n, "long queue"),
        ):
            ours_s, raw_s = p50[f"submit ours, {kind}"], p50[f"submit raw, {kind}"]
            self.rows.append(
                Row(
                    row_id,
                    f"submit time with {n:,} queued jobs (p50)",
                    ms(ours_s),
                    ms(raw_s),
                    f"{ours_s / raw_s:.2f}×",
                    "—",
                    "info",
                    {"ours_s": ours_s, "raw_s": raw_s, "queued": n},
                )
            )
        flat = p50["submit ours, long queue"] / p50["submit ours, short queue"]
        raw_flat = p50["submit raw, long queue"] / p50["submit raw, short queue"]
        self.rows.append(
            Row(
                "submit-flat",
                f"submit time, {large_n:,} vs {small_n:,} queued jobs",
                f"{flat:.2f}×",
                f"{raw_flat:.2f}×",
                "—",
                "≤ 1.5×",
                verdict(flat <= 1.5),
                {"ours": flat, "raw": raw_flat},
            )
        )
        self.details.append(
            "submit p90: "
            + ", ".join(
                f"{name.removeprefix('submit ')} {ms(value)}" for name, value in p90.items()
            )
        )
        for variant in samples:
            self.details.append(
                f"CPU per submit (+ untimed cancel), {variant}: " + self.cpu_text(variant)
            )
        for server in (ours_small, ours_large, raw_small, raw_large):
            server.stop()
            self.servers.remove(server)

    async def check_queued(self, client: Any, job_id: str) -> None:
        from runwire.generated.jobs import models

        request = models.GetStatusRequest.model_validate({"harpcaller": 1, "get_status": job_id})
        status = (await client.get_status(request)).to_wire()
        if status.get("state") != "queued":
            raise RuntimeError(f"expected a queued job, got {status}")

    async def measure_memory(self) -> None:
        sizes = self.sizes
        progress("fresh dispatcher for the memory measurement")
        server = self.start_dispatcher("dispatcher-memory")
        # The raw agent serves these jobs: the metric is the dispatcher's memory, and the raw
        # agent leaves the CPU to the dispatcher, so the 10,000 jobs run sooner.
        request = call_request(HOST_RAW_AGENT, "stream", [sizes.memory_packets])
        expected = {"result": sizes.memory_packets}

        async def run_jobs(count: int) -> float:
            """Submit ``count`` jobs and wait for each, at most 32 live at once."""
            start = time.perf_counter()

            async def job(_index: int) -> Any:
                job_id = await plain_submit(server.host, server.port, request)
                return await self.raw_result(server, job_id)

            outcomes = await bounded_gather(count, 32, job)
            bad = [outcome for outcome in outcomes if outcome != expected]
            if bad:
                raise RuntimeError(f"{len(bad)} of {count} jobs failed, e.g. {bad[0]}")
            return time.perf_counter() - start

        await run_jobs(min(100, sizes.memory_jobs))  # warm-up: imports, caches, allocator
        before = server.rss_bytes()
        progress(f"running {sizes.memory_jobs:,} jobs of {sizes.memory_packets} packets")
        cpu_start = server.cpu_s()
        elapsed = await run_jobs(sizes.memory_jobs)
        cpu = server.cpu_s() - cpu_start
        after, peak = server.rss_bytes(), server.peak_rss_bytes()
        growth = after - before
        self.rows.append(
            Row(
                "memory",
                f"dispatcher RSS growth over {sizes.memory_jobs:,} finished jobs × "
                f"{sizes.memory_packets} packets",
                f"{growth / 2**20:+.1f} MB",
                "—",
                "—",
                "< 50 MB",
                verdict(growth < 50 * 2**20),
                {"before": before, "after": after, "peak": peak, "growth": growth},
            )
        )
        packets = sizes.memory_jobs * sizes.memory_packets
        self.details.append(
            f"memory: dispatcher RSS {before / 2**20:.1f} MB after a warm-up → "
            f"{after / 2**20:.1f} MB (peak {peak / 2**20:.1f} MB); {sizes.memory_jobs:,} jobs "
            f"(raw agent, 32 at a time) in {elapsed:.1f} s; dispatcher CPU "
            f"{cpu / sizes.memory_jobs * 1e3:.2f} ms per job with its {sizes.memory_packets} "
            f"packets, submit and get_result ({cpu / packets * 1e6:.1f} µs per packet)"
        )
        server.stop()
        self.servers.remove(server)

    # -- report --

    def print_table(self, elapsed_s: float) -> None:
        title = (
            f"runwire jobs benchmark: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"{platform.machine()}; ratios are ours / raw, measured in this run"
        )
        print_table(title, self.rows, self.details, self.sizes, elapsed_s)

    async def run(self) -> None:
        await self.measure_latency()
        await self.measure_follow()
        await self.measure_live_follow()
        await self.measure_submit()
        await self.measure_memory()


# --- command line --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the jobs dispatcher and agent against a raw-socket baseline "
        "measured in the same run.",
    )
    parser.add_argument("--quick", action="store_true", help="a small run (smoke tests)")
    for f in fields(Sizes):
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            type=int,
            metavar="N",
            help=f"override the size {f.name} (default {getattr(DEFAULT_SIZES, f.name)}, "
            f"--quick {getattr(QUICK_SIZES, f.name)})",
        )
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="write cProfile data of every process to DIR"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON")
    parser.add_argument(
        "--keep", action="store_true", help="keep the working folder (logs, databases)"
    )
    parser.add_argument("--role", nargs="+", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    overrides = {
        f.name: getattr(args, f.name) for f in fields(Sizes) if getattr(args, f.name) is not None
    }
    sizes = replace(sizes, **overrides)
    if (
        sizes.queued_large <= sizes.queued_small
        or min(getattr(sizes, f.name) for f in fields(Sizes)) < 1
    ):
        raise SystemExit("sizes must be positive and queued-large > queued-small")
    return sizes


def run_role(role: list[str]) -> int:
    """The raw servers, started by the benchmark as child processes."""
    if role[0] == "raw-agent":
        asyncio.run(raw_agent_main(role[1], role[2]))
    elif role[0] == "raw-dispatcher":
        host, port, cafile, user, password_env = role[1:]
        asyncio.run(raw_dispatcher_main(host, int(port), cafile, user, os.environ[password_env]))
    else:
        raise SystemExit(f"unknown role {role[0]}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role:
        return run_role(args.role)
    sizes = sizes_from(args)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        args.profile = args.profile.resolve()
    workdir = Path(tempfile.mkdtemp(prefix="runwire-bench-"))
    profile_dir: Path | None = args.profile
    bench = Bench(sizes, workdir, profile_dir)
    profiler = cProfile.Profile() if profile_dir is not None else None
    started = time.monotonic()
    try:
        bench.start_all()
        if profiler is not None:
            profiler.enable()
        asyncio.run(bench.run())
    except BaseException:
        for server in bench.servers:
            print(f"--- {server.name} log tail ---\n{server.log_tail()}", file=sys.stderr)
        args.keep = True
        raise
    finally:
        if profiler is not None and profile_dir is not None:
            profiler.disable()
            profiler.dump_stats(str(profile_dir / "client.prof"))
        bench.stop_all()
        if args.keep:
            progress(f"working folder kept: {workdir}")
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    bench.print_table(time.monotonic() - started)
    if args.json is not None:
        rows = [vars(row) for row in bench.rows]
        args.json.write_text(json.dumps({"sizes": vars(sizes), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
