"""ZeroMQ bases for command interfaces: server (ROUTER), client (REQ), publisher and subscriber.

Generated bindings of a ``zmq`` transport (``transport.kind`` in the manifest; the workflow
family, modelled on Cylc 8's WorkflowRuntimeServer/WorkflowRuntimeClient,
``reference/workflow.md``) subclass these. Every request and reply is one frame of UTF-8
JSON: ``{"command", "args", "meta"?, "id"?}`` → ``{"data", "id"?}`` or
``{"error": {"message", "code"?}, "id"?}``.

Server (:class:`ZmqServerBase`), on a ROUTER socket read from the event loop
(``loop.add_reader`` on the socket's ``zmq.FD``, drained with non-blocking receives; no
``zmq.asyncio`` futures on the request path):

- answers each request as it arrives (no poll interval; the original sleeps 0.2 s), several
  at once (``max_in_flight``), each handler bounded by ``handler_timeout_s``;
- dispatches only the commands of its generated table :attr:`~ZmqServerBase.COMMANDS`, never
  an arbitrary attribute (the original's defect 2: ``{"command": "__dir__"}``);
- answers every bad request with the error envelope and keeps serving (defect 1): not JSON
  (``parse_error``), not an object or ``command``/``args`` missing (``invalid_request``), an
  unknown command (``unknown_command``), ``args`` against the schema (``invalid_args``), a frame
  over ``max_message_bytes`` (``too_large``), a handler that raised :class:`CommandError`
  (its code, default ``command_failed``), and any other handler, reply-validation or
  serialisation failure (``internal_error``);
- bounds message size (frames over ``hard_max_message_bytes`` are dropped by libzmq through
  ``zmq.MAXMSGSIZE``: the peer gets no reply), queue lengths (``zmq.RCVHWM``/``SNDHWM`` =
  ``queue_length``) and wait time (``handler_timeout_s``);
- uses CurveZMQ by default (:class:`~runwire.runtime.transport.zmq_security.CurveServerSecurity`,
  a ``zmq.auth.asyncio.AsyncioAuthenticator`` with ``configure_curve(domain="*", location=...)``
  on its own context); plain TCP only with ``insecure_loopback=True`` on a loopback address;
- binds to a random port of a range (``bind_to_random_port``) or an exact port, on a
  configurable address;
- owns a :class:`Publisher` (PUB) that stamps every message with ``seq`` and ``time`` and
  publishes a periodic heartbeat, and publishes ``shutdown`` once on :meth:`~ZmqServerBase.stop`.

Client (:class:`ZmqClientBase`), on a REQ socket driven the same way, with a timeout on every
call and the Lazy Pirate pattern: on a timeout (or any failure mid-request) the socket is closed with linger 0
and a fresh one is made for the next call, so one lost reply never bricks the client (the
original's defect 3).

Subscriber (:class:`ZmqSubscriberBase`), on a SUB socket subscribed to every topic: reports
gaps in ``seq`` and raises :class:`PublisherDead` after ``dead_after`` heartbeat intervals of
silence (:mod:`runwire.runtime.state.sequence`).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import inspect
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

import zmq
import zmq.asyncio
import zmq.auth.asyncio

from runwire.runtime.closing import AsyncClosingContext, ClosingContext
from runwire.runtime.codec import strict_json
from runwire.runtime.codec.command import (
    EnvelopeError,
    decode_request,
    encode_error,
    encode_reply,
    encode_request,
    json_type_name,
)
from runwire.runtime.errors import (
    InvalidState,
    LocalProtocolError,
    ProtocolError,
    RemoteError,
    RemoteProtocolError,
    RunwireError,
    Timeout,
)
from runwire.runtime.model import WireModel, WireRootModel
from runwire.runtime.state.sequence import Liveness, SequenceStep, SequenceTracker
from runwire.runtime.transport.zmq_security import (
    CurveClientSecurity,
    CurveServerSecurity,
    check_authorized_keys_dir,
    require_loopback,
)
from runwire.runtime.validation import SchemaRegistry

__all__ = [
    "CommandError",
    "CommandSpec",
    "Published",
    "Publisher",
    "PublisherDead",
    "RequestContext",
    "RequestError",
    "ServerEndpoints",
    "TopicSpec",
    "ZmqClientBase",
    "ZmqServerBase",
    "ZmqSubscriberBase",
    "ZmqSyncClientBase",
]

logger = logging.getLogger(__name__)

AnyModel = WireModel | WireRootModel[Any]
JsonLike = AnyModel | Mapping[str, Any] | list[Any] | str | int | float | bool | None

DEFAULT_CLIENT_TIMEOUT_S = 5.0
"""The original's client default (``DEFAULT_TIMEOUT``)."""

DEFAULT_MAX_REPLY_BYTES = 64 << 20
"""Largest reply or published message a client or subscriber accepts (libzmq drops larger)."""


def to_json(value: JsonLike) -> Any:
    """The JSON value of a model, or ``value`` itself when it already is JSON."""
    if isinstance(value, WireModel | WireRootModel):
        return value.to_wire()
    if isinstance(value, Mapping) and not isinstance(value, dict):
        return dict(value)
    return value


# --- tables the generated code fills -----------------------------------------------------


@dataclass(frozen=True)
class CommandSpec:
    """One command of a generated dispatch table (from the manifest).

    Attributes:
        name: the ``command`` value, also the method name on a client.
        handler: the handler's method name on a server base (``handle_<name>``).
        conformance_id: ``family/interface/operation``.
        summary: one line, from the manifest (used by ``api``-style help).
        request_uri, reply_uri: absolute schema URIs of the request envelope and the success
            reply envelope.
        args_model: the generated model of ``args``; data_model: that of the reply's ``data``.
        extension: True for a command the original lacks.
    """

    name: str
    handler: str
    conformance_id: str
    summary: str
    request_uri: str
    reply_uri: str
    args_model: type[AnyModel]
    data_model: type[AnyModel]
    extension: bool = False


@dataclass(frozen=True)
class TopicSpec:
    """One publish topic of a generated table.

    Attributes:
        name: the operation name (``workflow_delta``); topic: the PUB topic (``workflow``).
        message_uri: the message schema; model: its generated model.
    """

    name: str
    topic: str
    conformance_id: str
    summary: str
    message_uri: str
    model: type[AnyModel]
    extension: bool = False


# --- errors ---------------------------------------------------------------------------------


class CommandError(RunwireError):
    """Raised by a handler to answer with the error envelope instead of data.

    Attributes:
        message: the ``error.message`` sent.
        code: the ``error.code`` sent (default ``command_failed``).
    """

    def __init__(self, message: str, code: str = "command_failed") -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class RequestError(RemoteError):
    """The server answered a command with the error envelope (the original's RequestError).

    Attributes:
        error: the error object exactly as received.
        message: ``error["message"]``; code: ``error.get("code")`` (None from the original).
        command: the command that failed; request_id: the id sent, if any.
    """

    def __init__(
        self, error: Mapping[str, Any], command: str, request_id: str | None = None
    ) -> None:
        super().__init__(error)
        self.message = str(error.get("message", ""))
        code = error.get("code")
        self.code = code if isinstance(code, str) else None
        self.command = command
        self.request_id = request_id


