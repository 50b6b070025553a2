"""``harp``-compatible client API: HarpCaller's documented Python interface on runwire.

What it is
----------
A drop-in for the Python client library of HarpCaller (the ``harp`` module documented in
the harp(3) manual, ``shared/seeds/004``; ``reference/jobs.md`` section 4). Code written
against that manual runs after changing its import to::

    from runwire.compat import harp

Every public name of the manual is here, with its documented meaning:

- :class:`HarpCaller` (a dispatcher), :class:`RemoteServer` (a host plus job options),
  :class:`RemoteProcedure`, :class:`RemoteCall` (a job) and its
  :class:`RemoteCall.StreamIterator`, the sentinels :data:`CALL_NOT_FINISHED` and
  :data:`CALL_CANCELLED`: the asynchronous interface, through a dispatcher;
- :class:`HarpServer`, :class:`HarpProcedure`, :class:`HarpStreamIterator`, :class:`Result`:
  synchronous calls straight to an agent (harpd);
- :class:`JSONConnection`, :class:`JSONSSLConnection`: line-JSON socket helpers;
- the exceptions :class:`HarpException` ⊃ :class:`CommunicationError`,
  :class:`CancelledException`, :class:`RemoteException`, :class:`RemoteError`.

How it maps to the wire
-----------------------
Dispatcher calls go through the generated
:class:`~runwire.generated.jobs.client.DispatcherSyncClient` (schema-validated requests and
replies), one connection per request as the protocol wants:

=========================================  ==============================================
client call                                 dispatcher request (``schemas/jobs``)
=========================================  ==============================================
``server.proc(a, b)`` / ``proc(k=v)``       ``call``, ``arguments`` list / object; job
                                            options become ``queue {name, concurrency}``,
                                            ``timeout``, ``max_exec_time``, ``info``
``job.result(wait=False)``                  ``get_result``, ``wait: false``
``job.get(wait=True)``                      ``get_result``, ``wait: true``
``job.cancel()``                            ``cancel``
``job.host()``, ``args()``, ``*_time()``…   ``get_status``
``job.follow(since, recent, numbered)``     ``follow_stream`` (default as ``recent: 0``)
``job.stream(since, recent, numbered)``     ``read_stream`` (default as ``since: 0``)
``rpc.request(req)``, ``rpc.connect()``     raw line JSON (:class:`JSONConnection`)
=========================================  ==============================================

:class:`HarpServer` calls go through the generated
:class:`~runwire.generated.jobs.client.AgentSyncClient`: one TLS connection per call, the
request ``{"harp": 1, "procedure", "arguments", "auth": {"user", "password"}}``, then the
acknowledgement, stream lines and one terminator.

Differences from the original client
------------------------------------
Fixes of its defects (``reference/jobs.md``, defect 13), all compatible with the manual:

- **No stale results.** A job's result is cached only once the job has ended (a result,
  an exception, cancelled or a job error); ``no_result``, communication failures and
  request errors (``invalid_jobid``...) are never cached, so polling ``job.result()`` sees
  the job finish and ``job.get()`` really waits. Status errors never become the result.
- **Python 3 iteration works** (``for``, ``list()``, ``.all()``), and so does
  :class:`HarpServer` (TLS 1.2 or newer through :mod:`ssl` contexts).
- **Every socket has a timeout.** ``timeout`` (seconds, default 30 on :class:`HarpCaller`
  and the JSON helpers, 600 on :class:`HarpServer`) bounds connecting and every wait for
  a line. Operations that wait for a job (``get(wait=True)``, ``result(wait=True)``,
  ``follow()``) keep their documented meaning (wait until the job ends): after
  ``timeout`` seconds of silence they re-issue the request on a new connection
  (``follow`` resumes after the last packet received, so nothing is lost or repeated);
  ``wait_timeout`` (default None: no bound) bounds their total time. A timeout raises
  :class:`CommunicationError` (``result()`` returns it, as documented).
- **Errors are consistent.** ``get()`` raises and ``result()`` returns
  :class:`RemoteException` / :class:`RemoteError` / :class:`CommunicationError` as the
  manual says; an agent ``error`` line is :class:`RemoteError` whether it comes before or
  after the acknowledgement (the original raised ``RemoteException`` after it); an
  agent ``exception`` line is :class:`RemoteException`.
- **Explicit failures instead of silence.** A stream that ends without its terminator
  raises :class:`CommunicationError` (the original ended the iteration); a stream about an
  unknown job raises :class:`RemoteError` (``invalid_jobid``). A malformed job id passed to
  :meth:`HarpCaller.job` raises :class:`ValueError` (the original dispatcher silently
  mapped it to the all-zero id). Bad arguments (non-JSON values, positional and keyword
  arguments mixed, unknown or ill-typed job options) raise :class:`ValueError` or
  :class:`TypeError` before anything is sent.
- ``follow()`` without ``since`` first reads the stream's current length (one
  ``read_stream`` with ``recent: 1``) and then follows with an explicit ``since``, so a
  re-issued follow can resume exactly; the packets delivered are those the manual
  promises (``recent: N`` relative to the call).
- Usable from code that runs an asyncio event loop in the same thread (a notebook, an
  async web framework): blocking work then runs in a helper thread (the generated sync
  clients refuse to run inside a loop).
- :class:`HarpServer` with ``ca_file`` verifies the certificate chain **and** the host
  name (``server_hostname``, default ``host``), which the original never did; pass
  ``check_hostname=False`` for the original's chain-only check. ``ca_file=None`` keeps
  its documented meaning, **no verification**, which is unsafe outside tests.

Additions (keyword-only, safe to ignore): ``timeout`` and ``wait_timeout`` on
:class:`HarpCaller`; ``timeout``, ``server_hostname``, ``check_hostname`` on
:class:`HarpServer` and :class:`JSONSSLConnection`; ``timeout`` and ``max_line_bytes`` on
the JSON helpers; ``close()`` and ``with`` on stream iterators. ``HarpCaller(...)(host)``
is :meth:`HarpCaller.host` (the manual's synopsis uses ``rpc("localhost")``).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import math
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from typing import Any, Final, Self, TypeVar

from runwire.generated.jobs import models
from runwire.generated.jobs.client import AgentSyncClient, DispatcherSyncClient
from runwire.runtime.closing import ClosingContext
from runwire.runtime.errors import LocalProtocolError, RunwireError, Timeout

__all__ = [
    "CALL_CANCELLED",
    "CALL_NOT_FINISHED",
    "CancelledException",
    "CommunicationError",
    "HarpCaller",
    "HarpException",
    "HarpProcedure",
    "HarpServer",
    "HarpStreamIterator",
    "JSONConnection",
    "JSONSSLConnection",
    "RemoteCall",
    "RemoteError",
    "RemoteException",
    "RemoteProcedure",
    "RemoteServer",
    "Result",
]

T = TypeVar("T")

DISPATCHER_PORT: Final = 3502
"""Default port of the dispatcher (harpcallerd)."""
AGENT_PORT: Final = 4306
"""Default port of an agent (harpd)."""
DEFAULT_TIMEOUT_S: Final = 30.0
"""Default bound, in seconds, on connecting and on each wait for a line (dispatcher, JSON
helpers)."""
DEFAULT_AGENT_TIMEOUT_S: Final = 600.0
"""Default bound, in seconds, on connecting to an agent and on each wait for its next line;
a single-result procedure must finish within it (the dispatcher's default job limit)."""
MAX_LINE_BYTES: Final = 1 << 20
"""Longest reply line accepted, in bytes (the original dispatcher's line buffer)."""
NO_RESULT_BACKOFF_S: Final = 1.0
"""Pause, in seconds, before asking again when a waiting ``get_result`` answers
``no_result`` (the dispatcher held the request for its maximum)."""

JOB_ID_PATTERN: Final = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[1-5][0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$"
)
"""A job id as the dispatcher protocol allows it (lowercase UUID, versions 1 to 5)."""

#: Error types that describe the request, not the job's outcome: never cached as a result,
#: and raised (not swallowed) when they end a stream.
REQUEST_ERROR_TYPES: Final = frozenset(
    {"invalid_jobid", "bad_request", "overloaded", "storage_error"}
)

JOB_OPTIONS: Final = ("queue", "concurrency", "timeout", "max_exec_time", "info")
"""Job options accepted by :meth:`HarpCaller.host` and :meth:`RemoteServer.__call__`."""


# --- exceptions -------------------------------------------------------------------------


class HarpException(Exception):
    """Base class of every exception this module raises (harp(3): ``HarpException``)."""


class CommunicationError(HarpException):
    """Communication with the dispatcher or agent failed: connection refused or reset,
    TLS failure, a timeout, an unexpected end of stream, or a reply that breaks the
    protocol. The runwire error behind it, if any, is ``__cause__``."""


class CancelledException(HarpException):
    """The job has no return value because it was cancelled (raised by
    :meth:`RemoteCall.get`)."""


class _RemoteFailure(HarpException):
    """An error object reported by the remote side: ``type``, ``message``, ``data``."""

    def __init__(self, type: str, message: str, data: Any = None) -> None:
        super().__init__(type, message, data)
        #: Identifier of the error type (for RemoteException, the exception class name).
        self.type = type
        #: Complete error message.
        self.message = message
        #: Arbitrary JSON context; None when the remote side gave none.
        self.data = data

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.type!r}, {self.message!r}, {self.data!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _RemoteFailure)
        return (self.type, self.message, self.data) == (other.type, other.message, other.data)

    def __hash__(self) -> int:
        return hash((type(self), self.type, self.message))

    @classmethod
    def from_wire(cls, error: Mapping[str, Any]) -> Self:
        """Build from a wire error object ``{"type", "message", "data"?}``."""
        return cls(str(error.get("type")), str(error.get("message")), error.get("data"))


