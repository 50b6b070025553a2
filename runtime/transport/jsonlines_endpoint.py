"""Client and server bases for JSON-lines interfaces with one request per connection.

Generated clients and server stubs of a ``jsonlines`` transport (``transport.kind`` in the
manifest) subclass these. The bases hold the protocol mechanics common to every such
interface (the jobs dispatcher and the jobs agent, modelled on HarpCaller and harpd):

- the client opens a connection per request, sends one line, reads reply lines until the
  server closes, validates every line against its schema and classifies stream lines
  (:class:`~runwire.runtime.state.stream.ReplyStream`);
- the server reads one request line, recognises its operation, validates it, calls the
  handler, validates every reply line before sending it, answers a malformed request with
  the interface's error line, and cancels the handler when the peer closes.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import ssl as _ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, ClassVar

from runwire.runtime.endpoint import OperationSpec, recognise
from runwire.runtime.errors import (
    ConnectionClosed,
    LimitExceeded,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    Timeout,
)
from runwire.runtime.model import WireModel, WireRootModel
from runwire.runtime.state.stream import Part, ReplyStream
from runwire.runtime.transport.tcp import JsonLinesConnection, open_jsonlines, serve_jsonlines
from runwire.runtime.validation import MessageValidator, SchemaRegistry

__all__ = ["JsonLinesClientBase", "JsonLinesServerBase"]

logger = logging.getLogger(__name__)

AnyModel = WireModel | WireRootModel[Any]


def _wire(message: AnyModel | dict[str, Any]) -> Any:
    return message if isinstance(message, dict) else message.to_wire()


class JsonLinesClientBase:
    """Mechanics of a generated JSON-lines client (one request per connection).

    Args:
        host, port: where the server listens.
        timeout_s: bound, in seconds, on connecting and on every read and write; a stream
            whose server stays silent longer raises :class:`Timeout`.
        ssl: a client TLS context for TLS interfaces, or None for plain TCP.
        server_hostname: name checked against the server certificate (default ``host``).
        max_message_bytes: largest reply line accepted, in bytes.
        registry: schema registry (default: the packaged schemas).
    """

    DEFAULT_PORT: ClassVar[int]

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        timeout_s: float = 30.0,
        ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        max_message_bytes: int = 1 << 20,
        registry: SchemaRegistry | None = None,
    ) -> None:
        self.host = host
        self.port = self.DEFAULT_PORT if port is None else port
        self.timeout_s = timeout_s
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.max_message_bytes = max_message_bytes
        self.registry = registry or SchemaRegistry.from_package()

    def _validator(self, uri: str | None) -> MessageValidator:
        assert uri is not None, "the dispatch table lacks a schema for this message"
        return self.registry.validator(uri)

    async def _open(self, request: Any) -> JsonLinesConnection:
        """A new connection with ``request`` sent on it (closed again if the send fails)."""
        connection = await open_jsonlines(
            self.host,
            self.port,
            ssl=self.ssl,
            server_hostname=self.server_hostname,
            timeout_s=self.timeout_s,
            max_line_bytes=self.max_message_bytes,
        )
        try:
            await connection.send(request)
        except BaseException:
            await connection.aclose()
            raise
        return connection

    async def request_reply(self, spec: OperationSpec, request: AnyModel | dict[str, Any]) -> Any:
        """Send ``request`` and return the validated JSON reply.

        Raises:
            LocalProtocolError: the request is not valid against its schema (nothing sent).
            RemoteProtocolError: the reply is not valid against its schema.
            ConnectionClosed: the server closed without replying.
            Timeout, TransportError: the connection failed or stalled.
        """
        payload = _wire(request)
        self._validator(spec.request_uri).check(payload, outbound=True)
        reply_validator = self._validator(spec.reply_uri)
        async with await self._open(payload) as connection:
            try:
                message = await connection.receive()
            except ConnectionClosed:
                raise ConnectionClosed(
                    "peer", f"{spec.conformance_id}: server closed without a reply"
                ) from None
        reply_validator.check(message)
        return message

    async def request_stream(
        self, spec: OperationSpec, request: AnyModel | dict[str, Any]
    ) -> AsyncGenerator[tuple[Part, Any], None]:
        """Send ``request`` and yield (part, JSON message) for every reply line.

        The last pair yielded is the terminator. The connection is read directly here (no
        generator in between: this is the per-line hot path of ``follow_stream``).

        Raises:
            LocalProtocolError: the request is not valid against its schema (nothing sent).
            RemoteProtocolError: a line is out of order or invalid, or the server closed
                before the terminator.
            Timeout, TransportError: the connection failed or stalled.
        """
        payload = _wire(request)
        self._validator(spec.request_uri).check(payload, outbound=True)
        stream = ReplyStream(
            item=self._validator(spec.item_uri),
            terminator=self._validator(spec.terminator_uri),
            ack=self._validator(spec.ack_uri) if spec.ack_uri else None,
        )
        async with await self._open(payload) as connection:
            receive = connection.receive
            while True:
                try:
                    message = await receive()
                except ConnectionClosed:
                    break
                part = stream.receive(message)
                yield part, message
                if stream.done:
                    return
        stream.receive_eof()


Handler = Callable[[Any], Awaitable[AnyModel] | AsyncIterator[AnyModel]]


class JsonLinesServerBase(abc.ABC):
    """Mechanics of a generated JSON-lines server (one request per connection).

    Subclasses (the generated server bases) set :attr:`OPERATIONS` and :attr:`DEFAULT_PORT`
    and declare one abstract handler per operation, named after it; a request-reply handler
    returns the reply model, a request-stream handler is an async generator yielding the
    ack (if any), the items and finally one terminator.

    Args:
        registry: schema registry (default: the packaged schemas).
        timeout_s: bound, in seconds, on reading the request and on each write.
        max_message_bytes: largest request line accepted, in bytes (larger: malformed reply).
        max_connections: most connections served at once.
    """

    OPERATIONS: ClassVar[Sequence[OperationSpec]]
    DEFAULT_PORT: ClassVar[int]
    DEFAULT_MAX_MESSAGE_BYTES: ClassVar[int] = 1 << 20

    def __init__(
        self,
        *,
        registry: SchemaRegistry | None = None,
        timeout_s: float = 30.0,
        max_message_bytes: int | None = None,
        max_connections: int = 256,
    ) -> None:
        self.registry = registry or SchemaRegistry.from_package()
        self.timeout_s = timeout_s
        self.max_message_bytes = max_message_bytes or self.DEFAULT_MAX_MESSAGE_BYTES
        self.max_connections = max_connections

    @abc.abstractmethod
    def malformed_reply(self, error: ProtocolError | LimitExceeded) -> AnyModel:
        """The error line answering a request that is not valid (the server then closes).

        ``error.error_type`` is the codec's or validator's classification (``parse_error``,
        ``invalid_request``, ``bad_request``, ``limit_exceeded``); map it to the interface's
        own error vocabulary.
        """

    def extra_data_error(self) -> RemoteProtocolError:
        """The error for bytes sent after the one request line (harpd: invalid_request)."""
        return RemoteProtocolError("excessive data after request", error_type="invalid_request")

    def request_timeout_reply(self, error: Timeout) -> AnyModel | None:
        """The error line for a peer that sent no complete request within ``timeout_s``.

        None (the default): close without a reply. Override to answer in the interface's
        own error shape (harpd: ``read_error``).
        """
        return None

    async def handle(self, message: Any) -> AsyncGenerator[Any, None]:
        """Serve one decoded request: yield each validated JSON reply line to send.

        Raises:
            RemoteProtocolError: the request names no operation or is not valid against its
                operation's schema (before anything is yielded).
            LocalProtocolError: a handler produced a line its schema forbids, or a stream
                without exactly one terminator (a server bug; stop sending).
        """
        spec = recognise(message, self.OPERATIONS)
        self.registry.validator(spec.request_uri).check(message, error_type="bad_request")
        # The schema has judged the request; lax mode only lets the model agree with it where
        # strict pydantic is stricter than JSON Schema (1.0 is an integer there).
        request = spec.request_model.model_validate(message, strict=False)
        handler = getattr(self, spec.name)
        if spec.pattern == "request-stream":
            stream = ReplyStream(
                item=self.registry.validator(spec.item_uri or ""),
                terminator=self.registry.validator(spec.terminator_uri or ""),
                ack=self.registry.validator(spec.ack_uri) if spec.ack_uri else None,
                outbound=True,
            )
            generator: AsyncGenerator[Any, None] = handler(request)
            try:
                async for reply in generator:
                    wire = _wire(reply)
                    stream.receive(wire)
                    yield wire
                    if stream.done:
                        return
                stream.receive_eof()
            finally:
                await generator.aclose()
        else:
            wire = _wire(await handler(request))
            self.registry.validator(spec.reply_uri or "").check(wire, outbound=True)
            yield wire

    async def serve_connection(self, connection: JsonLinesConnection) -> None:
        """Serve one connection: one request line, its reply lines, then return (close).

        A malformed request gets :meth:`malformed_reply`. When the peer closes before the
        reply is complete, the handler is cancelled at once.
        """
        try:
            message = await connection.receive()
            if connection.buffered_bytes:
                raise self.extra_data_error()
        except ConnectionClosed:
            return
        except (ProtocolError, LimitExceeded) as exc:
            await self._send_malformed(connection, exc)
            return
        except Timeout as exc:
            reply = self.request_timeout_reply(exc)
            if reply is None:
                raise
            await self._send_quietly(connection, _wire(reply))
            return
        pump = asyncio.ensure_future(self._pump(connection, message))
        watch = asyncio.ensure_future(self._peer_closed(connection))
        try:
            await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, watch):
                task.cancel()
            for task in (pump, watch):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if pump.done() and not pump.cancelled() and pump.exception() is not None:
            raise pump.exception()  # type: ignore[misc]

    async def _pump(self, connection: JsonLinesConnection, message: Any) -> None:
        replies = self.handle(message)
        try:
            async for wire in replies:
                await connection.send(wire)
        except RemoteProtocolError as exc:
            await self._send_malformed(connection, exc)
        except LocalProtocolError:
            logger.exception("reply not sent: it breaks the spec")
        finally:
            await replies.aclose()

    async def _peer_closed(self, connection: JsonLinesConnection) -> None:
        """Return when the peer closes; any further data is ignored."""
        while True:
            try:
                await connection.receive()
            except (ConnectionClosed, ProtocolError, LimitExceeded):
                return
            except Timeout:
                continue

    async def _send_malformed(
        self, connection: JsonLinesConnection, error: ProtocolError | LimitExceeded
    ) -> None:
        await self._send_quietly(connection, _wire(self.malformed_reply(error)))

    async def _send_quietly(self, connection: JsonLinesConnection, reply: Any) -> None:
        """Send a final error line; a peer that is gone is only logged."""
        try:
            await connection.send(reply)
        except (ConnectionClosed, Timeout, OSError) as exc:
            logger.debug("error line not delivered to %s: %s", connection.peer, exc)

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        ssl: _ssl.SSLContext | None = None,
    ) -> asyncio.Server:
        """Listen on ``host``:``port`` (default port: the interface's) and serve each connection.

        Returns:
            The listening server; ``server.sockets[0].getsockname()`` gives the port when
            ``port`` is 0.
        """
        return await serve_jsonlines(
            self.serve_connection,
            host,
            self.DEFAULT_PORT if port is None else port,
            ssl=ssl,
            timeout_s=self.timeout_s,
            max_line_bytes=self.max_message_bytes,
            max_connections=self.max_connections,
        )
