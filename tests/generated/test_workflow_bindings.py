"""End-to-end tests of the generated workflow bindings over loopback ZeroMQ (CURVE, ports
chosen at run time).

A tiny in-memory scheduler subclasses the generated ``WorkflowServerBase``: a fixed data store
(two tasks over cycle point 1, one edge), control commands that act on it at once and publish
deltas (the real engine queues them; the wire contract is the same), task selection by fnmatch
globs. The generated ``WorkflowClient``, ``WorkflowSyncClient`` and ``WorkflowSubscriber`` drive
it; the fixture corpus drives it with raw frames. Every scenario is bounded; nothing sleeps to
synchronise.
"""

from __future__ import annotations

import asyncio
import fnmatch
import inspect
import json
import uuid
from collections.abc import Coroutine, Iterator
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import pytest

from runwire.generated.workflow import (
    WorkflowClient,
    WorkflowServerBase,
    WorkflowSubscriber,
    WorkflowSyncClient,
    models,
)
from runwire.runtime.errors import LocalProtocolError
from runwire.runtime.transport.zmq_endpoint import (
    CommandError,
    Published,
    RequestContext,
    RequestError,
    ServerEndpoints,
)
from runwire.runtime.transport.zmq_security import ServiceKeys, create_service_keys

T = TypeVar("T")
SCENARIO_S = 10.0
WAIT_S = 3.0
FIXTURES = Path(str(resources.files("runwire.generated"))) / "workflow" / "fixtures"
MANIFEST = json.loads(
    (resources.files("runwire.schemas") / "workflow" / "protocol.json").read_text()
)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(SCENARIO_S):
            return await coroutine

    return asyncio.run(bounded())


def proxy(task_id: str) -> dict[str, Any]:
    point, name = task_id.split("/")
    return {
        "id": task_id,
        "name": name,
        "cycle_point": point,
        "state": "waiting",
        "is_held": False,
        "submit_num": 0,
        "try_num": 0,
        "outputs": {"succeeded": False},
        "prerequisites": [],
        "job_ids": [],
    }