class RemoteException(_RemoteFailure):
    """The remote procedure raised an exception (wire ``exception`` line).

    Attributes:
        type: the exception's class name on the agent (for example ``"ValueError"``).
        message: its string form.
        data: optional JSON details (None when none were sent).
    """


class RemoteError(_RemoteFailure):
    """An operational error reported by the dispatcher or the agent (wire ``error``
    object): the host could not be reached or authenticated, a time limit ran out, the
    agent has no such procedure, no job has this id... ``type`` is one of the protocol's
    error types (``schemas/jobs``: ``DispatcherErrorType``, ``AgentErrorType``).

    Attributes:
        type: the error type, for example ``"unknown_host"`` or ``"timeout"``.
        message: complete error message.
        data: optional JSON details (None when none were sent).
    """


# --- sentinels and results ----------------------------------------------------------------


class _Sentinel:
    """A named singleton that survives copy and pickle as itself."""

    __slots__ = ("_attribute", "_name")

    def __init__(self, name: str, attribute: str) -> None:
        self._name = name
        self._attribute = attribute

    def __repr__(self) -> str:
        return f"<{self._name}>"

    def __reduce__(self) -> str:
        return self._attribute


CALL_NOT_FINISHED: Final = _Sentinel("CallNotFinished", "CALL_NOT_FINISHED")
"""Returned instead of a job's result while the job is queued or running."""
CALL_CANCELLED: Final = _Sentinel("CallCancelled", "CALL_CANCELLED")
"""Returned as the result of a job that was cancelled (:meth:`RemoteCall.get` raises
:class:`CancelledException` instead)."""


class Result:
    """The end result of a streamed call to :class:`HarpServer`: the last item of a
    :class:`HarpStreamIterator`.

    Attributes:
        value: the wrapped end result (any JSON value; None when the procedure set none).
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Result({self.value!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Result):
            return NotImplemented
        return bool(self.value == other.value)

    __hash__ = None  # type: ignore[assignment]


# --- helpers ------------------------------------------------------------------------------


def _blocking(function: Callable[..., T], *args: Any) -> T:
    """Run ``function(*args)``; in a helper thread when this thread runs an event loop.

    The generated sync clients refuse to run inside a running loop; the original client
    blocked the caller anywhere, so this keeps that. The function's exception (even
    StopIteration) is re-raised here.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return function(*args)
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append((True, function(*args)))
        except BaseException as exc:
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name="runwire-harp", daemon=True)
    thread.start()
    thread.join()  # every operation inside is bounded by a socket timeout
    ok, value = outcome[0]
    if ok:
        return value  # type: ignore[no-any-return]
    raise value


def _communication_error(exc: BaseException) -> CommunicationError:
    error = CommunicationError(str(exc))
    error.__cause__ = exc
    return error


