"""The reference scheduler over ZeroMQ (runwire.reference_server.workflow.server and .service):
a real WorkflowService on 127.0.0.1 with CURVE, ports from the default range, driven by the
generated client and subscriber.

Covers each command's effect in the data store (read back with entire_workflow and
data_elements), the publish channel (deltas after changes, all last, shutdown with the stop
reason, gapless seq), the contact file and keys (modes, removal on clean shutdown), discovery
(no such workflow vs stopped vs stale), unauthorised keys, every bad request kind, and the
loopback rule. Every scenario is bounded (run_bounded); waits are Scheduler.wait_until on the
data store or bounded receives; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from runwire.generated.workflow import (
    WorkflowClient,
    WorkflowServerBase,
    WorkflowSubscriber,
    WorkflowSyncClient,
)
from runwire.reference_server.workflow import parse_definition
from runwire.reference_server.workflow.contact import (
    Contact,
    WorkflowNotFound,
    WorkflowNotRunning,
    client_security,
    connect,
    connect_sync,
    contact_path,
    discover,
    read_contact_file,
    service_dir,
    subscribe,
    write_contact_file,
)
from runwire.reference_server.workflow.server import WorkflowRuntimeServer
from runwire.reference_server.workflow.service import (
    DEFAULT_PORT_RANGE,
    WorkflowAlreadyRunning,
    WorkflowService,
)
from runwire.runtime.errors import LocalProtocolError, Timeout
from runwire.runtime.transport.zmq_endpoint import Published, RequestError
from runwire.runtime.transport.zmq_security import (
    CurveClientSecurity,
    create_keypair,
    load_keypair,
    load_public_key,
)

from .conftest import run_bounded, tree_registry

WAIT_S = 8.0
KEY_FILES = ("server.key", "server.key_secret", "client.key", "client.key_secret")

# quick => after runs at once; slow runs until killed, reports the custom output `half` when
# told to (message command); slow[-P1] => slow keeps 2/slow waiting meanwhile.
DEFINITION: dict[str, Any] = {
    "name": "wired",
    "scheduling": {
        "initial_cycle_point": 1,
        "final_cycle_point": 2,
        "runahead_limit": 1,
        "graph": "quick => after\nslow:half => after_half\nslow[-P1] => slow",
    },
    "runtime": {
        "quick": {"script": "echo quick"},
        "after": {"script": "echo after"},
        "after_half": {"script": "echo half"},
        "slow": {"script": "sleep 30", "outputs": {"half": "half way"}},
    },
}

QUICK: dict[str, Any] = {
    "name": "quick",
    "scheduling": {"initial_cycle_point": 1, "final_cycle_point": 2, "graph": "a => b"},
    "runtime": {"a": {"script": "true"}, "b": {"script": "true"}},
}


@dataclass
class Served:
    """A started WorkflowService whose run() is a task, with a client to it."""

    service: WorkflowService
    contact: Contact
    client: WorkflowClient
    task: asyncio.Task[str]

    @property
    def scheduler(self) -> Any:
        assert self.service.scheduler is not None
        return self.service.scheduler

    async def until(self, predicate: Callable[[], bool]) -> None:
        await self.scheduler.wait_until(predicate, timeout_s=WAIT_S)

    def proxy(self, task_id: str) -> dict[str, Any] | None:
        return next(
            (p for p in self.scheduler.elements("task_proxies") if p["id"] == task_id), None
        )

    def state(self, task_id: str) -> str | None:
        proxy = self.proxy(task_id)
        return None if proxy is None else str(proxy["state"])

    async def wire_proxies(self) -> dict[str, dict[str, Any]]:
        """The task proxies as the wire shows them (data_elements)."""
        data = await self.client.request("data_elements", {"element_type": "task_proxies"})
        assert data["element_type"] == "task_proxies"
        return {p["id"]: p for p in data["elements"]}

    async def wire_workflow(self) -> dict[str, Any]:
        data = await self.client.request("data_elements", {"element_type": "workflow"})
        [workflow] = data["elements"]
        assert isinstance(workflow, dict)
        return workflow

    async def finish(self) -> str:
        async with asyncio.timeout(WAIT_S):
            return await asyncio.shield(self.task)


def make_service(
    run_root: Path, data: dict[str, Any] | None = None, **options: Any
) -> WorkflowService:
    definition = parse_definition(data or DEFINITION, registry=tree_registry())
    scheduler_options = {"job_poll_interval_s": 0.02, "kill_grace_s": 0.5}
    scheduler_options.update(options.pop("scheduler_options", {}))
    options.setdefault("heartbeat_interval_s", 0.2)
    return WorkflowService(
        definition, run_root=run_root, scheduler_options=scheduler_options, **options
    )


@contextlib.asynccontextmanager
async def serving(
    run_root: Path, data: dict[str, Any] | None = None, **options: Any
) -> AsyncIterator[Served]:
    """Start a service, run it in a task, yield; on exit kill-stop it if still running."""
    service = make_service(run_root, data, **options)
    contact = await service.start()
    task = asyncio.create_task(service.run())
    client = WorkflowClient(
        contact.host,
        contact.port,
        security=client_security(service.run_dir, contact),
        timeout_s=WAIT_S,
    )
    served = Served(service, contact, client, task)
    try:
        yield served
    finally:
        client.close()
        if not task.done():
            service.request_stop("kill")
            try:
                async with asyncio.timeout(WAIT_S):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def accepted(reply: Any, matched: list[str] | None = None) -> dict[str, Any]:
    assert isinstance(reply, dict) and reply["accepted"] is True, reply
    assert isinstance(reply["command_id"], str) and len(reply["command_id"]) == 36
    if matched is not None:
        assert sorted(reply["matched"]) == sorted(matched), reply
    return reply


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def dead_pid() -> int:
    """The pid of a process that has exited (and was reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=WAIT_S)
    return process.pid


