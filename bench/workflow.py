#!/usr/bin/env python3
"""Benchmark of the workflow family: the reference scheduler's request socket against raw pyzmq.

Run it with ``tox -e bench`` (or ``python bench/workflow.py [--quick]`` where runwire is
installed). It prints one table; every speed is a ratio to a raw baseline measured in the
same run, on the same machine, with the same security:

- the raw server: a process with a plain pyzmq ROUTER socket on loopback that decodes each
  JSON request frame and answers ``{"data": true}`` (json only, no runwire code), plain TCP
  or CurveZMQ (its own keypair; no ZAP handler, so any client key is let in);
- the raw clients, in this process: a synchronous pyzmq REQ socket (the floor of a ZeroMQ
  round trip in Python) and, for the request rates, ``zmq.asyncio`` REQ sockets;
- ours: ``runwire serve workflow`` (the conformance workflow, started ``--paused`` so no job
  runs beside the measurement) in its own process, plain TCP (``--insecure-loopback``) or
  CurveZMQ (its keys in the run directory's ``.service``), and in this process the generated
  clients sending ``ping_workflow`` with validation on (the client validates the request and
  the reply against the schemas; the server validates the request and the reply too):
  :class:`~runwire.generated.workflow.client.WorkflowSyncClient` (blocking, as the raw sync
  REQ client) and :class:`~runwire.generated.workflow.client.WorkflowClient` (asyncio, as
  the raw asyncio one).

Rows (``id`` column), their targets and what is measured:

``rt-plain``      ``ping_workflow`` round trip (p50 over many sequential requests), ours
                  (blocking client, our server) / raw sync REQ -> raw sync ROUTER, plain
                  TCP. Target: at most 2×.
``rt-curve``      the same with CurveZMQ on both sides. Target: at most 2×.
``rt-asyncio``    the same with asyncio clients, CurveZMQ: ours (async client, our server) /
                  raw asyncio REQ -> raw asyncio ROUTER. Target: at most 2×.
``rt-async``      the raw round trip with asyncio at both ends / sync at both ends
                  (information: what an event loop alone costs).
``curve-cost``    CurveZMQ round trip / plain one, ours and raw (information).
``rps-1``         requests per second of one client looping (CurveZMQ), ours / raw.
``rps-8``         requests per second of eight concurrent clients (CurveZMQ; one REQ socket
                  each, all in this process's event loop), ours / raw (information; the
                  target is on the round trip).
``rps-scaling``   eight clients / one, ours and raw (information).

Below the table, details: p90s, server CPU time per request (ours and raw), sizes. Latency
blocks of the variants alternate, so every variant sees the same machine load. Verdicts are
printed, never asserted: the exit status is 0 whenever the run completes. A default run
takes about 30 s; ``--quick`` about 5 s. Other load on the machine moves the numbers:
compare runs only on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio
import zmq.auth
from benchlib import Row, ServerProcess, percentile, print_table, progress, verdict

LOCALHOST = "127.0.0.1"
LISTENING = re.compile(r"listening on (\S+?):(\d+)\b")
WORKFLOW_LISTENING = re.compile(
    r"listening on (?P<host>\S+):(?P<port>\d+) \(publish (?P<publish>\d+), (?P<security>\w+)\); "
    r"contact file (?P<contact>\S+);"
)
PING = json.dumps({"command": "ping_workflow", "args": {}}).encode()


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does."""

    round_trips: int = 3000
    """Measured round trips per variant (after a warm-up)."""
    block: int = 250
    """Round trips per variant before switching to the next (interleaving)."""
    rate_s: float = 2.0
    """Seconds each request-rate measurement runs."""
    warmup: int = 200
    """Unmeasured round trips per variant first."""


DEFAULT_SIZES = Sizes()
QUICK_SIZES = Sizes(round_trips=300, block=50, rate_s=0.3, warmup=30)


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs"


def rate(per_s: float) -> str:
    return f"{per_s / 1e3:.2f}k/s"


# --- server processes ----------------------------------------------------------------------------


class WorkflowServer(ServerProcess):
    """A workflow server (ours or raw) in its own process, awaited until its stdout says
    where it listens."""

    @property
    def port(self) -> int:
        return int(self.match.group(2) if self.match.re is LISTENING else self.match["port"])


