"""The reference jobs dispatcher, modelled on HarpCaller's ``harpcallerd``.

Clients speak the dispatcher protocol (``schemas/jobs/dispatcher.json``: JSON lines over
TCP, one request per connection); the dispatcher runs each job by calling a procedure on
an agent (``schemas/jobs/agent.json``: harpd's protocol, over TLS) and keeps the job's
record, stream packets and result in SQLite (:mod:`.store`).

Behaviour, with what it keeps from the original and what it fixes
(``reference/jobs.md``):

- ``call`` answers with a fresh UUIDv4 job id as soon as the job record is committed,
  before any contact with the host; an unknown host becomes the job's
  ``unknown_host`` error result, as in the original.
- Named queues (:mod:`.queues`): FIFO, concurrency fixed by the first job, deleted when
  idle. Jobs without a queue start at once, under the global ``max_running`` limit (the
  original has none). At most ``max_pending`` jobs may be queued or running; beyond
  that ``call`` answers ``overloaded``.
- ``timeout`` (idle time between packets; for a non-streaming procedure the whole run)
  and ``max_exec_time`` (total run time) are both honoured (the original ignores
  ``max_exec_time``), capped by the configured maxima, and counted from the job's start.
  Connecting to the agent and reading its acknowledgement is bounded by
  ``connect_timeout_s`` (10 s, as in the original).
- Streams: packets numbered from 0, stored with their time. ``follow_stream`` defaults
  to ``recent: 0``, ``read_stream`` to ``since: 0``. Every reader reads the stored stream
  (the same rows), so concurrent readers see identical sequences without gaps or
  duplicates.
- An unknown job id gets ``invalid_jobid`` on every operation, stream requests and
  cancel included (the original closes stream requests silently and answers cancel with
  false). A malformed request gets one ``bad_request`` error line (the original sends
  nothing).
- After a restart, finished jobs read as before; jobs that were queued or running end as
  ``missing_result`` with ``time.end`` set (the original leaves ``end`` null forever).
- Retention: jobs submitted more than ``max_age_hours`` ago are pruned every
  ``prune_interval_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
import time
import tomllib
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from runwire.generated.jobs import models
from runwire.generated.jobs.client import AgentClient
from runwire.generated.jobs.server import DispatcherServerBase
from runwire.runtime.errors import (
    AuthenticationError,
    ConnectionClosed,
    LimitExceeded,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    Timeout,
    TransportError,
)
from runwire.runtime.validation import SchemaRegistry

from .queues import FifoSemaphore, QueueRegistry
from .store import JobRecord, JobStore, canonical_json
from .tls import client_context

__all__ = ["Dispatcher", "DispatcherConfig", "HostEntry", "load_config"]

logger = logging.getLogger(__name__)

ReplyT = TypeVar("ReplyT", bound=BaseModel)

#: How many stored packets one read takes from the database.
PACKET_BATCH = 512
#: Seconds between a packet write and its commit (writes in between share the commit).
FLUSH_DELAY_S = 0.02

NO_SUCH_JOB = {"error": {"type": "invalid_jobid", "message": "no job with this ID"}}


@dataclass(frozen=True)
class HostEntry:
    """One host of the registry: where its agent listens and how to log in.

    Credentials and addresses never cross the client protocol: clients name hosts only.

    Attributes:
        address, port: the agent's TLS endpoint.
        user, password: the in-band credentials sent to the agent.
        ca_file: CA bundle to verify the agent's certificate (None: the system store).
        server_name: name checked against the certificate (default: ``address``).
        verify: verify the agent's certificate and name (the original never checks the
            name and, without a CA file, accepts any certificate; here verification is on
            unless a host entry turns it off).
    """

    address: str
    port: int = 4306
    user: str = ""
    password: str = field(default="", repr=False)
    ca_file: str | None = None
    server_name: str | None = None
    verify: bool = True

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context for this agent: TLS 1.2 or newer, verified unless disabled."""
        return client_context(self.ca_file, verify=self.verify)