class PublisherDead(Timeout):
    """No message (on any topic, heartbeats included) for longer than ``dead_after`` heartbeat
    intervals: the publisher is gone or the subscription is broken."""


# --- server --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestContext:
    """What a handler may want to know about the request besides its args.

    Attributes:
        command: the command name.
        request_id: the request's ``id`` extension, or None.
        meta: the request's ``meta`` header (untrusted, for logging), or None.
        message: the whole decoded request envelope.
        peer: the ROUTER routing id of the peer (opaque bytes, stable per connection).
        received_s: ``time.time()`` when the request was read.
    """

    command: str
    request_id: str | None
    meta: Mapping[str, Any] | None
    message: Mapping[str, Any]
    peer: bytes
    received_s: float


@dataclass(frozen=True)
class ServerEndpoints:
    """Where a started server listens.

    Attributes:
        host: the bind address given (``127.0.0.1``, ``0.0.0.0``, ``::1``...).
        port: the request (ROUTER) port; publish_port: the PUB port, or None without one.
        security: ``curve`` or ``none``.
        server_public_key: the server's CURVE public key (Z85), or None.
    """

    host: str
    port: int
    publish_port: int | None
    security: str
    server_public_key: bytes | None = None

    def address(self, port: int | None = None) -> str:
        """``tcp://host:port`` for the request port (or ``port``), IPv6 in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port if port is None else port}"


# plain ints: the enum flags of pyzmq cost microseconds per operation on the request path
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
_EVENTS = int(zmq.EVENTS)
_NOBLOCK = int(zmq.NOBLOCK)
_SNDTIMEO = int(zmq.SNDTIMEO)
_RCVTIMEO = int(zmq.RCVTIMEO)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
_DRAIN_BATCH = 64
"""Requests a server reads in one turn of the event loop before letting other work run."""


class SyncSocket(zmq.Socket[bytes]):
    """A plain pyzmq socket read and written from the event loop, never blocking.

    The request paths use these instead of awaiting ``zmq.asyncio`` futures (which cost
    about as much again as the whole ZeroMQ round trip): :meth:`watch` registers the
    socket's ``zmq.FD`` with ``loop.add_reader``, then every call is ``zmq.NOBLOCK`` while
    ``zmq.EVENTS`` says so. ZeroMQ's FD is edge-triggered and any operation on the socket
    may consume the edge, so a reader drains fully and re-checks ``zmq.EVENTS`` after each
    send. :meth:`close` (also when ``context.destroy()`` closes it) stops the watch first.
    """

    _watched: tuple[asyncio.AbstractEventLoop, int] | None = None

    def watch(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        """Call ``callback`` from ``loop`` whenever the socket's FD becomes readable."""
        fd = self.getsockopt(zmq.FD)
        assert isinstance(fd, int)
        loop.add_reader(fd, callback)
        self._watched = (loop, fd)

    def unwatch(self) -> None:
        """Stop the watch (idempotent)."""
        watched, self._watched = self._watched, None
        if watched is not None:
            loop, fd = watched
            if not loop.is_closed():
                loop.remove_reader(fd)

    @property
    def watched_by(self) -> asyncio.AbstractEventLoop | None:
        """The loop watching the FD, or None."""
        return None if self._watched is None else self._watched[0]

    def ready(self, event: int) -> bool:
        """Whether ``zmq.EVENTS`` has ``event`` (``zmq.POLLIN``/``zmq.POLLOUT``) now."""
        events = self.getsockopt(_EVENTS)
        assert isinstance(events, int)
        return bool(events & event)

    def close(self, linger: int | None = None) -> None:
        self.unwatch()
        super().close(linger=linger)


_S = TypeVar("_S", bound=zmq.Socket[Any])


def _plain_socket(context: zmq.Context[Any], kind: int) -> SyncSocket:
    """A :class:`SyncSocket` of ``kind`` on ``context`` (a ``zmq.asyncio.Context`` too),
    made through ``context.socket`` so that ``context.destroy()`` closes it too."""
    socket = context.socket(kind, socket_class=SyncSocket)
    assert isinstance(socket, SyncSocket)
    return socket


def _tcp(host: str) -> str:
    return f"tcp://[{host}]" if ":" in host else f"tcp://{host}"


def _bind(
    socket: zmq.Socket[Any], host: str, port: int | None, port_range: tuple[int, int] | None
) -> int:
    """Bind ``socket`` and return its port: ``port`` exactly (0: any free one), else a random
    port of ``port_range`` (first and last inclusive), else any free one."""
    if ":" in host:
        socket.setsockopt(zmq.IPV6, 1)
    if port is None and port_range is not None:
        first, last = port_range
        if not 0 < first <= last <= 65535:
            raise ValueError(f"bad port range {port_range!r}")
        return int(
            socket.bind_to_random_port(
                _tcp(host), min_port=first, max_port=last + 1, max_tries=max(100, last - first + 1)
            )
        )
    socket.bind(f"{_tcp(host)}:{port if port else '*'}")
    endpoint = socket.getsockopt(zmq.LAST_ENDPOINT)
    assert isinstance(endpoint, bytes)
    return int(endpoint.decode().rsplit(":", 1)[1])