def _raw_router(context: zmq.Context[Any], secret_key_file: str | None) -> Any:
    """A ROUTER of ``context`` bound to a random loopback port (printed as the listening
    line), a CurveZMQ server with the keypair in ``secret_key_file`` when given."""
    socket = context.socket(zmq.ROUTER)
    socket.setsockopt(zmq.LINGER, 0)
    if secret_key_file is not None:
        public, secret = zmq.auth.load_certificate(secret_key_file)
        assert secret is not None
        socket.setsockopt(zmq.CURVE_SECRETKEY, secret)
        socket.setsockopt(zmq.CURVE_PUBLICKEY, public)
        socket.setsockopt(zmq.CURVE_SERVER, 1)
    port = socket.bind_to_random_port(f"tcp://{LOCALHOST}")
    print(f"listening on {LOCALHOST}:{port}", flush=True)
    return socket


def _raw_reply(body: bytes) -> bytes:
    """The raw servers' answer to any JSON request: ``{"data": true}`` (its id echoed)."""
    request = json.loads(body)
    reply: dict[str, Any] = {"data": True}
    if isinstance(request, dict) and "id" in request:
        reply["id"] = request["id"]
    return json.dumps(reply).encode()


def raw_server_main(secret_key_file: str | None) -> None:
    """The raw server: a sync ROUTER that answers every JSON request with ``{"data": true}``
    (the request id echoed when there is one), CurveZMQ when given a keypair file."""
    socket = _raw_router(zmq.Context(), secret_key_file)
    while True:
        frames = socket.recv_multipart()
        socket.send_multipart([*frames[:-1], _raw_reply(frames[-1])])


async def raw_async_server_main(secret_key_file: str | None) -> None:
    """The raw asyncio server: a ``zmq.asyncio`` ROUTER awaiting each request and its reply
    in turn (the architecture of a server on an event loop, with nothing else on it)."""
    socket = _raw_router(zmq.asyncio.Context(), secret_key_file)
    while True:
        frames = await socket.recv_multipart()
        await socket.send_multipart([*frames[:-1], _raw_reply(frames[-1])])


# --- the benchmark -------------------------------------------------------------------------------


@dataclass
class Side:
    """A server to measure against, and how a client reaches it."""

    name: str
    server: WorkflowServer
    port: int
    client_keys: tuple[bytes, bytes] | None  # (public, secret)
    server_key: bytes | None


