"""A recording JSON-lines connection for conformance cases (manifest transport ``jsonlines``).

Unlike the generated clients, a :class:`JsonLinesProbe` lets a case send anything (valid
requests, invalid ones, raw bytes, half a line) and see exactly what comes back, including
lines that are not JSON and where the server closes. Every frame in either direction is
recorded on the case's context; every received line is validated against the schema the
case names, and a violation, a line that is not JSON, a line over the interface's
``max_message_bytes``, a stall longer than the step limit or an early close ends the case
with a FAIL that says which.

Typical use, for a request-reply and a request-stream operation::

    async with await ctx.open_jsonlines("dispatcher") as conn:
        reply = await conn.request_reply("call", {"harpcaller": 1, ...})

    async with await ctx.open_jsonlines("dispatcher") as conn:
        stream = await conn.request_stream("follow_stream", {...})
        ctx.check(stream.items == [], "no packet beyond the end", frame=stream.frames[-1])
"""

from __future__ import annotations

import asyncio
import json
import ssl as _ssl
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self

from runwire.runtime.codec import strict_json

from .case import CaseFailure, FailureKind
from .context import CaseContext, Frame, SchemaRefs
from .manifest import OperationInfo

__all__ = ["DEFAULT_MAX_ITEMS", "JsonLinesProbe", "StreamReply"]

DEFAULT_MAX_ITEMS: Final = 10_000
"""Most stream items :meth:`JsonLinesProbe.read_stream` reads before failing the case."""

_DEFAULT: Final[Any] = object()


@dataclass
class StreamReply:
    """The reply to a request-stream operation, in order.

    Attributes:
        ack: the acknowledgement, when the operation has one and the server sent it.
        items: the items.
        terminator: the terminator (the last line).
        frames: the received frames, ack to terminator.
    """

    ack: Any = None
    items: list[Any] = field(default_factory=list)
    terminator: Any = None
    frames: list[Frame] = field(default_factory=list)


def _decode(raw: bytes) -> tuple[bool, Any]:
    """(True, value) for a strict JSON line (one trailing CR stripped), else (False, None)."""
    line = raw[:-1] if raw.endswith(b"\r") else raw
    try:
        return True, strict_json.loads(line)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False, None


