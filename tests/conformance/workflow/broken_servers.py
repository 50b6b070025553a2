"""Workflow servers for the conformance tests: the reference one, and deliberately broken
variants of it, each with one fault and the conformance cases that must catch it.

A server runs on its own event loop in a thread (:class:`ServerThread`), because the runner
runs every case on a loop of its own. :func:`reference_service` is the real
:class:`~runwire.reference_server.workflow.service.WorkflowService` (keys and contact file in
``.service``); :func:`variant_server` puts a :class:`.Scheduler` (or a subclass) behind a
:class:`.WorkflowRuntimeServer` subclass, with CURVE keys made the same way.

Some faults reach into private parts of the reference server (the publisher's sequence
counter, the scheduler's readiness test, the authenticator): they are test fixtures that
model a broken implementation, not API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

from runwire.conformance.workflow import definition_path
from runwire.reference_server.workflow import Scheduler, load_definition
from runwire.reference_server.workflow.scheduler import TaskProxy
from runwire.reference_server.workflow.server import WorkflowRuntimeServer
from runwire.reference_server.workflow.service import WorkflowService
from runwire.runtime.codec.command import encode_reply
from runwire.runtime.transport.zmq_endpoint import RequestContext, ServerEndpoints
from runwire.runtime.transport.zmq_security import create_service_keys

RUNTIME = "workflow/runtime/"

HEARTBEAT_S = 0.5
"""Heartbeat interval of the servers under test, seconds (short: cases wait for one)."""

STOP_S = 20.0
"""Bound on a server's stop, seconds."""


@dataclass(frozen=True)
class Served:
    """Where a server under test listens, and its keys."""

    port: int
    publish_port: int
    keys_dir: Path | None
    """The service directory (client.key_secret, server.key); None for plain TCP."""

    def targets(self) -> list[str]:
        return [
            f"runtime=tcp://127.0.0.1:{self.port}",
            f"publish=tcp://127.0.0.1:{self.publish_port}",
        ]

    def options(self) -> dict[str, Any]:
        if self.keys_dir is None:
            return {"insecure": True}
        return {"workflow_keys": str(self.keys_dir)}


Closer = Callable[[], Awaitable[None]]
Starter = Callable[[], Awaitable[tuple[Served, Closer]]]


@dataclass
class ServerThread:
    """Runs a server (from `starter`) on an event loop in a daemon thread."""

    starter: Starter
    served: Served | None = None
    error: BaseException | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _thread: threading.Thread | None = None

    def start(self, timeout_s: float = 30.0) -> Served:
        self._thread = threading.Thread(target=self._main, name="workflow server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"the server did not start within {timeout_s} s")
        if self.error is not None:
            raise self.error
        assert self.served is not None
        return self.served

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.served, close = await self.starter()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            async with asyncio.timeout(STOP_S):
                await close()

    def stop(self, timeout_s: float = STOP_S + 5.0) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout_s)
            assert not self._thread.is_alive(), "the server thread did not end"


def reference_service(run_root: Path, *, insecure: bool = False) -> Starter:
    """The reference :class:`WorkflowService` on loopback, any free ports, running the
    conformance workflow from `run_root`."""

    async def start() -> tuple[Served, Closer]:
        with definition_path() as path:
            definition = load_definition(path)
        service = WorkflowService(
            definition,
            run_root=run_root,
            port_range=None,
            port=0,
            publish_port=0,
            insecure_loopback=insecure,
            heartbeat_interval_s=HEARTBEAT_S,
        )
        contact = await service.start()
        running = asyncio.create_task(service.run())
        keys = None if insecure else service.run_dir / ".service"

        async def close() -> None:
            if not running.done():
                service.request_stop()
            await running

        return Served(contact.port, contact.publish_port, keys), close

    return start


def variant_server(
    directory: Path,
    server_class: type[WorkflowRuntimeServer] = WorkflowRuntimeServer,
    scheduler_class: type[Scheduler] = Scheduler,
    **server_options: Any,
) -> Starter:
    """`server_class` over `scheduler_class` running the conformance workflow in
    `directory`, with CURVE keys in ``directory/.service``."""

    async def start() -> tuple[Served, Closer]:
        with definition_path() as path:
            definition = load_definition(path)
        keys = create_service_keys(directory / ".service")
        scheduler = scheduler_class(definition, directory / "run", workflow_id="conformance")
        server = server_class(scheduler, heartbeat_interval_s=HEARTBEAT_S, **server_options)
        endpoints: ServerEndpoints = await server.start(
            "127.0.0.1", port=0, publish_port=0, security=keys.server_security()
        )
        assert endpoints.publish_port is not None

        async def run() -> None:
            reason = await scheduler.run()
            await server.stop(reason)

        running = asyncio.create_task(run())

        async def close() -> None:
            if not running.done():
                scheduler.stop("kill")
                try:
                    async with asyncio.timeout(STOP_S / 2):
                        await asyncio.shield(running)
                except TimeoutError:
                    running.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await running
            await server.stop("closed")

        return Served(endpoints.port, endpoints.publish_port, keys.directory), close

    return start


# --- the faults ---------------------------------------------------------------------------------


class DispatchesAttributes(WorkflowRuntimeServer):
    """Answers a command naming any attribute of the server with data (the original's
    defect 2: ``{"command": "__dir__"}`` is dispatched by attribute lookup)."""

    def _begin(self, frame: bytes, peer: bytes) -> Any:
        with contextlib.suppress(Exception):
            message = json.loads(frame)
            command = message.get("command") if isinstance(message, dict) else None
            if isinstance(command, str) and command not in self.COMMANDS and hasattr(self, command):
                return encode_reply(repr(getattr(self, command))[:200])
        return super()._begin(frame, peer)