@dataclass
class DispatcherConfig:
    """Configuration of the reference dispatcher (``[dispatcher]`` and ``[hosts.NAME]``
    tables of a TOML file; see :func:`load_config`).

    Attributes:
        host, port: where the client protocol listens (loopback and 3502 by default).
        database: the SQLite file (``":memory:"`` keeps nothing across restarts).
        hosts: the hosts registry, name -> :class:`HostEntry`.
        timeout_s: default and maximum idle limit of a job, seconds (original: 600).
        max_exec_time_s: default and maximum total run time of a job, seconds (600).
        connect_timeout_s: limit on connect + TLS + the agent's acknowledgement (10 s).
        max_running: most jobs running at once, all queues together.
        max_pending: most jobs queued or running at once; more get ``overloaded``.
        max_result_wait_s: longest a ``get_result`` with ``wait: true`` is held before it
            is answered ``no_result``.
        max_age_hours: retention of ended jobs, counted from submission; None keeps all.
        prune_interval_s: seconds between retention sweeps.
        max_message_bytes: largest request line (1 MiB, as the original's line buffer).
        max_connections: most client connections open at once.
        io_timeout_s: bound on reading a request and on each reply write, seconds.
        source: the file this configuration was read from (for reloading hosts).
    """

    host: str = "127.0.0.1"
    port: int = 3502
    database: str = ":memory:"
    hosts: dict[str, HostEntry] = field(default_factory=dict)
    timeout_s: int = 600
    max_exec_time_s: int = 600
    connect_timeout_s: float = 10.0
    max_running: int = 256
    max_pending: int = 100_000
    max_result_wait_s: float = 24 * 3600.0
    max_age_hours: float | None = None
    prune_interval_s: float = 60.0
    max_message_bytes: int = 1 << 20
    max_connections: int = 1024
    io_timeout_s: float = 30.0
    source: Path | None = None


_DISPATCHER_KEYS = {
    name for name in DispatcherConfig.__dataclass_fields__ if name not in ("hosts", "source")
}
_HOST_KEYS = set(HostEntry.__dataclass_fields__) | {"password_file", "dev_agent"}


