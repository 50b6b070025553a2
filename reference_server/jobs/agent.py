"""The reference jobs agent, modelled on harpd (reference/jobs.md, section 2).

It listens on TLS (1.2 or newer), reads one request line per connection, checks the in-band
password, runs the named procedure and answers with an acknowledgement, stream lines and one
result, exception or error line, as harpd does, with harpd's error types and texts
(section 2.4) and no extra keys on any line, so the original dispatcher can use it.

Differences from harpd (its defects, section "Defects" 8 to 10): TLS 1.2 or newer instead of
TLS 1.0; time limits hold for streaming procedures too; closing the connection cancels the call
at once (the asyncio task is cancelled, the child process killed) instead of letting a
non-streaming procedure run to the end; a request that stalls gets ``read_error`` after
``request_timeout_s``.

Entry points: :class:`Agent` (the server; build it yourself), :func:`build_agent` and
:func:`run_agent` (from an :class:`AgentConfig`), :class:`BackgroundAgent` (an agent in a
thread, for tests and embedding). The command line is
:mod:`runwire.reference_server.jobs.agent_main` (``runwire serve jobs-agent``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import threading
import time
import tomllib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final, Protocol

from runwire.generated.jobs import models
from runwire.generated.jobs.server import AgentServerBase
from runwire.runtime.errors import LimitExceeded, ProtocolError, RemoteProtocolError, Timeout
from runwire.runtime.transport.tcp import JsonLinesConnection
from runwire.runtime.validation import SchemaRegistry

from .execution import (
    SHUTDOWN,
    TIMEOUT,
    AsyncExecution,
    Event,
    Execution,
    Failed,
    Item,
    ProcessExecution,
    ProcessLauncher,
    Raised,
    Returned,
)
from .passwords import PasswordFile, PasswordFileError
from .procedures import MAX_NAME_LENGTH, ProcedureRegistry
from .tls import ensure_dev_certificate, server_context

__all__ = [
    "CONFORMANCE_MODULE",
    "Agent",
    "AgentConfig",
    "AgentEndpoint",
    "AgentSetup",
    "Authenticator",
    "BackgroundAgent",
    "ConfigError",
    "build_agent",
    "default_state_dir",
    "run_agent",
]

logger = logging.getLogger(__name__)

CONFORMANCE_MODULE: Final = "runwire.reference_server.jobs.conformance_procedures"
"""The conformance procedures, loaded unless ``conformance_procedures = false``."""

DEFAULT_PORT: Final = AgentServerBase.DEFAULT_PORT
AGENT_DIR_NAME: Final = "jobs-agent"
"""The agent's folder inside the runwire state folder (the dispatcher uses the same root)."""

PASSWORD_FILE_NAME: Final = "passwd"
"""Name of the default password file inside the agent's folder."""

AUTH_ERROR: Final = ("auth_error", "unknown user or wrong password")
"""harpd's reply for an unknown user and for a wrong password alike."""

SHUTDOWN_ERROR: Final = (SHUTDOWN.type, SHUTDOWN.message)


