"""runwire.compat.harp against a real reference dispatcher and agent on loopback.

The agent (``jobs_agent_factory``, a background thread) serves ``harp_procedures.py``; the
dispatcher (``jobs_dispatcher_factory``) runs on a background event loop, so the sync compat
API is called from the test's own thread, as a user would. Jobs that must stay running are
``gate`` jobs: the procedure connects back to a socket the test holds, so the test knows
when the job started and decides what it streams and how it ends, without sleeping. Every
wait is bounded (client timeouts, socket timeouts, ``wait_timeout``).
"""

from __future__ import annotations

import asyncio
import copy
import json
import pickle
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runwire.compat import harp

PROCEDURES = str(Path(__file__).with_name("harp_procedures.py"))
USER, PASSWORD = "username", "secret"  # the synopsis' credentials
CLIENT_TIMEOUT_S = 5.0
WAIT_S = 5.0


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def agent(jobs_agent_factory: Callable[..., Any]) -> Any:
    return jobs_agent_factory(
        modules=[PROCEDURES], conformance_procedures=False, user=USER, password=PASSWORD
    )


@pytest.fixture
def dispatcher(jobs_dispatcher_factory: Callable[..., Any], agent: Any) -> Any:
    return jobs_dispatcher_factory(agents={"localhost": agent})


@pytest.fixture
def rpc(dispatcher: Any) -> harp.HarpCaller:
    return harp.HarpCaller("127.0.0.1", dispatcher.port, timeout=CLIENT_TIMEOUT_S)


class Gate:
    """The test's end of ``gate`` jobs: a listening socket the procedure connects to."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(WAIT_S)
        self.port: int = self.server.getsockname()[1]
        self.connections: list[socket.socket] = []

    def accept(self) -> socket.socket:
        """Wait (bounded) until a gate job has started; its control connection."""
        connection, _ = self.server.accept()
        self.connections.append(connection)
        return connection

    @staticmethod
    def send(connection: socket.socket, **order: Any) -> None:
        connection.sendall(json.dumps(order).encode() + b"\n")

    def close(self) -> None:
        for connection in self.connections:
            connection.close()
        self.server.close()


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (kernel backlog) and never answers."""
    server = socket.create_server(("127.0.0.1", 0), backlog=16)
    yield server.getsockname()[1]
    server.close()


# --- the manual's synopsis, run as written ------------------------------------------------------


