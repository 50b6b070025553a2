"""The manifest meta-schema expresses every transport shape and pattern of DESIGN.md."""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

import jsonschema
import pytest

META = json.loads(
    (resources.files("runwire.schemas") / "meta" / "protocol.schema.json").read_text()
)
VALIDATOR = jsonschema.Draft202012Validator(META)


def manifest(family: str, interfaces: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "$schema": "https://runwire.dev/schemas/meta/protocol.schema.json",
        "family": family,
        "title": f"{family} example",
        "description": "An example manifest.",
        "version": 1,
        "modelled_on": {"system": "example", "reference": f"reference/{family}.md"},
        "interfaces": interfaces,
    }


def op(name: str, family: str, iface: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "summary": f"{name}.",
        "errors": [],
        "conformance_id": f"{family}/{iface}/{name}",
        **fields,
    }


JSONLINES_TLS = manifest(
    "jobs",
    [
        {
            "name": "agent",
            "title": "Agent",
            "description": "TLS, password in band, one call per connection.",
            "schema": "agent.json",
            "class_name": "Agent",
            "transport": {
                "kind": "jsonlines",
                "security": "tls",
                "min_tls_version": "1.2",
                "authentication": "password-in-band",
                "default_port": 4306,
                "requests_per_connection": "one",
                "max_message_bytes": 1048576,
            },
            "operations": [
                op(
                    "call",
                    "jobs",
                    "agent",
                    pattern="request-stream",
                    recognised_by={"key": "procedure"},
                    request="agent.json#/$defs/AgentRequest",
                    ack="agent.json#/$defs/AgentAck",
                    item="agent.json#/$defs/AgentStreamItem",
                    terminator="agent.json#/$defs/AgentTerminator",
                )
            ],
        }
    ],
)

ZMQ_REQREP_PUB = manifest(
    "workflow",
    [
        {
            "name": "scheduler",
            "title": "Workflow runtime",
            "description": "REQ/REP served by a ROUTER, deltas on PUB, CurveZMQ.",
            "schema": "runtime.json",
            "class_name": "WorkflowRuntime",
            "transport": {
                "kind": "zmq",
                "security": "curve",
                "sockets": [
                    {"name": "requests", "server": "ROUTER", "client": "REQ", "framing": "json"},
                    {"name": "publish", "server": "PUB", "client": "SUB", "framing": "topic-json"},
                ],
                "port_range": [43001, 43100],
                "max_message_bytes": 10485760,
            },
            "operations": [
                op(
                    "pause",
                    "workflow",
                    "scheduler",
                    pattern="request-reply",
                    recognised_by={"property": "command", "const": "pause"},
                    request="runtime.json#/$defs/PauseRequest",
                    reply="runtime.json#/$defs/PauseReply",
                ),
                op(
                    "shutdown",
                    "workflow",
                    "scheduler",
                    pattern="publish",
                    recognised_by={"topic": "shutdown"},
                    topic="shutdown",
                    message="runtime.json#/$defs/ShutdownMessage",
                ),
            ],
        }
    ],
)

WEBSOCKET_EVENTS = manifest(
    "simulation",
    [
        {
            "name": "server",
            "title": "Simulation server",
            "description": "Events in both directions over a websocket.",
            "schema": "server.json",
            "class_name": "Simulation",
            "transport": {
                "kind": "websocket",
                "default_port": 4242,
                "path": "/",
                "max_message_bytes": 1048576,
            },
            "operations": [
                op(
                    "pause",
                    "simulation",
                    "server",
                    pattern="event",
                    direction="client-to-server",
                    recognised_by={"property": "event", "const": "pause"},
                    message="server.json#/$defs/PauseEvent",
                ),
                op(
                    "heartbeat",
                    "simulation",
                    "server",
                    pattern="event",
                    direction="server-to-client",
                    recognised_by={"property": "event", "const": "heartbeat"},
                    message="server.json#/$defs/HeartbeatEvent",
                ),
            ],
        }
    ],
)