class JsonLinesProbe:
    """One recording connection to a JSON-lines interface. Make one with
    ``await ctx.open_jsonlines(interface)``.

    Every method that waits is bounded by the step limit (``ctx.timeout_s``).
    """

    def __init__(
        self,
        ctx: CaseContext,
        interface: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.ctx = ctx
        self.interface = interface
        self.info = ctx.interface(interface)
        self._reader = reader
        self._writer = writer
        self._closed = False
        self._eof = False
        self.last_received: Frame | None = None
        """The last frame received on this connection (for ``frame=`` in checks)."""
        self.connection = ctx.new_connection(self.close)

    @classmethod
    async def open(
        cls, ctx: CaseContext, interface: str, *, ssl: _ssl.SSLContext | None = None
    ) -> JsonLinesProbe:
        """Connect to the target of `interface` (see :meth:`CaseContext.open_jsonlines`)."""
        target = ctx.target(interface)
        context = (ssl or ctx.tls_context(interface)) if target.tls else None
        info = ctx.interface(interface)
        where = f"{interface} at {target.address}"
        try:
            async with asyncio.timeout(ctx.timeout_s):
                reader, writer = await asyncio.open_connection(
                    target.host,
                    target.port,
                    ssl=context,
                    server_hostname=target.host if context is not None else None,
                    limit=info.max_message_bytes + 2,
                )
        except TimeoutError:
            raise CaseFailure(
                f"connecting to {where} took longer than {ctx.timeout_s:g} s",
                kind=FailureKind.TIMEOUT,
            ) from None
        except OSError as exc:  # refused, unreachable, TLS rejected (ssl.SSLError is one)
            raise CaseFailure(
                f"cannot connect to {where}: {exc}", kind=FailureKind.TRANSPORT
            ) from exc
        ctx.log(f"connected to {where}")
        return cls(ctx, interface, reader, writer)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- sending -------------------------------------------------------------------------

    async def send(
        self, value: Any, *, schema: SchemaRefs | None = _DEFAULT, note: str | None = None
    ) -> Frame:
        """Send `value` as one compact JSON line and record it.

        Args:
            value: any JSON value; invalid requests are allowed (negative cases).
            schema: what to validate the sent frame against, for the report (default: the
                interface's request union, when the manifest gives one; None: nothing).
            note: a few words on what the frame is for.
        """
        if schema is _DEFAULT:
            schema = self.info.request or ()
        data = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        frame = self.ctx.record_sent(
            value,
            interface=self.interface,
            connection=self.connection,
            schemas=schema or (),
            note=note,
            wire_bytes=len(data) - 1,
        )
        await self._write(data)
        return frame

    async def send_raw(self, data: bytes, *, note: str | None = None) -> Frame:
        """Send `data` exactly as given (no newline added) and record it."""
        frame = self.ctx.record_sent(
            interface=self.interface, connection=self.connection, raw=data, note=note
        )
        await self._write(data)
        return frame

    async def finish_sending(self) -> None:
        """Half-close: tell the server nothing more will be sent (TCP only)."""
        if self._writer.can_write_eof():
            self._writer.write_eof()

    async def _write(self, data: bytes) -> None:
        try:
            async with asyncio.timeout(self.ctx.timeout_s):
                self._writer.write(data)
                await self._writer.drain()
        except TimeoutError:
            raise CaseFailure(
                f"sending to {self.interface} took longer than {self.ctx.timeout_s:g} s",
                kind=FailureKind.TIMEOUT,
            ) from None
        except OSError as exc:
            raise CaseFailure(
                f"sending to {self.interface} failed: {exc}", kind=FailureKind.TRANSPORT
            ) from exc

    # -- receiving -----------------------------------------------------------------------

    async def _read_line(self, what: str) -> bytes | None:
        """The next line without its newline; None when the server closed cleanly."""
        limit = self.info.max_message_bytes
        try:
            async with asyncio.timeout(self.ctx.timeout_s):
                raw = await self._reader.readuntil(b"\n")
        except TimeoutError:
            raise CaseFailure(
                f"no line from {self.interface} within {self.ctx.timeout_s:g} s "
                f"while waiting for {what}",
                kind=FailureKind.TIMEOUT,
            ) from None
        except asyncio.IncompleteReadError as exc:
            self._eof = True
            if not exc.partial:
                return None
            frame = self._record_raw(exc.partial)
            raise CaseFailure(
                f"{self.interface} closed the connection inside a line "
                f"({len(exc.partial)} bytes without a newline): {frame.render()}",
                kind=FailureKind.PROTOCOL,
                frame=frame.index,
            ) from None
        except asyncio.LimitOverrunError:
            raise CaseFailure(
                f"{self.interface} sent a line longer than max_message_bytes ({limit} bytes)",
                kind=FailureKind.PROTOCOL,
            ) from None
        except OSError as exc:
            raise CaseFailure(
                f"receiving from {self.interface} failed: {exc}", kind=FailureKind.TRANSPORT
            ) from exc
        return raw[:-1]

    def _record_raw(self, raw: bytes) -> Frame:
        frame = self.ctx.record_received(
            interface=self.interface, connection=self.connection, raw=raw
        )
        self.last_received = frame
        return frame

    def _record_json(self, value: Any, line: bytes, schemas: SchemaRefs = ()) -> Frame:
        try:
            frame = self.ctx.record_received(
                value,
                interface=self.interface,
                connection=self.connection,
                schemas=schemas,
                wire_bytes=len(line),
            )
        except CaseFailure as failure:
            if failure.frame is not None:
                self.last_received = self.ctx.frame(failure.frame)
            raise
        self.last_received = frame
        return frame

    async def receive_frame(self, *, what: str = "a line") -> Frame | None:
        """The next line, recorded but not judged; None when the server closed cleanly.

        A line that is not JSON is recorded as raw bytes (``frame.is_json`` False).

        Raises:
            CaseFailure: kind TIMEOUT when nothing arrives within the step limit; kind
                PROTOCOL when the server closes inside a line or sends a line over the
                interface's ``max_message_bytes``; kind TRANSPORT on a reset.
        """
        line = await self._read_line(what)
        if line is None:
            return None
        is_json, value = _decode(line)
        if not is_json:
            return self._record_raw(line)
        return self._record_json(value, line)

    async def receive(self, schema: SchemaRefs, *, what: str | None = None) -> Any:
        """The next line's JSON value, validated against `schema` (alternatives allowed).

        Raises:
            CaseFailure: kind SCHEMA when the line breaks the schema (the frame, pointer and
                rule are shown); kind PROTOCOL when it is not JSON or the server closed
                before sending it; the kinds of :meth:`receive_frame`.
        """
        _, value = await self._expect(schema, what)
        return value

    async def expect_frame(self, schema: SchemaRefs, *, what: str | None = None) -> Frame:
        """Like :meth:`receive` but returns the recorded :class:`Frame` (whose value has
        secret option values masked)."""
        frame, _ = await self._expect(schema, what)
        return frame

    async def _expect(self, schema: SchemaRefs, what: str | None) -> tuple[Frame, Any]:
        what = what or _describe(schema)
        line = await self._read_line(what)
        if line is None:
            raise CaseFailure(
                f"{self.interface} closed the connection before sending {what}",
                kind=FailureKind.PROTOCOL,
            )
        is_json, value = _decode(line)
        if not is_json:
            frame = self._record_raw(line)
            raise CaseFailure(
                f"{frame.title()} is not a JSON line (expected {what}): {frame.render()}",
                kind=FailureKind.PROTOCOL,
                frame=frame.index,
            )
        return self._record_json(value, line, schema), value

    async def expect_closed(self, *, what: str = "the end of the reply") -> None:
        """Expect the server to close the connection (at a line boundary) within the step
        limit; a further line is recorded and FAILs the case (kind PROTOCOL)."""
        if self._eof:
            return
        frame = await self.receive_frame(what=what)
        if frame is not None:
            raise CaseFailure(
                f"{self.interface} sent {frame.title()} after {what}: {frame.render()}",
                kind=FailureKind.PROTOCOL,
                frame=frame.index,
            )

    # -- operations ----------------------------------------------------------------------

    async def request_reply(self, operation: OperationInfo | str, request: Any) -> Any:
        """Send `request` and return the one reply line, validated against the operation's
        reply schema from the manifest.

        Args:
            operation: the manifest operation, its conformance id or its name.
        """
        op = self._operation(operation)
        if op.reply is None:
            raise ValueError(f"{op.conformance_id} has no reply schema (pattern {op.pattern})")
        await self.send(request, schema=op.request or ())
        return await self.receive(op.reply, what=f"the {op.name} reply")

    async def request_stream(
        self,
        operation: OperationInfo | str,
        request: Any,
        *,
        max_items: int = DEFAULT_MAX_ITEMS,
    ) -> StreamReply:
        """Send `request` and read the whole reply stream (see :meth:`read_stream`)."""
        op = self._operation(operation)
        await self.send(request, schema=op.request or ())
        return await self.read_stream(op, max_items=max_items)

    async def read_stream(
        self, operation: OperationInfo | str, *, max_items: int = DEFAULT_MAX_ITEMS
    ) -> StreamReply:
        """Read a request-stream reply: the ack (if the operation has one; a terminator may
        come in its place), items, then exactly one terminator. Each line is validated
        against what may come at that point, from the manifest.

        Raises:
            CaseFailure: kind SCHEMA when a line is none of what may come at that point;
                kind PROTOCOL when the stream ends without a terminator or has more than
                `max_items` items; the kinds of :meth:`receive_frame`.
        """
        op = self._operation(operation)
        if op.item is None or op.terminator is None:
            raise ValueError(f"{op.conformance_id} is not a request-stream operation")
        reply = StreamReply()
        first = True
        while True:
            if first and op.ack is not None:
                expected, what = [op.ack, op.terminator], f"the {op.name} acknowledgement"
            else:
                expected, what = [op.item, op.terminator], f"a {op.name} item or terminator"
            line = await self._read_line(what)
            if line is None:
                raise CaseFailure(
                    f"{self.interface} closed the {op.name} stream after "
                    f"{len(reply.frames)} line(s) without a terminator",
                    kind=FailureKind.PROTOCOL,
                )
            is_json, value = _decode(line)
            if not is_json:
                bad = self._record_raw(line)
                raise CaseFailure(
                    f"{bad.title()} is not a JSON line (expected {what}): {bad.render()}",
                    kind=FailureKind.PROTOCOL,
                    frame=bad.index,
                )
            frame = self._record_json(value, line, expected)
            reply.frames.append(frame)
            if frame.matched == self.ctx.registry.validator(op.terminator).uri:
                reply.terminator = value
                return reply
            if first and op.ack is not None:
                reply.ack = value
            else:
                reply.items.append(value)
                if len(reply.items) > max_items:
                    raise CaseFailure(
                        f"the {op.name} stream has more than {max_items} items",
                        kind=FailureKind.PROTOCOL,
                    )
            first = False

    def _operation(self, operation: OperationInfo | str) -> OperationInfo:
        if isinstance(operation, OperationInfo):
            return operation
        if "/" in operation:
            return self.ctx.operation(operation)
        return self.ctx.manifest.operation(f"{self.ctx.case.family}/{self.interface}/{operation}")

    # -- closing -------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the connection (bounded by the step limit; idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        try:
            async with asyncio.timeout(self.ctx.timeout_s):
                await self._writer.wait_closed()
        except (TimeoutError, OSError):
            self._writer.transport.abort()


def _describe(schema: SchemaRefs) -> str:
    refs = (schema,) if isinstance(schema, str) else tuple(schema)
    names = [ref.rsplit("/", 1)[-1] for ref in refs]
    return " or ".join(names)