def _config_path(value: Any, base: Path, key: str) -> Path:
    """The path a configuration key names: ``~`` expanded, relative to ``base`` (the
    configuration file's folder).

    Raises:
        ValueError: not a non-empty string (the message names ``key``).
    """
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a path, not {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _file_problem(key: str, path: Path, exc: OSError | ssl.SSLError) -> ValueError:
    """The error for a file named by ``key`` that cannot be used: ``KEY: PATH: why``."""
    if isinstance(exc, FileNotFoundError):
        why = "no such file"
    elif isinstance(exc, ssl.SSLError):
        why = f"not a PEM certificate bundle ({exc.reason or exc})"
    else:
        why = exc.strerror or str(exc)
    return ValueError(f"{key}: {path}: {why}")


def _parse_hosts(table: Mapping[str, Any], base: Path) -> dict[str, HostEntry]:
    """The ``[hosts.NAME]`` tables. The files they name are read (``password_file``,
    ``dev_agent``'s record) or loaded (``ca_file``, unless ``verify = false``) now, so a
    wrong path stops the load with an error naming the key, not each job later.

    ``dev_agent = "STATE_DIR"`` (alone in its table) takes the whole entry from the record
    the development agent started with that state folder writes
    (``STATE_DIR/jobs-agent/dev-agent.json``: address, port, certificate, credentials), as
    the dispatcher does for ``localhost`` when it runs without a configuration file.

    Raises:
        ValueError: an unknown key, an ill-typed value, or a file that cannot be used (the
            message starts with the key, e.g. ``hosts.web01.password_file: PATH: no such
            file``).
    """
    hosts = {}
    for name, entry in table.items():
        if not isinstance(entry, dict):
            raise ValueError(f"hosts.{name}: expected a table")
        unknown = set(entry) - _HOST_KEYS
        if unknown:
            raise ValueError(f"hosts.{name}: unknown keys {sorted(unknown)}")
        if "dev_agent" in entry:
            host = _dev_agent_host(entry, base, f"hosts.{name}.dev_agent")
        else:
            host = _host_entry(entry, base, f"hosts.{name}")
        if host.ca_file is not None:
            path = Path(host.ca_file)
            try:
                if host.verify:
                    client_context(path)  # reads and parses it, as calls will
                else:
                    path.read_bytes()
            except (OSError, ssl.SSLError) as exc:
                raise _file_problem(f"hosts.{name}.ca_file", path, exc) from exc
        hosts[name] = host
    return hosts


def _host_entry(entry: Mapping[str, Any], base: Path, where: str) -> HostEntry:
    values = dict(entry)
    password_file = values.pop("password_file", None)
    if password_file is not None:
        key = f"{where}.password_file"
        path = _config_path(password_file, base, key)
        try:
            values["password"] = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise _file_problem(key, path, exc) from exc
        except UnicodeDecodeError as exc:
            raise ValueError(f"{key}: {path}: not UTF-8 text") from exc
    if values.get("ca_file") is not None:
        values["ca_file"] = str(_config_path(values["ca_file"], base, f"{where}.ca_file"))
    try:
        return HostEntry(**values)
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def _dev_agent_host(entry: Mapping[str, Any], base: Path, key: str) -> HostEntry:
    from .agent import AGENT_DIR_NAME
    from .agent_main import DEV_AGENT_FILE, read_dev_agent  # the agent owns the format

    if len(entry) > 1:
        others = sorted(set(entry) - {"dev_agent"})
        raise ValueError(f"{key}: give no other keys ({', '.join(others)}): the record has them")
    state_dir = _config_path(entry["dev_agent"], base, key)
    record = state_dir / AGENT_DIR_NAME / DEV_AGENT_FILE
    start = f"start `runwire serve jobs-agent --state-dir {state_dir}` first"
    if not record.exists():
        raise ValueError(f"{key}: {record}: no such file ({start})")
    host = read_dev_agent(state_dir)
    if host is None:
        raise ValueError(
            f"{key}: {record}: no address or credentials in it ({start}; it records the "
            "credentials it creates or is given with --user)"
        )
    return host


def load_config(path: str | Path) -> DispatcherConfig:
    """Read a dispatcher configuration from a TOML file.

    Relative paths in it (``database``, ``ca_file``, ``password_file``) are relative to
    the file's folder, not to the current directory; ``~`` is expanded. The files a host
    entry names are read now (see :func:`_parse_hosts`). Example::

        [dispatcher]
        port = 3502
        database = "jobs.sqlite3"
        timeout_s = 600
        max_exec_time_s = 600
        max_age_hours = 2160

        [hosts.web01]
        address = "10.0.0.5"
        port = 4306
        user = "dispatcher"
        password_file = "web01.password"
        ca_file = "agents-ca.pem"

        [hosts.localhost]
        dev_agent = "state"   # the development agent of this state folder

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not valid TOML, has unknown or ill-typed keys, or names a file
            that cannot be used; the message starts with the file and the key
            (``dispatcher.toml: hosts.web01.password_file: web01.password: no such file``).
    """
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    unknown = set(document) - {"dispatcher", "hosts"}
    if unknown:
        raise ValueError(f"{path}: unknown tables {sorted(unknown)}")
    settings = dict(document.get("dispatcher", {}))
    bad = set(settings) - _DISPATCHER_KEYS
    if bad:
        raise ValueError(f"{path}: unknown keys in [dispatcher]: {sorted(bad)}")
    base = path.parent
    try:
        if "database" in settings and settings["database"] != ":memory:":
            settings["database"] = str(_config_path(settings["database"], base, "database"))
        hosts = _parse_hosts(document.get("hosts", {}), base)
        return DispatcherConfig(**settings, hosts=hosts, source=path)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc


@dataclass
class LiveJob:
    """What the dispatcher holds in memory for a queued or running job."""

    record: JobRecord
    task: asyncio.Task[None] | None = None
    queue_key: str | None = None
    queue: FifoSemaphore | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Future[None] | None = None
    cancel_requested: bool = False
    #: Which slots the job holds: "joined" (its queue, not yet waiting), "waiting",
    #: "queue", "global", "queue+global", or "none" once released.
    slots: str = "joined"

    def notify(self) -> None:
        """Wake every reader waiting for a new packet or the job's end."""
        if self.changed is not None and not self.changed.done():
            self.changed.set_result(None)
        self.changed = None

    async def wait_change(self) -> None:
        """Wait until the next packet or the job's end."""
        if self.changed is None:
            self.changed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self.changed)