# --- commands ------------------------------------------------------------------------------


def test_api_ping_and_the_data_store_over_the_wire(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, paused=True) as s:
            client = s.client
            assert await client.request("ping_workflow") is True
            assert await client.request("api") == list(WorkflowServerBase.COMMANDS)
            doc = await client.request("api", {"endpoint": "hold"})
            assert doc.startswith("Hold task proxies")
            assert (
                await client.request("api", {"endpoint": "nosuch"}) == 'No method by name "nosuch"'
            )

            snapshot = await client.request("entire_workflow")
            assert snapshot["workflow"]["id"] == "wired"
            assert snapshot["workflow"]["status"] == "paused"
            assert snapshot["workflow"]["run_dir"] == str(s.service.run_dir)
            assert [t["name"] for t in snapshot["tasks"]] == [
                "quick",
                "after",
                "slow",
                "after_half",
            ]
            assert snapshot == s.scheduler.snapshot() | {"workflow": snapshot["workflow"]}
            for kind in ("workflow", "tasks", "task_proxies", "jobs", "edges"):
                data = await client.request("data_elements", {"element_type": kind})
                assert data == {"element_type": kind, "elements": s.scheduler.elements(kind)}
            typed = await client.entire_workflow()  # validates against the reply schema
            assert {p.id.root for p in typed.task_proxies} >= {"1/quick", "1/slow"}

    run_bounded(scenario())


