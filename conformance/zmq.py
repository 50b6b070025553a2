"""Recording ZeroMQ connections for conformance cases (manifest transport ``zmq``).

Two probes, both on ``zmq.asyncio``, both recording every frame on the case's context like
the JSON-lines probe (:mod:`runwire.conformance.jsonlines`):

- :class:`ZmqProbe`: a REQ socket to a request socket (a ROUTER or REP server). A case may
  send anything (valid requests, invalid ones, raw bytes, several frames at once) and sees
  exactly what comes back; :meth:`ZmqProbe.expect_no_reply` checks that nothing comes back
  (CurveZMQ drops unauthorised peers silently). After a timeout the socket is closed and a
  fresh one made (the Lazy Pirate pattern), so the probe stays usable.
- :class:`ZmqSubscription`: a SUB socket subscribed to every topic of a PUB socket. Each
  message is two frames, a topic and a JSON payload; the payload is recorded (the topic in
  the frame's note) and validated against the schema the manifest gives for that topic.

Security comes from the family (:attr:`FamilySpec.zmq_security`: CurveZMQ client keys, or
None for plain TCP) unless the case passes its own (an unauthorised key, plain TCP against a
CURVE server). Every wait is bounded by the step limit unless a case gives its own bound.

Typical use::

    async with await ctx.open_zmq("runtime") as conn:
        reply = await conn.request_reply("ping_workflow", {"command": "ping_workflow",
                                                           "args": {}})
    async with await ctx.subscribe_zmq("publish") as sub:
        first = await sub.receive(what="a first message")
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import zmq
import zmq.asyncio

from runwire.runtime.closing import AclosingContext
from runwire.runtime.codec import strict_json
from runwire.runtime.transport.zmq_security import CurveClientSecurity

from .case import CaseFailure, FailureKind
from .context import CaseContext, Frame, SchemaRefs
from .manifest import InterfaceInfo, OperationInfo

__all__ = [
    "DEFAULT_MAX_REPLY_BYTES",
    "PLAIN",
    "Published",
    "ZmqProbe",
    "ZmqSubscription",
]

DEFAULT_MAX_REPLY_BYTES: Final = 64 << 20
"""Largest frame a probe accepts (libzmq drops larger ones with the connection)."""

MAX_MESSAGES: Final = 100_000
"""Most published messages a subscription keeps before failing the case."""


class _Plain:
    """Marker: connect without CurveZMQ, whatever the family's options say."""

    def __repr__(self) -> str:
        return "PLAIN"


PLAIN: Final = _Plain()
"""Pass as ``security=`` to connect with plain TCP (a plaintext client of a CURVE server)."""

_DEFAULT: Final[Any] = object()

Security = CurveClientSecurity | _Plain | None


def _decode(raw: bytes) -> tuple[bool, Any]:
    """(True, value) for a frame holding one strict JSON value (UTF-8), else (False, None)."""
    try:
        return True, strict_json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False, None


def _tcp(host: str) -> str:
    return f"tcp://[{host}]" if ":" in host else f"tcp://{host}"


def _resolve_security(ctx: CaseContext, name: str, security: Any) -> CurveClientSecurity | None:
    if security is _DEFAULT:
        factory = ctx.family.spec.zmq_security
        return factory(name, ctx.options) if factory is not None else None
    if isinstance(security, _Plain) or security is None:
        return None
    assert isinstance(security, CurveClientSecurity)
    return security


def _configure(socket: zmq.Socket[Any], host: str, security: CurveClientSecurity | None) -> None:
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.MAXMSGSIZE, DEFAULT_MAX_REPLY_BYTES)
    if ":" in host:
        socket.setsockopt(zmq.IPV6, 1)
    if security is not None:
        socket.setsockopt(zmq.CURVE_SECRETKEY, security.keypair.secret)
        socket.setsockopt(zmq.CURVE_PUBLICKEY, security.keypair.public)
        socket.setsockopt(zmq.CURVE_SERVERKEY, security.server_public_key)


