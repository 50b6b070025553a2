"""JSON lines over TCP (optionally TLS) on asyncio streams.

The adapter only moves bytes between an asyncio stream and
:class:`~runwire.runtime.codec.jsonlines.JsonLinesDecoder` / :func:`encode_line`; every socket
operation (connect, TLS handshake, send, receive, close) is bounded by `timeout_s` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as _ssl
from collections.abc import Awaitable, Callable
from typing import Any, Final

from ..closing import AclosingContext
from ..codec.jsonlines import EOF, JsonLinesDecoder, Line, encode_line
from ..errors import (
    AuthenticationError,
    ConnectionClosed,
    RunwireError,
    Timeout,
    TransportError,
)

__all__ = ["JsonLinesConnection", "open_jsonlines", "serve_jsonlines"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S: Final = 30.0
DEFAULT_MAX_LINE_BYTES: Final = 1 << 20
READ_CHUNK_BYTES: Final = 1 << 16
#: `send` waits for the peer only when more than this many bytes wait in the write buffer.
DRAIN_ABOVE_BYTES: Final = 1 << 16
#: `send` yields to the event loop at least once every this many sends.
YIELD_EVERY_SENDS: Final = 64


class JsonLinesConnection(AclosingContext):
    """One JSON-lines connection over an asyncio (reader, writer) pair.

    Use one receiver at a time. Usable as ``async with``; leaving the block closes it.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ) -> None:
        """Args:
        reader, writer: an open asyncio stream pair (TLS already set up, if any).
        timeout_s: bound, in seconds, on each `send`, `receive` and `aclose`.
        max_line_bytes: largest accepted incoming line, in bytes, excluding ``\\n``.
        """
        self._reader = reader
        self._writer = writer
        self._decoder = JsonLinesDecoder(max_line_bytes)
        self.timeout_s: Final = timeout_s
        self._closed = False
        self._unyielded_sends = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._flush_scheduled = False

    @property
    def peer(self) -> tuple[Any, ...] | None:
        """The peer's socket address (``(host, port)`` for IPv4), or None if unknown."""
        address = self._writer.get_extra_info("peername")
        return tuple(address) if isinstance(address, (tuple, list)) else None

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet returned by `receive` (pipelined requests)."""
        return self._decoder.buffered_bytes

    @property
    def closed(self) -> bool:
        """True once `aclose` was called."""
        return self._closed

    async def send(self, value: Any, *, sort_keys: bool = False) -> None:
        """Encode `value` as one JSON line and queue it for writing.

        Lines queued in one turn of the event loop are written together when the loop next
        runs its callbacks (or at once beyond ``DRAIN_ABOVE_BYTES``), so a burst of small
        lines costs one system call, not one each. It waits for the peer (at most
        `timeout_s`) only when more than ``DRAIN_ABOVE_BYTES`` wait in the transport's
        buffer, and yields to the event loop every ``YIELD_EVERY_SENDS`` sends, so a long
        burst neither starves other connections nor delays its first lines.

        Raises:
            LocalProtocolError: `value` is not strict JSON (nothing is sent).
            ConnectionClosed: we closed the connection (by "local"), or the peer reset it.
            Timeout: the buffer did not drain within `timeout_s`.
        """
        data = encode_line(value, sort_keys=sort_keys)
        if self._closed:
            raise ConnectionClosed("local", "send() after aclose()")
        transport = self._writer.transport
        if transport.is_closing():
            raise ConnectionClosed("peer", "send failed: the connection is closing")
        # Lines sent in one turn of the event loop leave in one write (one system call).
        self._pending.append(data)
        self._pending_bytes += len(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_pending)
        if self._pending_bytes <= DRAIN_ABOVE_BYTES:
            self._unyielded_sends += 1
            if self._unyielded_sends >= YIELD_EVERY_SENDS:
                self._unyielded_sends = 0
                await asyncio.sleep(0)  # the scheduled flush runs here
            return
        self._flush_pending()
        self._unyielded_sends = 0
        if transport.get_write_buffer_size() <= DRAIN_ABOVE_BYTES:
            await asyncio.sleep(0)
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._writer.drain()
        except TimeoutError as exc:
            raise Timeout(self.timeout_s, "send") from exc
        except OSError as exc:
            raise ConnectionClosed("peer", f"send failed: {exc}") from exc

    def _flush_pending(self) -> None:
        """Write the lines `send` queued, as one write."""
        self._flush_scheduled = False
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        if not self._writer.transport.is_closing():
            self._writer.write(data)

    async def receive(self) -> Any:
        """The next decoded JSON value from the peer.

        Raises:
            ConnectionClosed: by "peer" on a clean end of stream at a line boundary or a reset;
                by "local" after `aclose`.
            RemoteProtocolError: a line is not JSON ("parse_error"; the connection stays
                usable) or the stream ended inside a line ("invalid_request").
            LimitExceeded: a line is longer than `max_line_bytes`.
            Timeout: no complete line within `timeout_s`.
        """
        if self._closed:
            raise ConnectionClosed("local", "receive() after aclose()")
        event = self._decoder.next_event()  # a line already buffered needs no timer
        if isinstance(event, Line):
            return event.value
        if event is EOF:
            raise ConnectionClosed("peer", "end of stream")
        try:
            async with asyncio.timeout(self.timeout_s):
                while True:  # each turn returns, raises or reads; bounded by the timeout
                    event = self._decoder.next_event()
                    if event is EOF:
                        raise ConnectionClosed("peer", "end of stream")
                    if isinstance(event, Line):
                        return event.value
                    data = await self._reader.read(READ_CHUNK_BYTES)
                    if data:
                        self._decoder.receive_data(data)
                    else:
                        self._decoder.receive_eof()
        except TimeoutError as exc:
            raise Timeout(self.timeout_s, "receive") from exc
        except OSError as exc:
            raise ConnectionClosed("peer", f"receive failed: {exc}") from exc

    async def aclose(self) -> None:
        """Close the connection, waiting at most `timeout_s` (then aborting). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._flush_pending()
        self._writer.close()
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._writer.wait_closed()
        except TimeoutError:
            self._writer.transport.abort()
        except OSError:
            pass


