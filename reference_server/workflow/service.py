"""One running workflow as a service: run directory, keys, sockets, contact file, scheduler.

:class:`WorkflowService` puts a :class:`.Scheduler` behind a :class:`.WorkflowRuntimeServer`
the way ``cylc play`` does (reference/workflow.md section 3):

1. the run directory ``<run root>/<workflow id>/`` is created; a live contact file there
   means the workflow already runs (:class:`WorkflowAlreadyRunning`), a stale one (its
   process is gone) is cleaned up;
2. fresh CurveZMQ keys go into ``.service/`` (0700; files 0600), unless the service runs
   with ``insecure_loopback`` (plain TCP, loopback addresses only);
3. the ROUTER and PUB sockets bind on ``host`` to random ports of ``port_range`` (or exact
   ports);
4. the contact file is written (atomically, 0600) right after the bind;
5. the scheduler runs until the workflow stops: all cycle points done, a ``stop`` command,
   a stall timeout, or :meth:`WorkflowService.request_stop` (the serve command calls it on
   SIGTERM/SIGINT/SIGHUP);
6. on the way out the queued deltas and ``shutdown`` (with the stop reason) are published,
   the sockets close, and the contact file and keys are removed.

If :meth:`WorkflowService.start` fails (no free port, files), it removes what it created:
the keys and contact file, ``.service/`` if it made it, and the run directory (and any
folders above it up to the run root) if it made them and they are still empty. A run
directory that existed before keeps everything it had, so a workflow that never started
stays "no such workflow" rather than "not running".

Everything runs on one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from runwire.runtime.errors import InvalidState, RunwireError
from runwire.runtime.transport.zmq_endpoint import ServerEndpoints
from runwire.runtime.transport.zmq_security import create_service_keys, require_loopback

from .contact import (
    Contact,
    ContactFileError,
    WorkflowNotRunning,
    check_workflow_id,
    contact_path,
    discover,
    remove_service_files,
    service_dir,
    workflow_run_dir,
    write_contact_file,
)
from .definition import WorkflowDefinition
from .scheduler import Scheduler
from .server import WorkflowRuntimeServer

__all__ = [
    "CLEAN_STOP_REASONS",
    "DEFAULT_PORT_RANGE",
    "WorkflowAlreadyRunning",
    "WorkflowService",
    "advertised_host",
    "is_clean_stop",
]

LOG = logging.getLogger("runwire.reference_server.workflow.service")

DEFAULT_PORT_RANGE: Final = (43001, 43100)
"""The original's port range (first, last inclusive)."""

CLEAN_STOP_REASONS: Final = ("AUTOMATIC", "REQUEST(CLEAN)", "REQUEST(NOW)", "REQUEST(KILL)")
"""Stop reasons of a workflow that stopped as asked or finished (exit status 0)."""

STOP_GRACE_S: Final = 15.0
"""After a stop request, seconds the scheduler gets before it is cancelled (jobs SIGKILLed)."""


class WorkflowAlreadyRunning(RunwireError):
    """A live scheduler already serves this workflow id (its contact file is in use)."""

    def __init__(self, contact: Contact, path: Path) -> None:
        super().__init__(
            f"workflow {contact.workflow_id} is already running (pid {contact.pid}, "
            f"{contact.host}:{contact.port}; contact file {path})"
        )
        self.contact = contact


def is_clean_stop(reason: str | None) -> bool:
    """True for a workflow that finished or stopped on request (see CLEAN_STOP_REASONS)."""
    return reason in CLEAN_STOP_REASONS


def _missing_folders(path: Path) -> list[Path]:
    """`path` and its ancestors that do not exist yet, deepest first."""
    missing: list[Path] = []
    for folder in (path, *path.parents):
        if folder.exists() or folder.is_symlink():
            break
        missing.append(folder)
    return missing


def advertised_host(bind_host: str) -> str:
    """The host written into the contact file for a bind address: the address itself, or
    this machine's host name for a wildcard (``0.0.0.0``, ``*``, ``::``)."""
    if bind_host in ("0.0.0.0", "*", "::", ""):
        return socket.gethostname()
    return bind_host


