"""End-to-end tests of the reference jobs agent over TLS on loopback (harpd, reference/jobs.md §2).

Agents come from the ``jobs_agent`` fixtures (tests/conftest.py): a real agent in a background
thread. Replies are compared with the exact lines harpd sends (section 2.4). Procedures that
must prove they stopped report over TCP to a listener of the test, and a process is known to
be gone when its pidfd says so: every wait is event-driven and bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import ssl
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import argon2
import pytest

from runwire.generated.jobs import models
from runwire.reference_server.jobs.agent import (
    Agent,
    AgentConfig,
    BackgroundAgent,
    ConfigError,
    build_agent,
)
from runwire.reference_server.jobs.agent_main import read_dev_agent, write_dev_agent
from runwire.reference_server.jobs.conformance_procedures import STREAM_LIMITED_TIMEOUT_S
from runwire.reference_server.jobs.passwords import PasswordFile
from runwire.reference_server.jobs.procedures import ProcedureRegistry
from runwire.runtime.errors import AuthenticationError

T = TypeVar("T")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
PROCEDURES = str(HERE / "agent_procedures.py")
EXAMPLES = str(ROOT / "examples" / "jobs" / "procedures.py")
EXAMPLE_CONFIG = ROOT / "examples" / "jobs" / "agent.toml"
TEST_TIMEOUT_S = 30.0
WAIT_S = 10.0

ACK = {"harp": 1, "stream_result": False}
STREAM_ACK = {"harp": 1, "stream_result": True}
AUTH_ERROR = {
    "harp": 1,
    "error": {"type": "auth_error", "message": "unknown user or wrong password"},
}
TIMEOUT_ERROR = {
    "harp": 1,
    "error": {"type": "timeout", "message": "maximum execution time exceeded"},
}
SHUTDOWN_ERROR = {"harp": 1, "error": {"type": "shutdown", "message": "service is shutting down"}}


def cheap_hasher() -> argon2.PasswordHasher:
    return argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def run(coroutine: Coroutine[Any, Any, T], timeout_s: float = TEST_TIMEOUT_S) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout_s):
            return await coroutine

    return asyncio.run(bounded())


async def call(agent: Any, procedure: str, arguments: Any = None, **auth: str) -> list[Any]:
    """Every reply line of one call, as JSON."""
    lines = []
    async for message in agent.client().call(agent.request(procedure, arguments, **auth)):
        lines.append(message.to_wire())
        assert len(lines) <= 1000
    return lines


def line(value: Any) -> bytes:
    return json.dumps(value).encode() + b"\n"


def request(agent: Any, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "harp": 1,
        "procedure": "echo",
        "arguments": [1],
        "auth": {"user": agent.user, "password": agent.password},
    }
    for key, value in changes.items():
        if value is _DROP:
            base.pop(key)
        else:
            base[key] = value
    return base


_DROP = object()


async def raw_exchange(agent: Any, data: bytes) -> list[Any]:
    """Send ``data`` on a fresh TLS connection, read until the agent closes, decode lines."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(agent.host, agent.port, ssl=agent.ssl_context()), WAIT_S
    )
    try:
        writer.write(data)
        await writer.drain()
        received = await asyncio.wait_for(reader.read(), WAIT_S)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    return [json.loads(text) for text in received.splitlines()]