async def open_jsonlines(
    host: str,
    port: int,
    *,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> JsonLinesConnection:
    """Connect to `host`:`port` (TLS when `ssl` is given) and return the connection.

    Args:
        ssl: client TLS context, or None for plain TCP.
        server_hostname: name to check the server certificate against (default: `host`).
        timeout_s: bound, in seconds, on connect + TLS handshake, and later on each operation.
        max_line_bytes: largest accepted incoming line, in bytes.

    Raises:
        Timeout: connect or handshake took longer than `timeout_s`.
        AuthenticationError: the server certificate was rejected.
        TransportError: the connection was refused or failed (cause kept).
    """
    where = f"{host}:{port}"
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ssl, server_hostname=server_hostname if ssl else None
            )
    except TimeoutError as exc:
        raise Timeout(timeout_s, f"connect to {where}") from exc
    except _ssl.SSLCertVerificationError as exc:
        raise AuthenticationError(f"TLS certificate of {where} rejected: {exc}") from exc
    except OSError as exc:
        raise TransportError(f"cannot connect to {where}: {exc}") from exc
    return JsonLinesConnection(reader, writer, timeout_s=timeout_s, max_line_bytes=max_line_bytes)


async def serve_jsonlines(
    handler: Callable[[JsonLinesConnection], Awaitable[None]],
    host: str,
    port: int,
    *,
    ssl: _ssl.SSLContext | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    max_connections: int = 256,
) -> asyncio.Server:
    """Listen on `host`:`port` and run ``await handler(connection)`` for each client.

    The connection is closed when the handler returns. A handler exception is logged (a
    `ConnectionClosed` at debug level, other errors with traceback) and swallowed, so the
    server keeps serving. Clients beyond `max_connections` open at once are closed at once.

    Args:
        handler: coroutine function serving one connection.
        port: TCP port; 0 picks a free one (read it from ``server.sockets[0].getsockname()``).
        ssl: server TLS context, or None for plain TCP.
        timeout_s: bound, in seconds, on the TLS handshake and each connection operation.
        max_line_bytes: largest accepted incoming line, in bytes.
        max_connections: most connections served at once.

    Returns:
        The listening `asyncio.Server`; close it with ``server.close()`` and
        ``await server.wait_closed()``.

    Raises:
        OSError: the address cannot be bound.
    """
    active: set[JsonLinesConnection] = set()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = JsonLinesConnection(
            reader, writer, timeout_s=timeout_s, max_line_bytes=max_line_bytes
        )
        if len(active) >= max_connections:
            logger.warning("refusing %s: %d connections already open", connection.peer, len(active))
            await connection.aclose()
            return
        active.add(connection)
        try:
            await handler(connection)
        except ConnectionClosed as exc:
            logger.debug("connection %s: %s", connection.peer, exc)
        except RunwireError as exc:
            logger.info("connection %s ended: %s", connection.peer, exc)
        except Exception:
            logger.exception("handler failed on connection %s", connection.peer)
        finally:
            active.discard(connection)
            await connection.aclose()

    return await asyncio.start_server(
        on_client,
        host,
        port,
        ssl=ssl,
        ssl_handshake_timeout=timeout_s if ssl is not None else None,
    )