class Publisher:
    """A PUB socket that stamps every message with ``seq`` and ``time``.

    Messages are two frames: the topic (ASCII) and the payload (UTF-8 JSON object). The
    payload is the body given to :meth:`publish` plus ``seq`` (per publisher, from 0, +1 per
    message on any topic) and ``time`` (epoch seconds). A heartbeat ``{"seq", "time",
    "interval_s"}`` goes out under ``heartbeat_topic`` every ``heartbeat_interval_s`` seconds
    while :meth:`start_heartbeat` runs. PUB never blocks: beyond the high-water mark ZeroMQ
    drops messages, which subscribers see as a gap in ``seq``.

    Args:
        socket: a bound PUB socket (the publisher sends on it; the owner closes it).
        registry: validators for ``topics`` (payloads of known topics are checked before
            sending: :class:`LocalProtocolError`, nothing sent, no ``seq`` used).
        topics: topic → spec; topics not listed are sent unchecked.
        heartbeat_topic: the liveness topic, or None for no heartbeat.
        heartbeat_interval_s: seconds between heartbeats.
        clock: returns epoch seconds (for ``time``).
    """

    def __init__(
        self,
        socket: zmq.asyncio.Socket,
        *,
        registry: SchemaRegistry | None = None,
        topics: Mapping[str, TopicSpec] | None = None,
        heartbeat_topic: str | None = "heartbeat",
        heartbeat_interval_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if heartbeat_interval_s <= 0:
            raise ValueError(f"heartbeat_interval_s must be positive, not {heartbeat_interval_s}")
        self.socket = socket
        self.registry = registry or SchemaRegistry.from_package()
        self.topics: Mapping[str, TopicSpec] = topics or {}
        self.heartbeat_topic = heartbeat_topic
        self.heartbeat_interval_s = heartbeat_interval_s
        self.clock = clock
        self._seq = 0
        self._lock = asyncio.Lock()
        self._heartbeat: asyncio.Task[None] | None = None
        self.closed = False

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next message will carry (also: how many were published)."""
        return self._seq

    async def publish(self, topic: str, body: Mapping[str, Any] | AnyModel) -> dict[str, Any]:
        """Publish ``body`` under ``topic`` with the next ``seq`` and the current ``time``.

        Args:
            topic: the topic (ASCII).
            body: a JSON object (or a model of one) without ``seq`` and ``time``; keys of
                that name in it are replaced.

        Returns:
            The payload as sent (``seq``, ``time`` and the body's keys).

        Raises:
            LocalProtocolError: the payload breaks the topic's schema (nothing sent).
            InvalidState: the publisher is closed.
        """
        wire = to_json(body)
        if not isinstance(wire, dict):
            raise LocalProtocolError(
                f"a {topic!r} message body must be a JSON object, not {json_type_name(wire)}"
            )
        async with self._lock:
            if self.closed:
                raise InvalidState("the publisher is closed")
            payload = {**wire, "seq": self._seq, "time": self.clock()}
            spec = self.topics.get(topic)
            if spec is not None:
                self.registry.validator(spec.message_uri).check(payload, outbound=True)
            data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            await self.socket.send_multipart([topic.encode("ascii"), data.encode()])
            self._seq += 1
            return payload

    async def heartbeat(self) -> dict[str, Any]:
        """Publish one heartbeat now (``{"interval_s": heartbeat_interval_s}``)."""
        if self.heartbeat_topic is None:
            raise InvalidState("this publisher has no heartbeat topic")
        return await self.publish(self.heartbeat_topic, {"interval_s": self.heartbeat_interval_s})

    def start_heartbeat(self) -> None:
        """Publish a heartbeat now and then every ``heartbeat_interval_s`` (idempotent)."""
        if self.heartbeat_topic is not None and self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._beat(), name="runwire-heartbeat")

    async def _beat(self) -> None:
        while not self.closed:
            try:
                await self.heartbeat()
            except InvalidState:
                return
            except Exception:
                logger.exception("heartbeat not published")
            await asyncio.sleep(self.heartbeat_interval_s)

    async def stop_heartbeat(self) -> None:
        """Stop the periodic heartbeat."""
        task, self._heartbeat = self._heartbeat, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


Handler = Callable[[Any, RequestContext], Any]
"""A handler returns the reply's data, or an awaitable of it (an ``async def`` handler)."""


class ZmqServerBase(abc.ABC):
    """Mechanics of a generated ZeroMQ command server (ROUTER + optional PUB).

    Subclasses (the generated server bases) set :attr:`COMMANDS`, :attr:`TOPICS`,
    :attr:`ERROR_REPLY_URI` and the defaults, and declare one abstract handler per command,
    ``handle_<command>`` (the name is in the table; nothing else is ever dispatched)::

        async def handle_pause(
            self, args: models.PauseArgs, context: RequestContext
        ) -> models.ControlResult

    A handler gets the validated, typed ``args`` and a :class:`RequestContext`; it returns the
    reply's ``data`` (a generated model, or plain JSON of the same shape), or raises
    :class:`CommandError` to answer with ``{"error": {"message", "code"}}``. Any other
    exception, a handler running over ``handler_timeout_s``, or data that breaks the reply
    schema becomes an ``internal_error`` reply; the server goes on serving in every case.

    Lifecycle::

        server = MyServer()
        endpoints = await server.start("127.0.0.1", security=keys.server_security())
        ...                                  # serving in the background
        await server.publish("workflow", {"added": [], "updated": [...], "pruned": []})
        await server.stop("REQUEST(CLEAN)")  # publishes shutdown, closes everything

    or ``async with server.running(...) as endpoints:``. :meth:`serve_frame` serves one
    request frame without sockets (for tests and other transports).

    Args:
        registry: schema registry (default: the packaged schemas).
        max_message_bytes: largest request answered normally, in bytes (larger, up to the
            hard bound: a ``too_large`` error reply). Default: the manifest's.
        hard_max_message_bytes: libzmq's ``MAXMSGSIZE``: larger frames are dropped with the
            connection, unanswered (default 4 × ``max_message_bytes``).
        queue_length: the sockets' high-water marks (``RCVHWM``/``SNDHWM``), in messages.
        max_in_flight: requests handled at once; more wait in the socket's queue.
        handler_timeout_s: bound on one handler, in seconds.
        heartbeat_interval_s: seconds between heartbeats on the publish socket.
        validate_replies: check every reply against its schema before sending (on by
            default; a failure becomes an ``internal_error`` reply).
        context: a ``zmq.asyncio.Context`` to use (default: a private one, terminated by
            :meth:`stop`). The CURVE authenticator binds the context's ZAP endpoint, so one
            context serves one CURVE server.
    """

    COMMANDS: ClassVar[Mapping[str, CommandSpec]]
    TOPICS: ClassVar[Mapping[str, TopicSpec]] = {}
    ERROR_REPLY_URI: ClassVar[str | None] = None
    DEFAULT_PORT_RANGE: ClassVar[tuple[int, int] | None] = None
    DEFAULT_MAX_MESSAGE_BYTES: ClassVar[int] = 1 << 20
    HEARTBEAT_TOPIC: ClassVar[str | None] = None
    SHUTDOWN_TOPIC: ClassVar[str | None] = None

    def __init__(
        self,
        *,
        registry: SchemaRegistry | None = None,
        max_message_bytes: int | None = None,
        hard_max_message_bytes: int | None = None,
        queue_length: int = 1000,
        max_in_flight: int = 64,
        handler_timeout_s: float = 60.0,
        heartbeat_interval_s: float = 5.0,
        validate_replies: bool = True,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        self.registry = registry or SchemaRegistry.from_package()
        self.max_message_bytes = max_message_bytes or self.DEFAULT_MAX_MESSAGE_BYTES
        self.hard_max_message_bytes = hard_max_message_bytes or 4 * self.max_message_bytes
        if self.hard_max_message_bytes < self.max_message_bytes:
            raise ValueError("hard_max_message_bytes must be at least max_message_bytes")
        self.queue_length = queue_length
        self.max_in_flight = max_in_flight
        self.handler_timeout_s = handler_timeout_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.validate_replies = validate_replies
        self._own_context = context is None
        self._context = context
        self._router: SyncSocket | None = None
        self._pub: zmq.asyncio.Socket | None = None
        self._publisher: Publisher | None = None
        self._authenticator: zmq.auth.asyncio.AsyncioAuthenticator | None = None
        self._security: CurveServerSecurity | None = None
        self._serving: asyncio.Future[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._endpoints: ServerEndpoints | None = None
        self.requests_served = 0
        self.errors_sent = 0

    # --- what implementers use ------------------------------------------------------------

    @property
    def endpoints(self) -> ServerEndpoints:
        """Where the server listens. Raises InvalidState before :meth:`start`."""
        if self._endpoints is None:
            raise InvalidState("the server is not started")
        return self._endpoints

    @property
    def publisher(self) -> Publisher:
        """The publisher (PUB). Raises InvalidState before :meth:`start` or without one."""
        if self._publisher is None:
            raise InvalidState("the server has no running publisher")
        return self._publisher

    async def publish(self, topic: str, body: Mapping[str, Any] | AnyModel) -> dict[str, Any]:
        """Publish on the server's PUB socket; see :meth:`Publisher.publish`."""
        return await self.publisher.publish(topic, body)

    @classmethod
    def command_names(cls) -> list[str]:
        """The registered command names, in manifest order (what ``api`` lists)."""
        return list(cls.COMMANDS)

    @classmethod
    def describe_command(cls, name: str) -> str:
        """A command's documentation: its summary, then its args schema's description.

        For an unknown name, the original's answer: ``No method by name "<name>"``.
        """
        spec = cls.COMMANDS.get(name)
        if spec is None:
            return f'No method by name "{name}"'
        doc = (spec.args_model.__doc__ or "").strip()
        return f"{spec.summary}\n\n{doc}" if doc else spec.summary

    # --- lifecycle ------------------------------------------------------------------------

    async def start(
        self,
        host: str = "127.0.0.1",
        *,
        port: int | None = None,
        publish_port: int | None = None,
        port_range: tuple[int, int] | None = None,
        security: CurveServerSecurity | None = None,
        insecure_loopback: bool = False,
        publish: bool = True,
    ) -> ServerEndpoints:
        """Bind the sockets and start serving in the background.

        Args:
            host: the bind address (``0.0.0.0`` or ``*`` for all interfaces; IPv6 allowed).
            port, publish_port: exact ports (0: any free port). When None, a random port of
                ``port_range`` (default :attr:`DEFAULT_PORT_RANGE`, the manifest's), else any
                free port.
            port_range: (first, last), inclusive.
            security: CURVE keys; required unless ``insecure_loopback``.
            insecure_loopback: plain TCP, allowed only on a loopback ``host``.
            publish: also bind the PUB socket (with heartbeat when the interface has a
                heartbeat topic).

        Returns:
            The endpoints (ports actually bound).

        Raises:
            ValueError: no keys and not ``insecure_loopback``, both given, or
                ``insecure_loopback`` on a non-loopback ``host``.
            CurveKeyError: the authorised-keys directory is unusable.
            InvalidState: already started.
            zmq.ZMQError: a bind failed (address in use, no free port in the range).
        """
        if self._router is not None:
            raise InvalidState("the server is already started")
        if security is None and not insecure_loopback:
            raise ValueError(
                "CurveZMQ keys are required: pass security=CurveServerSecurity(...), or "
                "insecure_loopback=True for plain TCP on a loopback address"
            )
        if security is not None and insecure_loopback:
            raise ValueError("give either security or insecure_loopback, not both")
        if insecure_loopback:
            require_loopback(host)
        if self._context is None:
            self._context = zmq.asyncio.Context()
        context = self._context
        self._security = security
        range_ = port_range or self.DEFAULT_PORT_RANGE
        try:
            if security is not None:
                check_authorized_keys_dir(security.authorized_keys_dir)
                self._authenticator = zmq.auth.asyncio.AsyncioAuthenticator(context)
                self._authenticator.start()
                self._authenticator.configure_curve(
                    domain="*", location=str(security.authorized_keys_dir)
                )
            router = self._router = self._configure(_plain_socket(context, zmq.ROUTER), security)
            router.setsockopt(zmq.MAXMSGSIZE, self.hard_max_message_bytes)
            bound_port = _bind(router, host, port, range_)
            bound_publish: int | None = None
            if publish:
                pub = self._pub = self._configure(context.socket(zmq.PUB), security)
                bound_publish = _bind(pub, host, publish_port, range_)
                self._publisher = Publisher(
                    pub,
                    registry=self.registry,
                    topics={spec.topic: spec for spec in self.TOPICS.values()},
                    heartbeat_topic=self.HEARTBEAT_TOPIC,
                    heartbeat_interval_s=self.heartbeat_interval_s,
                )
        except BaseException:
            await self._close_sockets()
            raise
        self._endpoints = ServerEndpoints(
            host=host,
            port=bound_port,
            publish_port=bound_publish,
            security="none" if security is None else "curve",
            server_public_key=None if security is None else security.keypair.public,
        )
        loop = asyncio.get_running_loop()
        self._serving = loop.create_future()
        router.watch(loop, self._drain)
        self._drain()
        if self._publisher is not None:
            self._publisher.start_heartbeat()
        logger.info("serving on %s (%s)", self._endpoints.address(), self._endpoints.security)
        return self._endpoints

    def _configure(self, socket: _S, security: CurveServerSecurity | None) -> _S:
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.RCVHWM, self.queue_length)
        socket.setsockopt(zmq.SNDHWM, self.queue_length)
        if security is not None:
            socket.setsockopt(zmq.CURVE_SECRETKEY, security.keypair.secret)
            socket.setsockopt(zmq.CURVE_PUBLICKEY, security.keypair.public)
            socket.setsockopt(zmq.CURVE_SERVER, 1)
        return socket

    def reload_authorized_keys(self) -> None:
        """Read the authorised client keys directory again (after adding a client's key).

        Raises:
            CurveKeyError: the directory became unusable (the old allow-list stays).
            InvalidState: the server is not running with CURVE.
        """
        if self._authenticator is None or self._security is None:
            raise InvalidState("the server is not running with CURVE")
        check_authorized_keys_dir(self._security.authorized_keys_dir)
        self._authenticator.configure_curve(
            domain="*", location=str(self._security.authorized_keys_dir)
        )

    async def serve_forever(self) -> None:
        """Wait until the server stops (after :meth:`start`)."""
        if self._serving is None:
            raise InvalidState("the server is not started")
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._serving)

    async def stop(self, reason: str = "stopped", *, drain_s: float = 2.0) -> None:
        """Stop serving: publish ``shutdown`` (``{"reason"}``), stop the heartbeat, let
        requests in flight finish for up to ``drain_s`` seconds (then cancel them), close
        the sockets, stop the authenticator and terminate a private context. Idempotent."""
        self._stop_reading()
        if self._in_flight:
            _, pending = await asyncio.wait(set(self._in_flight), timeout=drain_s)
            for leftover in pending:
                leftover.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._publisher is not None:
            await self._publisher.stop_heartbeat()
            if self.SHUTDOWN_TOPIC is not None and not self._publisher.closed:
                try:
                    await self._publisher.publish(self.SHUTDOWN_TOPIC, {"reason": reason})
                except Exception:
                    logger.exception("shutdown message not published")
            self._publisher.closed = True
        await self._close_sockets()

    def _stop_reading(self) -> None:
        """Stop reading requests (replies of requests in flight are still sent)."""
        if self._router is not None:
            self._router.unwatch()
        serving, self._serving = self._serving, None
        if serving is not None and not serving.done():
            serving.set_result(None)

    async def _close_sockets(self) -> None:
        self._stop_reading()
        if self._pub is not None:
            # give the shutdown message a bounded chance to leave
            self._pub.setsockopt(zmq.LINGER, 500)
        for socket in (self._router, self._pub):
            if socket is not None:
                socket.close()
        self._router = self._pub = None
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
        if self._own_context and self._context is not None:
            context, self._context = self._context, None
            await asyncio.to_thread(context.term)

    @contextlib.asynccontextmanager
    async def running(
        self, host: str = "127.0.0.1", **options: Any
    ) -> AsyncIterator[ServerEndpoints]:
        """``async with server.running(host, **start_options) as endpoints:`` start, then stop."""
        endpoints = await self.start(host, **options)
        try:
            yield endpoints
        finally:
            await self.stop()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- the serving loop -----------------------------------------------------------------

    def _drain(self) -> None:
        """Read every waiting request (up to ``max_in_flight`` in flight) and answer each.

        Called when the router's FD is readable, after each reply a task sends and when a
        task finishes (the FD is edge-triggered: whatever is queued must be read now). A
        request whose handler is a plain function is answered right here, in this turn of
        the event loop; one whose handler returns an awaitable is finished by a task. After
        ``_DRAIN_BATCH`` requests it yields to other work and reads on in the next turn."""
        router = self._router
        if router is None or router.watched_by is None:
            return
        for _ in range(_DRAIN_BATCH):
            if len(self._in_flight) >= self.max_in_flight or router.watched_by is None:
                return  # full (a finishing task drains again), or stopped meanwhile
            try:
                if not router.ready(_POLLIN):
                    return
                frames = router.recv_multipart(_NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                if exc.errno in (zmq.ETERM, zmq.ENOTSOCK):
                    self._stop_reading()
                    return
                logger.exception("receive failed; serving on")
                continue
            route, body = _split_route(frames)
            if len(body) != 1:
                self.requests_served += 1
                self._send(
                    router,
                    route,
                    self._error(
                        f"Request must be one frame, got {len(body)}", "invalid_request", None
                    ),
                )
                continue
            outcome = self._begin(body[0], route[0] if route else b"")
            if isinstance(outcome, bytes):
                # the loop's next EVENTS check also catches an edge this send consumed
                self._send(router, route, outcome)
                continue
            task = asyncio.ensure_future(self._answer_later(router, route, outcome))
            self._in_flight.add(task)
            task.add_done_callback(self._done)
        # a long burst: let other work run, then read on (the FD will not signal again)
        loop = router.watched_by
        if loop is not None:
            loop.call_soon(self._drain)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("request task failed", exc_info=task.exception())
        self._drain()

    def _send(self, router: SyncSocket, route: list[bytes], reply: bytes) -> None:
        if router.closed:
            return
        try:
            # ROUTER never blocks a send: beyond SNDHWM (or to a peer gone) libzmq drops it
            for frame in route:
                router.send(frame, _SNDMORE_NOBLOCK)
            router.send(reply, _NOBLOCK)
        except zmq.ZMQError as exc:
            logger.warning("reply not sent to %r: %s", route[0] if route else b"", exc)

    async def _answer_later(
        self, router: SyncSocket, route: list[bytes], pending: Awaitable[bytes]
    ) -> None:
        self._send(router, route, await pending)
        # a send may consume the FD's edge: look for requests that arrived meanwhile
        self._drain()

    async def serve_frame(self, frame: bytes, *, peer: bytes = b"") -> bytes:
        """Serve one request frame and return the reply frame. Never raises (except
        cancellation): every failure becomes an error envelope."""
        outcome = self._begin(frame, peer)
        return outcome if isinstance(outcome, bytes) else await outcome

    def _begin(self, frame: bytes, peer: bytes) -> bytes | Coroutine[Any, Any, bytes]:
        """Decode, validate and dispatch one request frame. Returns the reply frame when the
        handler returned its data at once (a plain ``def`` handler), else a coroutine that
        awaits the handler (bounded by ``handler_timeout_s``) and returns the reply frame.
        Never raises: every failure becomes an error envelope."""
        self.requests_served += 1
        request_id: str | None = None
        try:
            request = decode_request(frame, max_message_bytes=self.max_message_bytes)
            request_id = request.request_id
            spec = self.COMMANDS.get(request.command)
            if spec is None:
                raise EnvelopeError(
                    f"No method by the name {request.command!r}", "unknown_command", request_id
                )
            result = self._dispatch(spec, request.message, request_id, peer)
            if inspect.isawaitable(result):
                return self._finish(spec, result, request_id)
            return self._encode_data(spec, result, request_id)
        except Exception as exc:
            return self._failure(exc, request_id)

    async def _finish(
        self, spec: CommandSpec, pending: Awaitable[Any], request_id: str | None
    ) -> bytes:
        bound = asyncio.timeout(self.handler_timeout_s)
        try:
            async with bound:
                data = await pending
        except TimeoutError as exc:
            if not bound.expired():
                return self._failure(exc, request_id)  # the handler's own TimeoutError
            logger.error("handler timed out after %s s", self.handler_timeout_s)
            return self._error(
                f"internal error: the command did not finish within {self.handler_timeout_s:g} s",
                "internal_error",
                request_id,
            )
        except Exception as exc:
            return self._failure(exc, request_id)
        return self._encode_data(spec, data, request_id)

    def _failure(self, exc: Exception, request_id: str | None) -> bytes:
        """The error envelope for a failure while serving a request."""
        if isinstance(exc, EnvelopeError):
            return self._error(exc.message, exc.code, exc.request_id)
        if isinstance(exc, CommandError):
            return self._error(exc.message, exc.code, request_id)
        if isinstance(exc, ProtocolError):
            return self._error(exc.message, exc.error_type, request_id)
        logger.error("handler failed; serving on", exc_info=exc)
        return self._error(
            f"internal error: {type(exc).__name__}: {exc}", "internal_error", request_id
        )

    def _dispatch(
        self, spec: CommandSpec, message: Mapping[str, Any], request_id: str | None, peer: bytes
    ) -> Any:
        """Validate the request against its schema and call the handler; returns what the
        handler returns (data, or an awaitable of it)."""
        validator = self.registry.validator(spec.request_uri)
        if not validator.is_valid(message):
            try:
                validator.check(message)
            except RemoteProtocolError as exc:
                pointer = exc.violation.instance_pointer if exc.violation else ""
                code = "invalid_args" if pointer.startswith("/args") else "invalid_request"
                raise EnvelopeError(exc.message, code, request_id) from exc
        # The schema has judged the request; lax mode only lets the model agree with it.
        args = spec.args_model.model_validate(message["args"], strict=False)
        meta = message.get("meta")
        context = RequestContext(
            command=spec.name,
            request_id=request_id,
            meta=meta if isinstance(meta, dict) else None,
            message=message,
            peer=peer,
            received_s=time.time(),
        )
        handler: Handler = getattr(self, spec.handler)
        return handler(args, context)

    def _encode_data(self, spec: CommandSpec, data: Any, request_id: str | None) -> bytes:
        wire = to_json(data)
        reply: dict[str, Any] = {"data": wire}
        if request_id is not None:
            reply["id"] = request_id
        if self.validate_replies:
            validator = self.registry.validator(spec.reply_uri)
            if not validator.is_valid(reply):
                try:
                    validator.check(reply, outbound=True)
                except LocalProtocolError as exc:
                    logger.error("reply to %r not sent: %s", spec.name, exc)
                    return self._error(
                        f"internal error: the reply to {spec.name!r} breaks its schema",
                        "internal_error",
                        request_id,
                    )
        try:
            return encode_reply(wire, request_id)
        except (TypeError, ValueError) as exc:
            logger.error("reply to %r not serialisable: %s", spec.name, exc)
            return self._error(
                f"internal error: the reply to {spec.name!r} is not JSON: {exc}",
                "internal_error",
                request_id,
            )

    def _error(self, message: str, code: str, request_id: str | None) -> bytes:
        self.errors_sent += 1
        return encode_error(message, code, request_id)


def _split_route(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Split a ROUTER message into its routing envelope (up to and including the empty
    delimiter a REQ peer adds) and its body frames."""
    for index in range(1, len(frames)):
        if frames[index] == b"":
            return frames[: index + 1], frames[index + 1 :]
    return frames[:1], frames[1:]


# --- client --------------------------------------------------------------------------------


class _ClientCommon(abc.ABC):
    """What the async and the blocking command clients share: the REQ socket's making and
    dropping (Lazy Pirate), the request envelope and the reply's checks. No waiting here."""

    COMMANDS: ClassVar[Mapping[str, CommandSpec]] = {}
    ERROR_REPLY_URI: ClassVar[str | None] = None

    @staticmethod
    @abc.abstractmethod
    def _default_context() -> zmq.Context[Any]:
        """The context used when none is given (the process-wide one of the right kind)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        security: CurveClientSecurity | None = None,
        timeout_s: float = DEFAULT_CLIENT_TIMEOUT_S,
        header: Mapping[str, Any] | None = None,
        context: zmq.Context[Any] | None = None,
        registry: SchemaRegistry | None = None,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
        send_request_ids: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.security = security
        self.timeout_s = timeout_s
        self.header: dict[str, Any] | None = dict(header) if header is not None else None
        self.context = context if context is not None else self._default_context()
        self.registry = registry or SchemaRegistry.from_package()
        self.max_reply_bytes = max_reply_bytes
        self.send_request_ids = send_request_ids
        self._socket: SyncSocket | None = None
        self.resets = 0

    @property
    def address(self) -> str:
        """``tcp://host:port``."""
        return f"{_tcp(self.host)}:{self.port}"

    def _connect(self) -> SyncSocket:
        socket = _plain_socket(self.context, zmq.REQ)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, self.max_reply_bytes)
        if ":" in self.host:
            socket.setsockopt(zmq.IPV6, 1)
        if self.security is not None:
            socket.setsockopt(zmq.CURVE_SECRETKEY, self.security.keypair.secret)
            socket.setsockopt(zmq.CURVE_PUBLICKEY, self.security.keypair.public)
            socket.setsockopt(zmq.CURVE_SERVERKEY, self.security.server_public_key)
        socket.connect(self.address)
        return socket

    def _drop(self) -> bool:
        """Close the REQ socket (linger 0, which stops any FD watch); True if there was one."""
        socket, self._socket = self._socket, None
        if socket is None:
            return False
        socket.close(linger=0)
        return True

    def _reset(self) -> None:
        """Lazy Pirate: drop the REQ socket (linger 0); the next call makes a new one."""
        if self._drop():
            self.resets += 1

    def close(self) -> None:
        """Close the socket (the context is left alone). The client can be used again."""
        self._drop()

    def _timed_out(self, timeout_s: float, what: str) -> Timeout:
        self._reset()
        return Timeout(timeout_s, f"reply to {what or 'request'} from {self.address}")

    def build_request(
        self,
        command: str,
        args: JsonLike = None,
        *,
        meta: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """The request envelope: ``{"command", "args", "meta"?, "id"?}``; ``meta`` is the
        client's header merged with ``meta`` (as the original merges ``req_meta``)."""
        wire_args = to_json(args)
        message: dict[str, Any] = {
            "command": command,
            "args": {} if wire_args is None else wire_args,
        }
        merged = {**(self.header or {}), **(meta or {})}
        if merged or self.header is not None:
            message["meta"] = merged
        if request_id is not None:
            message["id"] = request_id
        return message

    def _encode_request(
        self, command: str, args: JsonLike, meta: Mapping[str, Any] | None
    ) -> tuple[bytes, CommandSpec | None, str | None]:
        """The request frame, the command's spec (None: unchecked) and the id sent.

        Raises:
            LocalProtocolError: the request breaks its schema, or is not JSON.
        """
        request_id = uuid.uuid4().hex if self.send_request_ids else None
        message = self.build_request(command, args, meta=meta, request_id=request_id)
        spec = self.COMMANDS.get(command)
        if spec is not None:
            self.registry.validator(spec.request_uri).check(message, outbound=True)
        try:
            frame = encode_request(message)
        except (TypeError, ValueError) as exc:
            raise LocalProtocolError(f"request is not JSON: {exc}") from exc
        return frame, spec, request_id

    def _read_reply(
        self, raw: bytes, command: str, spec: CommandSpec | None, request_id: str | None
    ) -> Any:
        try:
            reply = strict_json.loads(raw)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise RemoteProtocolError(f"reply to {command!r} is not JSON: {exc}") from exc
        if not isinstance(reply, dict):
            raise RemoteProtocolError(
                f"reply to {command!r} must be a JSON object, not {json_type_name(reply)}"
            )
        echoed = reply.get("id")
        if request_id is not None and echoed is not None and echoed != request_id:
            raise RemoteProtocolError(
                f"reply to {command!r} echoes id {echoed!r}, not {request_id!r}"
            )
        if "error" in reply:
            if self.ERROR_REPLY_URI is not None:
                self.registry.validator(self.ERROR_REPLY_URI).check(reply)
            error = reply["error"]
            raise RequestError(
                error if isinstance(error, dict) else {"message": str(error)}, command, request_id
            )
        if spec is not None:
            self.registry.validator(spec.reply_uri).check(reply)
        elif "data" not in reply:
            raise RemoteProtocolError(f"reply to {command!r} has neither data nor error")
        return reply["data"]


class ZmqClientBase(_ClientCommon, AsyncClosingContext):
    """Mechanics of a generated async ZeroMQ command client (REQ, Lazy Pirate).

    One request at a time per client (calls from several tasks queue up on a lock); use
    several clients for parallel requests. Every call has a timeout; on a timeout, or any
    failure while a request is outstanding (cancellation included), the REQ socket is
    closed with linger 0 and the next call makes a new one. Requests are not resent
    (control commands are not idempotent): the caller decides whether to retry.

    The socket is driven from the event loop (``loop.add_reader`` on its ``zmq.FD``, as the
    server's), so it needs a selector event loop (the default on POSIX).

    Args:
        host, port: where the server's request socket listens.
        security: CURVE keys; None only for a server run with ``insecure_loopback``.
        timeout_s: default bound on one call, in seconds (the original's default: 5).
        header: the ``meta`` header sent with every request (the original's ``header``),
            or None to send none.
        context: a ``zmq.asyncio.Context`` (default: the process-wide instance).
        registry: schema registry (default: the packaged schemas).
        max_reply_bytes: largest reply accepted; libzmq drops larger ones (then: Timeout).
        send_request_ids: send the ``id`` extension and check it is echoed.
    """

    _waiter: asyncio.Future[None] | None = None
    _lock: asyncio.Lock | None = None

    @staticmethod
    def _default_context() -> zmq.Context[Any]:
        return zmq.asyncio.Context.instance()

    def _wake(self) -> None:
        """The socket's FD is readable: wake the call waiting on it (it checks EVENTS)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait_for(self, socket: SyncSocket, event: int, deadline: float) -> bool:
        """Wait until ``socket`` has ``event`` (``zmq.POLLIN``/``POLLOUT``) in ``zmq.EVENTS``,
        at most until ``deadline`` (loop time). True when it has, False on the deadline."""
        loop = asyncio.get_running_loop()
        while not socket.ready(event):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            waiter = self._waiter = loop.create_future()
            timer = loop.call_at(deadline, self._wake)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        return True

    async def request(
        self,
        command: str,
        args: JsonLike = None,
        *,
        timeout_s: float | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one command and return the reply's ``data`` (JSON), exactly as sent.

        A command of :attr:`COMMANDS` is validated before it is sent and its reply after;
        other commands (talking to a server with more commands) go unchecked.

        Raises:
            LocalProtocolError: the request breaks its schema (nothing sent).
            RequestError: the server answered with the error envelope.
            RemoteProtocolError: the reply is not JSON, not an object, breaks its schema or
                echoes another id.
            Timeout: no reply within the timeout (also what an unauthorised CURVE client
                sees: the server drops it silently). The socket was reset.
        """
        frame, spec, request_id = self._encode_request(command, args, meta)
        raw = await self.exchange(frame, timeout_s=timeout_s, what=command)
        return self._read_reply(raw, command, spec, request_id)

    async def exchange(
        self, frame: bytes, *, timeout_s: float | None = None, what: str = ""
    ) -> bytes:
        """Send one raw frame and return the raw reply frame (Lazy Pirate, timeout).

        Raises:
            Timeout: no reply within the timeout (the socket was reset).
        """
        timeout = self.timeout_s if timeout_s is None else timeout_s
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            loop = asyncio.get_running_loop()
            if self._socket is not None and (
                self._socket.closed or self._socket.watched_by is not loop
            ):
                self._drop()  # closed by context.destroy(), or made under another loop
            if self._socket is None:
                socket = self._connect()
                try:
                    socket.watch(loop, self._wake)
                except BaseException:
                    socket.close(linger=0)
                    raise
                self._socket = socket
            socket = self._socket
            deadline = loop.time() + max(0.0, timeout)
            try:
                # REQ queues a send even before the connection is up; wait only if it cannot
                while True:
                    try:
                        socket.send(frame, _NOBLOCK)
                        break
                    except zmq.Again:
                        if not await self._wait_for(socket, _POLLOUT, deadline):
                            raise
                while True:
                    # the send may have consumed the FD's edge: EVENTS is checked first
                    if not await self._wait_for(socket, _POLLIN, deadline):
                        raise zmq.Again()
                    try:
                        reply = socket.recv(_NOBLOCK)
                        break
                    except zmq.Again:
                        continue
            except zmq.Again:
                raise self._timed_out(timeout, what) from None
            except BaseException:
                self._reset()
                raise
        assert isinstance(reply, bytes)
        return reply


class ZmqSyncClientBase(_ClientCommon, ClosingContext):
    """Mechanics of a generated blocking ZeroMQ command client (REQ, Lazy Pirate).

    The same requests, checks, errors and Lazy Pirate recovery as :class:`ZmqClientBase`,
    without an event loop: each call blocks (``ZMQ_SNDTIMEO``/``ZMQ_RCVTIMEO`` set to the
    time left) until the reply comes or the timeout passes (the zguide's ``lpclient``). Usable anywhere, also from code running in
    an event loop (it then blocks that loop for the call). A ZeroMQ socket belongs to one
    thread: use one client per thread. Close it (or use ``with``) to release the socket.

    Args: those of :class:`ZmqClientBase`, except ``context``: a ``zmq.Context`` (a
    ``zmq.asyncio.Context`` works too; default: the process-wide ``zmq.Context.instance()``).
    """

    @staticmethod
    def _default_context() -> zmq.Context[Any]:
        return zmq.Context.instance()

    def request(
        self,
        command: str,
        args: JsonLike = None,
        *,
        timeout_s: float | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one command and return the reply's ``data`` (JSON), exactly as sent.

        Raises: as :meth:`ZmqClientBase.request`.
        """
        frame, spec, request_id = self._encode_request(command, args, meta)
        raw = self.exchange(frame, timeout_s=timeout_s, what=command)
        return self._read_reply(raw, command, spec, request_id)

    def exchange(self, frame: bytes, *, timeout_s: float | None = None, what: str = "") -> bytes:
        """Send one raw frame and return the raw reply frame (Lazy Pirate, timeout).

        Raises:
            Timeout: no reply within the timeout (the socket was reset).
        """
        timeout = self.timeout_s if timeout_s is None else timeout_s
        if self._socket is not None and self._socket.closed:
            self._drop()  # closed by context.destroy()
        if self._socket is None:
            self._socket = self._connect()
        socket = self._socket
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            # blocking calls bounded by SNDTIMEO/RCVTIMEO (cheaper than zmq_poll first)
            socket.setsockopt(_SNDTIMEO, _remaining_ms(deadline))
            socket.send(frame)
            socket.setsockopt(_RCVTIMEO, _remaining_ms(deadline))
            reply = socket.recv()
        except zmq.Again:
            raise self._timed_out(timeout, what) from None
        except BaseException:
            self._reset()
            raise
        assert isinstance(reply, bytes)
        return reply


def _remaining_ms(deadline: float) -> int:
    """Whole milliseconds (rounded up, at least 0) until ``deadline`` (``time.monotonic``)."""
    return max(0, math.ceil((deadline - time.monotonic()) * 1000))


# --- subscriber ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    """One message received from a publisher.

    Attributes:
        topic: the topic.
        payload: the decoded JSON payload.
        message: the payload as the topic's generated model (None for an unknown topic).
        step: what its ``seq`` says (``missed`` messages lost just before it, ``restarted``),
            or None when the payload has no integer ``seq``.
    """

    topic: str
    payload: Any
    message: AnyModel | None = None
    step: SequenceStep | None = field(default=None)

    @property
    def missed(self) -> int:
        """Messages lost just before this one (0 when none, or unknown)."""
        return 0 if self.step is None else self.step.missed


class ZmqSubscriberBase(AsyncClosingContext):
    """Mechanics of a generated publish subscriber (SUB).

    Subscribes to every topic (the sequence counts messages on all topics, so gap
    detection needs them all) and hands out only ``topics`` (default: all) and the shutdown
    topic's message (always). Tracks ``seq``
    (:attr:`tracker`) and the publisher's liveness: a heartbeat's ``interval_s`` (or
    ``heartbeat_interval_s`` given here) sets the interval, and :meth:`receive` raises
    :class:`PublisherDead` after ``dead_after`` intervals without any message.

    Iterating (``async for published in subscriber``) ends after the shutdown topic's
    message has been handed out.

    Args:
        host, port: where the server's PUB socket listens.
        security: CURVE keys (the same client keys as for requests), or None.
        topics: topics to hand out (None: all).
        heartbeat_interval_s: the interval if known in advance (else learned).
        dead_after: silence, in heartbeat intervals, that means dead.
        validate: check payloads of known topics against their schema.
        context, registry, max_message_bytes, queue_length: as for clients.
    """

    TOPICS: ClassVar[Mapping[str, TopicSpec]] = {}
    HEARTBEAT_TOPIC: ClassVar[str | None] = None
    SHUTDOWN_TOPIC: ClassVar[str | None] = None

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        security: CurveClientSecurity | None = None,
        topics: Iterable[str] | None = None,
        heartbeat_interval_s: float | None = None,
        dead_after: float = 3.0,
        validate: bool = True,
        context: zmq.asyncio.Context | None = None,
        registry: SchemaRegistry | None = None,
        max_message_bytes: int = DEFAULT_MAX_REPLY_BYTES,
        queue_length: int = 10000,
    ) -> None:
        self.host = host
        self.port = port
        self.security = security
        self.topics = None if topics is None else frozenset(topics)
        self.validate = validate
        self.context = context or zmq.asyncio.Context.instance()
        self.registry = registry or SchemaRegistry.from_package()
        self.max_message_bytes = max_message_bytes
        self.queue_length = queue_length
        self.tracker = SequenceTracker()
        self.liveness = Liveness(
            heartbeat_interval_s, dead_after=dead_after, now_s=time.monotonic()
        )
        self._by_topic = {spec.topic: spec for spec in self.TOPICS.values()}
        self._socket: zmq.asyncio.Socket | None = None
        self.shut_down = False

    @property
    def address(self) -> str:
        """``tcp://host:port``."""
        return f"{_tcp(self.host)}:{self.port}"

    def connect(self) -> None:
        """Connect now (otherwise the first :meth:`receive` does). Silence counts from here."""
        if self._socket is not None:
            return
        socket = self.context.socket(zmq.SUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        socket.setsockopt(zmq.RCVHWM, self.queue_length)
        if ":" in self.host:
            socket.setsockopt(zmq.IPV6, 1)
        if self.security is not None:
            socket.setsockopt(zmq.CURVE_SECRETKEY, self.security.keypair.secret)
            socket.setsockopt(zmq.CURVE_PUBLICKEY, self.security.keypair.public)
            socket.setsockopt(zmq.CURVE_SERVERKEY, self.security.server_public_key)
        socket.setsockopt(zmq.SUBSCRIBE, b"")
        socket.connect(self.address)
        self._socket = socket
        self.liveness.message(time.monotonic())

    def close(self) -> None:
        """Close the socket."""
        socket, self._socket = self._socket, None
        if socket is not None:
            socket.close(linger=0)

    async def __aenter__(self) -> Self:
        self.connect()
        return self

    def __aiter__(self) -> AsyncIterator[Published]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Published]:
        while not self.shut_down:
            yield await self.receive()

    async def receive(self, timeout_s: float | None = None) -> Published:
        """The next message of a handed-out topic.

        Raises:
            PublisherDead: no message on any topic for ``dead_after`` heartbeat intervals.
            Timeout: ``timeout_s`` passed first (the subscriber stays usable).
            RemoteProtocolError: a malformed message (wrong frame count, not JSON, not an
                object, or against its topic's schema); the subscriber stays usable.
        """
        self.connect()
        assert self._socket is not None
        loop = asyncio.get_running_loop()
        wait_until = None if timeout_s is None else loop.time() + timeout_s
        while True:
            now = time.monotonic()
            dead_at = self.liveness.deadline_s()
            if dead_at is not None and now > dead_at:
                limit = self.liveness.silence_limit_s or 0.0
                raise PublisherDead(limit, f"any message from the publisher at {self.address}")
            waits = []
            if dead_at is not None:
                waits.append(dead_at - now)
            if wait_until is not None:
                waits.append(wait_until - loop.time())
            wait_s = max(0.0, min(waits)) if waits else None
            ready = await self._socket.poll(None if wait_s is None else wait_s * 1000 + 1)
            if not ready:
                if wait_until is not None and loop.time() >= wait_until:
                    assert timeout_s is not None
                    raise Timeout(timeout_s, f"a message from {self.address}")
                continue
            frames = await self._socket.recv_multipart()
            published = self._accept(frames, time.monotonic())
            if published is not None:
                return published

    def _accept(self, frames: list[bytes], now_s: float) -> Published | None:
        """Decode one message, update seq and liveness; None when it is not handed out."""
        self.liveness.message(now_s)
        if len(frames) != 2:
            raise RemoteProtocolError(f"published message has {len(frames)} frames, not 2")
        topic = frames[0].decode("ascii", errors="replace")
        try:
            payload = strict_json.loads(frames[1])
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise RemoteProtocolError(f"{topic!r} payload is not JSON: {exc}") from exc
        step = None
        if isinstance(payload, dict):
            seq = payload.get("seq")
            if isinstance(seq, int) and not isinstance(seq, bool):
                step = self.tracker.receive(seq)
                if step.missed:
                    logger.warning("missed %d message(s) before seq %d", step.missed, seq)
            interval = payload.get("interval_s")
            if topic == self.HEARTBEAT_TOPIC and isinstance(interval, int | float):
                self.liveness.message(now_s, float(interval))
        else:
            raise RemoteProtocolError(
                f"{topic!r} payload must be a JSON object, not {json_type_name(payload)}"
            )
        if topic == self.SHUTDOWN_TOPIC:
            self.shut_down = True
        if self.topics is not None and topic not in self.topics and topic != self.SHUTDOWN_TOPIC:
            return None
        spec = self._by_topic.get(topic)
        message: AnyModel | None = None
        if spec is not None:
            if self.validate:
                self.registry.validator(spec.message_uri).check(payload)
            message = spec.model.model_validate(payload, strict=False)
        return Published(topic=topic, payload=payload, message=message, step=step)