class Reports:
    """A TCP listener the test procedures report to (one line per connection)."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[str] = asyncio.Queue()
        self.seen: list[str] = []

    async def __aenter__(self) -> Reports:
        self.server = await asyncio.start_server(self._on_report, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _on_report(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        text = (await reader.readline()).decode().strip()
        writer.close()
        self.seen.append(text)
        self.received.put_nowait(text)

    async def next(self, timeout_s: float = WAIT_S) -> str:
        return await asyncio.wait_for(self.received.get(), timeout_s)

    async def pid(self, label: str = "pid") -> int:
        text = await self.next()
        assert text.startswith(label + " "), text
        return int(text.split()[1])


async def wait_gone(pid: int, timeout_s: float = WAIT_S) -> None:
    """Return once process ``pid`` has ended (its pidfd becomes readable)."""
    try:
        descriptor = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    loop.add_reader(descriptor, lambda: ended.done() or ended.set_result(None))
    try:
        await asyncio.wait_for(ended, timeout_s)
    finally:
        loop.remove_reader(descriptor)
        os.close(descriptor)


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (ended, not yet reaped) still answers signal 0: ask /proc.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    return True


@pytest.fixture
def test_agent(jobs_agent_factory: Callable[..., Any]) -> Any:
    """An agent with the conformance procedures and the test procedures."""
    return jobs_agent_factory(modules=[PROCEDURES])


# --- calls that succeed ---------------------------------------------------------------------


def test_echo_positional_keyword_and_empty(jobs_agent: Any) -> None:
    async def scenario() -> None:
        assert await call(jobs_agent, "echo", [1, "a", None]) == [ACK, {"result": [1, "a", None]}]
        assert await call(jobs_agent, "echo", {"x": 1, "y": [2]}) == [
            ACK,
            {"result": {"x": 1, "y": [2]}},
        ]
        assert await call(jobs_agent, "echo", []) == [ACK, {"result": []}]

    run(scenario())


def test_stream_items_then_result(jobs_agent: Any) -> None:
    lines = run(call(jobs_agent, "stream", [4]))
    assert lines == [STREAM_ACK, *({"stream": i} for i in range(4)), {"result": 4}]


def test_stream_with_keyword_arguments(jobs_agent: Any) -> None:
    lines = run(call(jobs_agent, "stream", {"count": 2, "interval_s": 0.01}))
    assert lines == [STREAM_ACK, {"stream": 0}, {"stream": 1}, {"result": 2}]


def test_sleep_returns_its_argument(jobs_agent: Any) -> None:
    assert run(call(jobs_agent, "sleep", [0.01])) == [ACK, {"result": 0.01}]


def test_sync_procedures_run_in_a_child_process(test_agent: Any) -> None:
    async def scenario() -> None:
        assert await call(test_agent, "sync_echo", [1, {"a": "é"}]) == [
            ACK,
            {"result": [1, {"a": "é"}]},
        ]
        assert await call(test_agent, "sync_echo", {"k": True}) == [ACK, {"result": {"k": True}}]
        async with Reports() as reports:
            lines = await call(test_agent, "sync_sleep_marked", [0, reports.port])
            pid = await reports.pid()
            assert await reports.next() == "finished"
        assert lines == [ACK, {"result": pid}]
        assert pid != os.getpid()

    run(scenario())


def test_sync_streaming_procedures(test_agent: Any) -> None:
    async def scenario() -> None:
        assert await call(test_agent, "sync_stream", [3]) == [
            STREAM_ACK,
            *({"stream": {"index": i}} for i in range(3)),
            {"result": "done"},
        ]
        assert await call(test_agent, "sync_stream_returns", [2]) == [
            STREAM_ACK,
            {"stream": 0},
            {"stream": 1},
            {"result": 20},
        ]
        *items, last = await call(test_agent, "sync_stream_then_fail", [2])
        assert items == [STREAM_ACK, {"stream": 0}, {"stream": 1}]
        assert last["exception"]["type"] == "KeyError"
        assert last["exception"]["message"] == "'gone'"

    run(scenario())


def test_unknown_request_keys_are_ignored(jobs_agent: Any) -> None:
    data = line(request(jobs_agent, colour="blue", priority=3))
    assert run(raw_exchange(jobs_agent, data)) == [ACK, {"result": [1]}]


def test_integral_float_version_is_accepted(jobs_agent: Any) -> None:
    data = line(request(jobs_agent, harp=1.0))
    assert run(raw_exchange(jobs_agent, data)) == [ACK, {"result": [1]}]


def test_many_calls_at_once(jobs_agent: Any) -> None:
    async def scenario() -> None:
        results = await asyncio.gather(*(call(jobs_agent, "echo", [i]) for i in range(20)))
        assert results == [[ACK, {"result": [i]}] for i in range(20)]

    run(scenario())


# --- exceptions and errors after the acknowledgement ----------------------------------------


@pytest.mark.parametrize("procedure", ["add", "sync_add"])
@pytest.mark.parametrize("arguments", [[1], [1, 2, 3], {"a": 1}, {"a": 1, "b": 2, "c": 3}])
def test_wrong_argument_count_is_ack_then_type_error(
    test_agent: Any, procedure: str, arguments: Any
) -> None:
    ack, terminator = run(call(test_agent, procedure, arguments))
    assert ack == ACK
    exception = terminator["exception"]
    assert set(terminator) == {"exception"}
    assert exception["type"] == "TypeError"
    assert "argument" in exception["message"]
    assert exception["data"] == {"class": "TypeError", "module": "builtins"}


def test_add_with_right_arguments(test_agent: Any) -> None:
    assert run(call(test_agent, "add", [2, 3])) == [ACK, {"result": 5}]
    assert run(call(test_agent, "sync_add", {"a": "x", "b": "y"})) == [ACK, {"result": "xy"}]


def test_fail_raises_runtime_error(jobs_agent: Any) -> None:
    assert run(call(jobs_agent, "fail", ["boom"])) == [
        ACK,
        {
            "exception": {
                "type": "RuntimeError",
                "message": "boom",
                "data": {"class": "RuntimeError", "module": "builtins"},
            }
        },
    ]


def test_sync_exception(test_agent: Any) -> None:
    _, terminator = run(call(test_agent, "sync_fail", ["bad value"]))
    assert terminator == {
        "exception": {
            "type": "ValueError",
            "message": "bad value",
            "data": {"class": "ValueError", "module": "builtins"},
        }
    }


@pytest.mark.parametrize("procedure", ["not_json", "sync_not_json", "async_nan"])
def test_result_not_json_is_ack_then_invalid_message(test_agent: Any, procedure: str) -> None:
    ack, terminator = run(call(test_agent, procedure))
    assert ack == ACK
    assert set(terminator) == {"harp", "error"}
    assert terminator["error"]["type"] == "invalid_message"
    assert set(terminator["error"]) == {"type", "message"}


@pytest.mark.parametrize("procedure", ["async_big", "sync_big"])
def test_result_larger_than_the_limit_is_invalid_message(
    jobs_agent_factory: Callable[..., Any], procedure: str
) -> None:
    agent = jobs_agent_factory(modules=[PROCEDURES], max_message_bytes=4096)
    assert run(call(agent, procedure, [100])) == [ACK, {"result": "x" * 100}]
    _, terminator = run(call(agent, procedure, [10_000]))
    assert terminator["error"]["type"] == "invalid_message"
    assert "4096" in terminator["error"]["message"]


def test_child_that_dies_gives_system_error(test_agent: Any) -> None:
    ack, terminator = run(call(test_agent, "sync_exit"))
    assert ack == ACK
    assert terminator["error"]["type"] == "system_error"
    assert "exit code 3" in terminator["error"]["message"]


# --- errors instead of the acknowledgement --------------------------------------------------


def test_wrong_user_and_wrong_password_get_the_same_auth_error(jobs_agent: Any) -> None:
    async def scenario() -> None:
        assert await call(jobs_agent, "echo", [], password="wrong") == [AUTH_ERROR]
        assert await call(jobs_agent, "echo", [], user="nobody") == [AUTH_ERROR]
        assert await call(jobs_agent, "echo", [], user="nobody", password="") == [AUTH_ERROR]
        # the right credentials still work, also after a cached success
        for _ in range(2):
            assert await call(jobs_agent, "echo", [1]) == [ACK, {"result": [1]}]
        assert await call(jobs_agent, "echo", [], password=jobs_agent.password + "x") == [
            AUTH_ERROR
        ]

    run(scenario())


def test_auth_is_checked_before_the_procedure_name(jobs_agent: Any) -> None:
    assert run(call(jobs_agent, "no_such_thing", [], password="wrong")) == [AUTH_ERROR]


def test_no_such_procedure(test_agent: Any) -> None:
    expected = {
        "harp": 1,
        "error": {
            "type": "no_such_procedure",
            "message": "no such procedure",
            "data": {"procedure": "nope"},
        },
    }
    assert run(call(test_agent, "nope")) == [expected]


def test_procedure_names_are_registered_names_not_attributes(test_agent: Any) -> None:
    # agent_procedures.sleep_marked is registered as "sync_sleep_marked"; module attributes
    # that are not procedures are not callable either.
    for name in ("sleep_marked", "_notify", "os", "Result", "__name__"):
        (reply,) = run(call(test_agent, name))
        assert reply["error"]["type"] == "no_such_procedure"


CREDENTIALS = "malformed credentials data"
INVALID = "invalid request"
VERSION = "unsupported protocol version"


def _malformed_cases() -> dict[str, tuple[Callable[[Any], bytes], str, str | None]]:
    def req(**changes: Any) -> Callable[[Any], bytes]:
        return lambda agent: line(request(agent, **changes))

    return {
        "not JSON": (lambda a: b"{harp: 1}\n", "parse_error", None),
        "empty line": (lambda a: b"\n", "parse_error", None),
        "invalid UTF-8": (lambda a: b'{"harp": "\xff"}\n', "parse_error", None),
        "array": (lambda a: line([1, 2]), "invalid_request", INVALID),
        "string": (lambda a: line("call"), "invalid_request", INVALID),
        "harp 2": (req(harp=2), "invalid_request", VERSION),
        "harp missing": (req(harp=_DROP), "invalid_request", VERSION),
        "harp string": (req(harp="1"), "invalid_request", VERSION),
        "harp true": (req(harp=True), "invalid_request", VERSION),
        "auth missing": (req(auth=_DROP), "invalid_request", CREDENTIALS),
        "auth not an object": (req(auth="u:p"), "invalid_request", CREDENTIALS),
        "auth without password": (req(auth={"user": "u"}), "invalid_request", CREDENTIALS),
        "password a number": (
            req(auth={"user": "u", "password": 1}),
            "invalid_request",
            CREDENTIALS,
        ),
        "auth extra key": (
            req(auth={"user": "u", "password": "p", "otp": "1"}),
            "invalid_request",
            CREDENTIALS,
        ),
        "procedure missing": (req(procedure=_DROP), "invalid_request", INVALID),
        "procedure a number": (req(procedure=7), "invalid_request", INVALID),
        "procedure empty": (req(procedure=""), "invalid_request", INVALID),
        "arguments a number": (req(arguments=1), "invalid_request", INVALID),
        "arguments a string": (req(arguments="1, 2"), "invalid_request", INVALID),
        "arguments null": (req(arguments=None), "invalid_request", INVALID),
        "arguments missing": (req(arguments=_DROP), "invalid_request", INVALID),
        "two lines in one write": (
            lambda a: line(request(a)) * 2,
            "invalid_request",
            "excessive data after request",
        ),
        "too long": (
            lambda a: line(request(a, pad="x" * 8192)),
            "invalid_request",
            "request incomplete or too long",
        ),
    }


MALFORMED = _malformed_cases()


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_request_gets_harpds_error_then_the_agent_keeps_serving(
    jobs_agent_factory: Callable[..., Any], case: str
) -> None:
    make, error_type, message = MALFORMED[case]
    agent = jobs_agent_factory(max_message_bytes=4096)

    async def scenario() -> None:
        (reply,) = await raw_exchange(agent, make(agent))
        assert set(reply) == {"harp", "error"} and reply["harp"] == 1
        assert set(reply["error"]) == {"type", "message"}
        assert reply["error"]["type"] == error_type
        if message is not None:
            assert reply["error"]["message"] == message
        models.AgentError.model_validate(reply)
        assert await call(agent, "echo", [case]) == [ACK, {"result": [case]}]

    run(scenario())


def test_stalled_request_gets_read_error(jobs_agent_factory: Callable[..., Any]) -> None:
    agent = jobs_agent_factory(request_timeout_s=0.3)

    async def scenario() -> None:
        started = time.monotonic()
        (reply,) = await raw_exchange(agent, b'{"harp": 1,')
        assert reply["error"]["type"] == "read_error"
        assert time.monotonic() - started >= 0.25
        assert await call(agent, "echo", [1]) == [ACK, {"result": [1]}]

    run(scenario())


def test_eof_inside_the_request_line(tmp_path: Path) -> None:
    """harpd: "request incomplete or too long". Over TLS, asyncio closes a connection whose
    peer half-closes, so the mapping is checked on the same agent class over plain TCP."""

    async def scenario() -> None:
        file = PasswordFile(tmp_path / "passwd")
        procedures = ProcedureRegistry()
        procedures.load_module("runwire.reference_server.jobs.conformance_procedures")
        server = await Agent(procedures, file).serve("127.0.0.1", 0)
        try:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b'{"harp": 1, "procedure": "ec')
            writer.write_eof()
            received = await asyncio.wait_for(reader.read(), WAIT_S)
            writer.close()
            assert json.loads(received) == {
                "harp": 1,
                "error": {"type": "invalid_request", "message": "request incomplete or too long"},
            }
        finally:
            server.close()
            await server.wait_closed()

    run(scenario())


# --- time limits ----------------------------------------------------------------------------


def test_streaming_time_limit(jobs_agent: Any) -> None:
    started = time.monotonic()
    lines = run(call(jobs_agent, "stream_limited", [0.05]))
    elapsed = time.monotonic() - started
    assert lines[0] == STREAM_ACK
    assert lines[-1] == TIMEOUT_ERROR
    items = lines[1:-1]
    assert items and items == [{"stream": i} for i in range(len(items))]
    assert STREAM_LIMITED_TIMEOUT_S * 0.9 <= elapsed < STREAM_LIMITED_TIMEOUT_S + 3


@pytest.mark.parametrize("procedure", ["sync_limited", "sync_stream_limited"])
def test_sync_time_limit_kills_the_child(test_agent: Any, procedure: str) -> None:
    async def scenario() -> None:
        async with Reports() as reports:
            lines = await call(test_agent, procedure, [reports.port])
            pid = await reports.pid()
            assert lines[-1] == TIMEOUT_ERROR
            await wait_gone(pid)
            assert "finished" not in reports.seen

    run(scenario())


def test_default_time_limit_applies_to_procedures_without_one(
    jobs_agent_factory: Callable[..., Any],
) -> None:
    agent = jobs_agent_factory(default_time_limit_s=0.3)
    started = time.monotonic()
    assert run(call(agent, "sleep", [30])) == [ACK, TIMEOUT_ERROR]
    assert time.monotonic() - started < 5
    # the procedure's own limit wins over the default
    lines = run(call(agent, "stream_limited", [0.05]))
    assert len(lines) > 2 + 8  # ran for about a second, not 0.3 s


# --- cancel: the caller closes the connection ------------------------------------------------


async def _call_until_ack(agent: Any, procedure: str, arguments: Any) -> Any:
    """Start a call, read the acknowledgement, return the open reply stream."""
    stream = agent.client().call(agent.request(procedure, arguments))
    ack = await anext(stream)
    assert isinstance(ack, models.AgentAck)
    return stream


def test_disconnect_kills_a_sync_procedure(test_agent: Any) -> None:
    async def scenario() -> None:
        async with Reports() as reports:
            stream = await _call_until_ack(test_agent, "sync_sleep_marked", [30, reports.port])
            pid = await reports.pid()
            assert is_running(pid)
            await stream.aclose()  # closes the connection
            await wait_gone(pid)
            assert "finished" not in reports.seen

    run(scenario())


def test_disconnect_kills_what_a_sync_procedure_started(test_agent: Any) -> None:
    async def scenario() -> None:
        async with Reports() as reports:
            stream = await _call_until_ack(test_agent, "sync_spawn", [reports.port])
            pid = await reports.pid()
            grandchild = await reports.pid("grandchild")
            assert (await anext(stream)).to_wire() == {"stream": "started"}
            await stream.aclose()
            await wait_gone(pid)
            await wait_gone(grandchild)
            assert "finished" not in reports.seen

    run(scenario())


@pytest.mark.parametrize("procedure", ["async_wait", "async_stream_wait"])
def test_disconnect_cancels_an_async_procedure(test_agent: Any, procedure: str) -> None:
    async def scenario() -> None:
        async with Reports() as reports:
            stream = await _call_until_ack(test_agent, procedure, [reports.port])
            if procedure == "async_stream_wait":
                assert (await anext(stream)).to_wire() == {"stream": 0}
            assert await reports.next() == "started"
            await stream.aclose()
            assert await reports.next() == "cancelled"

    run(scenario())


# --- shutdown -------------------------------------------------------------------------------


@pytest.mark.parametrize("procedure", ["sleep", "sync_sleep_marked"])
def test_shutdown_ends_calls_in_flight_with_shutdown(
    jobs_agent_factory: Callable[..., Any], procedure: str
) -> None:
    agent = jobs_agent_factory(modules=[PROCEDURES])

    async def scenario() -> None:
        async with Reports() as reports:
            arguments = [30] if procedure == "sleep" else [30, reports.port]
            stream = await _call_until_ack(agent, procedure, arguments)
            pid = await reports.pid() if procedure != "sleep" else None
            stopping = asyncio.ensure_future(asyncio.to_thread(agent.stop))
            terminator = await anext(stream)
            assert terminator.to_wire() == SHUTDOWN_ERROR
            await stopping
            assert not agent.background.running
            if pid is not None:
                await wait_gone(pid)

    run(scenario())


def test_new_calls_during_shutdown_get_shutdown(tmp_path: Path) -> None:
    async def scenario() -> None:
        file = PasswordFile(tmp_path / "passwd")
        agent = Agent(ProcedureRegistry(), file)
        agent.begin_shutdown()
        request = models.AgentRequest(
            harp=1, procedure="echo", arguments=[], auth={"user": "u", "password": "p"}
        )
        replies = [reply.to_wire() async for reply in agent.call(request)]
        assert replies == [SHUTDOWN_ERROR]

    run(scenario())


# --- TLS ------------------------------------------------------------------------------------


def test_tls_1_2_or_newer_is_negotiated(jobs_agent: Any) -> None:
    async def scenario() -> None:
        _, writer = await asyncio.open_connection(
            jobs_agent.host, jobs_agent.port, ssl=jobs_agent.ssl_context()
        )
        version = writer.get_extra_info("ssl_object").version()
        writer.close()
        assert version in ("TLSv1.2", "TLSv1.3")

    run(scenario())


def test_tls_1_1_client_is_refused(jobs_agent: Any) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with pytest.warns(DeprecationWarning):
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    except ssl.SSLError:
        pytest.skip("this OpenSSL cannot offer TLS 1.1 at all")

    async def scenario() -> None:
        with pytest.raises((ssl.SSLError, ConnectionResetError)) as caught:
            await asyncio.wait_for(
                asyncio.open_connection(jobs_agent.host, jobs_agent.port, ssl=context), WAIT_S
            )
        if "NO_PROTOCOLS_AVAILABLE" in str(caught.value).upper():
            pytest.skip("this OpenSSL cannot offer TLS 1.1 at all")
        assert await call(jobs_agent, "echo", [1]) == [ACK, {"result": [1]}]

    run(scenario())


def test_clients_verify_the_certificate(jobs_agent: Any) -> None:
    from runwire.generated.jobs.client import AgentClient
    from runwire.reference_server.jobs.tls import client_context

    async def scenario() -> None:
        untrusted = AgentClient(
            jobs_agent.host, jobs_agent.port, ssl=client_context(), timeout_s=WAIT_S
        )
        with pytest.raises(AuthenticationError):
            await anext(untrusted.call(jobs_agent.request("echo")))
        wrong_name = jobs_agent.client(server_hostname="example.com")
        with pytest.raises(AuthenticationError):
            await anext(wrong_name.call(jobs_agent.request("echo")))
        by_name = jobs_agent.client(server_hostname="localhost")
        assert [m.to_wire() async for m in by_name.call(jobs_agent.request("echo", [2]))] == [
            ACK,
            {"result": [2]},
        ]

    run(scenario())


# --- passwords and configuration ------------------------------------------------------------


def test_password_changes_apply_to_a_running_agent(jobs_agent: Any) -> None:
    PasswordFile(jobs_agent.password_file, hasher=cheap_hasher()).set_password(
        jobs_agent.user, "new password"
    )

    async def scenario() -> None:
        assert await call(jobs_agent, "echo", [1], password="new password") == [
            ACK,
            {"result": [1]},
        ]
        assert await call(jobs_agent, "echo", [1]) == [AUTH_ERROR]

    run(scenario())


def test_example_procedures(jobs_agent_factory: Callable[..., Any], tmp_path: Path) -> None:
    agent = jobs_agent_factory(modules=[EXAMPLES])
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_bytes(b"hello\n")
    (data / "b.bin").write_bytes(bytes(range(256)) * 4)

    async def scenario() -> None:
        script = "import sys; print('one', flush=True); print('two', file=sys.stderr); sys.exit(4)"
        assert await call(agent, "run_command", [[sys.executable, "-c", script]]) == [
            STREAM_ACK,
            {"stream": "one"},
            {"stream": "two"},
            {"result": {"exit_code": 4}},
        ]
        paths = [str(data / "a.txt"), str(data / "b.bin")]
        expected = {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}
        assert await call(agent, "checksum", [paths]) == [ACK, {"result": expected}]
        md5 = hashlib.md5(b"hello\n").hexdigest()
        assert await call(agent, "checksum", {"paths": paths[0], "algorithm": "md5"}) == [
            ACK,
            {"result": {paths[0]: md5}},
        ]
        _, usage = await call(agent, "disk_usage", [str(data)])
        assert usage["result"]["bytes"] == 6 + 1024 and usage["result"]["files"] == 2
        assert usage["result"]["filesystem"]["total_bytes"] > 0
        assert await call(agent, "sleep_blocking", [0.01]) == [ACK, {"result": 0.01}]
        _, raised = await call(agent, "raise_error", ["no", "PermissionError"])
        assert raised["exception"]["type"] == "PermissionError"
        _, info = await call(agent, "system_info")
        assert {"hostname", "platform", "python", "cpu_count"} <= set(info["result"])
        # the conformance procedures are served alongside
        assert await call(agent, "echo", [3]) == [ACK, {"result": [3]}]

    run(scenario())


def test_example_configuration_starts_an_agent(tmp_path: Path) -> None:
    config = AgentConfig.from_toml(EXAMPLE_CONFIG)
    assert config.modules == [EXAMPLES]
    assert config.default_time_limit_s == 600
    config.port = 0
    config.state_dir = tmp_path
    config.password_file = tmp_path / "passwd"
    PasswordFile(config.password_file, hasher=cheap_hasher()).set_password("ops", "pw")
    with BackgroundAgent(config) as background:
        assert {"run_command", "checksum", "echo"} <= set(background.endpoint.procedures)
        assert background.endpoint.dev_certificate
        assert background.endpoint.cafile == tmp_path / "jobs-agent" / "dev-cert.pem"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"colour": "blue"}, "unknown key 'colour'"),
        ({"port": "4306"}, "port must be an integer"),
        ({"modules": "x.py"}, "modules must be a list"),
        ({"certfile": "a.pem"}, "give both certfile and keyfile"),
        ({"max_connections": 0}, "max_connections must be at least 1"),
        ({"default_time_limit_s": -1}, "default_time_limit_s must be positive"),
    ],
)
def test_bad_configuration_is_refused(settings: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        AgentConfig.from_mapping(settings)


def test_agent_needs_a_password_file_and_loadable_modules(tmp_path: Path) -> None:
    config = AgentConfig(port=0, state_dir=tmp_path)
    with pytest.raises(ConfigError, match="agent-passwd"):
        build_agent(config)
    config.modules = [str(tmp_path / "missing.py")]
    with pytest.raises(ConfigError, match="cannot load procedures"):
        build_agent(config)


# --- the command line -----------------------------------------------------------------------


async def _start_cli(state: Path, *options: str, env: dict[str, str] | None = None) -> Any:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runwire",
        "serve",
        "jobs-agent",
        "--port",
        "0",
        "--state-dir",
        str(state),
        "--log-level",
        "warning",
        *options,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


async def _read_until_listening(process: Any) -> list[str]:
    lines = []
    while not lines or "listening" not in lines[-1]:
        raw = await asyncio.wait_for(process.stdout.readline(), 30)
        assert raw, f"agent exited: {lines}"
        lines.append(raw.decode().strip())
        assert len(lines) < 10
    return lines


async def _cli_call(state: Path, port: int, user: str, password: str) -> list[Any]:
    from runwire.generated.jobs.client import AgentClient
    from runwire.reference_server.jobs.tls import client_context

    cafile = state / "jobs-agent" / "dev-cert.pem"
    client = AgentClient("127.0.0.1", port, ssl=client_context(cafile))
    request = models.AgentRequest(
        harp=1, procedure="echo", arguments=["cli"], auth={"user": user, "password": password}
    )
    return [m.to_wire() async for m in client.call(request)]


def test_serve_jobs_agent_command(tmp_path: Path) -> None:
    async def scenario() -> None:
        # first start: a development password file with a generated password, printed once
        process = await _start_cli(tmp_path)
        try:
            lines = await _read_until_listening(process)
            created = re.search(r"user (\S+), password (\S+) ", lines[0])
            assert created, lines
            port = int(re.search(r"127\.0\.0\.1:(\d+) \(TLS\)", lines[-1]).group(1))  # type: ignore[union-attr]
            assert str(tmp_path / "jobs-agent" / "dev-cert.pem") in lines[-1]
            assert await _cli_call(tmp_path, port, *created.groups()) == [
                ACK,
                {"result": ["cli"]},
            ]
            # what the dispatcher's default configuration reads
            host = read_dev_agent(tmp_path)
            assert host is not None
            assert (host.address, host.port) == ("127.0.0.1", port)
            assert (host.user, host.password) == created.groups()
            assert host.ca_file == str(tmp_path / "jobs-agent" / "dev-cert.pem")
            assert (tmp_path / "jobs-agent" / "dev-agent.json").stat().st_mode & 0o777 == 0o600
        finally:
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 30) == 0
        # a known user for demos: --user and --password-env
        env = {"DEMO_AGENT_PASSWORD": "demo secret"}
        process = await _start_cli(
            tmp_path, "--user", "demo", "--password-env", "DEMO_AGENT_PASSWORD", env=env
        )
        try:
            lines = await _read_until_listening(process)
            assert "demo secret" not in "\n".join(lines)
            port = int(re.search(r":(\d+) \(TLS\)", lines[-1]).group(1))  # type: ignore[union-attr]
            assert await _cli_call(tmp_path, port, "demo", "demo secret") == [
                ACK,
                {"result": ["cli"]},
            ]
            host = read_dev_agent(tmp_path)
            assert host is not None and (host.user, host.password) == ("demo", "demo secret")
        finally:
            process.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(process.wait(), 30) == 0

    run(scenario(), timeout_s=90)


def test_dev_agent_file_keeps_known_credentials(tmp_path: Path) -> None:
    from runwire.reference_server.jobs.agent import AgentEndpoint

    agent_dir = tmp_path / "jobs-agent"
    passwords = agent_dir / "passwd"
    PasswordFile(passwords, hasher=cheap_hasher()).set_password("ops", "pw")
    endpoint = AgentEndpoint(
        host="0.0.0.0",
        port=4399,
        certfile=agent_dir / "dev-cert.pem",
        cafile=agent_dir / "dev-cert.pem",
        dev_certificate=True,
        password_file=passwords,
        procedures=("echo",),
    )
    assert read_dev_agent(tmp_path) is None
    write_dev_agent(agent_dir, endpoint, None)
    assert read_dev_agent(tmp_path) is None  # no credentials known
    write_dev_agent(agent_dir, endpoint, ("ops", "pw"))
    write_dev_agent(agent_dir, endpoint, None)  # a restart without new credentials
    host = read_dev_agent(tmp_path)
    assert host is not None
    assert (host.address, host.port, host.user, host.password) == ("127.0.0.1", 4399, "ops", "pw")
    (agent_dir / "passwd").write_text("")  # the user is gone: its password is forgotten
    write_dev_agent(agent_dir, endpoint, None)
    assert read_dev_agent(tmp_path) is None


def test_a_failing_password_backend_refuses_the_call(tmp_path: Path) -> None:
    class Broken:
        def authenticate(self, user: str, password: str) -> bool:
            raise OSError("backend down")

    async def scenario() -> None:
        procedures = ProcedureRegistry()
        procedures.load_module("runwire.reference_server.jobs.conformance_procedures")
        agent = Agent(procedures, Broken())
        request = models.AgentRequest(
            harp=1, procedure="echo", arguments=[], auth={"user": "u", "password": "p"}
        )
        assert [reply.to_wire() async for reply in agent.call(request)] == [AUTH_ERROR]

    run(scenario())


def test_command_line_options_override_the_configuration_file(tmp_path: Path) -> None:
    import argparse

    from runwire.reference_server.jobs import agent_main

    parser = argparse.ArgumentParser()
    agent_main.add_arguments(parser)
    args = parser.parse_args(
        [
            "--config",
            str(EXAMPLE_CONFIG),
            "--port",
            "0",
            "--procedures",
            "more.procs",
            "--no-conformance-procedures",
            "--time-limit",
            "5",
            "--state-dir",
            str(tmp_path),
        ]
    )
    config = agent_main._config(args)
    assert config.port == 0 and config.host == "127.0.0.1"
    assert config.modules == [EXAMPLES, "more.procs"]
    assert not config.conformance_procedures
    assert config.default_time_limit_s == 5
    assert config.effective_password_file == tmp_path / "jobs-agent" / "passwd"


def test_time_limit_holds_for_an_async_procedure_that_ignores_cancellation(
    test_agent: Any,
) -> None:
    started = time.monotonic()
    assert run(call(test_agent, "async_stubborn")) == [ACK, TIMEOUT_ERROR]
    assert time.monotonic() - started < 2.5
