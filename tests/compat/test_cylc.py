"""``runwire.compat.cylc``: Cylc 8's documented WorkflowRuntimeClient against the reference
scheduler (a WorkflowService with CURVE on 127.0.0.1, running on a background event loop).

Covers the seed's API (``client('ping_workflow')`` is True, ``serial_request``,
``async_request``, ``host``/``port``/``timeout_handler``/``header``), the exception classes and
when each is raised, contact-file discovery (no such workflow vs stopped vs stale), and the Lazy
Pirate recovery: the server's loop is blocked on an event (not a sleep) so one request times
out, then released; the same client works again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runwire.compat.cylc import (
    DEFAULT_TIMEOUT,
    ClientError,
    ClientTimeout,
    CylcError,
    RequestError,
    WorkflowNotFound,
    WorkflowRuntimeClient,
    WorkflowStopped,
)
from runwire.reference_server.workflow import parse_definition
from runwire.reference_server.workflow.contact import (
    Contact,
    contact_path,
    current_command,
    write_contact_file,
)
from runwire.reference_server.workflow.service import WorkflowService
from runwire.runtime.transport.zmq_endpoint import RequestContext
from runwire.runtime.transport.zmq_security import create_keypair

WAIT_S = 8.0
DEFINITION: dict[str, Any] = {
    "name": "wired",
    "scheduling": {"initial_cycle_point": 1, "final_cycle_point": 1, "graph": "quick => slow"},
    "runtime": {"quick": {"script": "true"}, "slow": {"script": "sleep 30"}},
}


@dataclass
class Running:
    """A workflow served on the background loop."""

    service: WorkflowService
    contact: Contact
    run_root: Path
    done: concurrent.futures.Future[str]
    loop: Any

    def stop(self) -> str:
        """Kill-stop the workflow and wait for the service to finish."""
        if not self.done.done():
            self.loop.loop.call_soon_threadsafe(self.service.request_stop, "kill")
        return self.done.result(WAIT_S)

    def block_server(self) -> threading.Event:
        """Block the server's event loop until the returned event is set (bounded)."""
        started, release = threading.Event(), threading.Event()

        def block() -> None:
            started.set()
            release.wait(WAIT_S)

        self.loop.loop.call_soon_threadsafe(block)
        assert started.wait(WAIT_S)
        return release


@pytest.fixture
def workflow(background_loop: Any, tmp_path: Path) -> Iterator[Running]:
    definition = parse_definition(DEFINITION)
    service = WorkflowService(
        definition,
        run_root=tmp_path,
        paused=True,
        heartbeat_interval_s=0.5,
        scheduler_options={"job_poll_interval_s": 0.02, "kill_grace_s": 0.5},
    )
    contact = background_loop.run(service.start())
    done = asyncio.run_coroutine_threadsafe(service.run(), background_loop.loop)
    running = Running(service, contact, tmp_path, done, background_loop)
    yield running
    running.stop()


def client_of(running: Running, **options: Any) -> WorkflowRuntimeClient:
    return WorkflowRuntimeClient("wired", run_root=running.run_root, **options)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=WAIT_S)
    return process.pid


# --- the seed's API ----------------------------------------------------------------------------


def test_ping_workflow_is_true_and_attributes_come_from_the_contact_file(
    workflow: Running,
) -> None:
    with client_of(workflow) as client:
        assert client("ping_workflow") is True
        assert (client.host, client.port) == (workflow.contact.host, workflow.contact.port)
        assert client.publish_port == workflow.contact.publish_port
        assert client.timeout == DEFAULT_TIMEOUT == 5.0
        assert callable(client.timeout_handler)
        assert set(client.header) == {"prog", "host", "comms_method"}
        assert client.header["comms_method"] == "zmq"
        assert client.serial_request("api")[:2] == ["api", "ping_workflow"]
        reply = client("hold", {"tasks": ["1/quick"]})
        assert reply["accepted"] is True and reply["matched"] == ["1/quick"]
        snapshot = client.serial_request("entire_workflow", timeout=2)
        assert snapshot["workflow"]["id"] == "wired"