def default_state_dir() -> Path:
    """The runwire state folder, shared with ``runwire serve jobs-dispatcher``:
    ``$XDG_STATE_HOME/runwire``, else ``~/.local/state/runwire``. The agent's files (the
    development certificate, the default password file) go in its ``jobs-agent`` folder."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "runwire"


class ConfigError(ValueError):
    """The agent configuration is unusable; the message says what to fix."""


class Authenticator(Protocol):
    """A password backend (harpd: an auth module's ``authenticate(user, password)``).

    :class:`~.passwords.PasswordFile` is one; it also offers ``authenticate_cached``, a fast
    path the agent uses when present.
    """

    def authenticate(self, user: str, password: str) -> bool:
        """True when the credentials are right. May be slow: runs in a worker thread."""


class RequestRejected(RemoteProtocolError):
    """A request harpd would reject before the acknowledgement, with harpd's text."""

    def __init__(self, message: str, error_type: str = "invalid_request") -> None:
        super().__init__(message, error_type=error_type)


def _check_request(message: Any) -> None:
    """Reject what harpd rejects, with its error texts (reference/jobs.md, section 2.4), in
    this order: not an object, ``harp`` ≠ 1, malformed ``auth``, bad ``procedure`` or
    ``arguments``. Unknown keys are ignored (as harpd does).

    Raises:
        RequestRejected: the request is malformed.
    """
    if not isinstance(message, dict):
        raise RequestRejected("invalid request")
    version = message.get("harp")
    if not (type(version) in (int, float) and version == 1):
        raise RequestRejected("unsupported protocol version")
    auth = message.get("auth")
    if not (
        isinstance(auth, dict)
        and auth.keys() == {"user", "password"}
        and isinstance(auth["user"], str)
        and isinstance(auth["password"], str)
    ):
        raise RequestRejected("malformed credentials data")
    name = message.get("procedure")
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise RequestRejected("invalid request")
    if not isinstance(message.get("arguments"), list | dict):
        raise RequestRejected("invalid request")


def _error(error_type: str, message: str, data: Any = None) -> models.AgentError:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if data is not None:
        error["data"] = data
    return models.AgentError.model_validate({"harp": 1, "error": error})


class Agent(AgentServerBase):
    """The jobs agent server (harpd's role).

    Args:
        procedures: what it serves, by name.
        passwords: the password backend.
        default_time_limit_s: time limit, in seconds, of procedures that set none (None: no
            limit).
        request_timeout_s: bound, in seconds, on receiving the request line (harpd: 10 s)
            and on each write.
        max_message_bytes: largest request line, and largest JSON value a procedure may
            send, in bytes (default 1 MiB, the original dispatcher's line buffer).
        max_connections: most connections, hence calls, at once.
        auth_concurrency: most password checks running at once (each takes 64 MiB of memory
            with argon2-cffi's defaults).
        launcher: starts the child processes of plain procedures (default: a new one).
        registry: schema registry (default: the packaged schemas).

    Use ``await agent.serve(host, port, ssl=context)``; stop with :meth:`begin_shutdown`
    and :meth:`wait_idle`.
    """

    def __init__(
        self,
        procedures: ProcedureRegistry,
        passwords: Authenticator,
        *,
        default_time_limit_s: float | None = None,
        request_timeout_s: float = 10.0,
        max_message_bytes: int | None = None,
        max_connections: int = 64,
        auth_concurrency: int = 2,
        launcher: ProcessLauncher | None = None,
        registry: SchemaRegistry | None = None,
    ) -> None:
        super().__init__(
            registry=registry,
            timeout_s=request_timeout_s,
            max_message_bytes=max_message_bytes,
            max_connections=max_connections,
        )
        self.procedures = procedures
        self.passwords = passwords
        self.default_time_limit_s = default_time_limit_s
        self.launcher = launcher or ProcessLauncher()
        self._auth_slots = asyncio.Semaphore(auth_concurrency)
        self._executions: set[Execution] = set()
        self._connections = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.closing = False
        """True once :meth:`begin_shutdown` was called."""

    # --- requests that never reach call() ------------------------------------------------

    def malformed_reply(self, error: ProtocolError | LimitExceeded) -> models.AgentError:
        """harpd's error line for a malformed request (reference/jobs.md, section 2.4)."""
        if isinstance(error, RequestRejected):
            return _error(error.error_type, error.message)
        if isinstance(error, LimitExceeded):
            return _error("invalid_request", "request incomplete or too long")
        if error.error_type == "parse_error":
            return _error("parse_error", error.message)
        if error.error_type == "invalid_request":  # the stream ended inside the line
            return _error("invalid_request", "request incomplete or too long")
        return _error("invalid_request", "invalid request")

    def extra_data_error(self) -> RemoteProtocolError:
        return RequestRejected("excessive data after request")

    def request_timeout_reply(self, error: Timeout) -> models.AgentError:
        return _error("read_error", f"no complete request within {error.timeout_s:g} s")

    async def handle(self, message: Any) -> AsyncGenerator[Any, None]:
        _check_request(message)
        replies = super().handle(message)
        try:
            async for reply in replies:
                yield reply
        finally:
            await replies.aclose()

    async def serve_connection(self, connection: JsonLinesConnection) -> None:
        self._connections += 1
        self._idle.clear()
        try:
            await super().serve_connection(connection)
        finally:
            self._connections -= 1
            if not self._connections:
                self._idle.set()

    # --- the call ------------------------------------------------------------------------

    async def _authenticate(self, user: str, password: str) -> bool:
        """Check the credentials; a failing backend counts as a refusal (and is logged)."""
        try:
            fast = getattr(self.passwords, "authenticate_cached", None)
            if fast is not None and fast(user, password):
                return True
            async with self._auth_slots:
                return bool(await asyncio.to_thread(self.passwords.authenticate, user, password))
        except Exception:
            logger.exception("password check failed for %r; refusing the call", user)
            return False

    def _execution(self, request: models.AgentRequest) -> Execution | None:
        procedure = self.procedures.get(request.procedure.root)
        if procedure is None:
            return None
        arguments = request.arguments.root
        args, kwargs = (list(arguments), {}) if isinstance(arguments, list) else ([], arguments)
        options = {"max_message_bytes": self.max_message_bytes}
        if procedure.is_async:
            return AsyncExecution(procedure, args, dict(kwargs), **options)
        return ProcessExecution(procedure, args, dict(kwargs), launcher=self.launcher, **options)

    @staticmethod
    def _terminator(event: Event) -> Any:
        if isinstance(event, Returned):
            return models.AgentResult(result=event.value)
        if isinstance(event, Raised):
            return models.AgentException.model_validate({"exception": event.info})
        assert isinstance(event, Failed)
        return _error(event.type, event.message, event.data)

    async def call(self, request: models.AgentRequest) -> AsyncIterator[Any]:
        """Authenticate, find the procedure, acknowledge, run it and report its events.

        Before the acknowledgement: ``shutdown``, ``auth_error`` (same text for an unknown
        user and a wrong password) or ``no_such_procedure`` (data ``{"procedure": name}``).
        After it: stream lines, then a result, an exception (``TypeError`` for a wrong
        argument count) or an error (``timeout``, ``invalid_message``, ``shutdown``,
        ``system_error``).
        """
        name = request.procedure.root
        if self.closing:
            yield _error(*SHUTDOWN_ERROR)
            return
        user = request.auth.user
        if not await self._authenticate(user, request.auth.password):
            logger.info("call of %s refused: authentication failed for %r", name, user)
            yield _error(*AUTH_ERROR)
            return
        execution = self._execution(request)
        if execution is None:
            yield _error("no_such_procedure", "no such procedure", {"procedure": name})
            return
        if self.closing:
            yield _error(*SHUTDOWN_ERROR)
            return
        yield models.AgentAck(harp=1, stream_result=execution.procedure.streaming)
        started = time.monotonic()
        limit = execution.procedure.timeout_s or self.default_time_limit_s
        timer = None
        self._executions.add(execution)
        outcome = "cancelled"
        try:
            if limit is not None:
                loop = asyncio.get_running_loop()
                timer = loop.call_later(limit, execution.interrupt, TIMEOUT)
            await execution.start()
            if self.closing:
                execution.interrupt(SHUTDOWN)
            while True:
                event = await execution.next_event()
                if isinstance(event, Item):
                    yield models.AgentStreamItem(stream=event.value)
                    continue
                outcome = type(event).__name__.lower()
                if isinstance(event, Failed):
                    outcome = f"error {event.type}"
                yield self._terminator(event)
                return
        finally:
            if timer is not None:
                timer.cancel()
            self._executions.discard(execution)
            await execution.aclose()
            logger.info(
                "call of %s by %r: %s after %.3f s", name, user, outcome, time.monotonic() - started
            )

    # --- stopping ------------------------------------------------------------------------

    @property
    def active_calls(self) -> int:
        """Calls acknowledged and not yet ended."""
        return len(self._executions)

    def begin_shutdown(self) -> None:
        """Refuse new calls with ``shutdown`` and end running ones with it (their work is
        stopped)."""
        self.closing = True
        for execution in list(self._executions):
            execution.interrupt(SHUTDOWN)

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no connection is open; False if some still are after ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


# --- configuration -----------------------------------------------------------------------


@dataclass
class AgentConfig:
    """Everything the agent needs to start; the TOML file has the same keys (all optional).

    Paths in a TOML file are relative to the file's folder. See examples/jobs/agent.toml.

    Attributes:
        host: address to listen on (default loopback).
        port: TCP port (default 4306; 0 picks a free one).
        certfile, keyfile: PEM certificate (chain) and key; both or neither. Neither: a
            self-signed development certificate in :attr:`agent_dir`, made on first start.
        password_file: the ``user:argon2-hash`` file (default ``agent_dir/passwd``).
        modules: procedures modules: dotted names or ``.py`` paths.
        conformance_procedures: also load :data:`CONFORMANCE_MODULE`.
        state_dir: the runwire state folder; the agent's own files go in
            :attr:`agent_dir` (``state_dir/jobs-agent``).
        default_time_limit_s: time limit of procedures that set none, seconds (None: none).
        request_timeout_s: bound on receiving the request line and on each write, seconds.
        max_message_bytes: largest request line and largest value sent, bytes.
        max_connections: most connections (calls) at once.
        auth_concurrency: most password checks at once.
        shutdown_grace_s: on SIGTERM/SIGINT, how long to wait for calls to end, seconds.
        start_method: ``forkserver`` or ``spawn`` for plain procedures (default: forkserver
            where available).
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    certfile: Path | None = None
    keyfile: Path | None = None
    password_file: Path | None = None
    modules: list[str] = field(default_factory=list)
    conformance_procedures: bool = True
    state_dir: Path = field(default_factory=default_state_dir)
    default_time_limit_s: float | None = None
    request_timeout_s: float = 10.0
    max_message_bytes: int = 1 << 20
    max_connections: int = 64
    auth_concurrency: int = 2
    shutdown_grace_s: float = 5.0
    start_method: str | None = None

    @property
    def agent_dir(self) -> Path:
        """``state_dir/jobs-agent``: the development certificate, the default password file
        and ``dev-agent.json`` (where a development agent listens, for the dispatcher)."""
        return self.state_dir / AGENT_DIR_NAME

    @property
    def effective_password_file(self) -> Path:
        """``password_file``, or the default one in :attr:`agent_dir`."""
        return self.password_file or self.agent_dir / PASSWORD_FILE_NAME

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> AgentConfig:
        """Read a TOML configuration file.

        Raises:
            ConfigError: unreadable file, invalid TOML, unknown key or wrong type.
        """
        location = Path(path)
        try:
            data = tomllib.loads(location.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{location}: {exc}") from exc
        return cls.from_mapping(data, base_dir=location.resolve().parent, where=str(location))

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, base_dir: Path | None = None, where: str = "config"
    ) -> AgentConfig:
        """Build from a mapping with the attribute names as keys.

        Raises:
            ConfigError: unknown key or wrong type.
        """
        config = cls()
        known = {f.name for f in fields(cls)}
        for key, value in data.items():
            if key not in known:
                raise ConfigError(
                    f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})"
                )
            setattr(config, key, _coerce(key, value, base_dir, where))
        config.check()
        return config

    def check(self) -> None:
        """Check values that depend on each other.

        Raises:
            ConfigError: only one of certfile and keyfile, or a bound out of range.
        """
        if (self.certfile is None) != (self.keyfile is None):
            raise ConfigError(
                "give both certfile and keyfile, or neither (development certificate)"
            )
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range")
        for name in ("request_timeout_s", "shutdown_grace_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.default_time_limit_s is not None and self.default_time_limit_s <= 0:
            raise ConfigError("default_time_limit_s must be positive")
        for name in ("max_message_bytes", "max_connections", "auth_concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.start_method not in (None, "forkserver", "spawn"):
            raise ConfigError("start_method must be forkserver or spawn")


_PATHS = {"certfile", "keyfile", "password_file", "state_dir"}
_NUMBERS = {"default_time_limit_s", "request_timeout_s", "shutdown_grace_s"}
_INTEGERS = {"port", "max_message_bytes", "max_connections", "auth_concurrency"}


def _coerce(key: str, value: Any, base_dir: Path | None, where: str) -> Any:
    def wrong(expected: str) -> ConfigError:
        return ConfigError(f"{where}: {key} must be {expected}, not {value!r}")

    if key in _PATHS:
        if not isinstance(value, str) or not value:
            raise wrong("a path")
        path = Path(value).expanduser()
        return path if path.is_absolute() or base_dir is None else base_dir / path
    if key in _INTEGERS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("an integer")
        return value
    if key in _NUMBERS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong("a number")
        return float(value)
    if key == "modules":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise wrong("a list of module names or .py paths")
        resolved = []
        for spec in value:
            is_path = spec.endswith(".py") or "/" in spec
            if is_path and base_dir is not None and not Path(spec).expanduser().is_absolute():
                spec = str(base_dir / spec)
            resolved.append(spec)
        return resolved
    if key == "conformance_procedures":
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if not isinstance(value, str):
        raise wrong("a string")
    return value


@dataclass(frozen=True)
class AgentEndpoint:
    """Where a started agent listens and what it serves.

    Attributes:
        host, port: the listening address (the real port when 0 was asked).
        certfile: the server certificate.
        cafile: the file callers should trust: the development certificate, or None when a
            configured certificate is used (callers use their usual CAs).
        dev_certificate: True for a self-signed development certificate.
        password_file: the password file in use.
        procedures: the registered procedure names.
    """

    host: str
    port: int
    certfile: Path
    cafile: Path | None
    dev_certificate: bool
    password_file: Path
    procedures: tuple[str, ...]


@dataclass
class AgentSetup:
    """What :func:`build_agent` prepared: the server, its TLS context and facts to print."""

    agent: Agent
    ssl: ssl.SSLContext
    certfile: Path
    dev_certificate: bool
    password_file: Path
    sync_procedures: bool


def build_agent(config: AgentConfig, *, passwords: Authenticator | None = None) -> AgentSetup:
    """Load procedures, the password file and the certificate (made if needed) for ``config``.

    Args:
        passwords: a password backend to use instead of ``config``'s password file.

    Raises:
        ConfigError: a module does not load, the password file is missing or malformed, the
            certificate cannot be read.
    """
    config.check()
    procedures = ProcedureRegistry()
    specs = ([CONFORMANCE_MODULE] if config.conformance_procedures else []) + config.modules
    for spec in specs:
        try:
            procedures.load_module(spec)
        except (ImportError, ValueError, SyntaxError) as exc:
            raise ConfigError(f"cannot load procedures from {spec}: {exc}") from exc
    if not len(procedures):
        raise ConfigError("no procedures: name a module, or keep the conformance procedures")
    password_file = config.effective_password_file
    if passwords is None:
        if not password_file.exists():
            raise ConfigError(
                f"no password file at {password_file}: create a user with "
                f"`runwire jobs agent-passwd --password-file {password_file} USER`"
            )
        file = PasswordFile(password_file)
        try:
            users = file.load()
        except PasswordFileError as exc:
            raise ConfigError(str(exc)) from exc
        if not users:
            raise ConfigError(f"password file {password_file} has no users")
        passwords = file
    dev = config.certfile is None
    if config.certfile is None or config.keyfile is None:
        certfile, keyfile = ensure_dev_certificate(config.agent_dir)
    else:
        certfile, keyfile = config.certfile, config.keyfile
    try:
        context = server_context(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot use certificate {certfile} / key {keyfile}: {exc}") from exc
    sync = [p for p in procedures if not p.is_async]
    preload = list(dict.fromkeys(p.source for p in sync))
    agent = Agent(
        procedures,
        passwords,
        default_time_limit_s=config.default_time_limit_s,
        request_timeout_s=config.request_timeout_s,
        max_message_bytes=config.max_message_bytes,
        max_connections=config.max_connections,
        auth_concurrency=config.auth_concurrency,
        launcher=ProcessLauncher(config.start_method, preload=preload),
    )
    return AgentSetup(agent, context, certfile, dev, password_file, bool(sync))


async def run_agent(
    config: AgentConfig,
    *,
    ready: Callable[[AgentEndpoint], None] | None = None,
    stop: asyncio.Event | None = None,
    passwords: Authenticator | None = None,
    handle_signals: bool = True,
) -> None:
    """Run an agent until ``stop`` is set or SIGTERM/SIGINT arrives, then shut down.

    On stopping: no new connections; calls in flight end with ``shutdown`` "service is
    shutting down" (their work stopped); waits up to ``config.shutdown_grace_s`` for
    connections to close, then returns.

    Args:
        ready: called once listening, with where and what.
        stop: set it to stop the agent (default: only signals stop it).
        passwords: a password backend instead of the configured file.
        handle_signals: install SIGTERM/SIGINT handlers (only from the main thread).

    Raises:
        ConfigError: see :func:`build_agent`.
        OSError: the address cannot be bound.
    """
    setup = build_agent(config, passwords=passwords)
    agent = setup.agent
    if setup.sync_procedures:
        await asyncio.to_thread(agent.launcher.warm_up)
    server = await agent.serve(config.host, config.port, ssl=setup.ssl)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    signals: list[signal.Signals] = []
    if handle_signals and threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
                signals.append(signum)
    try:
        port = int(server.sockets[0].getsockname()[1])
        endpoint = AgentEndpoint(
            host=config.host,
            port=port,
            certfile=setup.certfile,
            cafile=setup.certfile if setup.dev_certificate else None,
            dev_certificate=setup.dev_certificate,
            password_file=setup.password_file,
            procedures=tuple(agent.procedures.names()),
        )
        logger.info("jobs agent listening on %s:%d", config.host, port)
        if ready is not None:
            ready(endpoint)
        await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        server.close()
        agent.begin_shutdown()
        if not await agent.wait_idle(config.shutdown_grace_s):
            logger.warning("connections still open after %g s; closing", config.shutdown_grace_s)
        await server.wait_closed()


class BackgroundAgent:
    """An agent running in a thread with its own event loop: for tests and embedding.

    Starts in the constructor and returns once it listens (or raises what stopped it).
    Stop it with :meth:`stop` or a ``with`` block.

    Args:
        config: the configuration (``port=0`` picks a free port).
        passwords: a password backend instead of the configured file.
        start_timeout_s: bound on starting, in seconds.

    Raises:
        ConfigError, OSError: the agent could not start.
        TimeoutError: it did not start within ``start_timeout_s``.
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        passwords: Authenticator | None = None,
        start_timeout_s: float = 30.0,
    ) -> None:
        self.config = config
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._endpoint: AgentEndpoint | None = None
        self._passwords = passwords
        self._thread = threading.Thread(target=self._main, name="runwire-jobs-agent", daemon=True)
        self._thread.start()
        if not self._ready.wait(start_timeout_s):
            raise TimeoutError(f"the agent did not start within {start_timeout_s:g} s")
        if self._error is not None:
            self._thread.join(start_timeout_s)
            raise self._error

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await run_agent(
                self.config,
                ready=self._on_ready,
                stop=self._stop,
                passwords=self._passwords,
                handle_signals=False,
            )

        try:
            asyncio.run(main())
        except BaseException as exc:
            self._error = exc
            if not self._ready.is_set():
                self._ready.set()
            else:
                logger.exception("background agent failed")

    def _on_ready(self, endpoint: AgentEndpoint) -> None:
        self._endpoint = endpoint
        self._ready.set()

    @property
    def endpoint(self) -> AgentEndpoint:
        """Where it listens."""
        assert self._endpoint is not None
        return self._endpoint

    @property
    def running(self) -> bool:
        """True until it has stopped."""
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Shut the agent down (as on SIGTERM) and wait for its thread. Idempotent.

        Raises:
            TimeoutError: the thread did not end within ``timeout_s``.
        """
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop may close meanwhile
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"the agent did not stop within {timeout_s:g} s")

    def __enter__(self) -> BackgroundAgent:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