class _JobFailed(Exception):
    """Ends a job's run with an ``error`` outcome of the given type and message."""

    def __init__(self, error_type: str, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.error: dict[str, Any] = {"type": error_type, "message": message}
        if data is not None:
            self.error["data"] = data


def _network_error(exc: BaseException) -> _JobFailed:
    """Classify a failure to reach an agent into the dispatcher's error types."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(exc, AuthenticationError) or isinstance(cause, ssl.SSLError):
        return _JobFailed("ssl", str(cause))
    if isinstance(cause, socket.gaierror):
        return _JobFailed("nxdomain", str(cause))
    if isinstance(cause, OSError) and cause.errno is not None:
        name = errno.errorcode.get(cause.errno, "").lower()
        if name in ("econnrefused", "econnreset", "ehostunreach", "enetunreach", "etimedout"):
            return _JobFailed(name, str(cause))
    return _JobFailed("network_error", str(exc))


class Dispatcher(DispatcherServerBase):
    """The reference dispatcher. Create, ``await start()``, later ``await aclose()``.

    Args:
        config: see :class:`DispatcherConfig`.
        registry: schema registry (default: the packaged schemas).
    """

    def __init__(self, config: DispatcherConfig, *, registry: SchemaRegistry | None = None):
        super().__init__(
            registry=registry,
            timeout_s=config.io_timeout_s,
            max_message_bytes=config.max_message_bytes,
            max_connections=config.max_connections,
        )
        self.config = config
        self.hosts: dict[str, HostEntry] = dict(config.hosts)
        self.store: JobStore | None = None
        self.queues = QueueRegistry()
        self._running = FifoSemaphore(config.max_running)
        self._live: dict[str, LiveJob] = {}
        self._server: asyncio.Server | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._flush_handle: asyncio.TimerHandle | None = None
        self._closing = False
        self._ssl_contexts: dict[HostEntry, ssl.SSLContext] = {}

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the client protocol listens on (after :meth:`start`)."""
        assert self._server is not None, "not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> asyncio.Server:
        """Open the database (ending jobs a previous run left live), start retention and
        listen on ``config.host``:``config.port`` (0 picks a free port).

        Raises:
            sqlite3.Error: the database cannot be opened.
            OSError: the address cannot be bound.
        """
        self.store = JobStore(self.config.database)
        interrupted = self.store.interrupt_live_jobs()
        if interrupted:
            logger.warning("%d jobs were queued or running at the last stop", interrupted)
        if self.config.max_age_hours is not None:
            self._spawn(self._retention())
        self._server = await self.serve(self.config.host, self.config.port)
        return self._server

    async def aclose(self) -> None:
        """Stop listening, end every live job as interrupted, and close the database."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for task in list(self._background):
            task.cancel()
        live = [job.task for job in self._live.values() if job.task is not None]
        for task in live:
            task.cancel()
        await asyncio.gather(*live, *self._background, return_exceptions=True)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        if self.store is not None:
            self.store.interrupt_live_jobs()
            self.store.close()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.io_timeout_s):
                    await self._server.wait_closed()

    def reload_hosts(self) -> None:
        """Re-read the hosts registry from the configuration file (on SIGHUP).

        A file that fails to load is logged and the current registry kept.
        """
        if self.config.source is None:
            return
        try:
            self.hosts = load_config(self.config.source).hosts
            self._ssl_contexts.clear()  # a CA file may have changed too
        except (OSError, ValueError) as exc:
            logger.error("hosts not reloaded: %s", exc)
        else:
            logger.info("hosts reloaded: %s", ", ".join(sorted(self.hosts)) or "none")

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _retention(self) -> None:
        assert self.config.max_age_hours is not None
        max_age_s = self.config.max_age_hours * 3600
        while True:
            pruned = self._db.prune(int(time.time() - max_age_s))
            if pruned:
                logger.info("pruned %d jobs older than %s hours", pruned, self.config.max_age_hours)
            await asyncio.sleep(self.config.prune_interval_s)

    @property
    def _db(self) -> JobStore:
        assert self.store is not None, "the dispatcher is not started"
        return self.store

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_DELAY_S, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if self.store is not None:
            self.store.flush()

    # -- malformed requests -----------------------------------------------------------------

    def malformed_reply(self, error: ProtocolError | LimitExceeded) -> models.ErrorReply:
        """A malformed request gets one ``bad_request`` error line (the original sends
        nothing and closes)."""
        if isinstance(error, ProtocolError) and error.violation is not None:
            violation = error.violation
            message = (
                f"{error.message} (at {violation.instance_pointer or '/'}: {violation.keyword})"
            )
        else:
            message = str(error)
        return models.ErrorReply.model_validate(
            {"error": {"type": "bad_request", "message": message}}
        )

    # -- operations -----------------------------------------------------------------------

    async def call(self, request: models.CallRequest) -> models.CallOrErrorReply:
        """Submit a job: store it, answer its id, run it in the background."""
        if self._closing:
            return _reply(models.CallOrErrorReply, _error("shutdown", "dispatcher stopping"))
        if len(self._live) >= self.config.max_pending:
            return _reply(
                models.CallOrErrorReply,
                _error("overloaded", f"{self.config.max_pending} jobs already queued or running"),
            )
        wire = request.to_wire()
        queue = wire.get("queue")
        record = JobRecord(
            job_id=str(uuid.uuid4()),
            host=wire["host"],
            procedure=wire["procedure"],
            arguments=wire["arguments"],
            info=wire.get("info"),
            queue=None if queue is None else queue["name"],
            timeout_s=min(wire.get("timeout") or self.config.timeout_s, self.config.timeout_s),
            max_exec_time_s=min(
                wire.get("max_exec_time") or self.config.max_exec_time_s,
                self.config.max_exec_time_s,
            ),
            submit=int(time.time()),
            start=None,
            end=None,
            state="queued",
            outcome=None,
            packet_count=0,
        )
        try:
            self._db.insert_job(record)
        except Exception as exc:  # any storage failure is the answer
            logger.exception("job record not stored")
            return _reply(models.CallOrErrorReply, _error("storage_error", str(exc)))
        live = LiveJob(record)
        if queue is not None:
            live.queue_key = canonical_json(queue["name"])
            live.queue = self.queues.join(live.queue_key, queue.get("concurrency", 1))
        self._live[record.job_id] = live
        live.task = asyncio.ensure_future(self._run(live))
        live.task.add_done_callback(lambda _task: self._job_ended(live))
        return _reply(models.CallOrErrorReply, {"harpcaller": 1, "job_id": record.job_id})

    async def cancel(self, request: models.CancelRequest) -> models.CancelOrErrorReply:
        """Cancel a queued or running job; true once it has stopped."""
        job_id = request.cancel.root
        live = self._live.get(job_id)
        if live is None:
            if self._db.get(job_id) is None:
                return _reply(models.CancelOrErrorReply, NO_SUCH_JOB)
            return _reply(models.CancelOrErrorReply, {"cancelled": False})
        live.cancel_requested = True
        assert live.task is not None
        live.task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.io_timeout_s):
                await live.done.wait()
        return _reply(models.CancelOrErrorReply, {"cancelled": True})

    async def get_result(self, request: models.GetResultRequest) -> models.GetResultReply:
        """The job's result line; with ``wait`` the reply waits for the job's end (at most
        ``max_result_wait_s``, then ``no_result``). A missing ``wait`` means false."""
        job_id = request.get_result.root
        live = self._live.get(job_id)
        if live is not None and request.wait:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.max_result_wait_s):
                    await live.done.wait()
        record = self._db.get(job_id)
        if record is None:
            return _reply(models.GetResultReply, NO_SUCH_JOB)
        if record.outcome is None:
            return _reply(models.GetResultReply, {"no_result": True})
        return _reply(models.GetResultReply, record.outcome)

    async def get_status(self, request: models.GetStatusRequest) -> models.GetStatusReply:
        """The job's call, times, info and ``state`` (extension)."""
        record = self._db.get(request.get_status.root)
        if record is None:
            return _reply(models.GetStatusReply, NO_SUCH_JOB)
        return _reply(
            models.GetStatusReply,
            {
                "call": record.call_summary(),
                "time": record.times(),
                "info": record.info,
                "state": record.state,
            },
        )

    async def list_jobs(self, request: models.ListJobsRequest) -> models.ListJobsReply:
        """Jobs matching the filter, newest submission first (extension)."""
        wire = request.list_jobs.to_wire()
        records, truncated = self._db.list_jobs(
            state=wire.get("state"),
            host=wire.get("host"),
            queue=wire.get("queue"),
            limit=wire.get("limit", 100),
        )
        rows = [
            {
                "job_id": record.job_id,
                "call": record.call_summary(),
                "time": record.times(),
                "state": record.state,
                "queue": record.queue,
                "info": record.info,
            }
            for record in records
        ]
        return _reply(models.ListJobsReply, {"jobs": rows, "truncated": truncated})

    async def follow_stream(self, request: models.FollowStreamRequest) -> AsyncIterator[Any]:
        """Stored packets from ``since`` (or the last ``recent``; default ``recent: 0``),
        then live packets until the job ends, then its result line."""
        job_id = request.follow_stream.root
        record = self._db.get(job_id)
        if record is None:
            yield NO_SUCH_JOB
            return
        index = _start_index(request.since, request.recent, record.packet_count, follow=True)
        while True:
            batch = list(self._db.packets(job_id, index, index + PACKET_BATCH))
            for packet in batch:
                yield {"packet": packet.index, "data": packet.data}
            if batch:
                index = batch[-1].index + 1
                continue
            live = self._live.get(job_id)
            if live is None:
                record = self._db.get(job_id)
                if record is None:  # pruned meanwhile
                    yield NO_SUCH_JOB
                    return
                if index >= record.packet_count:
                    yield record.outcome
                    return
                continue
            await live.wait_change()

    async def read_stream(self, request: models.ReadStreamRequest) -> AsyncIterator[Any]:
        """Packets stored now from ``since`` (default 0) or the last ``recent``, then the
        result line if the job has ended, else ``{"continue": true}``."""
        job_id = request.read_stream.root
        record = self._db.get(job_id)
        if record is None:
            yield NO_SUCH_JOB
            return
        stop = record.packet_count
        index = _start_index(request.since, request.recent, stop, follow=False)
        while index < stop:
            batch = list(self._db.packets(job_id, index, min(stop, index + PACKET_BATCH)))
            if not batch:
                break
            for packet in batch:
                yield {"packet": packet.index, "data": packet.data}
            index = batch[-1].index + 1
        yield {"continue": True} if record.outcome is None else record.outcome

    # -- running a job ----------------------------------------------------------------------

    async def _run(self, live: LiveJob) -> None:
        record = live.record
        state, outcome = "failed", _error("unrecognized", "job ended without an outcome")
        try:
            if live.queue is not None and live.queue_key is not None:
                live.slots = "waiting"
                await self.queues.acquire(live.queue_key, live.queue)
                live.slots = "queue"
            await self._running.acquire()
            live.slots = "queue+global" if live.queue is not None else "global"
            record.start = int(time.time())
            record.state = "running"
            self._db.mark_started(record.job_id, record.start)
            self._schedule_flush()
            live.notify()
            state, outcome = await self._call_agent(live)
        except _JobFailed as exc:
            state, outcome = "failed", {"error": exc.error}
        except asyncio.CancelledError:
            if not live.cancel_requested:
                raise  # the dispatcher is stopping: the job is recorded as interrupted
            state, outcome = "cancelled", {"cancelled": True}
        except Exception as exc:  # a job's failure must not escape
            logger.exception("job %s failed", record.job_id)
            state, outcome = "failed", _error("unrecognized", f"unknown error: {exc}")
        finally:
            self._release_slots(live)
        record.end = int(time.time())
        record.state, record.outcome = state, outcome
        self._db.finish(record.job_id, state, outcome, record.end)

    def _release_slots(self, live: LiveJob) -> None:
        """Give back whatever queue and global slots the job holds (idempotent)."""
        if live.slots in ("global", "queue+global"):
            self._running.release()
        if live.queue is not None and live.queue_key is not None:
            if live.slots in ("queue", "queue+global"):
                self.queues.release(live.queue_key, live.queue)
            elif live.slots == "joined":  # never started waiting
                self.queues.leave(live.queue_key, live.queue, holding=False)
            # "waiting": acquire() left the queue when it was cancelled
        live.slots = "none"

    def _job_ended(self, live: LiveJob) -> None:
        """Done callback of a job's task, however it ended (even cancelled unstarted)."""
        self._release_slots(live)
        self._live.pop(live.record.job_id, None)
        live.done.set()
        live.notify()

    async def _call_agent(self, live: LiveJob) -> tuple[str, dict[str, Any]]:
        """Call the job's procedure on its host; return (final state, outcome line).

        Raises:
            _JobFailed: the host is unknown or unreachable, a limit ran out, or the agent
                broke its protocol.
        """
        record = live.record
        host = self.hosts.get(record.host)
        if host is None:
            raise _JobFailed("unknown_host", "host unknown")
        if not 0 < host.port < 65536 or not host.address:
            raise _JobFailed("bad_address", "invalid host address or port number")
        started = time.monotonic()
        deadline = started + record.max_exec_time_s
        client = AgentClient(
            host.address,
            host.port,
            ssl=self._ssl_context(host),
            server_hostname=host.server_name,
            # our own limits below fire first; this only backs them up
            timeout_s=max(record.timeout_s, record.max_exec_time_s) + 5.0,
        )
        request = models.AgentRequest.model_validate(
            {
                "harp": 1,
                "procedure": record.procedure,
                "arguments": record.arguments,
                "auth": {"user": host.user, "password": host.password},
            }
        )
        lines = client.call(request)
        loop = asyncio.get_running_loop()
        kind = "request timed out"
        try:
            # One timer for the whole call, moved before each read: a new asyncio.timeout
            # per stream line costs more than the rest of handling the line.
            async with asyncio.timeout(None) as limit_timer:
                first = True
                while True:
                    now = time.monotonic()
                    if first:
                        limit, kind = self.config.connect_timeout_s, "request timed out"
                    else:
                        limit, kind = record.timeout_s, "reading result timed out"
                    if deadline - now <= limit:
                        limit, kind = max(0.0, deadline - now), "maximum execution time exceeded"
                    limit_timer.reschedule(loop.time() + limit)
                    try:
                        line = await anext(lines)
                    except StopAsyncIteration:
                        raise _JobFailed("closed", "connection closed unexpectedly") from None
                    except Timeout as exc:
                        raise _JobFailed("timeout", kind) from exc
                    except ConnectionClosed as exc:
                        raise _JobFailed("closed", "connection closed unexpectedly") from exc
                    except RemoteProtocolError as exc:
                        raise _JobFailed("bad_protocol", f"Harp protocol error: {exc}") from exc
                    except LocalProtocolError as exc:
                        raise _JobFailed("unrecognized", f"unknown error: {exc}") from exc
                    except (AuthenticationError, TransportError) as exc:
                        raise _network_error(exc) from exc
                    first = False
                    if isinstance(line, models.AgentAck):
                        continue
                    if isinstance(line, models.AgentStreamItem):
                        self._append_packet(live, line.stream.root)
                        continue
                    return _outcome(line)
        except TimeoutError:
            raise _JobFailed("timeout", kind) from None
        finally:
            await lines.aclose()  # type: ignore[attr-defined]

    def _ssl_context(self, host: HostEntry) -> ssl.SSLContext:
        """The TLS context for ``host``, made once per registry entry (loading a CA
        bundle costs more than a handshake)."""
        context = self._ssl_contexts.get(host)
        if context is None:
            context = self._ssl_contexts[host] = host.ssl_context()
        return context

    def _append_packet(self, live: LiveJob, data: Any) -> None:
        record = live.record
        self._db.append_packet(record.job_id, record.packet_count, time.time(), data)
        record.packet_count += 1
        self._schedule_flush()
        live.notify()


def _outcome(line: models.AgentTerminator) -> tuple[str, dict[str, Any]]:
    """Map the agent's final line to (state, the dispatcher's result line)."""
    terminator = line.root
    if isinstance(terminator, models.AgentResult):
        return "finished", terminator.to_wire()
    if isinstance(terminator, models.AgentException):
        return "failed", terminator.to_wire()
    return "failed", {"error": terminator.error.to_wire()}


def _start_index(since: Any, recent: Any, count: int, *, follow: bool) -> int:
    """The first packet index a stream request reads (reference/jobs.md, section 1.4)."""
    if since is not None:
        return int(since.root)
    if recent is not None:
        return max(0, count - int(recent.root))
    return count if follow else 0


def _error(error_type: str, message: str) -> dict[str, Any]:
    return {"error": {"type": error_type, "message": message}}


def _reply(model: type[ReplyT], wire: Mapping[str, Any] | None) -> ReplyT:
    """The reply model of a JSON reply the dispatcher built (lax: the schema has the last
    word on the wire, where the server base validates every line)."""
    return model.model_validate(wire, strict=False)