def test_the_header_and_req_meta_are_sent_as_meta(workflow: Running) -> None:
    seen: list[Any] = []
    server = workflow.service.server
    assert server is not None
    original = server.handle_ping_workflow

    def recording(args: Any, context: RequestContext) -> Any:
        seen.append(context.meta)
        return original(args, context)

    server.handle_ping_workflow = recording  # type: ignore[method-assign]
    with client_of(workflow) as client:
        client.header["prog"] = "tester"
        assert client("ping_workflow", req_meta={"auth_user": "alice"}) is True
        assert client("ping_workflow") is True
        assert seen[0] == {**client.header, "auth_user": "alice"}
        assert seen[1] == client.header
        assert "auth_user" not in client.header


def test_async_request_and_serial_request_inside_a_running_loop(workflow: Running) -> None:
    with client_of(workflow) as client:

        async def main() -> tuple[Any, Any]:
            return await client.async_request("ping_workflow"), client("ping_workflow")

        assert asyncio.run(main()) == (True, True)
        assert client("ping_workflow") is True  # and again on its own loop


def test_timeouts_are_seconds(workflow: Running) -> None:
    assert client_of(workflow, timeout="2.5").timeout == 2.5
    assert client_of(workflow, timeout=1).timeout == 1.0
    for bad in ("soon", 0, -1):
        with pytest.raises(ValueError):
            client_of(workflow, timeout=bad)


# --- errors ---------------------------------------------------------------------------------------


def test_the_exception_classes() -> None:
    assert issubclass(ClientError, CylcError) and issubclass(ClientTimeout, CylcError)
    assert not issubclass(ClientTimeout, ClientError)
    assert issubclass(RequestError, ClientError) and issubclass(WorkflowStopped, ClientError)
    assert issubclass(WorkflowNotFound, WorkflowStopped)
    stopped = WorkflowStopped("wf")
    assert str(stopped) == "wf is not running" and stopped.reason == "stopped"
    assert WorkflowNotFound("wf").reason == "no such workflow"
    error = ClientError("bad", traceback="tb", workflow="wf")
    assert (str(error), error.message, error.workflow) == ("bad\ntb", "bad", "wf")


def test_error_replies_raise_request_error_and_the_client_carries_on(workflow: Running) -> None:
    with client_of(workflow) as client:
        with pytest.raises(RequestError) as unknown:
            client("graphql", {"request_string": "{ workflows { id } }"})
        assert unknown.value.code == "unknown_command"
        assert "No method by the name 'graphql'" in str(unknown.value)
        assert unknown.value.workflow == "wired"
        with pytest.raises(RequestError) as bad_args:
            client("hold", {"tasks": "1/*"})
        assert bad_args.value.code == "invalid_args"
        with pytest.raises(RequestError):
            client("data_elements", {"element_type": "all"})
        refused = client("trigger", {"tasks": ["7/nosuch"]})
        assert refused["accepted"] is False  # a refusal is data, as in the original
        assert client("ping_workflow") is True


def test_lazy_pirate_a_timeout_does_not_brick_the_client(workflow: Running) -> None:
    with client_of(workflow) as client:
        assert client("ping_workflow") is True
        release = workflow.block_server()
        try:
            with pytest.raises(ClientTimeout) as timed_out:
                client("ping_workflow", timeout=0.3)
            assert "Timeout waiting for server response" in str(timed_out.value)
            assert timed_out.value.timeout == 0.3
        finally:
            release.set()
        assert client("ping_workflow") is True
        assert client("ping_workflow") is True
        assert client._sync_client.resets == 1