def test_each_control_command_changes_the_data_store(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, paused=True) as s:
            request = s.client.request

            # while paused nothing runs: hold one task, remove another
            accepted(await request("hold", {"tasks": ["1/quick"]}), ["1/quick"])
            await s.until(lambda: bool((s.proxy("1/quick") or {}).get("is_held")))
            assert (await s.wire_proxies())["1/quick"]["is_held"] is True
            assert s.proxy("2/quick") is not None
            accepted(await request("remove", {"tasks": ["2/quick"]}), ["2/quick"])
            await s.until(lambda: s.proxy("2/quick") is None)
            assert "2/quick" not in await s.wire_proxies()

            # resume: slow starts, held quick does not
            accepted(await request("resume"))
            await s.until(lambda: s.state("1/slow") == "running")
            assert (await s.wire_workflow())["status"] == "running"
            proxies = await s.wire_proxies()
            assert proxies["1/quick"]["state"] == "waiting"
            assert proxies["1/slow"]["job_ids"] == ["1/slow/01"]

            accepted(await request("release", {"tasks": ["1/q*"]}), ["1/quick"])
            await s.until(lambda: s.state("1/after") == "succeeded")
            proxies = await s.wire_proxies()
            assert proxies["1/quick"]["is_held"] is False
            assert proxies["1/quick"]["state"] == "succeeded"

            # message: the running job reports its custom output
            accepted(
                await request(
                    "message",
                    {"task_job": "1/slow/01", "messages": [["INFO", "half way"]]},
                ),
                ["1/slow"],
            )
            await s.until(lambda: s.state("1/after_half") == "succeeded")
            assert (await s.wire_proxies())["1/slow"]["outputs"]["half"] is True

            accepted(await request("poll", {"tasks": ["1/slow"]}), ["1/slow"])

            # broadcast put, then clear
            target = {"cycle_points": ["2"], "namespaces": ["after"]}
            settings = {"environment": {"WIRED": "yes"}}
            accepted(await request("broadcast", {"mode": "put", **target, "settings": settings}))
            await s.until(lambda: bool(s.scheduler.elements("workflow")[0]["broadcasts"]))
            [broadcast] = (await s.wire_workflow())["broadcasts"]
            assert (broadcast["namespace"], broadcast["settings"]) == ("after", settings)
            accepted(await request("broadcast", {"mode": "clear", **target}))
            await s.until(lambda: not s.scheduler.elements("workflow")[0]["broadcasts"])
            assert (await s.wire_workflow())["broadcasts"] == []

            # trigger a task whose prerequisite (1/slow) is not met: it runs now
            accepted(await request("trigger", {"tasks": ["2/slow"]}), ["2/slow"])
            await s.until(lambda: s.state("2/slow") == "running")
            assert (await s.wire_proxies())["2/slow"]["job_ids"] == ["2/slow/01"]

            # kill a job (selected by its job id): failed; then set the task succeeded
            accepted(await request("kill", {"tasks": ["1/slow/01"]}), ["1/slow"])
            await s.until(lambda: s.state("1/slow") == "failed")
            jobs = await request("data_elements", {"element_type": "jobs"})
            [slow_job] = [j for j in jobs["elements"] if j["id"] == "1/slow/01"]
            assert slow_job["state"] == "failed"
            accepted(await request("set", {"tasks": ["1/slow"], "outputs": ["succeeded"]}))
            await s.until(lambda: s.state("1/slow") == "succeeded")
            assert (await s.wire_proxies())["1/slow"]["state"] == "succeeded"

            # rejections are data with accepted false
            refused = await request("trigger", {"tasks": ["9/nosuch"]})
            assert refused["accepted"] is False and refused["command_id"] is None
            assert refused["message"]

            # pause shows in the workflow element; stop kills the running job
            accepted(await request("pause"))
            await s.until(lambda: s.scheduler.elements("workflow")[0]["status"] == "paused")
            assert (await s.wire_workflow())["status"] == "paused"
            accepted(await request("stop", {"mode": "kill"}))
            assert await s.finish() == "REQUEST(KILL)"
            assert s.state("2/slow") == "failed"

    run_bounded(scenario(), timeout_s=40)