class WorkflowService:
    """A workflow served over ZeroMQ from its run directory.

    Usage::

        service = WorkflowService(load_definition("pipeline.yaml"), run_root=tmp)
        contact = await service.start()    # keys, sockets, contact file
        reason = await service.run()       # until the workflow stops; then cleans up

    or ``reason = await service.serve()`` (start + run). ``async with service:`` starts it and
    closes it (kill-stopping a workflow still running) on exit.

    Args:
        definition: the validated workflow definition.
        workflow_id: the id (default: the definition's name); ``a/b`` ids are allowed.
        run_root: the run root (default ``$RUNWIRE_RUN_ROOT`` or ``~/runwire-run``).
        host: the bind address (default loopback; ``0.0.0.0`` for all interfaces).
        port_range: (first, last) ports to pick both ports from at random.
        port, publish_port: exact ports instead (0: any free port).
        insecure_loopback: plain TCP without CURVE; refused unless ``host`` is loopback.
        paused: start paused (``cylc play --pause``).
        heartbeat_interval_s: seconds between heartbeats on the publish socket.
        contact_host: the host clients are told to connect to (default: see
            :func:`advertised_host`).
        scheduler_options: extra keyword arguments of :class:`.Scheduler`.
        server_options: extra keyword arguments of :class:`.WorkflowRuntimeServer`.
        server_class: the server class (a subclass of :class:`.WorkflowRuntimeServer`, e.g.
            a deliberately broken variant for conformance tests).
    """

    def __init__(
        self,
        definition: WorkflowDefinition,
        *,
        workflow_id: str | None = None,
        run_root: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port_range: tuple[int, int] | None = DEFAULT_PORT_RANGE,
        port: int | None = None,
        publish_port: int | None = None,
        insecure_loopback: bool = False,
        paused: bool = False,
        heartbeat_interval_s: float = 5.0,
        contact_host: str | None = None,
        scheduler_options: Mapping[str, Any] | None = None,
        server_options: Mapping[str, Any] | None = None,
        server_class: type[WorkflowRuntimeServer] = WorkflowRuntimeServer,
    ) -> None:
        self.definition = definition
        self.workflow_id = check_workflow_id(workflow_id or definition.name)
        self.run_root = run_root
        self.run_dir = workflow_run_dir(self.workflow_id, run_root)
        self.host = host
        self.port_range = port_range
        self.port = port
        self.publish_port = publish_port
        self.insecure_loopback = insecure_loopback
        self.paused = paused
        self.heartbeat_interval_s = heartbeat_interval_s
        self.contact_host = contact_host
        self.scheduler_options = dict(scheduler_options or {})
        self.server_options = dict(server_options or {})
        self.server_class = server_class
        self.scheduler: Scheduler | None = None
        self.server: WorkflowRuntimeServer | None = None
        self.contact: Contact | None = None
        self.stop_reason: str | None = None
        self._run_task: asyncio.Task[str] | None = None
        self._stop_requests = 0
        self._pending_stop: str | None = None
        self._closed = False
        self._created_dirs: list[Path] = []
        """Folders the current start() created, deepest first (removed if it fails)."""

    @property
    def contact_file(self) -> Path:
        """``<run dir>/.service/contact``."""
        return contact_path(self.run_dir)

    @property
    def endpoints(self) -> ServerEndpoints:
        """Where the server listens (after :meth:`start`)."""
        if self.server is None:
            raise InvalidState("the workflow service is not started")
        return self.server.endpoints

    def _claim_run_dir(self) -> None:
        """Create the run directory; refuse a live contact file, clean up a stale one."""
        self._created_dirs = _missing_folders(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not self.contact_file.exists():
            return
        try:
            contact = discover(self.workflow_id, self.run_root)
        except WorkflowNotRunning as exc:
            LOG.warning("removing the stale service files of %s: %s", self.workflow_id, exc)
        except ContactFileError as exc:
            LOG.warning("removing an unusable contact file: %s", exc)
        else:
            raise WorkflowAlreadyRunning(contact, self.contact_file)
        remove_service_files(self.run_dir)

    async def start(self) -> Contact:
        """Create keys, bind, write the contact file; returns the contact written. If it
        fails, what it created is removed again (service files, and the run directory if it
        made it; see the module docstring).

        Raises:
            ValueError: ``insecure_loopback`` on a non-loopback host, or a bad port range.
            WorkflowAlreadyRunning: a live scheduler serves this workflow id.
            zmq.ZMQError: a bind failed (no free port in the range, address in use).
            OSError: the run directory or service files cannot be written.
            InvalidState: already started.
        """
        if self.server is not None:
            raise InvalidState("the workflow service is already started")
        if self.insecure_loopback:
            require_loopback(self.host)
        self._claim_run_dir()
        folder = service_dir(self.run_dir)
        if not folder.exists():
            self._created_dirs.insert(0, folder)
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(folder, 0o700)
            security = None
            if not self.insecure_loopback:
                security = create_service_keys(folder).server_security()
            options: dict[str, Any] = {"workflow_id": self.workflow_id}
            options.update(self.scheduler_options)
            options["start_paused"] = self.paused or bool(options.get("start_paused"))
            self.scheduler = Scheduler(self.definition, self.run_dir, **options)
            self.server = self.server_class(
                self.scheduler,
                heartbeat_interval_s=self.heartbeat_interval_s,
                **self.server_options,
            )
            endpoints = await self.server.start(
                self.host,
                port=self.port,
                publish_port=self.publish_port,
                port_range=self.port_range,
                security=security,
                insecure_loopback=self.insecure_loopback,
            )
            assert endpoints.publish_port is not None
            self.contact = Contact.for_this_process(
                self.workflow_id,
                host=self.contact_host or advertised_host(self.host),
                port=endpoints.port,
                publish_port=endpoints.publish_port,
                security=endpoints.security,
                run_dir=self.run_dir,
                heartbeat_interval_s=self.heartbeat_interval_s,
            )
            write_contact_file(self.run_dir, self.contact, registry=self.server.registry)
        except BaseException:
            try:
                if self.server is not None:
                    await self.server.stop("ABORT(start failed)")
            finally:
                self.server = None
                self._undo_claim()
            raise
        LOG.info(
            "workflow %s listening on %s:%d (publish %d, %s); contact file %s",
            self.workflow_id,
            self.host,
            endpoints.port,
            endpoints.publish_port,
            endpoints.security,
            self.contact_file,
        )
        return self.contact

    def _undo_claim(self) -> None:
        """After a failed start: remove the service files, then the folders this start
        created (deepest first, each only while empty: never what was there before)."""
        with contextlib.suppress(OSError):
            remove_service_files(self.run_dir)
        created, self._created_dirs = self._created_dirs, []
        for folder in created:
            try:
                folder.rmdir()
            except FileNotFoundError:
                continue
            except OSError as exc:  # not empty (someone wrote there meanwhile), or no access
                LOG.warning("left %s in place after the failed start: %s", folder, exc)
                return
        if created:
            LOG.info("removed %s, created by the failed start", created[-1])

    async def run(self) -> str:
        """Run the workflow until it stops, then shut the service down (publish the
        remaining deltas and ``shutdown``, close the sockets, remove the contact file and
        keys). Returns the stop reason (``AUTOMATIC``, ``REQUEST(KILL)``...)."""
        if self.scheduler is None or self.server is None:
            raise InvalidState("start() the workflow service first")
        if self._run_task is not None:
            raise InvalidState("the workflow service is already running")
        if self._pending_stop is not None:
            self.scheduler.stop(self._pending_stop)
        task = self._run_task = asyncio.create_task(self.scheduler.run(), name="runwire-workflow")
        reason = "ERROR(unknown)"
        try:
            reason = await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                reason = await self._cancel_scheduler()
                raise
            reason = self.scheduler.stop_reason or "CANCELLED"  # request_stop forced it
        except Exception:
            LOG.exception("workflow %s: the scheduler failed", self.workflow_id)
            reason = self.scheduler.stop_reason or "ERROR(unknown)"
        finally:
            self.stop_reason = reason
            await self.close(reason)
        return reason

    async def _cancel_scheduler(self) -> str:
        task = self._run_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        return (self.scheduler.stop_reason if self.scheduler else None) or "CANCELLED"

    async def serve(self) -> str:
        """:meth:`start` then :meth:`run`; returns the stop reason."""
        await self.start()
        return await self.run()

    def request_stop(self, mode: str = "kill") -> None:
        """Ask the workflow to stop (from the event loop, e.g. a signal handler).

        The first request queues ``stop`` in ``mode`` (default ``kill``: active jobs are
        killed, then the scheduler stops with ``REQUEST(KILL)``); if the scheduler has not
        stopped :data:`STOP_GRACE_S` seconds later, or on a second request, it is cancelled
        (remaining jobs get SIGKILL).
        """
        self._stop_requests += 1
        task = self._run_task
        if self._closed or (task is not None and task.done()):
            return
        if self.scheduler is None:  # not started: stop as soon as run() begins
            self._pending_stop = mode
            return
        if self._stop_requests == 1 or task is None:
            # before run() the command waits in the scheduler's queue for its first pass
            reply = self.scheduler.stop(mode)
            if self._stop_requests == 1:
                asyncio.get_running_loop().call_later(STOP_GRACE_S, self._force_stop)
            if reply["accepted"] or task is None:
                return
            LOG.warning("stop not queued (%s); stopping now", reply["message"])
        self._force_stop()

    def _force_stop(self) -> None:
        task = self._run_task
        if task is not None and not task.done():
            LOG.warning("workflow %s: stopping now (cancelling the scheduler)", self.workflow_id)
            task.cancel()

    async def close(self, reason: str | None = None) -> None:
        """Stop serving and remove the service files. A scheduler still running is cancelled
        first (its jobs are killed). Idempotent."""
        if self._closed:
            return
        self._closed = True
        scheduler_reason = await self._cancel_scheduler()
        reason = reason or scheduler_reason
        try:
            if self.server is not None:
                await self.server.stop(reason)
        finally:
            remove_service_files(self.run_dir)
        LOG.info("workflow %s stopped: %s", self.workflow_id, reason)

    async def __aenter__(self) -> WorkflowService:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