def _is_read_timeout(exc: BaseException) -> bool:
    """True for a Timeout while waiting for a reply line (not while connecting)."""
    return isinstance(exc, Timeout) and exc.operation == "receive"


def _check_json(value: Any, what: str) -> None:
    """Raise TypeError/ValueError unless ``value`` is strict JSON (no NaN, string keys)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{what} must be JSON-serialisable: {exc}") from exc


def _positive_seconds(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a positive integer (seconds), not {type(value).__name__}")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ValueError(f"{name} must be a whole number of seconds, not {value!r}")
        value = int(value)
    if value < 1:
        raise ValueError(f"{name} must be at least 1 second, not {value!r}")
    return int(value)


def _merge_options(current: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Validate job options and merge ``new`` into ``current`` (None unsets an option).

    Raises:
        TypeError: an unknown option, or a value of the wrong type.
        ValueError: a value out of range, or ``concurrency`` without ``queue``.
    """
    unknown = sorted(set(new) - set(JOB_OPTIONS))
    if unknown:
        raise TypeError(
            f"unknown job option(s) {', '.join(unknown)}; expected: {', '.join(JOB_OPTIONS)}"
        )
    merged = dict(current)
    for name, value in new.items():
        if value is None:
            merged.pop(name, None)
            continue
        if name == "queue":
            if not isinstance(value, Mapping):
                raise TypeError(
                    f"queue must be a dict (the queue's name), not {type(value).__name__}"
                )
            _check_json(value, "queue")
            value = dict(value)
        elif name == "concurrency":
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"concurrency must be a positive integer, not {value!r}")
            if value < 1:
                raise ValueError(f"concurrency must be at least 1, not {value!r}")
        elif name in ("timeout", "max_exec_time"):
            value = _positive_seconds(name, value)
        else:  # info
            _check_json(value, "info")
        merged[name] = value
    if "concurrency" in merged and "queue" not in merged:
        raise ValueError("concurrency needs a queue (the concurrency limit is per queue)")
    return merged