def test_trigger_runs_a_held_back_task_and_stop_at_a_cycle_point(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, paused=True) as s:
            request = s.client.request
            accepted(await request("trigger", {"tasks": ["1/quick"]}), ["1/quick"])
            await s.until(lambda: s.state("1/quick") == "succeeded")
            assert (await s.wire_workflow())["status"] == "paused"
            accepted(await request("stop", {"cycle_point": "1", "mode": "clean"}))
            await s.until(lambda: s.scheduler.elements("workflow")[0]["stop_mode"] is not None)
            assert "1" in str((await s.wire_workflow())["stop_mode"])
            accepted(await request("stop", {"mode": "now"}))
            assert await s.finish() == "REQUEST(NOW)"

    run_bounded(scenario())


def test_the_workflow_runs_to_completion_and_cleans_up(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, QUICK) as s:
            subscriber = WorkflowSubscriber(
                s.contact.host,
                s.contact.publish_port,
                security=client_security(s.service.run_dir, s.contact),
            )
            try:
                subscriber.connect()
                assert await s.finish() == "AUTOMATIC"
                shutdown = await until_topic(subscriber, "shutdown")
                assert shutdown.payload["reason"] == "AUTOMATIC"
            finally:
                subscriber.close()
            assert {p["state"] for p in s.scheduler.elements("task_proxies")} == {"succeeded"}
            assert not contact_path(s.service.run_dir).exists()

    run_bounded(scenario())


# --- the publish channel ----------------------------------------------------------------------


async def until_topic(subscriber: WorkflowSubscriber, topic: str) -> Published:
    for _ in range(1000):
        published = await subscriber.receive(timeout_s=WAIT_S)
        if published.topic == topic:
            return published
    raise AssertionError(f"no {topic!r} message")


def test_deltas_after_each_change_all_last_and_shutdown_with_gapless_seq(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, paused=True) as s:
            subscriber, contact = subscribe("wired", tmp_path)
            assert contact.publish_port == s.contact.publish_port
            assert subscriber.liveness.interval_s == pytest.approx(0.2)
            received: list[Published] = []

            async def receive(topic: str) -> Published:
                for _ in range(1000):
                    published = await subscriber.receive(timeout_s=WAIT_S)
                    received.append(published)
                    if published.topic == topic:
                        return published
                raise AssertionError(topic)

            try:
                subscriber.connect()
                await receive("heartbeat")  # the subscription is live
                accepted(await s.client.request("hold", {"tasks": ["1/slow"]}))
                delta = await receive("task_proxies")
                assert [p["id"] for p in delta.payload["updated"]] == ["1/slow"]
                assert delta.payload["updated"][0]["is_held"] is True
                batch = await receive("all")
                assert batch.payload["deltas"]["task_proxies"] == delta.payload
                assert set(batch.payload["deltas"]) <= {"workflow", "task_proxies"}

                accepted(await s.client.request("resume"))
                workflow = await receive("workflow")
                assert workflow.payload["updated"][0]["status"] == "running"
                await receive("all")

                accepted(await s.client.request("stop", {"mode": "now"}))
                shutdown = await receive("shutdown")
                assert shutdown.payload["reason"] == "REQUEST(NOW)"
                assert await s.finish() == "REQUEST(NOW)"
            finally:
                subscriber.close()
            seqs = [p.payload["seq"] for p in received]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            assert subscriber.tracker.missed_total == 0 and subscriber.shut_down
            # the last batch before shutdown announced the stopped workflow
            last_workflow = [p for p in received if p.topic == "workflow"][-1]
            assert last_workflow.payload["updated"][-1]["status"] == "stopped"
            assert received[-2].topic == "all"

    run_bounded(scenario())


# --- contact file, keys, discovery ---------------------------------------------------------------