class SilentOnNonObject(WorkflowRuntimeServer):
    """Never answers a request that is JSON but not an object (the original's defect 1,
    minus the dead thread: the server goes on, the client waits forever)."""

    def _send(self, router: Any, route: list[bytes], reply: bytes) -> None:
        if b"must be a JSON object" not in reply:  # the error reply to a non-object request
            super()._send(router, route, reply)


class SkipsSequenceNumbers(WorkflowRuntimeServer):
    """Skips a sequence number after every ``all`` message (a gap subscribers must see)."""

    async def publish(self, topic: str, body: Any) -> dict[str, Any]:
        sent = await super().publish(topic, body)
        if topic == "all":
            self.publisher._seq += 1
        return sent


class AnswersAnyKey(WorkflowRuntimeServer):
    """Lets every CURVE client in, authorised or not (``CURVE_ALLOW_ANY``)."""

    async def start(self, host: str = "127.0.0.1", **options: Any) -> ServerEndpoints:
        endpoints = await super().start(host, **options)
        assert self._authenticator is not None
        self._authenticator.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
        return endpoints


class NoCommandId(WorkflowRuntimeServer):
    """Control replies lack ``command_id`` (reply validation off, so they go out)."""

    def __init__(self, scheduler: Scheduler, **options: Any) -> None:
        super().__init__(scheduler, validate_replies=False, **options)

    def _control(self, name: str, args: Any, context: RequestContext) -> Any:
        reply = dict(self.scheduler.queue_command(name, args.to_wire()))
        reply.pop("command_id", None)
        return reply


class HeldTasksRun(Scheduler):
    """Sets the held flag but submits held tasks all the same."""

    def _ready(self, proxy: TaskProxy, now: float, runahead_max: int) -> bool:
        held, proxy.is_held = proxy.is_held, False
        try:
            return super()._ready(proxy, now, runahead_max)
        finally:
            proxy.is_held = held


class NoShutdownMessage(WorkflowRuntimeServer):
    """Stops without publishing ``shutdown``."""

    SHUTDOWN_TOPIC = None


class DropsAll(WorkflowRuntimeServer):
    """Publishes the per-topic messages of a batch but not the closing ``all``."""

    async def publish(self, topic: str, body: Any) -> dict[str, Any]:
        if topic == "all":
            return {}
        return await super().publish(topic, body)


@dataclass(frozen=True)
class Variant:
    """A broken server: its fault, how to build it, and the cases that must catch it.

    Attributes:
        name: a short id.
        fault: what is wrong, in words.
        expected_failures: cases that must FAIL against it.
        passing: cases run alongside that must still PASS (the fault is specific).
        message: text the failure message of every expected failure contains.
    """

    name: str
    fault: str
    server_class: type[WorkflowRuntimeServer] = WorkflowRuntimeServer
    scheduler_class: type[Scheduler] = Scheduler
    expected_failures: frozenset[str] = frozenset()
    passing: frozenset[str] = frozenset()
    message: str = ""


def ids(*names: str) -> frozenset[str]:
    return frozenset(RUNTIME + name for name in names)


VARIANTS: tuple[Variant, ...] = (
    Variant(
        "dispatches-attributes",
        "commands naming server attributes and dunders are dispatched (defect 2)",
        server_class=DispatchesAttributes,
        expected_failures=ids("malformed/dunder-names", "malformed/attribute-names"),
        passing=ids("malformed/unknown-command", "api/lists-commands"),
        message="received frame",
    ),
    Variant(
        "silent-on-non-object",
        "a JSON request that is not an object gets no reply (defect 1)",
        server_class=SilentOnNonObject,
        expected_failures=ids("malformed/not-an-object"),
        passing=ids("malformed/not-json", "malformed/missing-command"),
        message="no reply from runtime",
    ),
    Variant(
        "skips-sequence-numbers",
        "published seq jumps by two after every 'all' message",
        server_class=SkipsSequenceNumbers,
        expected_failures=ids("all_deltas/seq-without-gaps", "all_deltas/batch-then-all"),
        passing=ids("task_proxies_delta/hold-and-release", "heartbeat/periodic"),
        message="seq must go up by one per message",
    ),
    Variant(
        "answers-any-key",
        "clients and subscribers with keys the server never authorised are served",
        server_class=AnswersAnyKey,
        expected_failures=ids("security/unauthorised-key", "security/subscribers"),
        passing=ids("security/plaintext-client", "security/wrong-server-key"),
        message="expected no ",
    ),
    Variant(
        "no-command-id",
        "control replies lack command_id",
        server_class=NoCommandId,
        expected_failures=ids("release/releases", "resume/resumes", "hold/no-match"),
        passing=ids("ping_workflow/answers-true", "data_elements/each-type"),
        message="'command_id' is a required property",
    ),
    Variant(
        "held-tasks-run",
        "hold sets the held flag but held tasks are submitted all the same",
        scheduler_class=HeldTasksRun,
        expected_failures=ids("hold/holds-a-task"),
        passing=ids("hold/glob-task-id", "release/releases", "pause/holds-back-jobs"),
        message="held 1/flaky stays waiting",
    ),
    Variant(
        "no-shutdown-message",
        "the workflow stops without publishing shutdown",
        server_class=NoShutdownMessage,
        expected_failures=ids("stop/kill"),
        message="in vain",
    ),
    Variant(
        "no-all-message",
        "per-topic deltas are published without the closing 'all' message",
        server_class=DropsAll,
        expected_failures=ids("all_deltas/batch-then-all", "security/subscribers"),
        passing=ids("task_proxies_delta/hold-and-release"),
        message="in vain",
    ),
)