ZMQ_GROUP = manifest(
    "group",
    [
        {
            "name": "member",
            "title": "Group member",
            "description": "Broadcasts over PUB/SUB, member-to-leader over DEALER/ROUTER.",
            "schema": "member.json",
            "class_name": "GroupMember",
            "transport": {
                "kind": "zmq-group",
                "security": "curve",
                "sockets": [
                    {
                        "name": "group",
                        "server": "PUB",
                        "client": "SUB",
                        "framing": "multipart-command",
                    },
                    {
                        "name": "leader",
                        "server": "ROUTER",
                        "client": "DEALER",
                        "framing": "multipart-command",
                    },
                ],
                "discovery": "service",
                "max_message_bytes": 65536,
            },
            "operations": [
                op(
                    "heartbeat",
                    "group",
                    "member",
                    pattern="broadcast",
                    direction="member-to-group",
                    recognised_by={"frame": 0, "const": "HBT"},
                    message="member.json#/$defs/Heartbeat",
                ),
                op(
                    "query_leader",
                    "group",
                    "member",
                    pattern="member-to-leader",
                    recognised_by={"frame": 0, "const": "MTL"},
                    request="member.json#/$defs/LeaderQuery",
                    reply="member.json#/$defs/LeaderReply",
                ),
            ],
        }
    ],
)

EXAMPLES = {
    "jsonlines-tls": JSONLINES_TLS,
    "zmq-reqrep-pub": ZMQ_REQREP_PUB,
    "websocket-events": WEBSOCKET_EVENTS,
    "zmq-group": ZMQ_GROUP,
}


def test_meta_schema_is_valid_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(META)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_transport_shape_has_a_valid_manifest(name: str) -> None:
    errors = [e.message for e in VALIDATOR.iter_errors(EXAMPLES[name])]
    assert errors == []


def test_the_shipped_jobs_manifest_is_valid() -> None:
    jobs = json.loads((resources.files("runwire.schemas") / "jobs" / "protocol.json").read_text())
    assert [e.message for e in VALIDATOR.iter_errors(jobs)] == []


def _broken(name: str, path: list[Any], key: str) -> dict[str, Any]:
    document = copy.deepcopy(EXAMPLES[name])
    node: Any = document
    for step in path:
        node = node[step]
    del node[key]
    return document


@pytest.mark.parametrize(
    ("name", "path", "key"),
    [
        # a request-stream without its terminator
        ("jsonlines-tls", ["interfaces", 0, "operations", 0], "terminator"),
        # an event without a direction
        ("websocket-events", ["interfaces", 0, "operations", 0], "direction"),
        # a publish without a topic
        ("zmq-reqrep-pub", ["interfaces", 0, "operations", 1], "topic"),
        # member-to-leader without its reply
        ("zmq-group", ["interfaces", 0, "operations", 1], "reply"),
        # a group transport without discovery
        ("zmq-group", ["interfaces", 0, "transport"], "discovery"),
        # an operation that does not say how it is recognised
        ("zmq-reqrep-pub", ["interfaces", 0, "operations", 0], "recognised_by"),
    ],
)
def test_pattern_and_transport_requirements_are_enforced(
    name: str, path: list[Any], key: str
) -> None:
    assert not VALIDATOR.is_valid(_broken(name, path, key))


@pytest.mark.parametrize(
    "mutation",
    [
        lambda m: m["interfaces"][0]["transport"].update(kind="carrier-pigeon"),
        lambda m: m["interfaces"][0]["operations"][0].update(pattern="fire-and-forget"),
        lambda m: m["interfaces"][0]["operations"][0].update(
            request="https://example.com/x.json#/$defs/X"
        ),
        lambda m: m["interfaces"][0]["operations"][0].update(conformance_id="jobs"),
        lambda m: m["interfaces"][0]["operations"][0].update(
            recognised_by={"key": "a", "topic": "b"}
        ),
        lambda m: m.update(unknown=1),
    ],
    ids=[
        "transport-kind",
        "pattern",
        "remote-ref",
        "conformance-id",
        "two-recognitions",
        "extra-key",
    ],
)
def test_bad_manifests_are_rejected(mutation: Any) -> None:
    document = copy.deepcopy(JSONLINES_TLS)
    mutation(document)
    assert not VALIDATOR.is_valid(document)
