"""The zmq templates: what they require of a manifest and its schemas, and what they refuse."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from runwire.codegen.generate import build
from runwire.runtime.errors import SchemaError

SCHEMAS = Path(str(resources.files("runwire.schemas")))


@pytest.fixture
def schemas(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, target, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    return target


def edit(path: Path, change: Any) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def test_the_workflow_family_generates_handlers_tables_and_subscriber() -> None:
    files = build(SCHEMAS)
    server, client = files["workflow/server.py"], files["workflow/client.py"]
    assert "    def handle_stop(" in server and "async def stop(" not in server
    assert ") -> models.ControlResult | Awaitable[models.ControlResult]:" in server
    assert (
        '"heartbeat": TopicSpec(' in server
        and 'HEARTBEAT_TOPIC: ClassVar[str | None] = "heartbeat"' in server
    )
    assert "class WorkflowSubscriber(ZmqSubscriberBase):" in client
    assert "class WorkflowSyncClient(ZmqSyncClientBase):" in client
    assert (
        "async def stop(\n        self,\n        args: models.StopArgs | Mapping[str, Any] | None = None,"
        in client
    )
    assert "args: models.HoldArgs | Mapping[str, Any],\n" in client  # required args: no default
    assert "random free port from 43001 to 43100" in files["workflow/reference.md"]


def test_an_operation_name_that_shadows_a_client_attribute_is_refused(schemas: Path) -> None:
    def rename(manifest: dict[str, Any]) -> None:
        op = manifest["interfaces"][0]["operations"][2]
        op["name"] = "close"
        op["conformance_id"] = "workflow/runtime/close"

    edit(schemas / "workflow" / "protocol.json", rename)
    with pytest.raises(SchemaError, match="'close' would shadow a client attribute"):
        build(schemas)


def test_args_must_be_a_named_definition(schemas: Path) -> None:
    def inline(document: dict[str, Any]) -> None:
        document["$defs"]["PauseRequest"]["properties"]["args"] = {
            "type": "object",
            "additionalProperties": False,
            "description": "inline",
        }

    edit(schemas / "workflow" / "runtime.json", inline)
    with pytest.raises(SchemaError, match="PauseRequest must have a property 'args'"):
        build(schemas)


def test_a_family_mixing_transports_is_refused(schemas: Path) -> None:
    def add_jsonlines(manifest: dict[str, Any]) -> None:
        jobs = json.loads((SCHEMAS / "jobs" / "protocol.json").read_text())
        extra = jobs["interfaces"][0]
        extra["schema"] = "runtime.json"
        extra["request"] = extra["malformed_reply"] = "runtime.json#/$defs/ErrorReply"
        extra["operations"] = [
            {
                "name": "ping",
                "summary": "x",
                "pattern": "request-reply",
                "recognised_by": {"key": "ping"},
                "request": "runtime.json#/$defs/PingWorkflowRequest",
                "reply": "runtime.json#/$defs/PingWorkflowReply",
                "errors": [],
                "conformance_id": "workflow/dispatcher/ping",
            }
        ]
        manifest["interfaces"].append(extra)

    edit(schemas / "workflow" / "protocol.json", add_jsonlines)
    with pytest.raises(SchemaError, match="several transports"):
        build(schemas)


def test_zmq_requests_must_be_const_tagged(schemas: Path) -> None:
    def by_key(manifest: dict[str, Any]) -> None:
        manifest["interfaces"][0]["operations"][0]["recognised_by"] = {"key": "command"}

    edit(schemas / "workflow" / "protocol.json", by_key)
    with pytest.raises(SchemaError, match="const-tagged"):
        build(schemas)


def test_an_unsupported_pattern_is_refused(schemas: Path) -> None:
    def stream(manifest: dict[str, Any]) -> None:
        op = manifest["interfaces"][0]["operations"][0]
        op["pattern"] = "request-stream"
        op["item"] = op["terminator"] = op["reply"]

    edit(schemas / "workflow" / "protocol.json", stream)
    with pytest.raises(SchemaError, match="no template yet for 'zmq'"):
        build(schemas)