class Scheduler(WorkflowServerBase):
    """An in-memory scheduler: actions commands at once and publishes the deltas."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.workflow: dict[str, Any] = {
            "id": "demo",
            "name": "demo",
            "status": "running",
            "status_msg": "running",
            "initial_cycle_point": "1",
            "final_cycle_point": "1",
            "run_dir": "/srv/runwire-run/demo",
            "last_updated": 1700000000.0,
            "stop_mode": None,
            "broadcasts": [],
        }
        self.tasks = [
            {"id": n, "name": n, "script": "true", "outputs": {}, "retries": 0}
            for n in ("get_data", "model")
        ]
        self.proxies = {p: proxy(p) for p in ("1/get_data", "1/model")}
        self.edges = [{"id": "1/get_data=>1/model", "source": "1/get_data", "target": "1/model"}]
        self.messages: list[Any] = []

    # --- helpers ---------------------------------------------------------------------------

    def match(self, selectors: list[str]) -> list[str]:
        matched = []
        for task_id, proxy_ in self.proxies.items():
            for selector in selectors:
                pattern, _, state = selector.partition(":")
                parts = pattern.split("/")
                point_ok = fnmatch.fnmatchcase(proxy_["cycle_point"], parts[0])
                name_ok = len(parts) == 1 or fnmatch.fnmatchcase(proxy_["name"], parts[1])
                if point_ok and name_ok and (not state or proxy_["state"] == state):
                    matched.append(task_id)
                    break
        return matched

    async def queued(self, matched: list[str], *, need_match: bool = False) -> models.ControlResult:
        if need_match and not matched:
            return models.ControlResult(
                accepted=False, command_id=None, matched=[], message="No matching tasks"
            )
        return models.ControlResult.model_validate(
            {
                "accepted": True,
                "command_id": str(uuid.uuid4()),
                "matched": matched,
                "message": "Command queued",
            }
        )

    async def publish_batch(self, workflow: bool = False, proxies: list[str] = ()) -> None:  # type: ignore[assignment]
        batch: dict[str, Any] = {}
        if workflow:
            batch["workflow"] = await self.publish(
                "workflow", {"added": [], "updated": [self.workflow], "pruned": []}
            )
        if proxies:
            updated = [self.proxies[p] for p in proxies]
            batch["task_proxies"] = await self.publish(
                "task_proxies", {"added": [], "updated": updated, "pruned": []}
            )
        await self.publish("all", {"deltas": batch})

    # --- handlers --------------------------------------------------------------------------

    async def handle_api(self, args: models.ApiArgs, context: RequestContext) -> models.ApiData:
        if args.endpoint is None:
            return models.ApiData(self.command_names())
        return models.ApiData(self.describe_command(args.endpoint))

    async def handle_ping_workflow(
        self, args: models.PingWorkflowArgs, context: RequestContext
    ) -> models.PingData:
        return models.PingData(True)

    async def set_status(self, status: str) -> models.ControlResult:
        self.workflow["status"] = self.workflow["status_msg"] = status
        await self.publish_batch(workflow=True)
        return await self.queued([])

    async def handle_pause(
        self, args: models.PauseArgs, context: RequestContext
    ) -> models.ControlResult:
        return await self.set_status("paused")

    async def handle_resume(
        self, args: models.ResumeArgs, context: RequestContext
    ) -> models.ControlResult:
        if self.workflow["status"] != "paused":
            raise CommandError("workflow is not paused")
        return await self.set_status("running")

    async def handle_stop(
        self, args: models.StopArgs, context: RequestContext
    ) -> models.ControlResult:
        self.workflow["stop_mode"] = args.mode.root if args.mode else "clean"
        return await self.set_status("stopping")

    async def flag(self, selectors: list[Any], held: bool) -> models.ControlResult:
        matched = self.match([s.root for s in selectors])
        for task_id in matched:
            self.proxies[task_id]["is_held"] = held
        if matched:
            await self.publish_batch(proxies=matched)
        return await self.queued(matched, need_match=True)

    async def handle_hold(
        self, args: models.HoldArgs, context: RequestContext
    ) -> models.ControlResult:
        return await self.flag(args.tasks.root, True)

    async def handle_release(
        self, args: models.ReleaseArgs, context: RequestContext
    ) -> models.ControlResult:
        return await self.flag(args.tasks.root, False)

    async def handle_trigger(
        self, args: models.TriggerArgs, context: RequestContext
    ) -> models.ControlResult:
        return await self.queued(self.match([s.root for s in args.tasks.root]), need_match=True)

    async def handle_kill(
        self, args: models.KillArgs, context: RequestContext
    ) -> models.ControlResult:
        return await self.queued(self.match([s.root for s in args.tasks.root]), need_match=True)

    async def handle_poll(
        self, args: models.PollArgs, context: RequestContext
    ) -> models.ControlResult:
        return await self.queued(self.match([s.root for s in args.tasks.root]), need_match=True)

    async def handle_remove(
        self, args: models.RemoveArgs, context: RequestContext
    ) -> models.ControlResult:
        return await self.queued(self.match([s.root for s in args.tasks.root]), need_match=True)

    async def handle_set(
        self, args: models.SetArgs, context: RequestContext
    ) -> models.ControlResult:
        matched = self.match([s.root for s in args.tasks.root])
        outputs = [o.root for o in args.outputs] if args.outputs else ["succeeded"]
        for task_id in matched:
            for output in outputs:
                self.proxies[task_id]["outputs"][output] = True
            if "succeeded" in outputs:
                self.proxies[task_id]["state"] = "succeeded"
        if matched:
            await self.publish_batch(proxies=matched)
        return await self.queued(matched, need_match=True)

    async def handle_message(
        self, args: models.MessageArgs, context: RequestContext
    ) -> models.ControlResult:
        self.messages.append(args.to_wire())
        point, name, _ = args.task_job.root.split("/")
        return await self.queued(self.match([f"{point}/{name}"]), need_match=True)

    async def handle_broadcast(
        self, args: models.BroadcastArgs, context: RequestContext
    ) -> models.ControlResult:
        if args.mode == "put":
            settings = args.settings.to_wire() if args.settings else {}
            points = [p.root for p in args.cycle_points] if args.cycle_points else ["*"]
            names = [n.root for n in args.namespaces] if args.namespaces else ["root"]
            self.workflow["broadcasts"] += [
                {"cycle_point": p, "namespace": n, "settings": settings}
                for p in points
                for n in names
            ]
        else:
            self.workflow["broadcasts"] = []
        await self.publish_batch(workflow=True)
        return await self.queued([])

    def snapshot(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "tasks": self.tasks,
            "task_proxies": list(self.proxies.values()),
            "jobs": [],
            "edges": self.edges,
        }

    async def handle_entire_workflow(
        self, args: models.EntireWorkflowArgs, context: RequestContext
    ) -> models.EntireWorkflow:
        return models.EntireWorkflow.model_validate(self.snapshot())

    async def handle_data_elements(
        self, args: models.DataElementsArgs, context: RequestContext
    ) -> models.DataElements:
        kind = args.element_type.root
        elements = self.snapshot()[kind]
        return models.DataElements.model_validate(
            {"element_type": kind, "elements": elements if kind != "workflow" else [elements]}
        )


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> ServiceKeys:
    return create_service_keys(tmp_path_factory.mktemp("service"))


async def started(keys: ServiceKeys, **options: Any) -> tuple[Scheduler, ServerEndpoints]:
    server = Scheduler(heartbeat_interval_s=0.05, **options)
    endpoints = await server.start(port=0, publish_port=0, security=keys.server_security())
    return server, endpoints


# --- the generated code's shape -------------------------------------------------------------


def test_one_abstract_handler_per_manifest_command_and_one_topic_per_publish_op() -> None:
    operations = MANIFEST["interfaces"][0]["operations"]
    commands = [op["name"] for op in operations if op["pattern"] == "request-reply"]
    topics = [op["topic"] for op in operations if op["pattern"] == "publish"]
    assert list(WorkflowServerBase.COMMANDS) == commands
    assert [spec.topic for spec in WorkflowServerBase.TOPICS.values()] == topics
    assert WorkflowServerBase.__abstractmethods__ == {f"handle_{c}" for c in commands}
    assert (WorkflowServerBase.HEARTBEAT_TOPIC, WorkflowServerBase.SHUTDOWN_TOPIC) == (
        "heartbeat",
        "shutdown",
    )
    assert WorkflowServerBase.DEFAULT_PORT_RANGE == (43001, 43100)
    for name in commands:
        signature = inspect.signature(getattr(WorkflowClient, name))
        assert list(signature.parameters) == ["self", "args", "timeout_s", "meta"]
        assert hasattr(WorkflowSyncClient, name)
    # args are optional exactly where the args schema requires nothing
    required = {
        n: WorkflowServerBase.COMMANDS[n].args_model.model_json_schema().get("required")
        for n in commands
    }
    for name in commands:
        default = inspect.signature(getattr(WorkflowClient, name)).parameters["args"].default
        assert (default is None) == (not required[name]), name


def test_the_request_union_dispatches_on_command() -> None:
    request = models.WorkflowRequest.model_validate(
        {"command": "hold", "args": {"tasks": ["1/*"]}, "id": "r1"}
    )
    assert isinstance(request.root, models.HoldRequest)
    assert request.root.args.tasks.root[0].root == "1/*"


# --- every command over the wire --------------------------------------------------------------


def test_every_command_through_the_async_client(keys: ServiceKeys) -> None:
    async def scenario() -> None:
        server, endpoints = await started(keys)
        client = WorkflowClient(
            "127.0.0.1", endpoints.port, security=keys.client_security(), timeout_s=WAIT_S
        )
        try:
            assert (await client.ping_workflow()).root is True
            assert (await client.api()).root == list(WorkflowServerBase.COMMANDS)
            doc = (await client.api(models.ApiArgs(endpoint="hold"))).root
            assert isinstance(doc, str) and doc.startswith("Hold task proxies")

            paused = await client.pause()
            assert paused.accepted and paused.command_id is not None
            assert uuid.UUID(paused.command_id).version == 4
            assert server.workflow["status"] == "paused"
            assert (await client.resume()).accepted
            with pytest.raises(RequestError) as not_paused:
                await client.resume()
            assert not_paused.value.code == "command_failed"

            held = await client.hold({"tasks": ["1/*"]})
            assert sorted(m.root for m in held.matched) == ["1/get_data", "1/model"]
            assert all(p["is_held"] for p in server.proxies.values())
            released = await client.release(models.ReleaseArgs.model_validate({"tasks": ["1/m*"]}))
            assert [m.root for m in released.matched] == ["1/model"]
            nothing = await client.trigger({"tasks": ["9/*"]})
            assert (nothing.accepted, nothing.command_id, nothing.matched) == (False, None, [])
            for method in (client.trigger, client.kill, client.poll, client.remove):
                assert (await method({"tasks": ["1/get_data"]})).accepted

            done = await client.set({"tasks": ["1/get_data"], "outputs": ["succeeded"]})
            assert [m.root for m in done.matched] == ["1/get_data"]
            failed_glob = await client.hold({"tasks": ["*/*:succeeded"]})
            assert [m.root for m in failed_glob.matched] == ["1/get_data"]
            job = await client.message(
                {"task_job": "1/model/01", "messages": [["INFO", "started"]]}
            )
            assert [m.root for m in job.matched] == ["1/model"]
            assert server.messages == [
                {"task_job": "1/model/01", "messages": [["INFO", "started"]]}
            ]
            await client.broadcast(
                {"mode": "put", "namespaces": ["model"], "settings": {"environment": {"A": "1"}}}
            )
            assert (await client.stop({"mode": "kill"})).accepted
            assert server.workflow["stop_mode"] == "kill"

            snapshot = await client.entire_workflow()
            assert snapshot.workflow.status.root == "stopping"
            assert snapshot.workflow.broadcasts[0].namespace.root == "model"
            assert {p.id.root for p in snapshot.task_proxies} == {"1/get_data", "1/model"}
            for kind in ("workflow", "tasks", "task_proxies", "jobs", "edges"):
                elements = await client.data_elements({"element_type": kind})
                assert elements.root.element_type == kind
            edges = await client.data_elements({"element_type": "edges"})
            assert isinstance(edges.root, models.EdgesElements)
            assert edges.root.elements[0].source.root == "1/get_data"

            with pytest.raises(LocalProtocolError):
                await client.data_elements({"element_type": "all"})  # defect 4: refused
            with pytest.raises(LocalProtocolError):
                await client.hold({"tasks": ["1/foo bar"]})
        finally:
            client.close()
            await server.stop()

    run(scenario())


def test_the_sync_client_from_another_thread(keys: ServiceKeys, background_loop: Any) -> None:
    server, endpoints = background_loop.run(started(keys))
    try:
        with WorkflowSyncClient(
            "127.0.0.1", endpoints.port, security=keys.client_security(), timeout_s=WAIT_S
        ) as client:
            assert client.ping_workflow().root is True
            assert client.hold({"tasks": ["1/model"]}).accepted
            assert client.request("api", {"endpoint": "nosuch"}) == 'No method by name "nosuch"'
            assert client.entire_workflow().task_proxies[1].is_held is True
            with pytest.raises(RequestError):
                client.request("__class__", {})
    finally:
        background_loop.run(server.stop())


# --- the publish channel --------------------------------------------------------------------


async def until(subscriber: WorkflowSubscriber, topic: str) -> Published:
    while True:
        published = await subscriber.receive(timeout_s=WAIT_S)
        if published.topic == topic:
            return published


def test_deltas_then_all_then_shutdown_through_the_subscriber(keys: ServiceKeys) -> None:
    async def scenario() -> None:
        server, endpoints = await started(keys)
        assert endpoints.publish_port is not None
        client = WorkflowClient("127.0.0.1", endpoints.port, security=keys.client_security())
        subscriber = WorkflowSubscriber(
            "127.0.0.1",
            endpoints.publish_port,
            security=keys.client_security(),
        )
        try:
            subscriber.connect()
            beat = await until(subscriber, "heartbeat")  # the subscription is live
            assert isinstance(beat.message, models.Heartbeat)
            await client.hold({"tasks": ["1/model"]})
            delta = await until(subscriber, "task_proxies")
            assert isinstance(delta.message, models.TaskProxiesDelta)
            assert delta.message.updated[0].is_held is True
            batch = await until(subscriber, "all")
            assert isinstance(batch.message, models.AllDeltas)
            assert batch.payload["deltas"]["task_proxies"] == delta.payload
            assert batch.payload["seq"] > delta.payload["seq"]

            await client.pause()
            workflow = await until(subscriber, "workflow")
            assert isinstance(workflow.message, models.WorkflowDelta)
            assert workflow.message.updated[0].status.root == "paused"
            await until(subscriber, "all")

            await server.stop("REQUEST(CLEAN)")
            shutdown = await until(subscriber, "shutdown")
            assert isinstance(shutdown.message, models.Shutdown)
            assert shutdown.message.reason == "REQUEST(CLEAN)"
            assert subscriber.shut_down and subscriber.tracker.missed_total == 0
        finally:
            client.close()
            subscriber.close()
            await server.stop()

    run(scenario())


# --- the fixture corpus on the wire ---------------------------------------------------------


def corpus(definition_suffix: str) -> Iterator[dict[str, Any]]:
    for path in sorted(FIXTURES.rglob("*.json")):
        record = json.loads(path.read_text())
        name = record["definition"].rsplit("/", 1)[1]
        if name.endswith(definition_suffix) and name != "WorkflowRequest":
            record["path"] = path.name
            yield record


def test_every_request_fixture_gets_data_or_an_error_envelope(keys: ServiceKeys) -> None:
    """Valid request fixtures get data (or a command's own refusal); every invalid one gets
    an error envelope naming a bad-request code, and the server serves on."""
    requests = list(corpus("Request"))
    assert sum(r["valid"] for r in requests) >= 32 and sum(not r["valid"] for r in requests) > 100

    async def scenario() -> None:
        server, endpoints = await started(keys)
        client = WorkflowClient("127.0.0.1", endpoints.port, security=keys.client_security())
        try:
            for record in requests:
                frame = json.dumps(record["instance"]).encode()
                reply = json.loads(await client.exchange(frame))
                if record["valid"]:
                    assert "data" in reply or reply["error"]["code"] == "command_failed", record
                else:
                    assert reply["error"]["code"] in {
                        "invalid_request",
                        "invalid_args",
                        "unknown_command",
                    }, (record["definition"], record["path"], reply)
            assert (await client.ping_workflow()).root is True
        finally:
            client.close()
            await server.stop()

    run(scenario())