class Bench:
    """Starts the servers, runs every measurement, prints the table."""

    def __init__(self, sizes: Sizes, workdir: Path) -> None:
        self.sizes = sizes
        self.workdir = workdir
        self.servers: list[WorkflowServer] = []
        self.sides: dict[str, Side] = {}
        self.rows: list[Row] = []
        self.details: list[str] = []
        self.samples: dict[str, list[float]] = {}
        self.cpu: dict[str, float] = {}
        self.requests: dict[str, int] = {}

    def start(self, name: str, argv: list[str], pattern: re.Pattern[str]) -> WorkflowServer:
        progress(f"starting {name}")
        server = WorkflowServer(name, argv, pattern, self.workdir)
        self.servers.append(server)
        return server

    def start_all(self) -> None:
        from runwire.conformance.workflow import definition_path

        public, secret = zmq.auth.create_certificates(str(self.workdir), "raw-server")
        client_public, client_secret = zmq.auth.create_certificates(str(self.workdir), "raw-client")
        raw_client = _keys(client_secret)
        script = [sys.executable, str(Path(__file__).resolve()), "--role"]
        for security in ("plain", "curve"):
            for kind, role in (("raw", "raw-server"), ("raw-async", "raw-async-server")):
                name = f"{kind}-{security}"
                raw = self.start(
                    name,
                    [*script, role, *(["--secret-key", secret] if security == "curve" else [])],
                    LISTENING,
                )
                self.sides[name] = Side(
                    name,
                    raw,
                    raw.port,
                    raw_client if security == "curve" else None,
                    zmq.auth.load_certificate(public)[0] if security == "curve" else None,
                )
        with definition_path() as definition:
            for security in ("plain", "curve"):
                run_root = self.workdir / f"ours-{security}"
                argv = [
                    *(sys.executable, "-m", "runwire", "serve", "workflow", str(definition)),
                    *("--run-root", str(run_root), "--host", LOCALHOST, "--paused"),
                    *("--port-range", "20000-60000"),
                ]
                if security == "plain":
                    argv.append("--insecure-loopback")
                ours = self.start(f"ours-{security}", argv, WORKFLOW_LISTENING)
                keys = Path(ours.match["contact"]).parent
                self.sides[f"ours-{security}"] = Side(
                    f"ours-{security}",
                    ours,
                    int(ours.match["port"]),
                    _keys(str(keys / "client.key_secret")) if security == "curve" else None,
                    zmq.auth.load_certificate(str(keys / "server.key"))[0]
                    if security == "curve"
                    else None,
                )
        del client_public

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()

    # -- clients --

    def ours_client(self, side: Side, context: zmq.asyncio.Context) -> Any:
        from runwire.generated.workflow import WorkflowClient
        from runwire.runtime.transport.zmq_security import CurveClientSecurity, CurveKeyPair

        security = None
        if side.client_keys is not None and side.server_key is not None:
            security = CurveClientSecurity(CurveKeyPair(*side.client_keys), side.server_key)
        return WorkflowClient(
            LOCALHOST, side.port, security=security, timeout_s=30.0, context=context
        )

    def ours_sync_client(self, side: Side, context: zmq.Context[Any]) -> Any:
        from runwire.generated.workflow import WorkflowSyncClient
        from runwire.runtime.transport.zmq_security import CurveClientSecurity, CurveKeyPair

        security = None
        if side.client_keys is not None and side.server_key is not None:
            security = CurveClientSecurity(CurveKeyPair(*side.client_keys), side.server_key)
        return WorkflowSyncClient(
            LOCALHOST, side.port, security=security, timeout_s=30.0, context=context
        )

    def raw_socket(self, side: Side, context: zmq.Context[Any]) -> zmq.Socket[Any]:
        socket = context.socket(zmq.REQ)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.RCVTIMEO, 30_000)
        if side.client_keys is not None and side.server_key is not None:
            socket.setsockopt(zmq.CURVE_PUBLICKEY, side.client_keys[0])
            socket.setsockopt(zmq.CURVE_SECRETKEY, side.client_keys[1])
            socket.setsockopt(zmq.CURVE_SERVERKEY, side.server_key)
        socket.connect(f"tcp://{LOCALHOST}:{side.port}")
        return socket  # type: ignore[no-any-return]

    # -- measurements --

    async def measure_round_trips(self) -> None:
        """Sequential round trips: ours (generated client), raw sync REQ, raw asyncio REQ;
        plain and CURVE; blocks alternate."""
        progress("round trips")
        sync_context: zmq.Context[Any] = zmq.Context()
        async_context = zmq.asyncio.Context()
        try:
            # name -> (timer, the side whose server answers)
            timers: dict[str, tuple[Callable[[int], Awaitable[list[float]]], Side]] = {}
            for security in ("plain", "curve"):
                ours_side = self.sides[f"ours-{security}"]
                raw_side = self.sides[f"raw-{security}"]
                async_side = self.sides[f"raw-async-{security}"]
                timers[f"ours-{security}"] = (
                    _timed_ours_sync(self.ours_sync_client(ours_side, sync_context)),
                    ours_side,
                )
                timers[f"ours-async-{security}"] = (
                    _timed_ours(self.ours_client(ours_side, async_context)),
                    ours_side,
                )
                timers[f"raw-{security}"] = (
                    _timed_sync(self.raw_socket(raw_side, sync_context)),
                    raw_side,
                )
                timers[f"raw-async-{security}"] = (
                    _timed_async(self.raw_socket(async_side, async_context)),  # type: ignore[arg-type]
                    async_side,
                )
                # the split: our server alone (raw sync client), our clients alone (raw
                # servers of the same kind)
                timers[f"ours-server-{security}"] = (
                    _timed_sync(self.raw_socket(ours_side, sync_context)),
                    ours_side,
                )
                timers[f"ours-client-{security}"] = (
                    _timed_ours_sync(self.ours_sync_client(raw_side, sync_context)),
                    raw_side,
                )
                timers[f"ours-async-client-{security}"] = (
                    _timed_ours(self.ours_client(async_side, async_context)),
                    async_side,
                )
            for name, (timer, _) in timers.items():
                await timer(self.sizes.warmup)
                self.samples[name] = []
            done = 0
            while done < self.sizes.round_trips:
                count = min(self.sizes.block, self.sizes.round_trips - done)
                for name, (timer, side) in timers.items():
                    server = side.server
                    before = server.cpu_s()
                    self.samples[name] += await timer(count)
                    self.cpu[name] = self.cpu.get(name, 0.0) + server.cpu_s() - before
                    self.requests[name] = self.requests.get(name, 0) + count
                done += count
        finally:
            sync_context.destroy(linger=0)
            async_context.destroy(linger=0)
        p50 = {name: statistics.median(values) for name, values in self.samples.items()}
        for security in ("plain", "curve"):
            ours, raw = p50[f"ours-{security}"], p50[f"raw-{security}"]
            ratio = ours / raw
            self.rows.append(
                Row(
                    f"rt-{security}",
                    f"ping_workflow round trip p50 ({'CurveZMQ' if security == 'curve' else 'plain TCP'})",
                    us(ours),
                    us(raw),
                    f"{ratio:.2f}x",
                    "<= 2x",
                    verdict(ratio <= 2.0),
                    {"ours_s": ours, "raw_s": raw, "ratio": ratio},
                )
            )
        ours, async_raw = p50["ours-async-curve"], p50["raw-async-curve"]
        ratio = ours / async_raw
        self.rows.append(
            Row(
                "rt-asyncio",
                "ping_workflow round trip p50, asyncio clients (CurveZMQ)",
                us(ours),
                us(async_raw),
                f"{ratio:.2f}x",
                "<= 2x",
                verdict(ratio <= 2.0),
                {"ours_s": ours, "raw_s": async_raw, "ratio": ratio},
            )
        )
        sync_raw = p50["raw-curve"]
        self.rows.append(
            Row(
                "rt-async",
                "raw round trip, asyncio both ends / sync both ends (CurveZMQ)",
                "-",
                f"{us(async_raw)} / {us(sync_raw)}",
                f"{async_raw / sync_raw:.2f}x",
                "-",
                "info",
                {"async_s": async_raw, "sync_s": sync_raw},
            )
        )
        ours_cost = p50["ours-curve"] / p50["ours-plain"]
        raw_cost = p50["raw-curve"] / p50["raw-plain"]
        self.rows.append(
            Row(
                "curve-cost",
                "CurveZMQ round trip / plain TCP round trip",
                f"{ours_cost:.2f}x",
                f"{raw_cost:.2f}x",
                "-",
                "-",
                "info",
                {"ours": ours_cost, "raw": raw_cost},
            )
        )
        for name, values in self.samples.items():
            self.details.append(
                f"{name}: p50 {us(statistics.median(values))}, p90 {us(percentile(values, 0.9))}, "
                f"{len(values)} round trips"
            )
        self.details.append(
            "split (CurveZMQ, p50): our server with a raw sync client "
            f"{us(p50['ours-server-curve'])} (raw server {us(p50['raw-curve'])}); our blocking "
            f"client with the raw sync server {us(p50['ours-client-curve'])} (raw sync client "
            f"{us(p50['raw-curve'])}); our async client with the raw asyncio server "
            f"{us(p50['ours-async-client-curve'])} (raw asyncio client "
            f"{us(p50['raw-async-curve'])})"
        )
        for name in ("ours-plain", "raw-plain", "ours-curve", "raw-curve", "raw-async-curve"):
            per_request = self.cpu.get(name, 0.0) / max(1, self.requests.get(name, 0))
            self.details.append(f"server CPU per request, {name}: {us(per_request)}")

    async def measure_rates(self) -> None:
        """Requests per second with 1 and 8 concurrent clients (CurveZMQ), ours and raw."""
        progress("request rates")
        rates: dict[str, float] = {}
        context = zmq.asyncio.Context()
        try:
            for clients in (1, 8):
                for name in ("ours-curve", "raw-curve"):
                    side = self.sides[name]
                    if name.startswith("ours"):
                        loops = [
                            _ours_loop(self.ours_client(side, context)) for _ in range(clients)
                        ]
                    else:
                        loops = [
                            _raw_loop(self.raw_socket(side, context))  # type: ignore[arg-type]
                            for _ in range(clients)
                        ]
                    rates[f"{name}-{clients}"] = await _rate(loops, self.sizes.rate_s)
        finally:
            context.destroy(linger=0)
        for clients in (1, 8):
            ours, raw = rates[f"ours-curve-{clients}"], rates[f"raw-curve-{clients}"]
            self.rows.append(
                Row(
                    f"rps-{clients}",
                    f"requests/s, {clients} client{'s' if clients > 1 else ''} (CurveZMQ)",
                    rate(ours),
                    rate(raw),
                    f"{ours / raw:.2f}x",
                    "-",
                    "info",
                    {"ours_per_s": ours, "raw_per_s": raw, "ratio": ours / raw},
                )
            )
        ours_scaling = rates["ours-curve-8"] / rates["ours-curve-1"]
        raw_scaling = rates["raw-curve-8"] / rates["raw-curve-1"]
        self.rows.append(
            Row(
                "rps-scaling",
                "requests/s with 8 clients / with 1",
                f"{ours_scaling:.2f}x",
                f"{raw_scaling:.2f}x",
                "-",
                "-",
                "info",
                {"ours": ours_scaling, "raw": raw_scaling},
            )
        )

    def print_table(self, elapsed_s: float) -> None:
        title = (
            f"runwire workflow benchmark: {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, pyzmq {zmq.__version__}, libzmq "
            f"{zmq.zmq_version()}; ratios are ours / raw, measured in this run"
        )
        print_table(title, self.rows, self.details, self.sizes, elapsed_s)

    async def run(self) -> None:
        await self.measure_round_trips()
        await self.measure_rates()