class ZmqProbe(AclosingContext):
    """One recording REQ connection to a ZeroMQ request socket. Make one with
    ``await ctx.open_zmq(target)``.

    Attributes:
        name: the target name (``runtime``); frames are recorded under it.
        info: the manifest entry of the target's interface.
        security: the CurveZMQ keys used, or None for plain TCP.
        last_received: the last frame received (for ``frame=`` in checks).
        resets: how many times the socket was replaced after a timeout.
    """

    def __init__(
        self, ctx: CaseContext, name: str, address: str, security: CurveClientSecurity | None
    ) -> None:
        self.ctx = ctx
        self.name = name
        self.address = address
        self.security = security
        target = ctx.target(name)
        self.host = target.host
        self.info: InterfaceInfo = ctx.interface(target.interface)
        self.last_received: Frame | None = None
        self.resets = 0
        self._context = zmq.asyncio.Context()
        self._socket: zmq.asyncio.Socket | None = None
        self._awaiting = False
        self.connection = ctx.new_connection(self.aclose)

    @classmethod
    async def open(
        cls, ctx: CaseContext, name: str | None = None, *, security: Any = _DEFAULT
    ) -> ZmqProbe:
        """A probe connected to target `name` (default: the case's interface).

        Args:
            security: CurveZMQ client keys, :data:`PLAIN` for plain TCP, or the family's
                choice (default; see :attr:`FamilySpec.zmq_security`).

        Raises:
            CaseSkip: no target, or the family's options give no keys (nor plain TCP).
        """
        name = name or ctx.case.interface
        target = ctx.target(name)
        keys = _resolve_security(ctx, name, security)
        address = f"{_tcp(target.host)}:{target.port}"
        probe = cls(ctx, name, address, keys)
        probe._connect()
        mode = "CurveZMQ" if keys is not None else "plain TCP"
        ctx.log(f"REQ connecting to {name} at {address} ({mode})")
        return probe

    def _connect(self) -> zmq.asyncio.Socket:
        if self._socket is None:
            socket = self._context.socket(zmq.REQ)
            _configure(socket, self.host, self.security)
            socket.connect(self.address)
            self._socket = socket
            self._awaiting = False
        return self._socket

    def reset(self) -> None:
        """Close the socket (linger 0); the next send makes a fresh one (Lazy Pirate)."""
        socket, self._socket = self._socket, None
        if socket is not None:
            socket.close(linger=0)
            self.resets += 1
        self._awaiting = False

    async def aclose(self) -> None:
        """Close the socket and its context."""
        socket, self._socket = self._socket, None
        if socket is not None:
            socket.close(linger=0)
        if not self._context.closed:
            self._context.destroy(linger=0)

    # -- sending -------------------------------------------------------------------------

    async def send(
        self, value: Any, *, schema: SchemaRefs | None = _DEFAULT, note: str | None = None
    ) -> Frame:
        """Send `value` as one frame of compact UTF-8 JSON and record it.

        Args:
            value: any JSON value; invalid requests are allowed (negative cases).
            schema: what to validate the sent frame against, for the report (default: the
                interface's request union; None: nothing).
            note: a few words on what the frame is for.
        """
        if schema is _DEFAULT:
            schema = self.info.request or ()
        data = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        frame = self.ctx.record_sent(
            value,
            interface=self.name,
            connection=self.connection,
            schemas=schema or (),
            note=note,
            wire_bytes=len(data),
        )
        await self._send([data])
        return frame

    async def send_raw(self, *parts: bytes, note: str | None = None) -> list[Frame]:
        """Send `parts` exactly as given: one frame each (several make one multipart
        message), and record them."""
        if not parts:
            raise ValueError("send_raw needs at least one frame")
        frames = []
        for index, part in enumerate(parts, 1):
            text = note if len(parts) == 1 else f"{note or 'multipart'} ({index}/{len(parts)})"
            frames.append(
                self.ctx.record_sent(
                    interface=self.name, connection=self.connection, raw=part, note=text
                )
            )
        await self._send(list(parts))
        return frames

    async def _send(self, parts: list[bytes]) -> None:
        if self._awaiting:  # a REQ socket must receive before it sends again
            self.reset()
        socket = self._connect()
        try:
            async with self.ctx.step(f"send to {self.name}"):
                await socket.send_multipart(parts)
        except CaseFailure:
            self.reset()
            raise
        except zmq.ZMQError as exc:
            self.reset()
            raise CaseFailure(
                f"sending to {self.name} at {self.address} failed: {exc}",
                kind=FailureKind.TRANSPORT,
            ) from exc
        self._awaiting = True

    # -- receiving -----------------------------------------------------------------------

    async def _recv(self, what: str, timeout_s: float | None) -> list[bytes] | None:
        """The next reply's frames, or None when none came within the bound (the socket is
        then reset)."""
        limit = self.ctx.timeout_s if timeout_s is None else timeout_s
        socket = self._socket
        if socket is None or not self._awaiting:
            raise CaseFailure(
                f"waiting for {what} from {self.name}, but no request is outstanding "
                f"(a bug in the case)",
                kind=FailureKind.ERROR,
            )
        try:
            ready = await socket.poll(max(0, round(limit * 1000)))
            if not ready:
                self.reset()
                return None
            parts = await socket.recv_multipart()
        except zmq.ZMQError as exc:
            self.reset()
            raise CaseFailure(
                f"receiving {what} from {self.name} failed: {exc}", kind=FailureKind.TRANSPORT
            ) from exc
        self._awaiting = False
        return list(parts)

    async def receive_frame(
        self, *, what: str = "a reply", timeout_s: float | None = None
    ) -> Frame:
        """The next reply, recorded but not judged. A reply that is not one frame of JSON
        is recorded as raw bytes (``frame.is_json`` False; several frames are joined).

        Raises:
            CaseFailure: kind TIMEOUT when nothing arrives within the step limit (or
                `timeout_s`); kind TRANSPORT when the socket fails.
        """
        parts = await self._recv(what, timeout_s)
        if parts is None:
            raise CaseFailure(
                f"no reply from {self.name} within "
                f"{self.ctx.timeout_s if timeout_s is None else timeout_s:g} s while waiting "
                f"for {what}",
                kind=FailureKind.TIMEOUT,
            )
        return self._record(parts, ())

    def _record(self, parts: list[bytes], schemas: SchemaRefs) -> Frame:
        if len(parts) == 1:
            is_json, value = _decode(parts[0])
            if is_json:
                try:
                    frame = self.ctx.record_received(
                        value,
                        interface=self.name,
                        connection=self.connection,
                        schemas=schemas,
                        wire_bytes=len(parts[0]),
                    )
                except CaseFailure as failure:
                    if failure.frame is not None:
                        self.last_received = self.ctx.frame(failure.frame)
                    raise
                self.last_received = frame
                return frame
        note = None if len(parts) == 1 else f"{len(parts)} frames, joined"
        frame = self.ctx.record_received(
            interface=self.name,
            connection=self.connection,
            raw=b"".join(parts),
            note=note,
            enforce=False,
        )
        self.last_received = frame
        return frame

    async def receive(
        self, schema: SchemaRefs, *, what: str | None = None, timeout_s: float | None = None
    ) -> Any:
        """The next reply's JSON value, validated against `schema` (alternatives allowed).

        Raises:
            CaseFailure: kind SCHEMA when it breaks the schema (frame, pointer and rule
                shown); kind PROTOCOL when it is not one frame of JSON; the kinds of
                :meth:`receive_frame`.
        """
        frame = await self.expect_frame(schema, what=what, timeout_s=timeout_s)
        return frame.value

    async def expect_frame(
        self, schema: SchemaRefs, *, what: str | None = None, timeout_s: float | None = None
    ) -> Frame:
        """Like :meth:`receive`, but returns the recorded :class:`Frame`."""
        what = what or "a reply"
        parts = await self._recv(what, timeout_s)
        if parts is None:
            raise CaseFailure(
                f"no reply from {self.name} within "
                f"{self.ctx.timeout_s if timeout_s is None else timeout_s:g} s while waiting "
                f"for {what}",
                kind=FailureKind.TIMEOUT,
            )
        frame = self._record(parts, schema)
        if not frame.is_json:
            raise CaseFailure(
                f"{frame.title()} is not one frame of JSON (expected {what}): {frame.render()}",
                kind=FailureKind.PROTOCOL,
                frame=frame.index,
            )
        return frame

    async def expect_no_reply(self, within_s: float, *, what: str = "the request") -> None:
        """Expect no reply to the request just sent within `within_s` seconds (a CurveZMQ
        server drops unauthorised peers silently). The socket is reset afterwards.

        Raises:
            CaseFailure: kind ASSERTION, showing the reply, when one arrives.
        """
        async with self.ctx.step(f"expect no reply to {what} within {within_s:g} s"):
            parts = await self._recv(f"no reply to {what}", within_s)
        if parts is not None:
            frame = self._record(parts, ())
            self.reset()
            raise CaseFailure(
                f"expected no reply to {what} within {within_s:g} s, got {frame.title()}: "
                f"{frame.render()}",
                frame=frame.index,
            )
        self.ctx.log(f"no reply to {what} within {within_s:g} s, as expected")

    # -- operations ----------------------------------------------------------------------

    def _operation(self, operation: OperationInfo | str) -> OperationInfo:
        if isinstance(operation, OperationInfo):
            return operation
        if "/" not in operation:
            operation = f"{self.ctx.manifest.family}/{self.info.name}/{operation}"
        return self.ctx.operation(operation)

    def reply_schemas(self, operation: OperationInfo | str) -> list[str]:
        """What may answer `operation`: its reply, or the interface's error reply."""
        op = self._operation(operation)
        schemas = [s for s in (op.reply, self.info.malformed_reply) if s is not None]
        if not schemas:
            raise ValueError(f"{op.conformance_id} has no reply schema (pattern {op.pattern})")
        return schemas

    async def exchange(
        self,
        operation: OperationInfo | str,
        request: Any,
        *,
        note: str | None = None,
        timeout_s: float | None = None,
    ) -> Frame:
        """Send `request` (validated against the operation's request schema for the report)
        and return the reply's frame, validated against the operation's reply or the
        interface's error reply (either is fine here; see :meth:`request_reply`)."""
        op = self._operation(operation)
        await self.send(request, schema=op.request or (), note=note)
        return await self.expect_frame(
            self.reply_schemas(op), what=f"the {op.name} reply", timeout_s=timeout_s
        )

    async def request_reply(
        self, operation: OperationInfo | str, request: Any, *, note: str | None = None
    ) -> Any:
        """Send `request` and return the reply, which must be the operation's success reply
        (an error reply FAILs the case, showing it)."""
        op = self._operation(operation)
        frame = await self.exchange(op, request, note=note)
        if op.reply is not None and frame.matched != op.reply:
            raise CaseFailure(
                f"expected the {op.name} reply, got an error reply: {frame.render()}",
                frame=frame.index,
            )
        return frame.value


