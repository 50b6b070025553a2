"""The schema linter: the shipped schemas pass; each rule catches its violation."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from runwire.codegen.generate import build
from runwire.codegen.lint import RULES, lint_tree
from runwire.codegen.model import SchemaTree, load_families
from runwire.runtime.errors import SchemaError

SCHEMAS = Path(str(resources.files("runwire.schemas")))


@pytest.fixture
def schemas(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, target, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    return target


def edit(root: Path, rel: str, change: Callable[[Any], None]) -> None:
    path = root / rel
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document, indent=2))


def test_shipped_schemas_pass_every_rule() -> None:
    assert lint_tree(SchemaTree.load(SCHEMAS)) == []


def defs(document: Any) -> Any:
    return document["$defs"]


CASES: list[tuple[str, str, Callable[[Any], None], str]] = [
    (
        "dialect",
        "jobs/agent.json",
        lambda d: d.update({"$schema": "http://json-schema.org/draft-07/schema#"}),
        "/$schema",
    ),
    (
        "schema-id",
        "jobs/agent.json",
        lambda d: d.update({"$id": "https://runwire.dev/schemas/jobs/other.json"}),
        "/$id",
    ),
    (
        "metaschema",
        "jobs/agent.json",
        lambda d: defs(d)["AgentAck"].update(required="harp"),
        "/$defs/AgentAck/required",
    ),
    (
        "closed-object",
        "jobs/dispatcher.json",
        lambda d: defs(d)["CallReply"].pop("additionalProperties"),
        "/$defs/CallReply",
    ),
    (
        "discriminator",
        "jobs/dispatcher.json",
        lambda d: defs(d).update(
            Tagged={
                "title": "Tagged",
                "description": "d",
                "examples": [{"no_result": True}],
                "oneOf": [{"$ref": "#/$defs/NoResultReply"}, {"$ref": "#/$defs/ContinueMarker"}],
                "discriminator": {"propertyName": "no_result"},
            }
        ),
        "/$defs/Tagged/discriminator",
    ),
    (
        "definition-docs",
        "jobs/dispatcher.json",
        lambda d: defs(d)["JobId"].pop("examples"),
        "/$defs/JobId",
    ),
    (
        "examples-valid",
        "jobs/dispatcher.json",
        lambda d: defs(d)["JobId"].update(examples=["NOT-A-UUID"]),
        "/$defs/JobId/examples/0",
    ),
    (
        "no-remote-ref",
        "jobs/dispatcher.json",
        lambda d: defs(d)["CallRequest"]["properties"].update(
            host={"$ref": "https://example.com/schemas/host.json"}
        ),
        "/$defs/CallRequest/properties/host/$ref",
    ),
    (
        "unique-definition-names",
        "jobs/dispatcher.json",
        lambda d: defs(d).update(
            JsonValue={"title": "JsonValue", "description": "dup", "examples": [1]}
        ),
        "/$defs/JsonValue",
    ),
]


def test_every_rule_has_a_case() -> None:
    assert {rule for rule, *_ in CASES} == set(RULES)


@pytest.mark.parametrize(("rule", "rel", "change", "pointer"), CASES, ids=[c[0] for c in CASES])
def test_rule_reports_file_pointer_and_rule(
    schemas: Path, rule: str, rel: str, change: Callable[[Any], None], pointer: str
) -> None:
    edit(schemas, rel, change)
    issues = lint_tree(SchemaTree.load(schemas))
    assert (rel, pointer, rule) in {(i.file, i.pointer, i.rule) for i in issues}, issues
    text = str(next(i for i in issues if i.rule == rule))
    assert text.startswith(f"{rel}: {pointer}: [{rule}]")


def test_a_const_tagged_oneof_without_discriminator_is_reported(schemas: Path) -> None:
    def add(d: Any) -> None:
        defs(d)["A"] = {
            "title": "A",
            "description": "a",
            "examples": [{"event": "a"}],
            "type": "object",
            "properties": {"event": {"const": "a"}},
            "required": ["event"],
            "additionalProperties": False,
        }
        defs(d)["B"] = {
            "title": "B",
            "description": "b",
            "examples": [{"event": "b"}],
            "type": "object",
            "properties": {"event": {"const": "b"}},
            "required": ["event"],
            "additionalProperties": False,
        }
        defs(d)["AOrB"] = {
            "title": "AOrB",
            "description": "u",
            "examples": [{"event": "a"}],
            "oneOf": [{"$ref": "#/$defs/A"}, {"$ref": "#/$defs/B"}],
        }

    edit(schemas, "jobs/agent.json", add)
    issues = [i for i in lint_tree(SchemaTree.load(schemas)) if i.rule == "discriminator"]
    assert [(i.pointer, 'propertyName": "event"' in i.message) for i in issues] == [
        ("/$defs/AOrB", True)
    ]


def test_an_open_object_needs_a_reason(schemas: Path) -> None:
    edit(schemas, "jobs/agent.json", lambda d: defs(d)["AgentRequest"].pop("x-open-reason"))
    issues = lint_tree(SchemaTree.load(schemas))
    assert ("jobs/agent.json", "/$defs/AgentRequest", "closed-object") in {
        (i.file, i.pointer, i.rule) for i in issues
    }


def test_codegen_refuses_to_generate_from_a_failing_schema(schemas: Path) -> None:
    edit(
        schemas, "jobs/dispatcher.json", lambda d: defs(d)["CallReply"].pop("additionalProperties")
    )
    with pytest.raises(SchemaError) as caught:
        build(schemas)
    message = str(caught.value)
    assert "nothing was generated" in message
    assert "jobs/dispatcher.json: /$defs/CallReply: [closed-object]" in message


def test_manifest_errors_name_file_and_pointer(schemas: Path) -> None:
    edit(schemas, "jobs/protocol.json", lambda m: m["interfaces"][0]["operations"][0].pop("errors"))
    with pytest.raises(
        SchemaError, match=r"jobs/protocol.json: /interfaces/0/operations/0: required"
    ):
        load_families(SchemaTree.load(schemas))


def test_manifest_must_name_existing_definitions(schemas: Path) -> None:
    edit(
        schemas,
        "jobs/protocol.json",
        lambda m: m["interfaces"][0]["operations"][0].update(request="dispatcher.json#/$defs/Nope"),
    )
    with pytest.raises(SchemaError, match=r"no definition jobs/dispatcher.json#/\$defs/Nope"):
        load_families(SchemaTree.load(schemas))


def test_manifest_conformance_ids_follow_family_interface_operation(schemas: Path) -> None:
    edit(
        schemas,
        "jobs/protocol.json",
        lambda m: m["interfaces"][0]["operations"][0].update(conformance_id="jobs/agent/call"),
    )
    with pytest.raises(SchemaError, match=r"conformance_id: expected 'jobs/dispatcher/call'"):
        load_families(SchemaTree.load(schemas))