def _keys(secret_file: str) -> tuple[bytes, bytes]:
    public, secret = zmq.auth.load_certificate(secret_file)
    assert secret is not None
    return public, secret


def _timed_ours(client: Any) -> Callable[[int], Awaitable[list[float]]]:
    async def timed(count: int) -> list[float]:
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            data = await client.ping_workflow()
            samples.append(time.perf_counter() - started)
            assert data.root is True
        return samples

    return timed


def _timed_ours_sync(client: Any) -> Callable[[int], Awaitable[list[float]]]:
    async def timed(count: int) -> list[float]:
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            data = client.ping_workflow()
            samples.append(time.perf_counter() - started)
            assert data.root is True
        return samples

    return timed


def _timed_sync(socket: zmq.Socket[Any]) -> Callable[[int], Awaitable[list[float]]]:
    async def timed(count: int) -> list[float]:
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            socket.send(PING)
            reply = json.loads(socket.recv())
            samples.append(time.perf_counter() - started)
            assert reply["data"] is True
        return samples

    return timed


def _timed_async(socket: zmq.asyncio.Socket) -> Callable[[int], Awaitable[list[float]]]:
    async def timed(count: int) -> list[float]:
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            await socket.send(PING)
            reply = json.loads(await socket.recv())
            samples.append(time.perf_counter() - started)
            assert reply["data"] is True
        return samples

    return timed