def test_contact_file_and_keys_are_private_and_removed_on_clean_shutdown(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, paused=True) as s:
            run_dir = tmp_path / "wired"
            assert s.service.run_dir == run_dir
            folder = service_dir(run_dir)
            assert mode(folder) == 0o700
            contact_file = folder / "contact"
            assert mode(contact_file) == 0o600
            for name in KEY_FILES:
                assert mode(folder / name) == 0o600, name
            assert mode(folder / "client_public_keys") == 0o700
            assert mode(folder / "client_public_keys" / "client_localhost.key") == 0o600
            assert not list(folder.glob(".contact.*"))  # no temporary left behind

            lines = contact_file.read_text().splitlines()
            assert lines == sorted(lines)
            fields = dict(line.split("=", 1) for line in lines)
            endpoints = s.service.endpoints
            assert fields["CYLC_WORKFLOW_ID"] == "wired"
            assert fields["CYLC_WORKFLOW_HOST"] == "127.0.0.1"
            assert int(fields["CYLC_WORKFLOW_PORT"]) == endpoints.port
            assert int(fields["CYLC_WORKFLOW_PUBLISH_PORT"]) == endpoints.publish_port
            assert int(fields["CYLC_WORKFLOW_PID"]) == os.getpid()
            assert fields["RUNWIRE_SECURITY"] == "curve"
            assert fields["CYLC_API"] == "1"
            assert fields["CYLC_WORKFLOW_RUN_DIR_ON_WORKFLOW_HOST"] == str(run_dir)
            first, last = DEFAULT_PORT_RANGE
            assert first <= endpoints.port <= last and first <= endpoints.publish_port <= last
            assert read_contact_file(run_dir) == s.contact == discover("wired", tmp_path)
            assert load_public_key(folder / "server.key") == endpoints.server_public_key

            accepted(await s.client.request("stop", {"mode": "clean"}))
            assert await s.finish() == "REQUEST(CLEAN)"
            assert not contact_file.exists()
            assert sorted(p.name for p in folder.iterdir()) == []
            with pytest.raises(WorkflowNotRunning) as stopped:
                discover("wired", tmp_path)
            assert not stopped.value.stale

    run_bounded(scenario())


def test_no_such_workflow_vs_stopped_vs_stale(tmp_path: Path) -> None:
    with pytest.raises(WorkflowNotFound, match="no such workflow"):
        discover("nosuch", tmp_path)
    with pytest.raises(ValueError, match="invalid workflow id"):
        discover("../etc", tmp_path)

    run_dir = tmp_path / "old"
    run_dir.mkdir()
    with pytest.raises(WorkflowNotRunning, match="not running") as no_contact:
        discover("old", tmp_path)
    assert not no_contact.value.stale and not isinstance(no_contact.value, WorkflowNotFound)

    gone = Contact(
        workflow_id="old",
        host="127.0.0.1",
        port=43001,
        publish_port=43002,
        pid=dead_pid(),
        security="curve",
        command="runwire serve workflow old.yaml",
    )
    write_contact_file(run_dir, gone)
    with pytest.raises(WorkflowNotRunning, match="stale contact file") as stale:
        discover("old", tmp_path)
    assert stale.value.stale and stale.value.contact == gone
    assert stale.value.detail.endswith(f"(process {gone.pid} is gone)")

    # the pid runs, but another command: a reused pid, also stale, and said so
    reused = Contact(**{**gone.__dict__, "pid": os.getpid(), "command": "something else"})
    write_contact_file(run_dir, reused)
    with pytest.raises(WorkflowNotRunning, match="stale") as other:
        discover("old", tmp_path)
    assert other.value.stale and "is gone" not in str(other.value)
    expected = f"(process {os.getpid()} is not this workflow's scheduler (it runs: "
    assert expected in other.value.detail
    assert "pytest" in other.value.detail or sys.executable in other.value.detail
    # not checked for a workflow on another host (cannot be checked from here)
    remote = Contact(**{**gone.__dict__, "host": "elsewhere.invalid"})
    write_contact_file(run_dir, remote)
    assert discover("old", tmp_path) == remote