def test_synopsis_runs_as_written(
    agent: Any, jobs_dispatcher_factory: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The harp(3) synopsis, changed only in its import, Python 3 print(), the ports chosen
    at run time and the elided ``elif ...`` branch. ``stream_infinity`` never ends by itself:
    this dispatcher caps every job at 1 s, so ``max_exec_time = 15`` becomes 1 s and the
    follow ends with the job's timeout."""
    dispatcher = jobs_dispatcher_factory(agents={"localhost": agent}, max_exec_time_s=1)
    DISPATCHER_PORT, AGENT_PORT = dispatcher.port, agent.port
    started = time.monotonic()

    # --- HarpCaller interaction (synopsis) ---
    import json

    from runwire.compat import harp

    rpc = harp.HarpCaller("localhost", port=DISPATCHER_PORT)

    host = rpc.localhost(queue={"foo": "bar"}, max_exec_time=15)
    # or: `host = rpc.host(host = "localhost", queue = ...)'
    # or simply: `host = rpc.localhost', if no job configuration is needed
    job = host.stream_infinity()
    for msg in job.follow(since=0):
        print(json.dumps(msg))

    print(job.id())
    print(job.result())

    result = rpc("localhost").return_immediate("bar", "baz").get()
    first_result = result

    job_id = "3f22e0d4-c8ed-11e5-8d66-001e8c140268"
    result = rpc.job(job_id).result()
    if result is harp.CALL_NOT_FINISHED:
        print("still running")
    elif result is harp.CALL_CANCELLED:
        print("cancelled")
    else:
        print("ended:", result)

    # --- harpd(8) interaction (synopsis) ---
    server = harp.HarpServer(
        host="localhost",
        user="username",
        password="secret",
        port=AGENT_PORT,
    )
    print(server.current_time())
    for msg in server.logs_in_next_minutes(10):
        if isinstance(msg, harp.Result):
            # last value, nothing more will be returned
            print(json.dumps(msg.value))
        else:
            print("log message:", json.dumps(msg))

    # --- what it printed ---
    lines = capsys.readouterr().out.splitlines()
    packets = []
    while lines and lines[0].startswith("{"):
        packets.append(json.loads(lines.pop(0)))
    assert len(packets) >= 3  # about 100 in the 1 s the job may run
    assert packets == [{"n": n} for n in range(len(packets))]  # gap-free from since=0
    assert lines[0] == job.id() and uuid.UUID(lines[0]).version == 4
    assert lines[1] == "timeout: maximum execution time exceeded"
    assert first_result == ["bar", "baz"]
    assert lines[2] == "ended: invalid_jobid: no job with this ID"
    assert abs(int(lines[3]) - time.time()) < 60
    assert lines[4:] == [
        'log message: "log line 0"',
        'log message: "log line 1"',
        'log message: "log line 2"',
        '{"minutes": 10, "lines": 3}',
    ]
    assert time.monotonic() - started < 10


# --- public names ----------------------------------------------------------------------------


SEED_NAMES = {
    "HarpCaller",
    "RemoteServer",
    "RemoteProcedure",
    "RemoteCall",
    "CALL_NOT_FINISHED",
    "CALL_CANCELLED",
    "HarpServer",
    "HarpProcedure",
    "HarpStreamIterator",
    "Result",
    "JSONConnection",
    "JSONSSLConnection",
    "HarpException",
    "CommunicationError",
    "CancelledException",
    "RemoteException",
    "RemoteError",
}


def test_every_documented_name_is_public() -> None:
    assert set(harp.__all__) == SEED_NAMES
    for name in SEED_NAMES:
        assert getattr(harp, name) is not None
    assert hasattr(harp.RemoteCall, "StreamIterator")
    for method in ("result", "get", "follow", "stream", "cancel", "id", "args", "host"):
        assert callable(getattr(harp.RemoteCall, method))
    for method in ("procedure", "info", "submit_time", "start_time", "end_time"):
        assert callable(getattr(harp.RemoteCall, method))
    for method in ("host", "job", "request", "connect"):
        assert callable(getattr(harp.HarpCaller, method))
    for cls in ("CommunicationError", "CancelledException", "RemoteException", "RemoteError"):
        assert issubclass(getattr(harp, cls), harp.HarpException)


def test_exceptions_and_sentinels() -> None:
    exc = harp.RemoteException("ValueError", "boom")
    assert (exc.type, exc.message, exc.data) == ("ValueError", "boom", None)
    err = harp.RemoteError("timeout", "late", data={"s": 1})
    assert (err.type, err.message, err.data) == ("timeout", "late", {"s": 1})
    assert str(err) == "timeout: late"
    assert pickle.loads(pickle.dumps(err)) == err
    assert harp.RemoteError("a", "b") != harp.RemoteException("a", "b")
    assert repr(harp.CALL_NOT_FINISHED) == "<CallNotFinished>"
    assert repr(harp.CALL_CANCELLED) == "<CallCancelled>"
    for sentinel in (harp.CALL_NOT_FINISHED, harp.CALL_CANCELLED):
        assert copy.deepcopy(sentinel) is sentinel
        assert pickle.loads(pickle.dumps(sentinel)) is sentinel
    assert harp.Result(3).value == 3 and harp.Result([1]) == harp.Result([1])


def test_hosts_procedures_and_options_without_a_server() -> None:
    rpc = harp.HarpCaller("127.0.0.1", 1)
    web = rpc.web01
    assert isinstance(web, harp.RemoteServer) and str(web) == "web01"
    assert web(queue={"service": "nginx"}, concurrency=2) is web  # returns self
    procedure = web.restart_nginx
    assert isinstance(procedure, harp.RemoteProcedure)
    assert (procedure.host(), procedure.procedure()) == ("web01", "restart_nginx")
    assert str(rpc("web02")) == "web02" and str(rpc.host("web03", info={"a": 1})) == "web03"
    with pytest.raises(AttributeError):
        _ = rpc._private
    with pytest.raises(AttributeError):
        _ = web.__deepcopy_hook__
    with pytest.raises(TypeError, match="unknown job option"):
        rpc.host("web01", colour="blue")
    with pytest.raises(ValueError, match="needs a queue"):
        rpc.host("web01", concurrency=2)
    for bad in ({"timeout": 0}, {"max_exec_time": 1.5}, {"timeout": True}, {"queue": "q"}):
        with pytest.raises((TypeError, ValueError)):
            rpc.host("web01", **bad)
    with pytest.raises(ValueError, match="cannot be mixed"):
        web.f(1, k=2)
    with pytest.raises(TypeError, match="JSON"):
        web.f({1, 2})
    for bad_id in ("3F22E0D4-C8ED-11E5-8D66-001E8C140268", "nope", ""):
        with pytest.raises(ValueError, match="job id"):
            rpc.job(bad_id)


# --- results ---------------------------------------------------------------------------------


def test_unfinished_result_is_never_cached(rpc: harp.HarpCaller, gate: Gate) -> None:
    """Defect 13(a): the original cached no_result forever on the job object."""
    job = rpc.localhost.gate(gate.port)
    control = gate.accept()  # the job is running now
    assert job.result() is harp.CALL_NOT_FINISHED
    assert job.result() is harp.CALL_NOT_FINISHED
    assert job.get(wait=False) is harp.CALL_NOT_FINISHED
    assert job.start_time() is not None and job.end_time() is None
    Gate.send(control, result={"answer": 42})
    assert job.get() == {"answer": 42}  # really waits, on the same object
    assert job.result() == {"answer": 42}
    assert job.end_time() is not None and job.end_time() >= job.start_time()
    assert rpc.job(job.id()).result() == {"answer": 42}


def test_result_returns_and_get_raises(rpc: harp.HarpCaller, gate: Gate) -> None:
    job = rpc.localhost.gate(gate.port)
    Gate.send(gate.accept(), **{"raise": "boom"})
    with pytest.raises(harp.RemoteException) as raised:
        job.get()
    assert (raised.value.type, raised.value.message) == ("RuntimeError", "boom")
    returned = job.result()
    assert isinstance(returned, harp.RemoteException) and returned == raised.value

    unknown_host = rpc.nohost.anything()
    error = unknown_host.result(wait=True)
    assert isinstance(error, harp.RemoteError) and error.type == "unknown_host"
    with pytest.raises(harp.RemoteError, match="unknown_host"):
        unknown_host.get()

    no_such = rpc.localhost.nope()
    error = no_such.result(wait=True)
    assert isinstance(error, harp.RemoteError)
    assert (error.type, error.data) == ("no_such_procedure", {"procedure": "nope"})

    missing = rpc.job(str(uuid.uuid4()))
    error = missing.result()
    assert isinstance(error, harp.RemoteError) and error.type == "invalid_jobid"
    with pytest.raises(harp.RemoteError, match="invalid_jobid"):
        missing.get()
    with pytest.raises(harp.RemoteError, match="invalid_jobid"):
        missing.host()
    assert missing.cancel() is False


def test_cancel_running_and_queued_jobs(rpc: harp.HarpCaller, gate: Gate) -> None:
    queue = rpc.localhost(queue={"test": "cancel"}, concurrency=1)
    running = queue.gate(gate.port)
    control = gate.accept()
    queued = queue.gate(gate.port)  # waits behind `running`
    assert queued.start_time() is None and queued.result() is harp.CALL_NOT_FINISHED

    assert queued.cancel() is True
    assert queued.result() is harp.CALL_CANCELLED
    assert queued.start_time() is None and queued.end_time() is not None
    with pytest.raises(harp.CancelledException):
        queued.get()

    assert running.cancel() is True
    assert running.cancel() is False  # already ended
    assert running.result(wait=True) is harp.CALL_CANCELLED
    with pytest.raises(harp.CancelledException):
        running.get()
    control.settimeout(WAIT_S)
    assert control.recv(1) == b""  # the agent stopped the procedure: its connection closed


def test_status_accessors(rpc: harp.HarpCaller) -> None:
    before = int(time.time())
    job = rpc.localhost(info={"who": "ops", "n": [1, 2]}).return_immediate(a="x", b=2)
    assert job.get() == ["x", 2]
    assert job.host() == "localhost"
    assert job.procedure() == "return_immediate"
    assert job.args() == {"a": "x", "b": 2}
    assert job.info() == {"who": "ops", "n": [1, 2]}
    assert before - 1 <= job.submit_time() <= job.start_time() <= job.end_time()  # type: ignore[operator]
    positional = rpc.localhost.return_immediate(1, None)
    assert positional.get() == [1, None] and positional.args() == [1, None]
    assert positional.info() is None


# --- streams ---------------------------------------------------------------------------------


def test_follow_and_stream_defaults_numbered_and_all(rpc: harp.HarpCaller, gate: Gate) -> None:
    job = rpc.localhost.gate(gate.port)
    control = gate.accept()
    for value in ("a", "b", "c"):
        Gate.send(control, stream=value)
    numbered = job.follow(since=0, numbered=True)
    assert [next(numbered) for _ in range(3)] == [(0, "a"), (1, "b"), (2, "c")]

    assert job.stream().all() == ["a", "b", "c"]  # stream() defaults to since=0
    assert list(job.stream(recent=1)) == ["c"]
    assert job.stream(since=1, numbered=True).all() == [(1, "b"), (2, "c")]
    assert job.result() is harp.CALL_NOT_FINISHED  # a read ending in `continue` caches nothing

    new_only = job.follow()  # follow() defaults to recent=0: only what comes next
    last_two = job.follow(recent=2)
    Gate.send(control, stream="d")
    Gate.send(control, result="end")
    assert list(new_only) == ["d"]
    assert job.result() == "end"  # the follow's terminator was recorded
    assert last_two.all() == ["b", "c", "d"]
    assert [next(numbered)] == [(3, "d")]
    with pytest.raises(StopIteration):
        next(numbered)
    assert job.follow(since=1).all() == ["b", "c", "d"]  # a finished job: replay, then stop


def test_stream_iterator_over_a_json_connection(rpc: harp.HarpCaller) -> None:
    job = rpc.localhost.logs_in_next_minutes(5)
    assert job.get() == {"minutes": 5, "lines": 3}
    with rpc.connect() as conn:
        conn.send({"harpcaller": 1, "read_stream": job.id(), "since": 1})
        iterator = harp.RemoteCall.StreamIterator(rpc.job(job.id()), conn, numbered=True)
        assert iterator.all() == [(1, "log line 1"), (2, "log line 2")]


def test_streams_of_unknown_jobs_raise(rpc: harp.HarpCaller) -> None:
    missing = rpc.job(str(uuid.uuid4()))
    with pytest.raises(harp.RemoteError, match="invalid_jobid"):
        list(missing.stream())
    with pytest.raises(harp.RemoteError, match="invalid_jobid"):
        missing.follow()
    with pytest.raises(harp.RemoteError, match="invalid_jobid"):
        list(missing.follow(since=0))
    with pytest.raises(ValueError, match="not both"):
        missing.follow(since=0, recent=0)


def test_waits_longer_than_the_socket_timeout(dispatcher: Any) -> None:
    """get(wait=True) and follow() re-issue their request after `timeout` s of silence
    (the job is silent 0.5 s between packets; the socket timeout is 0.2 s)."""
    rpc = harp.HarpCaller("127.0.0.1", dispatcher.port, timeout=0.2)
    slow = rpc.localhost.slow_stream(2, 0.5)
    assert slow.follow(since=0, numbered=True).all() == [(0, 0), (1, 1)]
    assert slow.result() == "done"
    other = rpc.localhost.slow_stream(1, 0.5)
    assert other.get() == "done"


def test_wait_timeout_bounds_a_follow(dispatcher: Any) -> None:
    rpc = harp.HarpCaller("127.0.0.1", dispatcher.port, timeout=CLIENT_TIMEOUT_S, wait_timeout=0.3)
    job = rpc.localhost.stream_infinity()
    received = []
    with pytest.raises(harp.CommunicationError, match="wait_timeout"):
        for message in job.follow(since=0):  # packets every 10 ms, forever
            received.append(message)
    assert len(received) >= 3 and received == [{"n": n} for n in range(len(received))]
    assert job.cancel() is True


# --- timeouts and communication errors ----------------------------------------------------------


def test_timeouts_raise_communication_error(silent_port: int) -> None:
    rpc = harp.HarpCaller("127.0.0.1", silent_port, timeout=0.2, wait_timeout=0.5)
    job = rpc.job(str(uuid.uuid4()))
    returned = job.result()
    assert isinstance(returned, harp.CommunicationError)
    with pytest.raises(harp.CommunicationError):
        job.get(wait=False)
    with pytest.raises(harp.CommunicationError, match="wait_timeout"):
        job.get()  # waits by re-asking, until wait_timeout
    with pytest.raises(harp.CommunicationError):
        job.cancel()
    with pytest.raises(harp.CommunicationError):
        job.start_time()
    with pytest.raises(harp.CommunicationError):
        job.follow(since=0).all()
    with pytest.raises(harp.CommunicationError):
        rpc.localhost.anything()
    with pytest.raises(harp.CommunicationError, match="timed out"):
        rpc.request({"get_status": job.id()})
    with harp.JSONConnection("127.0.0.1", silent_port, timeout=0.2) as conn:
        conn.send({"ping": 1})
        with pytest.raises(harp.CommunicationError, match="timed out"):
            conn.receive()
    server = harp.HarpServer("127.0.0.1", USER, PASSWORD, port=silent_port, timeout=0.2)
    with pytest.raises(harp.CommunicationError):
        server.current_time()


def test_connection_refused_is_communication_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    rpc = harp.HarpCaller("127.0.0.1", port, timeout=2)
    job = rpc.job(str(uuid.uuid4()))
    assert isinstance(job.result(), harp.CommunicationError)
    with pytest.raises(harp.CommunicationError):
        rpc.connect()
    with pytest.raises(harp.CommunicationError):
        harp.HarpServer("127.0.0.1", USER, PASSWORD, port=port, timeout=2).current_time()


# --- JSON connections --------------------------------------------------------------------------


def serve_lines(replies: list[bytes]) -> tuple[int, threading.Thread, socket.socket]:
    """A one-connection server: reads one line, writes ``replies`` raw, closes."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(WAIT_S)

    def main() -> None:
        connection, _ = server.accept()
        with connection:
            connection.settimeout(WAIT_S)
            connection.makefile("rb").readline()
            for reply in replies:
                connection.sendall(reply)

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    return server.getsockname()[1], thread, server


def test_json_connection_round_trip_and_errors(rpc: harp.HarpCaller) -> None:
    job_id = str(uuid.uuid4())
    conn = rpc.connect()
    assert isinstance(conn, harp.JSONConnection)
    with conn:
        conn.send({"harpcaller": 1, "get_status": job_id})
        assert conn.receive() == {
            "error": {"type": "invalid_jobid", "message": "no job with this ID"}
        }
        with pytest.raises(harp.CommunicationError, match="unexpected EOF"):
            conn.receive()  # one request per connection: the dispatcher closed
        conn.connect()  # again, on a new connection
        conn.send({"harpcaller": 1, "cancel": job_id})
        assert "error" in conn.receive()
    assert rpc.request({"get_result": job_id, "wait": False})["error"]["type"] == "invalid_jobid"

    port, thread, server = serve_lines([b'{"a": [1, "\\u00e9"]}\n{"b": 2}', b"not json\n"])
    with server, harp.JSONConnection("127.0.0.1", port, timeout=WAIT_S) as conn:
        conn.send({"x": "é"})
        assert conn.receive() == {"a": [1, "é"]}
        with pytest.raises(harp.CommunicationError, match="not JSON"):
            conn.receive()  # '{"b": 2}not json' is one line
    thread.join(WAIT_S)

    port, thread, server = serve_lines([b'"' + b"x" * 100 + b'"\n'])
    with server, harp.JSONConnection("127.0.0.1", port, max_line_bytes=50) as conn:
        conn.send(1)
        with pytest.raises(harp.CommunicationError, match="longer than 50"):
            conn.receive()
    thread.join(WAIT_S)
    with pytest.raises(ValueError):
        conn.send(float("nan"))


def test_json_ssl_connection_to_the_agent(agent: Any) -> None:
    request = {
        "harp": 1,
        "procedure": "current_time",
        "arguments": [],
        "auth": {"user": USER, "password": PASSWORD},
    }
    with harp.JSONSSLConnection(
        "127.0.0.1", agent.port, agent.cafile, server_hostname="localhost", timeout=WAIT_S
    ) as conn:
        conn.send(request)
        assert conn.receive() == {"harp": 1, "stream_result": False}
        assert abs(conn.receive()["result"] - time.time()) < 60
    with harp.JSONSSLConnection("127.0.0.1", agent.port, timeout=WAIT_S) as conn:  # unverified
        conn.send(request)
        assert conn.receive()["stream_result"] is False
    with pytest.raises(harp.CommunicationError, match="cannot connect"):
        harp.JSONSSLConnection(
            "127.0.0.1", agent.port, agent.cafile, server_hostname="other.invalid"
        )


# --- HarpServer --------------------------------------------------------------------------------


def test_harp_server_results_streams_and_errors(agent: Any) -> None:
    server = harp.HarpServer("127.0.0.1", USER, PASSWORD, port=agent.port, timeout=WAIT_S)
    assert server.return_immediate(1, "x") == [1, "x"]
    assert server.return_immediate(b=2, a=1) == [1, 2]
    stream = server.logs_in_next_minutes(3)
    assert isinstance(stream, harp.HarpStreamIterator)
    items = list(stream)
    assert items[:3] == ["log line 0", "log line 1", "log line 2"]
    assert items[3] == harp.Result({"minutes": 3, "lines": 3}) and len(items) == 4

    with pytest.raises(harp.RemoteException) as raised:
        server.return_immediate(1)  # TypeError in the procedure, after the ack
    assert raised.value.type == "TypeError"
    with pytest.raises(harp.RemoteError) as error:
        server.nope()
    assert (error.value.type, error.value.data) == ("no_such_procedure", {"procedure": "nope"})
    with pytest.raises(harp.RemoteError, match="auth_error"):
        harp.HarpServer("127.0.0.1", USER, "wrong", port=agent.port).current_time()
    with pytest.raises(ValueError, match="cannot be mixed"):
        server.return_immediate(1, b=2)

    gate_iterator = server.stream_infinity()
    assert [next(gate_iterator) for _ in range(2)] == [{"n": 0}, {"n": 1}]
    gate_iterator.close()  # ends the call; the agent stops the procedure
    with pytest.raises(StopIteration):
        next(gate_iterator)
    assert harp.HarpStreamIterator(iter([1, harp.Result(2)])).next() == 1


def test_harp_server_post_ack_errors_are_remote_errors(
    jobs_agent_factory: Callable[..., Any],
) -> None:
    """Defect 13(d): an agent error after the ack is RemoteError, as before it."""
    limited = jobs_agent_factory(
        modules=[PROCEDURES],
        conformance_procedures=False,
        user=USER,
        password=PASSWORD,
        default_time_limit_s=0.3,
    )
    server = harp.HarpServer("127.0.0.1", USER, PASSWORD, port=limited.port, timeout=WAIT_S)
    with pytest.raises(harp.RemoteError) as error:
        server.sleep_for(10.0)  # ack, then the time limit's error line
    assert error.value.type == "timeout"
    stream = server.stream_infinity()
    with pytest.raises(harp.RemoteError) as error:
        list(stream)  # packets, then the time limit's error line
    assert error.value.type == "timeout"


def test_harp_server_certificate_checks(agent: Any) -> None:
    verified = harp.HarpServer(
        "127.0.0.1",
        USER,
        PASSWORD,
        port=agent.port,
        ca_file=agent.cafile,
        server_hostname="localhost",
        timeout=WAIT_S,
    )
    assert isinstance(verified.current_time(), int)
    wrong_name = harp.HarpServer(
        "127.0.0.1",
        USER,
        PASSWORD,
        port=agent.port,
        ca_file=agent.cafile,
        server_hostname="other.invalid",
        timeout=WAIT_S,
    )
    with pytest.raises(harp.CommunicationError, match="certificate"):
        wrong_name.current_time()
    chain_only = harp.HarpServer(
        "127.0.0.1",
        USER,
        PASSWORD,
        port=agent.port,
        ca_file=agent.cafile,
        server_hostname="other.invalid",
        check_hostname=False,
        timeout=WAIT_S,
    )
    assert isinstance(chain_only.current_time(), int)


# --- inside an event loop ------------------------------------------------------------------------


def test_usable_inside_a_running_event_loop(rpc: harp.HarpCaller, agent: Any) -> None:
    """A notebook or an async web handler calling the (blocking) API directly."""

    async def handler() -> tuple[Any, Any, list[Any]]:
        job = rpc.localhost.logs_in_next_minutes(1)
        value = job.get()
        server = harp.HarpServer("127.0.0.1", USER, PASSWORD, port=agent.port, timeout=WAIT_S)
        return value, job.stream().all(), list(server.logs_in_next_minutes(2))

    value, packets, streamed = asyncio.run(asyncio.wait_for(handler(), 20))
    assert value == {"minutes": 1, "lines": 3}
    assert packets == ["log line 0", "log line 1", "log line 2"]
    assert streamed[-1] == harp.Result({"minutes": 2, "lines": 3})
