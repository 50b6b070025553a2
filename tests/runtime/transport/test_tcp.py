"""Tests for runtime/transport/tcp.py on 127.0.0.1 (port chosen at run time).

Every test runs under `run`, which bounds it with a timeout; no sleep is used to synchronise.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from runwire.runtime.errors import (
    AuthenticationError,
    ConnectionClosed,
    LimitExceeded,
    RemoteProtocolError,
    RunwireError,
    Timeout,
    TransportError,
)
from runwire.runtime.transport.tcp import JsonLinesConnection, open_jsonlines, serve_jsonlines

T = TypeVar("T")
TEST_TIMEOUT_S = 10.0
Handler = Callable[[JsonLinesConnection], Awaitable[None]]


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            return await coroutine

    return asyncio.run(bounded())


@asynccontextmanager
async def serving(handler: Handler, **options: Any) -> AsyncIterator[int]:
    """Serve on 127.0.0.1:<free port>, yield the port, close the server afterwards."""
    server = await serve_jsonlines(handler, "127.0.0.1", 0, **options)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def echo(connection: JsonLinesConnection) -> None:
    for _ in range(100):
        try:
            value = await connection.receive()
        except RemoteProtocolError as exc:
            await connection.send({"error": exc.error_type})
            continue
        await connection.send({"echo": value, "pending": connection.buffered_bytes})


async def capture(connection: JsonLinesConnection, result: asyncio.Future[BaseException]) -> None:
    try:
        value = await connection.receive()
    except RunwireError as exc:
        result.set_result(exc)
    else:
        result.set_exception(AssertionError(f"received {value!r}"))


def test_round_trip() -> None:
    async def scenario() -> None:
        async with serving(echo) as port:
            async with await open_jsonlines("127.0.0.1", port, timeout_s=5) as client:
                assert client.peer is not None and client.peer[:2] == ("127.0.0.1", port)
                await client.send({"op": "call", "args": ["h\u00e9"]})
                assert await client.receive() == {
                    "echo": {"op": "call", "args": ["h\u00e9"]},
                    "pending": 0,
                }
            assert client.closed
            with pytest.raises(ConnectionClosed) as caught:
                await client.send(1)
            assert caught.value.by == "local"

    run(scenario())


def test_pipelined_requests_and_parse_errors() -> None:
    async def scenario() -> None:
        async with serving(echo) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            async with JsonLinesConnection(reader, writer, timeout_s=5) as client:
                writer.write(b"1\n2\n")  # two requests in one write
                assert await client.receive() == {"echo": 1, "pending": 2}
                assert await client.receive() == {"echo": 2, "pending": 0}
                writer.write(b"not json\n3\n")
                assert await client.receive() == {"error": "parse_error"}
                assert await client.receive() == {"echo": 3, "pending": 0}

    run(scenario())


def test_receive_timeout_raises_timeout() -> None:
    async def scenario() -> None:
        done = asyncio.Event()

        async def silent(connection: JsonLinesConnection) -> None:
            await done.wait()

        async with serving(silent) as port:
            client = await open_jsonlines("127.0.0.1", port, timeout_s=0.05)
            try:
                with pytest.raises(Timeout) as caught:
                    await client.receive()
                assert caught.value.timeout_s == 0.05
                assert caught.value.operation == "receive"
            finally:
                done.set()
                await client.aclose()

    run(scenario())


def test_clean_eof_is_connection_closed_by_peer() -> None:
    async def scenario() -> None:
        result: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        async with serving(lambda c: capture(c, result)) as port:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            error = await result
            assert isinstance(error, ConnectionClosed)
            assert error.by == "peer"

    run(scenario())


def test_eof_inside_a_line_is_invalid_request() -> None:
    async def scenario() -> None:
        result: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        async with serving(lambda c: capture(c, result)) as port:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b'{"op":')
            writer.write_eof()
            error = await result
            writer.close()
            assert isinstance(error, RemoteProtocolError)
            assert error.error_type == "invalid_request"

    run(scenario())


def test_oversize_line_raises_limit_exceeded() -> None:
    async def scenario() -> None:
        result: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        async with serving(lambda c: capture(c, result), max_line_bytes=64) as port:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"x" * 100)  # no newline
            error = await result
            writer.close()
            assert isinstance(error, LimitExceeded)
            assert (error.limit_name, error.limit, error.unit) == ("max_line_bytes", 64, "bytes")

    run(scenario())


def test_handler_exception_does_not_stop_the_server(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def flaky(connection: JsonLinesConnection) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await connection.receive()
            raise RuntimeError("handler bug")
        await echo(connection)

    async def scenario() -> None:
        async with serving(flaky) as port:
            async with await open_jsonlines("127.0.0.1", port, timeout_s=5) as first:
                await first.send(1)
                with pytest.raises(ConnectionClosed) as caught:
                    await first.receive()
                assert caught.value.by == "peer"
            async with await open_jsonlines("127.0.0.1", port, timeout_s=5) as second:
                await second.send(2)
                assert await second.receive() == {"echo": 2, "pending": 0}

    with caplog.at_level(logging.ERROR, logger="runwire.runtime.transport.tcp"):
        run(scenario())
    assert calls == 2
    assert any("handler failed" in r.getMessage() for r in caplog.records)


def test_connections_beyond_the_limit_are_closed() -> None:
    async def scenario() -> None:
        started = asyncio.Event()
        release = asyncio.Event()

        async def hold(connection: JsonLinesConnection) -> None:
            started.set()
            await release.wait()

        async with serving(hold, max_connections=1) as port:
            first = await open_jsonlines("127.0.0.1", port, timeout_s=5)
            try:
                await started.wait()
                async with await open_jsonlines("127.0.0.1", port, timeout_s=5) as second:
                    with pytest.raises(ConnectionClosed):
                        await second.receive()
            finally:
                release.set()
                await first.aclose()

    run(scenario())


def test_connection_refused_is_transport_error() -> None:
    async def scenario() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(TransportError, match="cannot connect") as caught:
            await open_jsonlines("127.0.0.1", port, timeout_s=5)
        assert not isinstance(caught.value, (ConnectionClosed, Timeout))
        assert isinstance(caught.value.__cause__, OSError)

    run(scenario())


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost/127.0.0.1, made with the openssl tool."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl command not available")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def test_tls_round_trip_and_rejected_certificate(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    untrusting = ssl.create_default_context()

    async def scenario() -> None:
        async with serving(echo, ssl=server_context, timeout_s=5) as port:
            async with await open_jsonlines(
                "127.0.0.1", port, ssl=trusting, server_hostname="localhost", timeout_s=5
            ) as client:
                await client.send({"secure": True})
                assert await client.receive() == {"echo": {"secure": True}, "pending": 0}
            with pytest.raises(AuthenticationError):
                await open_jsonlines("127.0.0.1", port, ssl=untrusting, timeout_s=5)

    run(scenario())