def test_a_stale_contact_file_is_cleaned_up_and_a_live_one_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "wired"
    stale = Contact(
        workflow_id="wired",
        host="127.0.0.1",
        port=43001,
        publish_port=43002,
        pid=dead_pid(),
        security="curve",
        command="x",
    )
    write_contact_file(run_dir, stale)
    (service_dir(run_dir) / "server.key").write_text("old key\n")

    async def scenario() -> None:
        async with serving(tmp_path, paused=True) as s:
            assert s.contact.pid == os.getpid() and s.contact != stale
            assert await s.client.request("ping_workflow") is True
            second = make_service(tmp_path, paused=True)
            with pytest.raises(WorkflowAlreadyRunning, match="already running"):
                await second.start()
            assert read_contact_file(run_dir) == s.contact  # untouched
            assert await s.client.request("ping_workflow") is True

    run_bounded(scenario())


@contextlib.contextmanager
def occupied_port() -> Iterator[int]:
    """A loopback TCP port that is listened on (ZeroMQ cannot bind it) while in use."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def start_fails(service: WorkflowService) -> None:
    async def scenario() -> None:
        with pytest.raises(zmq.ZMQError):
            await service.start()

    run_bounded(scenario())


def test_a_failed_start_removes_the_run_directory_it_created(tmp_path: Path) -> None:
    run_root = tmp_path / "new-root"
    with occupied_port() as port:
        start_fails(make_service(run_root, workflow_id="project/run1", port=port))
    assert not run_root.exists()  # the run root and project/ were made by this start too
    with pytest.raises(WorkflowNotFound, match="no such workflow"):
        discover("project/run1", run_root)

    # an existing run directory keeps everything it had, .service/ included
    run_dir = tmp_path / "wired"
    (run_dir / "log").mkdir(parents=True)
    (run_dir / "log" / "earlier.txt").write_text("a previous run\n")
    with occupied_port() as port:
        start_fails(make_service(tmp_path, port=port))
    assert (run_dir / "log" / "earlier.txt").read_text() == "a previous run\n"
    assert sorted(p.name for p in run_dir.iterdir()) == ["log"]  # .service/ made, then removed
    service_dir(run_dir).mkdir(mode=0o700)
    (service_dir(run_dir) / "db").write_text("kept\n")
    with occupied_port() as port:
        start_fails(make_service(tmp_path, port=port))
    assert sorted(p.name for p in service_dir(run_dir).iterdir()) == ["db"]  # keys removed
    with pytest.raises(WorkflowNotRunning):
        discover("wired", tmp_path)


def test_connect_finds_the_workflow_by_id(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, paused=True, workflow_id="project/run1") as s:
            assert s.service.run_dir == tmp_path / "project" / "run1"
            client, contact = connect("project/run1", tmp_path, timeout_s=WAIT_S)
            try:
                assert contact == s.contact
                assert await client.request("ping_workflow") is True
            finally:
                client.close()
            workflow = await s.wire_workflow()
            assert workflow["id"] == "project/run1"

    run_bounded(scenario())


def test_connect_sync_gives_a_blocking_client_found_by_id(tmp_path: Path) -> None:
    """connect_sync: the blocking WorkflowSyncClient, used from a thread of its own while the
    event loop serves the workflow; the same errors as connect for missing and stopped
    workflows."""
    with pytest.raises(WorkflowNotFound, match="no such workflow"):
        connect_sync("project/run1", tmp_path)

    def blocking_calls() -> tuple[Contact, Any, Any, Any]:
        client, contact = connect_sync("project/run1", tmp_path, timeout_s=WAIT_S)
        assert isinstance(client, WorkflowSyncClient)
        with client:
            ping = client.ping_workflow()
            held = client.hold({"tasks": ["1/quick"]})
            workflow = client.data_elements({"element_type": "workflow"})
        return contact, ping, held, workflow

    async def scenario() -> None:
        async with serving(tmp_path, paused=True, workflow_id="project/run1") as s:
            contact, ping, held, workflow = await asyncio.to_thread(blocking_calls)
            assert contact == s.contact
            assert ping.root is True
            assert held.accepted is True and [m.root for m in held.matched] == ["1/quick"]
            assert workflow.to_wire()["elements"][0]["id"] == "project/run1"
            await s.until(lambda: bool((s.proxy("1/quick") or {}).get("is_held")))
            accepted(await s.client.request("stop", {"mode": "clean"}))
            await s.finish()
        with pytest.raises(WorkflowNotRunning, match="not running"):
            connect_sync("project/run1", tmp_path)

    run_bounded(scenario())


# --- security ------------------------------------------------------------------------------------


def test_unauthorised_and_plaintext_clients_get_no_reply(tmp_path: Path) -> None:
    _, intruder_secret = create_keypair(tmp_path / "intruder", "intruder")

    async def scenario() -> None:
        async with serving(tmp_path / "run", paused=True) as s:
            server_key = load_public_key(service_dir(s.service.run_dir) / "server.key")
            intruder = WorkflowClient(
                s.contact.host,
                s.contact.port,
                security=CurveClientSecurity(load_keypair(intruder_secret), server_key),
                timeout_s=0.5,
            )
            plain = WorkflowClient(s.contact.host, s.contact.port, timeout_s=0.5)
            try:
                for client in (intruder, plain):
                    with pytest.raises(Timeout):
                        await client.request("ping_workflow")
            finally:
                intruder.close()
                plain.close()
            assert await s.client.request("ping_workflow") is True

    run_bounded(scenario())


def test_insecure_loopback_refuses_other_addresses(tmp_path: Path) -> None:
    async def scenario() -> None:
        for host in ("0.0.0.0", "192.0.2.1", "::"):
            service = make_service(tmp_path, host=host, insecure_loopback=True)
            with pytest.raises(ValueError, match="loopback"):
                await service.start()
            assert not contact_path(service.run_dir).exists()
            assert not (service_dir(service.run_dir) / "server.key").exists()

        async with serving(tmp_path, paused=True, insecure_loopback=True) as s:
            assert s.contact.security == "none"
            assert client_security(s.service.run_dir, s.contact) is None
            assert not (service_dir(s.service.run_dir) / "server.key_secret").exists()
            assert await s.client.request("ping_workflow") is True

    run_bounded(scenario())


# --- bad requests ----------------------------------------------------------------------------------


# args that are not an object break the envelope (ErrorCode: invalid_request).
ARGS_NOT_OBJECT = "invalid_request"

BAD_FRAMES: list[tuple[bytes, str]] = [
    (b"not json", "parse_error"),
    (b"\xff\xfe", "parse_error"),
    (b"[1, 2]", "invalid_request"),
    (b"[]", "invalid_request"),
    (b'"ping_workflow"', "invalid_request"),
    (b"{}", "invalid_request"),
    (b'{"command": "ping_workflow"}', "invalid_request"),
    (b'{"args": {}}', "invalid_request"),
    (b'{"command": "api", "args": [1]}', ARGS_NOT_OBJECT),
    (b'{"command": "api", "args": null}', ARGS_NOT_OBJECT),
    (b'{"command": 7, "args": {}}', "invalid_request"),
    (b'{"command": "api", "args": {}, "extra": 1}', "invalid_request"),
    (b'{"command": "nosuch", "args": {}}', "unknown_command"),
    (b'{"command": "__dir__", "args": {}}', "unknown_command"),
    (b'{"command": "register_endpoints", "args": {}}', "unknown_command"),
    (b'{"command": "handle_api", "args": {}}', "unknown_command"),
    (b'{"command": "scheduler", "args": {}}', "unknown_command"),
    (b'{"command": "graphql", "args": {}}', "unknown_command"),
    (b'{"command": "hold", "args": {}}', "invalid_args"),
    (b'{"command": "hold", "args": {"tasks": "1/*"}}', "invalid_args"),
    (b'{"command": "ping_workflow", "args": {"nosuch": 1}}', "invalid_args"),
    (b'{"command": "data_elements", "args": {"element_type": "all"}}', "invalid_args"),
    (b'{"command": "data_elements", "args": {"element_type": "nosuch"}}', "invalid_args"),
    (b'{"command": "stop", "args": {"mode": "sideways"}}', "invalid_args"),
    (b'{"command": "message", "args": {"task_job": "1/x", "messages": []}}', "invalid_args"),
]


def test_every_bad_request_kind_gets_an_error_envelope_and_the_server_serves_on(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, paused=True) as s:
            for frame, code in BAD_FRAMES:
                reply = json.loads(await s.client.exchange(frame))
                assert set(reply) <= {"error", "id"}, (frame, reply)
                assert reply["error"]["code"] in code.split("|"), (frame, reply)
                assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
            # too large (over max_message_bytes, under the hard bound)
            big = json.dumps({"command": "api", "args": {"endpoint": "x" * (1 << 20)}})
            reply = json.loads(await s.client.exchange(big.encode()))
            assert reply["error"]["code"] == "too_large"
            # the request id is echoed, also on errors
            reply = json.loads(
                await s.client.exchange(b'{"command": "nosuch", "args": {}, "id": "r-1"}')
            )
            assert reply["id"] == "r-1" and reply["error"]["code"] == "unknown_command"
            # a request in two frames, from a raw REQ socket
            context = zmq.asyncio.Context()
            raw = context.socket(zmq.REQ)
            security = client_security(s.service.run_dir, s.contact)
            assert security is not None
            raw.curve_secretkey = security.keypair.secret
            raw.curve_publickey = security.keypair.public
            raw.curve_serverkey = security.server_public_key
            raw.linger = 0
            raw.connect(f"tcp://127.0.0.1:{s.contact.port}")
            try:
                await raw.send_multipart([b'{"command": "api", "args": {}}', b"{}"])
                async with asyncio.timeout(WAIT_S):
                    reply = json.loads(await raw.recv())
                assert reply["error"]["code"] == "invalid_request"
            finally:
                raw.close()
                context.term()
            # the typed client refuses bad args before sending
            with pytest.raises(LocalProtocolError):
                await s.client.request("data_elements", {"element_type": "all"})
            with pytest.raises(RequestError) as unknown:
                await s.client.request("nosuch", {})
            assert unknown.value.code == "unknown_command"
            # and the server still serves
            assert await s.client.request("ping_workflow") is True
            assert s.service.server is not None
            assert s.service.server.errors_sent >= len(BAD_FRAMES) + 3
            assert not s.task.done()

    run_bounded(scenario())


def test_a_stop_requested_before_run_is_not_lost(tmp_path: Path) -> None:
    async def scenario() -> None:
        early = make_service(tmp_path / "early", paused=True)
        early.request_stop()  # before start: applied when run() begins
        await early.start()
        assert await early.run() == "REQUEST(KILL)"
        service = make_service(tmp_path / "late", paused=True)
        await service.start()
        service.request_stop("now")  # after start, before run: queued for the first pass
        assert await service.run() == "REQUEST(NOW)"
        assert not contact_path(service.run_dir).exists()

    run_bounded(scenario())


class BrokenPing(WorkflowRuntimeServer):
    """A variant whose ping handler fails: the base class answers internal_error."""

    async def handle_ping_workflow(self, args: Any, context: Any) -> Any:
        raise RuntimeError("broken on purpose")


def test_a_server_class_variant_and_handler_failures(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, paused=True, server_class=BrokenPing) as s:
            assert isinstance(s.service.server, BrokenPing)
            with pytest.raises(RequestError) as failed:
                await s.client.request("ping_workflow")
            assert failed.value.code == "internal_error"
            assert "broken on purpose" in failed.value.message
            assert await s.client.request("api") == list(WorkflowServerBase.COMMANDS)

    run_bounded(scenario())