def _procedure_arguments(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """The wire ``arguments``: a list for positional, an object for keyword arguments."""
    if args and kwargs:
        raise ValueError("positional and keyword arguments cannot be mixed in one call")
    arguments: Any = dict(kwargs) if kwargs else list(args)
    _check_json(arguments, "arguments")
    return arguments


def _check_attribute(name: str, kind: str) -> None:
    """Names starting with ``_`` are never remote names (copy, pickle and IPython probe
    such attributes; answering them would submit jobs)."""
    if name.startswith("_"):
        raise AttributeError(f"{name!r}: {kind} names starting with '_' are not looked up remotely")


@contextlib.contextmanager
def _closing(iterator: Iterator[T]) -> Generator[Iterator[T], None, None]:
    """Use ``iterator``, then close it if it can be closed (a generator holding a
    connection: closing it closes the connection at once, not at garbage collection)."""
    try:
        yield iterator
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


# --- JSON connections ---------------------------------------------------------------------


def _client_ssl_context(ca_file: str | None, check_hostname: bool) -> ssl.SSLContext:
    """A client TLS context: TLS 1.2 or newer; verified against ``ca_file`` only when given.

    With ``ca_file``, the chain must lead to a CA in that file and, when
    ``check_hostname``, the certificate must name the server. Without it nothing is
    verified (the manual's meaning of ``ca_file=None``).
    """
    if ca_file is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
        context.check_hostname = check_hostname
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class _ClosedOnExit(ClosingContext, abc.ABC):
    """Closes on leaving a ``with`` block and when garbage-collected (``close()`` is
    idempotent in every subclass)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the object holds; idempotent."""

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class JSONConnection(_ClosedOnExit):
    """A TCP connection carrying JSON lines (one JSON value per ``\\n``-terminated line).

    Connected on construction; usable as a context manager (leaving it closes)::

        with JSONConnection(host, port) as conn:
            conn.send({"key": "value"})
            reply = conn.receive()

    Args:
        host, port: address of the server.
        timeout: bound, in seconds, on connecting and on each send or receive (the
            original had none).
        max_line_bytes: longest line :meth:`receive` accepts, in bytes.

    Raises:
        CommunicationError: the connection cannot be opened (refused, unreachable, timed
            out, TLS failure).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.max_line_bytes = max_line_bytes
        self._socket: socket.socket | None = None
        self._reader: Any = None
        self.connect()

    def _open_socket(self) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=self.timeout)

    def connect(self) -> None:
        """(Re)connect to the address given to the constructor (closing any current
        connection first). New objects are already connected.

        Raises:
            CommunicationError: the connection cannot be opened.
        """
        self.close()
        try:
            sock = self._open_socket()
        except (OSError, ssl.SSLError) as exc:
            raise CommunicationError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        self._socket = sock
        self._reader = sock.makefile("rb")

    def close(self) -> None:
        """Close the connection (idempotent). :meth:`connect` opens it again."""
        reader, sock = self._reader, self._socket
        self._reader = self._socket = None
        if reader is not None:
            reader.close()
        if sock is not None:
            sock.close()

    def send(self, obj: Any) -> None:
        """Send ``obj`` as one JSON line.

        Raises:
            TypeError, ValueError: ``obj`` is not JSON-serialisable (nothing is sent).
            CommunicationError: not connected, or the write failed or timed out.
        """
        data = (json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
        if self._socket is None:
            raise CommunicationError("not connected")
        try:
            self._socket.sendall(data)
        except (OSError, ssl.SSLError) as exc:
            self.close()
            raise CommunicationError(f"send to {self.host}:{self.port} failed: {exc}") from exc

    def receive(self) -> Any:
        """Receive one JSON line and return it decoded (typically a dict).

        Raises:
            CommunicationError: the peer closed (``unexpected EOF``), the line is not
                JSON or longer than ``max_line_bytes``, or no line came within
                ``timeout`` seconds. The connection is closed after any of these.
        """
        if self._reader is None:
            raise CommunicationError("not connected")
        try:
            line = self._reader.readline(self.max_line_bytes + 1)
        except (OSError, ssl.SSLError) as exc:
            self.close()
            where = f"{self.host}:{self.port}"
            if isinstance(exc, TimeoutError):
                raise CommunicationError(
                    f"receive from {where} timed out after {self.timeout:g} s"
                ) from exc
            raise CommunicationError(f"receive from {where} failed: {exc}") from exc
        if not line.endswith(b"\n"):
            self.close()
            if len(line) > self.max_line_bytes:
                raise CommunicationError(f"reply line longer than {self.max_line_bytes} bytes")
            raise CommunicationError("unexpected EOF")
        try:
            return json.loads(line)
        except ValueError as exc:
            self.close()
            raise CommunicationError(f"reply line is not JSON: {exc}") from exc


class JSONSSLConnection(JSONConnection):
    """A TLS connection carrying JSON lines; otherwise as :class:`JSONConnection`::

        with JSONSSLConnection(host, port, "/etc/ssl/certs/ca.pem") as conn:
            conn.send({"key": "value"})
            reply = conn.receive()

    Args:
        host, port: address of the server.
        ca_file: CA certificates (PEM) to verify the server against. **None means no
            verification at all** (the manual's meaning; only for tests). TLS 1.2 or
            newer either way.
        timeout: bound, in seconds, on connecting (TLS handshake included) and on each
            send or receive.
        server_hostname: the name sent in SNI and checked against the certificate
            (default ``host``).
        check_hostname: with ``ca_file``, also check that the certificate names the
            server (the original never did); False checks the chain only.
        max_line_bytes: longest line accepted, in bytes.
    """

    def __init__(
        self,
        host: str,
        port: int,
        ca_file: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        server_hostname: str | None = None,
        check_hostname: bool = True,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        self.ca_file = ca_file
        self.server_hostname = server_hostname
        self._context = _client_ssl_context(ca_file, check_hostname)
        super().__init__(host, port, timeout=timeout, max_line_bytes=max_line_bytes)

    def _open_socket(self) -> socket.socket:
        raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            return self._context.wrap_socket(raw, server_hostname=self.server_hostname or self.host)
        except BaseException:
            raw.close()
            raise


# --- the dispatcher interface ----------------------------------------------------------------


class HarpCaller:
    """A dispatcher (harpcallerd, or runwire's reference dispatcher).

    Args:
        host: address of the dispatcher.
        port: its port (default 3502).
        timeout: bound, in seconds, on connecting and on each wait for a reply line
            (default 30). Waiting operations re-issue their request after this much
            silence (see the module docstring).
        wait_timeout: bound, in seconds, on the whole of an operation that waits for a
            job to end (``get(wait=True)``, ``result(wait=True)``, iterating ``follow()``);
            checked between reads, so it may be overrun by up to ``timeout``. When it runs
            out, :class:`CommunicationError` is raised (returned by ``result()``). None
            (default) waits as long as the job runs, as the manual says.

    Any other attribute is a host: ``rpc.web01`` is ``rpc.host("web01")`` without job
    options. Hosts named like a method (``host``, ``job``, ``request``, ``connect``) or
    starting with ``_`` need :meth:`host`.
    """

    def __init__(
        self,
        host: str,
        port: int = DISPATCHER_PORT,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        wait_timeout: float | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        if wait_timeout is not None and wait_timeout <= 0:
            raise ValueError(f"wait_timeout must be positive or None, not {wait_timeout!r}")
        self._host = host
        self._port = port
        self._timeout = timeout
        self._wait_timeout = wait_timeout

    def __repr__(self) -> str:
        return f"HarpCaller({self._host!r}, {self._port!r})"

    def __getattr__(self, host: str) -> RemoteServer:
        """``rpc.<host>``: the host without job options (see :meth:`host`)."""
        _check_attribute(host, "host")
        return RemoteServer(self, host)

    def __call__(self, host: str, **kwargs: Any) -> RemoteServer:
        """``rpc("web01", ...)``: the same as :meth:`host` (used by the manual's synopsis)."""
        return self.host(host, **kwargs)

    def host(self, host: str, **kwargs: Any) -> RemoteServer:
        """Prepare calls to procedures on ``host`` with job options.

        Args:
            host: the target host's name in the dispatcher's hosts registry.
            queue: (dict) name of a queue to wait in.
            concurrency: (positive int) jobs of the queue allowed to run at once (needs
                ``queue``; the queue's first job fixes it).
            timeout: (positive int, seconds) longest silence between stream packets (for
                a single-result procedure: its whole run).
            max_exec_time: (positive int, seconds) longest total run time.
            info: (JSON) opaque data stored with the job, returned by :meth:`RemoteCall.info`.

        Returns:
            RemoteServer

        Raises:
            TypeError, ValueError: an unknown option or a bad value.
        """
        return RemoteServer(self, host, **kwargs)

    def job(self, job_id: str) -> RemoteCall:
        """A job by its id, to read its status and results or cancel it.

        Raises:
            ValueError: ``job_id`` is not a lowercase UUID string.
        """
        return RemoteCall(self, job_id)

    def connect(self) -> JSONConnection:
        """A new line-JSON connection to the dispatcher (close it when done).

        Raises:
            CommunicationError: the connection cannot be opened.
        """
        return _blocking(lambda: JSONConnection(self._host, self._port, timeout=self._timeout))

    def request(self, req: Mapping[str, Any]) -> Any:
        """Send one request to the dispatcher and return its first reply line.

        ``"harpcaller": 1`` is added when ``req`` lacks it; nothing else is checked, so
        this reaches any operation, extensions included. For streams it returns only the
        first line: use :meth:`RemoteCall.follow` / :meth:`RemoteCall.stream` instead.

        Raises:
            CommunicationError: connecting failed, the dispatcher closed without replying
                (``unexpected EOF``), sent something that is not JSON, or timed out.
        """
        message = dict(req)
        message.setdefault("harpcaller", 1)

        def exchange() -> Any:
            with JSONConnection(self._host, self._port, timeout=self._timeout) as conn:
                conn.send(message)
                return conn.receive()

        return _blocking(exchange)

    # -- internals used by RemoteServer / RemoteCall --

    def _client(self) -> DispatcherSyncClient:
        return DispatcherSyncClient(self._host, self._port, timeout_s=self._timeout)

    def _request(self, operation: str, request: Any) -> dict[str, Any]:
        """Run one request-reply operation and return its wire reply.

        Raises:
            ValueError: the request breaks its schema (nothing was sent).
            CommunicationError: any transport or protocol failure (including a timeout).
        """

        def run() -> dict[str, Any]:
            with self._client() as client:
                reply = getattr(client, operation)(request)
            wire: dict[str, Any] = reply.to_wire()
            return wire

        try:
            return _blocking(run)
        except LocalProtocolError as exc:
            raise ValueError(f"invalid {operation} request: {exc}") from exc
        except (RunwireError, OSError) as exc:
            raise _communication_error(exc) from exc

    def _deadline(self) -> float | None:
        if self._wait_timeout is None:
            return None
        return time.monotonic() + self._wait_timeout

    def _check_deadline(self, deadline: float | None, what: str) -> None:
        if deadline is not None and time.monotonic() >= deadline:
            raise CommunicationError(f"{what}: no end within wait_timeout {self._wait_timeout:g} s")

    def _submit(self, host: str, procedure: str, arguments: Any, options: Mapping[str, Any]) -> str:
        payload: dict[str, Any] = {
            "harpcaller": 1,
            "host": host,
            "procedure": procedure,
            "arguments": arguments,
        }
        if "queue" in options:
            payload["queue"] = {
                "name": options["queue"],
                "concurrency": options.get("concurrency", 1),
            }
        for name in ("timeout", "max_exec_time"):
            if name in options:
                payload[name] = options[name]
        payload["info"] = options.get("info")  # the original always sends it, null if unset
        request = models.CallRequest.model_validate(payload, strict=False)
        reply = self._request("call", request)
        if "error" in reply:
            raise RemoteError.from_wire(reply["error"])
        job_id: str = reply["job_id"]
        return job_id


class RemoteServer:
    """A target host, with the job options its calls will carry.

    Any attribute not starting with ``_`` is a :class:`RemoteProcedure` of that name::

        host = rpc.host("remote-server")
        job = host.my_remote_function_name(arg1, arg2)

    Args:
        dispatcher: the :class:`HarpCaller`.
        hostname: the host's name in the dispatcher's hosts registry.
        **kwargs: job options, as for :meth:`HarpCaller.host`.
    """

    def __init__(self, dispatcher: HarpCaller, hostname: str, **kwargs: Any) -> None:
        self._dispatcher = dispatcher
        self._hostname = str(hostname)
        self._options: dict[str, Any] = _merge_options({}, kwargs)

    def __call__(self, **kwargs: Any) -> Self:
        """Adjust the job options (``queue``, ``concurrency``, ``timeout``,
        ``max_exec_time``, ``info``; None unsets one) and return this same object.

        Raises:
            TypeError, ValueError: an unknown option or a bad value (nothing changes).
        """
        self._options = _merge_options(self._options, kwargs)
        return self

    def __getattr__(self, procedure: str) -> RemoteProcedure:
        """``host.<procedure>``: a callable :class:`RemoteProcedure`."""
        _check_attribute(procedure, "procedure")
        return RemoteProcedure(self._dispatcher, self, procedure)

    def __str__(self) -> str:
        """The host's name."""
        return self._hostname

    def __repr__(self) -> str:
        return f"<RemoteServer {self._hostname!r} {self._options!r}>"


class RemoteProcedure:
    """A remote procedure on a host; calling it submits a job.

    Args:
        dispatcher: the :class:`HarpCaller`.
        server: the :class:`RemoteServer` (host and job options).
        procedure: the procedure's name.
    """

    def __init__(self, dispatcher: HarpCaller, server: RemoteServer, procedure: str) -> None:
        self._dispatcher = dispatcher
        self._server = server
        self._procedure = procedure

    def __call__(self, *args: Any, **kwargs: Any) -> RemoteCall:
        """Submit a job calling this procedure with ``args`` (wire list) or ``kwargs``
        (wire object), with the server's job options. Returns at once with the job.

        Returns:
            RemoteCall

        Raises:
            ValueError: positional and keyword arguments mixed, or a request that breaks
                the schema (for example an empty procedure name).
            TypeError: an argument is not JSON-serialisable.
            RemoteError: the dispatcher refused the job (``overloaded``, ``storage_error``,
                ``bad_request``...).
            CommunicationError: the dispatcher could not be reached or timed out.
        """
        arguments = _procedure_arguments(args, kwargs)
        job_id = self._dispatcher._submit(
            str(self._server), self._procedure, arguments, self._server._options
        )
        return RemoteCall(self._dispatcher, job_id)

    def host(self) -> str:
        """The name of the host this procedure will be called on."""
        return str(self._server)

    def procedure(self) -> str:
        """The name of the procedure that will be called."""
        return self._procedure

    def __repr__(self) -> str:
        return f"<RemoteProcedure {self._procedure!r} on {str(self._server)!r}>"


def _is_outcome(line: Mapping[str, Any]) -> bool:
    """True when a result line says how the job ended (cacheable)."""
    if "result" in line or "exception" in line:
        return True
    if line.get("cancelled") is True:
        return True
    error = line.get("error")
    return isinstance(error, Mapping) and error.get("type") not in REQUEST_ERROR_TYPES


class RemoteCall:
    """A job on the dispatcher: its status, results, streams and cancel.

    Args:
        dispatcher: the :class:`HarpCaller`.
        job_id: the job's id (lowercase UUID string).

    Raises:
        ValueError: ``job_id`` is not a lowercase UUID string.
    """

    class StreamIterator(_ClosedOnExit):
        """Iterator over a job's stream packets (``follow()`` / ``stream()``).

        Yields each packet's data (or ``(packet_number, data)`` pairs when ``numbered``),
        and stops at the stream's terminator, which it records as the job's result when it
        is the job's outcome. Works with ``for``, ``list()``, :meth:`all`, and ``with``
        (leaving closes the connection; so does :meth:`close` or exhausting it).

        Args:
            remote_call: the :class:`RemoteCall` whose stream this is.
            conn: where the stream's wire lines come from: a :class:`JSONConnection` on
                which a stream request was sent, or any iterator of wire lines (dicts).
            numbered: yield ``(packet_number, data)`` pairs; ``packet_number`` is what to
                pass as ``since`` to resume after it (plus one).

        Iteration raises:
            CommunicationError: the stream broke or ended without its terminator.
            RemoteError: the stream ended with a request error (``invalid_jobid``...).
        """

        def __init__(self, remote_call: RemoteCall, conn: Any, numbered: bool = False) -> None:
            self._call = remote_call
            self._conn = conn
            self._lines: Iterator[Any] | None = None if hasattr(conn, "receive") else iter(conn)
            self._numbered = numbered
            self._done = False

        def __iter__(self) -> Self:
            return self

        def _next_line(self) -> Any:
            if self._lines is None:
                return self._conn.receive()
            try:
                return next(self._lines)
            except StopIteration:
                raise CommunicationError(
                    "unexpected EOF: the stream ended without a terminator"
                ) from None

        def __next__(self) -> Any:
            if self._done:
                raise StopIteration
            try:
                line = _blocking(self._next_line)
            except BaseException:
                self.close()
                raise
            if not isinstance(line, Mapping):
                self.close()
                raise CommunicationError(f"stream line is not an object: {line!r}")
            if "packet" in line:
                data = line.get("data")
                return (line["packet"], data) if self._numbered else data
            self.close()
            if "continue" in line:
                raise StopIteration
            self._call._record(line)
            error = line.get("error")
            if not _is_outcome(line) and isinstance(error, Mapping):
                raise RemoteError.from_wire(error)
            raise StopIteration

        next = __next__  # the Python 2 spelling the original defined

        def all(self) -> list[Any]:
            """Every item this iterator would yield, in one list."""
            return list(self)

        def close(self) -> None:
            """Stop reading and close the connection (idempotent)."""
            if self._done:
                return
            self._done = True
            close = getattr(self._conn, "close", None)
            if close is not None:
                _blocking(close)

    def __init__(self, dispatcher: HarpCaller, job_id: str) -> None:
        if not isinstance(job_id, str) or not JOB_ID_PATTERN.match(job_id):
            raise ValueError(f"not a job id (a lowercase UUID string): {job_id!r}")
        self._dispatcher = dispatcher
        self._job_id = job_id
        self._outcome: dict[str, Any] | None = None  # the result line, once the job ended
        self._final_status: dict[str, Any] | None = None  # the status, once the job ended

    def __repr__(self) -> str:
        return f"<RemoteCall {self._job_id}>"

    def id(self) -> str:
        """This job's id, to find the job again later (:meth:`HarpCaller.job`)."""
        return self._job_id

    # -- results --

    def _record(self, line: Mapping[str, Any]) -> None:
        if self._outcome is None and _is_outcome(line):
            self._outcome = dict(line)

    def _result_line(self, wait: bool) -> dict[str, Any]:
        """The job's result line (a ``get_result`` reply); cached once the job ended.

        Raises:
            CommunicationError: the dispatcher could not be reached, or ``wait_timeout``
                ran out.
        """
        if self._outcome is not None:
            return self._outcome
        dispatcher = self._dispatcher
        request = models.GetResultRequest.model_validate(
            {"harpcaller": 1, "get_result": self._job_id, "wait": wait}, strict=False
        )
        deadline = dispatcher._deadline() if wait else None
        while True:
            try:
                line = dispatcher._request("get_result", request)
            except CommunicationError as exc:
                if not (wait and _is_read_timeout(exc.__cause__ or exc)):
                    raise
                dispatcher._check_deadline(deadline, f"waiting for job {self._job_id}")
                continue  # the job is still running: ask again on a new connection
            if wait and "no_result" in line:  # the dispatcher held the request its maximum
                dispatcher._check_deadline(deadline, f"waiting for job {self._job_id}")
                pause = NO_RESULT_BACKOFF_S
                if deadline is not None:
                    pause = min(pause, max(0.0, deadline - time.monotonic()))
                time.sleep(pause)
                continue
            self._record(line)
            return line

    def result(self, wait: bool = False) -> Any:
        """The job's end result, however the job ended; never raises for the job's
        outcome or for communication failures.

        Args:
            wait: wait for the job to end (default: answer at once).

        Returns:
            the procedure's return value (JSON data); :data:`CALL_NOT_FINISHED` when the
            job has not ended and ``wait`` is false; :data:`CALL_CANCELLED`; or, as
            instances (not raised): :class:`RemoteException` (the procedure raised),
            :class:`RemoteError` (the job failed operationally, or no job has this id),
            :class:`CommunicationError` (the dispatcher could not be reached or timed out).
        """
        try:
            line = self._result_line(wait)
        except CommunicationError as exc:
            return exc
        return _result_value(line)

    def get(self, wait: bool = True) -> Any:
        """The job's end result, waiting for the job to end by default.

        Args:
            wait: wait for the job to end (default true).

        Returns:
            the procedure's return value, or :data:`CALL_NOT_FINISHED` when ``wait`` is
            false and the job has not ended.

        Raises:
            RemoteException: the procedure raised an exception.
            RemoteError: the job failed operationally (unknown host, time limit...), or no
                job has this id.
            CancelledException: the job was cancelled.
            CommunicationError: the dispatcher could not be reached or timed out.
        """
        value = _result_value(self._result_line(wait))
        if value is CALL_CANCELLED:
            raise CancelledException(f"job {self._job_id} was cancelled")
        if isinstance(value, HarpException):
            raise value
        return value

    def cancel(self) -> bool:
        """Cancel the job.

        Returns:
            True if the job was queued or running (and is now cancelled), False if it had
            already ended or no job has this id (as the original dispatcher answers).

        Raises:
            RemoteError: the dispatcher answered another error.
            CommunicationError: the dispatcher could not be reached or timed out.
        """
        request = models.CancelRequest.model_validate(
            {"harpcaller": 1, "cancel": self._job_id}, strict=False
        )
        reply = self._dispatcher._request("cancel", request)
        error = reply.get("error")
        if isinstance(error, Mapping):
            if error.get("type") == "invalid_jobid":
                return False
            raise RemoteError.from_wire(error)
        return bool(reply.get("cancelled"))

    # -- streams --

    def follow(
        self, since: int | None = None, recent: int | None = None, numbered: bool = False
    ) -> RemoteCall.StreamIterator:
        """Follow the job's stream: packets already stored and those to come, until the
        job ends (then the iterator stops and the outcome is cached for :meth:`result`).

        Args:
            since: first packet number to read (non-negative).
            recent: start this many packets before the current end (non-negative).
                Neither given: as ``recent=0`` (only new packets), per the protocol.
            numbered: yield ``(packet_number, data)`` pairs.

        Returns:
            RemoteCall.StreamIterator

        Raises:
            ValueError: both ``since`` and ``recent``, or a negative value.
            CommunicationError, RemoteError: without ``since``, reading the stream's
                length failed (no job with this id: ``invalid_jobid``); and during
                iteration, see :class:`StreamIterator`.
        """
        _check_position(since, recent)
        if since is None:  # resolve "recent" now, so a re-issued follow can resume exactly
            since = max(0, _blocking(self._stream_length) - (recent or 0))
        return RemoteCall.StreamIterator(self, self._follow_lines(since), numbered)

    def stream(
        self, since: int | None = None, recent: int | None = None, numbered: bool = False
    ) -> RemoteCall.StreamIterator:
        """Read the job's stream as stored now, without waiting for the job to end.

        Args:
            since: first packet number to read (non-negative).
            recent: read only this many of the latest packets (non-negative).
                Neither given: as ``since=0`` (everything), per the protocol.
            numbered: yield ``(packet_number, data)`` pairs.

        Returns:
            RemoteCall.StreamIterator

        Raises:
            ValueError: both ``since`` and ``recent``, or a negative value.
            (iteration) CommunicationError, RemoteError: see :class:`StreamIterator`.
        """
        _check_position(since, recent)
        return RemoteCall.StreamIterator(self, self._read_lines(since, recent), numbered)

    def _read_lines(self, since: int | None, recent: int | None) -> Iterator[dict[str, Any]]:
        payload: dict[str, Any] = {"harpcaller": 1, "read_stream": self._job_id}
        if since is not None:
            payload["since"] = since
        if recent is not None:
            payload["recent"] = recent
        request = models.ReadStreamRequest.model_validate(payload, strict=False)
        with self._dispatcher._client() as client:
            try:
                with _closing(client.read_stream(request)) as lines:
                    for line in lines:
                        yield line.to_wire()
            except LocalProtocolError as exc:
                raise ValueError(f"invalid read_stream request: {exc}") from exc
            except (RunwireError, OSError) as exc:
                raise _communication_error(exc) from exc

    def _stream_length(self) -> int:
        """How many packets the job's stream holds now (read_stream, recent 1)."""
        length = 0
        for line in self._read_lines(None, 1):
            if "packet" in line:
                length = int(line["packet"]) + 1
            elif "error" in line and not _is_outcome(line):
                raise RemoteError.from_wire(line["error"])
        return length

    def _follow_lines(self, since: int) -> Iterator[dict[str, Any]]:
        dispatcher = self._dispatcher
        deadline = dispatcher._deadline()
        with dispatcher._client() as client:
            while True:  # one turn per connection; a turn ends in a terminator or a timeout
                request = models.FollowStreamRequest.model_validate(
                    {"harpcaller": 1, "follow_stream": self._job_id, "since": since}, strict=False
                )
                try:
                    with _closing(client.follow_stream(request)) as lines:
                        for line in lines:
                            wire = line.to_wire()
                            if "packet" in wire:
                                since = int(wire["packet"]) + 1
                            yield wire
                            if "packet" in wire:  # a follow longer than wait_timeout ends too
                                dispatcher._check_deadline(
                                    deadline, f"following job {self._job_id}"
                                )
                    return
                except (RunwireError, OSError) as exc:
                    if not _is_read_timeout(exc):
                        raise _communication_error(exc) from exc
                dispatcher._check_deadline(deadline, f"following job {self._job_id}")

    # -- status --

    def _status(self) -> dict[str, Any]:
        if self._final_status is not None:
            return self._final_status
        request = models.GetStatusRequest.model_validate(
            {"harpcaller": 1, "get_status": self._job_id}, strict=False
        )
        reply = self._dispatcher._request("get_status", request)
        error = reply.get("error")
        if isinstance(error, Mapping):
            raise RemoteError.from_wire(error)
        if reply["time"].get("end") is not None:
            self._final_status = reply
        return reply

    def args(self) -> Any:
        """The arguments the job was called with: a list (positional) or a dict (keyword).

        Raises (all status accessors):
            RemoteError: no job has this id (``invalid_jobid``) or another error.
            CommunicationError: the dispatcher could not be reached or timed out.
        """
        return self._status()["call"]["arguments"]

    def host(self) -> str:
        """The name of the job's target host."""
        return str(self._status()["call"]["host"])

    def procedure(self) -> str:
        """The name of the procedure the job calls."""
        return str(self._status()["call"]["procedure"])

    def info(self) -> Any:
        """The ``info`` job option given at submission (None if none)."""
        return self._status().get("info")

    def submit_time(self) -> int:
        """When the job was submitted: Unix time, integer seconds."""
        return int(self._status()["time"]["submit"])

    def start_time(self) -> int | None:
        """When the job started running (Unix seconds); None while it waits in its queue
        (and for a job cancelled while queued)."""
        start = self._status()["time"].get("start")
        return None if start is None else int(start)

    def end_time(self) -> int | None:
        """When the job ended (returned, failed or was cancelled), Unix seconds; None
        while it has not."""
        end = self._status()["time"].get("end")
        return None if end is None else int(end)


def _check_position(since: int | None, recent: int | None) -> None:
    if since is not None and recent is not None:
        raise ValueError("give since or recent, not both")
    for name, value in (("since", since), ("recent", recent)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be a non-negative integer, not {value!r}")
        if value < 0:
            raise ValueError(f"{name} must be non-negative, not {value!r}")


def _result_value(line: Mapping[str, Any]) -> Any:
    """What :meth:`RemoteCall.result` returns for a ``get_result`` reply line."""
    if "no_result" in line:
        return CALL_NOT_FINISHED
    if "result" in line:
        return line["result"]
    if "exception" in line:
        return RemoteException.from_wire(line["exception"])
    if "cancelled" in line:
        return CALL_CANCELLED
    if "error" in line:
        return RemoteError.from_wire(line["error"])
    return CommunicationError(f"unexpected result line: {dict(line)!r}")


# --- the agent interface ---------------------------------------------------------------------


class HarpServer:
    """An agent (harpd, or runwire's reference agent), called directly and synchronously.

    Any attribute not starting with ``_`` is a :class:`HarpProcedure`::

        server = HarpServer(host="example.net", user="username", password="secret",
                            ca_file="trusted_ca.cert.pem")
        result = server.some_method("arg1", "arg2")

    Args:
        host: address of the agent.
        user, password: credentials sent in band with each call.
        port: the agent's port (default 4306).
        ca_file: CA certificates (PEM) to verify the agent's certificate against; the
            chain and (unless ``check_hostname=False``) the host name are checked. **None
            means no verification at all**, as the manual documents: anyone on the path
            can impersonate the agent and read the password. Use it only for tests. TLS 1.2
            or newer either way.
        timeout: bound, in seconds, on connecting (TLS handshake included) and on each wait
            for the agent's next line: a single-result procedure must finish, a streaming
            one must yield, within it (default 600, the dispatcher's default job limit).
        server_hostname: the name sent in SNI and checked against the certificate
            (default ``host``).
        check_hostname: with ``ca_file``, also check that the certificate names the agent
            (the original checked the chain only).
    """

    def __init__(
        self,
        host: str,
        user: str,
        password: str,
        port: int = AGENT_PORT,
        ca_file: str | None = None,
        *,
        timeout: float = DEFAULT_AGENT_TIMEOUT_S,
        server_hostname: str | None = None,
        check_hostname: bool = True,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        self._host = host
        self._user = user
        self._password = password
        self._port = port
        self._ca_file = ca_file
        self._timeout = timeout
        self._server_hostname = server_hostname
        self._context = _client_ssl_context(ca_file, check_hostname)

    def __repr__(self) -> str:
        return f"HarpServer({self._host!r}, {self._user!r}, port={self._port!r})"

    def __getattr__(self, procedure: str) -> HarpProcedure:
        """``server.<procedure>``: a callable :class:`HarpProcedure`."""
        _check_attribute(procedure, "procedure")
        return HarpProcedure(self, procedure)

    def _lines(self, procedure: str, arguments: Any) -> Generator[dict[str, Any], None, None]:
        """The call's wire reply lines (ack, stream lines, terminator), as dicts.

        Raises:
            ValueError: the request breaks the schema (nothing sent).
            CommunicationError: any transport or protocol failure, or a timeout.
        """
        request = models.AgentRequest.model_validate(
            {
                "harp": 1,
                "procedure": procedure,
                "arguments": arguments,
                "auth": {"user": self._user, "password": self._password},
            },
            strict=False,
        )
        client = AgentSyncClient(
            self._host,
            self._port,
            timeout_s=self._timeout,
            ssl=self._context,
            server_hostname=self._server_hostname or self._host,
        )
        with client:
            try:
                with _closing(client.call(request)) as lines:
                    for line in lines:
                        yield line.to_wire()
            except LocalProtocolError as exc:
                raise ValueError(f"invalid call request: {exc}") from exc
            except (RunwireError, OSError) as exc:
                raise _communication_error(exc) from exc


class HarpProcedure:
    """A procedure on a :class:`HarpServer`; call it as a normal function.

    Args:
        server: the :class:`HarpServer`.
        name: the procedure's name.
    """

    def __init__(self, server: HarpServer, name: str) -> None:
        self._server = server
        self._name = name

    def __repr__(self) -> str:
        return f"<HarpProcedure {self._name!r} on {self._server!r}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the procedure and return its result.

        Args:
            args: positional arguments (not with ``kwargs``).
            kwargs: keyword arguments (not with ``args``).

        Returns:
            the return value (JSON data) of a single-result procedure; for a streaming
            procedure a :class:`HarpStreamIterator` yielding each streamed value and, last,
            a :class:`Result` holding the end result. The connection stays open while the
            iterator is read (close it, or exhaust it, to end the call).

        Raises:
            RemoteException: the procedure raised an exception (also during iteration).
            RemoteError: the agent reported an error, before or after its acknowledgement
                (``auth_error``, ``no_such_procedure``, ``timeout``...; also during
                iteration).
            CommunicationError: connecting, TLS, a timeout, an unexpected EOF or a reply
                that breaks the protocol (also during iteration).
            ValueError, TypeError: bad arguments (nothing sent).
        """
        arguments = _procedure_arguments(args, kwargs)
        lines = self._server._lines(self._name, arguments)
        streaming = False
        try:
            first = _blocking(_next_agent_line, lines)
            if "stream_result" in first:
                if first["stream_result"]:
                    streaming = True  # the iterator owns the connection from here
                    return HarpStreamIterator(_agent_stream(lines))
                first = _blocking(_next_agent_line, lines)
                if "stream" in first:
                    raise CommunicationError("stream line after an ack without stream_result")
            return _agent_outcome(first)
        finally:
            if not streaming:
                _blocking(lines.close)


def _next_agent_line(lines: Iterator[dict[str, Any]]) -> dict[str, Any]:
    try:
        return next(lines)
    except StopIteration:
        raise CommunicationError("unexpected EOF") from None


def _agent_outcome(line: Mapping[str, Any]) -> Any:
    """The value of an agent terminator line, or raise what it reports."""
    if "result" in line:
        return line["result"]
    if "exception" in line:
        raise RemoteException.from_wire(line["exception"])
    if "error" in line:
        raise RemoteError.from_wire(line["error"])
    raise CommunicationError(f"unexpected line from the agent: {dict(line)!r}")


def _agent_stream(lines: Iterator[dict[str, Any]]) -> Iterator[Any]:
    """Stream values, then ``Result(end result)``; raises what an error line reports."""
    with _closing(lines):
        while True:
            line = _next_agent_line(lines)
            if "stream" in line:
                yield line["stream"]
                continue
            yield Result(_agent_outcome(line))
            return


class HarpStreamIterator(_ClosedOnExit):
    """Iterator over a streamed result from :class:`HarpServer`: the streamed values,
    then a :class:`Result` with the end result (tells streamed results apart from single
    ones, which are returned as plain values).

    Args:
        orig_iterator: the iterator to wrap.

    Iteration raises RemoteException, RemoteError or CommunicationError as the call does.
    """

    def __init__(self, orig_iterator: Iterable[Any]) -> None:
        self._iterator = iter(orig_iterator)
        self._closed = False

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Any:
        if self._closed:
            raise StopIteration
        try:
            return _blocking(next, self._iterator)
        except BaseException:
            self.close()
            raise

    next = __next__  # the Python 2 spelling the original defined

    def close(self) -> None:
        """End the call now (closes the connection; the agent stops the procedure)."""
        if self._closed:
            return
        self._closed = True
        close = getattr(self._iterator, "close", None)
        if close is not None:
            _blocking(close)