@dataclass(frozen=True)
class Published:
    """One message received by a :class:`ZmqSubscription`.

    Attributes:
        topic: the topic frame, decoded (ASCII, errors replaced).
        payload: the payload's JSON value (None when it is not JSON).
        frame: the recorded frame (the payload; its note names the topic).
        received_s: monotonic time of arrival.
    """

    topic: str
    payload: Any
    frame: Frame
    received_s: float


class ZmqSubscription(AclosingContext):
    """One recording SUB connection to a ZeroMQ PUB socket, subscribed to every topic. Make
    one with ``await ctx.subscribe_zmq(target)``.

    Every message must be two frames, an ASCII topic and a JSON payload; the payload is
    validated against the schema of the manifest's ``publish`` operation for that topic
    (a message of a topic the manifest lacks is recorded, not judged). A malformed message
    FAILs the case (kind PROTOCOL or SCHEMA).

    Attributes:
        name: the target name (``publish``).
        messages: every message received so far, in order.
    """

    def __init__(
        self,
        ctx: CaseContext,
        name: str,
        address: str,
        security: CurveClientSecurity | None,
        topics: dict[str, OperationInfo],
    ) -> None:
        self.ctx = ctx
        self.name = name
        self.address = address
        self.security = security
        self.topics = topics
        self.messages: list[Published] = []
        self._context = zmq.asyncio.Context()
        target = ctx.target(name)
        socket = self._context.socket(zmq.SUB)
        _configure(socket, target.host, security)
        socket.setsockopt(zmq.RCVHWM, MAX_MESSAGES)
        socket.setsockopt(zmq.SUBSCRIBE, b"")
        socket.connect(address)
        self._socket: zmq.asyncio.Socket | None = socket
        self.connection = ctx.new_connection(self.aclose)

    @classmethod
    async def open(
        cls, ctx: CaseContext, name: str | None = None, *, security: Any = _DEFAULT
    ) -> ZmqSubscription:
        """A subscription to target `name` (default ``publish``, else the case's
        interface), to every topic.

        Args:
            security: as for :meth:`ZmqProbe.open`.

        Raises:
            CaseSkip: no target, or the family's options give no keys (nor plain TCP).
        """
        if name is None:
            name = "publish" if "publish" in ctx.manifest.target_names() else ctx.case.interface
        target = ctx.target(name)
        keys = _resolve_security(ctx, name, security)
        address = f"{_tcp(target.host)}:{target.port}"
        topics = ctx.interface(target.interface).topics()
        subscription = cls(ctx, name, address, keys, topics)
        mode = "CurveZMQ" if keys is not None else "plain TCP"
        ctx.log(f"SUB connecting to {name} at {address} ({mode})")
        return subscription

    async def aclose(self) -> None:
        """Close the socket and its context."""
        socket, self._socket = self._socket, None
        if socket is not None:
            socket.close(linger=0)
        if not self._context.closed:
            self._context.destroy(linger=0)

    async def _next(self, deadline: float, what: str, limit: float) -> Published | None:
        socket = self._socket
        if socket is None:
            raise CaseFailure(f"the subscription to {self.name} is closed", kind=FailureKind.ERROR)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            ready = await socket.poll(max(1, round(remaining * 1000)))
            if not ready:
                return None
            parts = await socket.recv_multipart()
        except zmq.ZMQError as exc:
            raise CaseFailure(
                f"receiving from {self.name} failed while waiting for {what}: {exc}",
                kind=FailureKind.TRANSPORT,
            ) from exc
        return self._accept(list(parts))

    def _accept(self, parts: list[bytes]) -> Published:
        now = time.monotonic()
        if len(self.messages) >= MAX_MESSAGES:
            raise CaseFailure(f"more than {MAX_MESSAGES} messages from {self.name}")
        if len(parts) != 2:
            frame = self.ctx.record_received(
                interface=self.name,
                connection=self.connection,
                raw=b"".join(parts),
                note=f"a published message of {len(parts)} frames, not 2",
                enforce=False,
            )
            raise CaseFailure(
                f"{frame.title()}: a published message must be two frames (topic, payload), "
                f"got {len(parts)}: {frame.render()}",
                kind=FailureKind.PROTOCOL,
                frame=frame.index,
            )
        topic = parts[0].decode("ascii", errors="replace")
        is_json, value = _decode(parts[1])
        if not is_json:
            frame = self.ctx.record_received(
                interface=self.name,
                connection=self.connection,
                raw=parts[1],
                note=f"topic {topic}",
                enforce=False,
            )
            raise CaseFailure(
                f"{frame.title()} (topic {topic!r}): the payload is not JSON: {frame.render()}",
                kind=FailureKind.PROTOCOL,
                frame=frame.index,
            )
        op = self.topics.get(topic)
        schemas: SchemaRefs = op.message if op is not None and op.message else ()
        note = f"topic {topic}" if op is not None else f"topic {topic} (not in the manifest)"
        frame = self.ctx.record_received(
            value,
            interface=self.name,
            connection=self.connection,
            schemas=schemas,
            note=note,
            wire_bytes=len(parts[1]),
        )
        published = Published(topic, value, frame, now)
        self.messages.append(published)
        return published

    async def receive(
        self, *, what: str = "a published message", timeout_s: float | None = None
    ) -> Published:
        """The next message, whatever its topic.

        Raises:
            CaseFailure: kind TIMEOUT when none arrives within the step limit (or
                `timeout_s`); kind PROTOCOL or SCHEMA for a malformed message.
        """
        return await self.wait_for(lambda m: True, what=what, timeout_s=timeout_s)

    async def wait_for(
        self,
        predicate: Callable[[Published], object],
        *,
        what: str,
        timeout_s: float | None = None,
    ) -> Published:
        """Read messages until one satisfies `predicate`; return it (every message read is
        kept in :attr:`messages`).

        Raises:
            CaseFailure: kind TIMEOUT, naming `what` and the topics seen meanwhile, when none
                does within the step limit (or `timeout_s`).
        """
        limit = self.ctx.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        seen: list[str] = []
        async with self.ctx.step(f"wait for {what}", limit + 1.0):
            while True:
                message = await self._next(deadline, what, limit)
                if message is None:
                    shown = ", ".join(seen[-10:]) or "none"
                    raise CaseFailure(
                        f"{self.name}: waited {limit:g} s for {what}, in vain (topics "
                        f"received meanwhile: {shown})",
                        kind=FailureKind.TIMEOUT,
                    )
                seen.append(message.topic)
                if predicate(message):
                    return message

    async def first(
        self,
        predicate: Callable[[Published], object],
        *,
        what: str,
        timeout_s: float | None = None,
    ) -> Published:
        """The first message received so far that satisfies `predicate`, else the next one
        to arrive (:meth:`wait_for`). For messages whose order within a batch the protocol
        leaves open."""
        for message in self.messages:
            if predicate(message):
                return message
        return await self.wait_for(predicate, what=what, timeout_s=timeout_s)

    async def collect(self, duration_s: float) -> list[Published]:
        """Every message arriving in the next `duration_s` seconds (also kept in
        :attr:`messages`)."""
        deadline = time.monotonic() + duration_s
        found: list[Published] = []
        async with self.ctx.step(f"collect messages for {duration_s:g} s", duration_s + 1.0):
            while True:
                message = await self._next(deadline, "messages", duration_s)
                if message is None:
                    return found
                found.append(message)

    async def expect_silence(self, duration_s: float, *, why: str) -> None:
        """Expect no message at all for `duration_s` seconds (an unauthorised subscriber).

        Raises:
            CaseFailure: kind ASSERTION, showing the message, when one arrives.
        """
        received = await self.collect(duration_s)
        if received:
            first = received[0]
            raise CaseFailure(
                f"expected no message ({why}) within {duration_s:g} s, got "
                f"{len(received)}, first {first.frame.title()} (topic {first.topic!r}): "
                f"{first.frame.render()}",
                frame=first.frame.index,
            )

    def topics_seen(self) -> Sequence[str]:
        """The topics of :attr:`messages`, in order."""
        return [m.topic for m in self.messages]