def test_the_timeout_handler_runs_before_client_timeout(workflow: Running) -> None:
    class Specific(Exception):
        pass

    calls: list[str] = []

    def handler() -> None:
        calls.append("called")
        raise Specific("more specific")

    with client_of(workflow) as client:
        client.timeout_handler = handler
        release = workflow.block_server()
        try:
            with pytest.raises(Specific):
                client("ping_workflow", timeout=0.2)
            client.timeout_handler = None
            with pytest.raises(ClientTimeout):
                client("ping_workflow", timeout=0.2)
        finally:
            release.set()
        assert calls == ["called"]
        assert client("ping_workflow") is True


# --- discovery ------------------------------------------------------------------------------------


def test_no_such_workflow_is_told_apart_from_a_stopped_one(workflow: Running) -> None:
    with pytest.raises(WorkflowNotFound) as missing:
        WorkflowRuntimeClient("nosuch", run_root=workflow.run_root)
    assert missing.value.reason == "no such workflow"
    assert "no such workflow: nosuch" in str(missing.value)
    with pytest.raises(ClientError, match="invalid workflow id"):
        WorkflowRuntimeClient("../up", run_root=workflow.run_root)

    client = client_of(workflow)
    assert workflow.stop() == "REQUEST(KILL)"
    assert not contact_path(workflow.service.run_dir).exists()
    # a client made before the stop: its next request times out, then the default timeout
    # handler finds the contact file gone
    with pytest.raises(WorkflowStopped) as stopped_later:
        client("ping_workflow", timeout=0.3)
    assert type(stopped_later.value) is WorkflowStopped
    client.stop()
    with pytest.raises(WorkflowStopped) as stopped:
        client_of(workflow)
    assert type(stopped.value) is WorkflowStopped and stopped.value.reason == "stopped"
    assert str(stopped.value).startswith("wired is not running")


def test_a_stale_contact_file_means_stopped(tmp_path: Path) -> None:
    run_dir = tmp_path / "crashed"
    contact = Contact(
        workflow_id="crashed",
        host="127.0.0.1",
        port=43001,
        publish_port=43002,
        pid=dead_pid(),
        security="curve",
        command="runwire serve workflow crashed.yaml",
    )
    write_contact_file(run_dir, contact)
    with pytest.raises(WorkflowStopped) as stale:
        WorkflowRuntimeClient("crashed", run_root=tmp_path)
    assert type(stale.value) is WorkflowStopped and stale.value.reason == "stopped"
    assert "stale contact file" in str(stale.value)
    assert contact_path(run_dir).exists()  # reported, left for the next start to clean


def test_missing_key_files_are_a_client_error(tmp_path: Path) -> None:
    live = Contact(
        workflow_id="keyless",
        host="127.0.0.1",
        port=43001,
        publish_port=43002,
        pid=os.getpid(),
        security="curve",
        command=current_command(),
    )
    write_contact_file(tmp_path / "keyless", live)
    with pytest.raises(ClientError, match="Failed to find user's private key"):
        WorkflowRuntimeClient("keyless", run_root=tmp_path)


def test_explicit_host_and_port_need_no_contact_file(workflow: Running) -> None:
    path = contact_path(workflow.service.run_dir)
    moved = path.with_name("contact.moved")
    path.rename(moved)
    try:
        with WorkflowRuntimeClient(
            "wired", workflow.contact.host, workflow.contact.port, run_root=workflow.run_root
        ) as client:
            assert client.port == workflow.contact.port
            assert client("ping_workflow") is True
    finally:
        moved.rename(path)


def test_a_wrong_server_key_times_out(workflow: Running, tmp_path: Path) -> None:
    other_public, _ = create_keypair(tmp_path / "other", "server")
    wrong = client_of(workflow, srv_public_key_loc=other_public, timeout=0.3)
    with wrong, pytest.raises(ClientTimeout):
        wrong("ping_workflow")
    with client_of(workflow) as client:
        assert client("ping_workflow") is True