def _ours_loop(client: Any) -> Callable[[float], Awaitable[int]]:
    async def loop(until: float) -> int:
        count = 0
        while time.monotonic() < until:
            await client.ping_workflow()
            count += 1
        return count

    return loop


def _raw_loop(socket: zmq.asyncio.Socket) -> Callable[[float], Awaitable[int]]:
    async def loop(until: float) -> int:
        count = 0
        while time.monotonic() < until:
            await socket.send(PING)
            json.loads(await socket.recv())
            count += 1
        return count

    return loop


async def _rate(loops: list[Callable[[float], Awaitable[int]]], seconds: float) -> float:
    """Requests per second of `loops` run together for `seconds` (after a short warm-up)."""
    warm = time.monotonic() + min(0.2, seconds / 4)
    await asyncio.gather(*(loop(warm) for loop in loops))
    started = time.monotonic()
    counts = await asyncio.gather(*(loop(started + seconds) for loop in loops))
    return sum(counts) / (time.monotonic() - started)


# --- command line ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the workflow scheduler's request socket against raw pyzmq "
        "measured in the same run.",
    )
    parser.add_argument("--quick", action="store_true", help="a small run (smoke tests)")
    for f in fields(Sizes):
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            type=float if f.type in ("float", float) else int,
            metavar="N",
            help=f"override the size {f.name} (default {getattr(DEFAULT_SIZES, f.name)}, "
            f"--quick {getattr(QUICK_SIZES, f.name)})",
        )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (logs)")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--secret-key", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    overrides = {
        f.name: getattr(args, f.name) for f in fields(Sizes) if getattr(args, f.name) is not None
    }
    return Sizes(**{**vars(sizes), **overrides})


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "raw-server":
        with contextlib.suppress(KeyboardInterrupt):
            raw_server_main(args.secret_key)
        return 0
    if args.role == "raw-async-server":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(raw_async_server_main(args.secret_key))
        return 0
    sizes = sizes_from(args)
    workdir = Path(tempfile.mkdtemp(prefix="runwire-bench-workflow-"))
    bench = Bench(sizes, workdir)
    started = time.monotonic()
    try:
        bench.start_all()
        asyncio.run(bench.run())
    except BaseException:
        for server in bench.servers:
            print(f"--- {server.name} log ---", file=sys.stderr)
            print(server.log_path.read_text(errors="replace")[-2000:], file=sys.stderr)
        args.keep = True
        raise
    finally:
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
