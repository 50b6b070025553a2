"""Tests for runtime/validation.py, on two small schema files that $ref each other."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped]

from runwire.runtime.errors import LocalProtocolError, RemoteProtocolError, SchemaError
from runwire.runtime.validation import (
    SCHEMA_BASE_URI,
    MessageValidator,
    SchemaRegistry,
    SchemaViolation,
)

DRAFT = "https://json-schema.org/draft/2020-12/schema"
JOBS_ID = SCHEMA_BASE_URI + "jobs/dispatcher.json"
COMMON_ID = SCHEMA_BASE_URI + "common/primitives.json"

COMMON: dict[str, Any] = {
    "$schema": DRAFT,
    "$id": COMMON_ID,
    "$defs": {
        "EpochSeconds": {"type": "number", "minimum": 0},
        "Name": {"type": "string", "minLength": 1, "maxLength": 8},
    },
}
JOBS: dict[str, Any] = {
    "$schema": DRAFT,
    "$id": JOBS_ID,
    "$defs": {
        "QueueSpec": {
            "type": "object",
            "properties": {
                "concurrency": {"type": "integer", "minimum": 1},
                "a/b~c": {"$ref": "../common/primitives.json#/$defs/Name"},
            },
            "additionalProperties": False,
        },
        "CallRequest": {
            "type": "object",
            "properties": {
                "op": {"const": "call"},
                "queue": {"$ref": "#/$defs/QueueSpec"},
                "since": {"$ref": "../common/primitives.json#/$defs/EpochSeconds"},
            },
            "required": ["op", "queue"],
            "additionalProperties": False,
        },
    },
}
CALL_REQUEST = "jobs/dispatcher.json#/$defs/CallRequest"


def write_schemas(root: Path, documents: dict[str, Any]) -> Path:
    for relative, document in documents.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document), encoding="utf-8")
    return root


@pytest.fixture
def registry(tmp_path: Path) -> SchemaRegistry:
    root = write_schemas(tmp_path, {"jobs/dispatcher.json": JOBS, "common/primitives.json": COMMON})
    (root / "__init__.py").write_text("", encoding="utf-8")  # ignored: not *.json
    return SchemaRegistry.from_directory(root)


@pytest.fixture
def call_request(registry: SchemaRegistry) -> MessageValidator:
    return registry.validator(CALL_REQUEST)


def test_documents_are_indexed_by_id(registry: SchemaRegistry) -> None:
    assert set(registry.documents) == {JOBS_ID, COMMON_ID}
    assert registry.documents[JOBS_ID]["$defs"]["CallRequest"]["required"] == ["op", "queue"]
    assert registry.referencing_registry.contents(COMMON_ID)["$id"] == COMMON_ID


def test_relative_and_absolute_refs_give_the_same_schema(registry: SchemaRegistry) -> None:
    relative = registry.validator(CALL_REQUEST)
    absolute = registry.validator(SCHEMA_BASE_URI + CALL_REQUEST)
    assert relative.uri == absolute.uri == SCHEMA_BASE_URI + CALL_REQUEST
    assert registry.validator(CALL_REQUEST) is relative  # cached


INSTANCES = [
    ({"op": "call", "queue": {}}, True),
    ({"op": "call", "queue": {"concurrency": 3, "a/b~c": "x"}, "since": 12.5}, True),
    ({"op": "call", "queue": {"concurrency": 0}}, False),
    ({"op": "call", "queue": {"a/b~c": "much too long"}}, False),
    ({"op": "call", "queue": {}, "since": -1}, False),
    ({"op": "cancel", "queue": {}}, False),
    ({"op": "call"}, False),
    ({"op": "call", "queue": {}, "extra": None}, False),
    ([], False),
    (None, False),
]


@pytest.mark.parametrize(("instance", "expected"), INSTANCES)
def test_fast_validator_agrees_with_oracle(
    call_request: MessageValidator, instance: Any, expected: bool
) -> None:
    assert call_request.is_valid(instance) is expected
    assert call_request.oracle_is_valid(instance) is expected
    assert (call_request.violations(instance) == []) is expected


def test_non_json_value_is_invalid(call_request: MessageValidator) -> None:
    assert call_request.is_valid({"op": "call", "queue": {1, 2}}) is False


def test_nested_violation_across_ref(call_request: MessageValidator) -> None:
    [violation] = call_request.violations({"op": "call", "queue": {"concurrency": 0}})
    assert violation == SchemaViolation(
        instance_pointer="/queue/concurrency",
        keyword="minimum",
        schema_location=JOBS_ID + "#/$defs/QueueSpec/properties/concurrency",
        message="0 is less than the minimum of 1",
    )
    assert str(violation) == (
        "at /queue/concurrency: 0 is less than the minimum of 1 (keyword minimum, schema "
        + JOBS_ID
        + "#/$defs/QueueSpec/properties/concurrency)"
    )


def test_violation_in_other_document_with_escaped_pointer(
    call_request: MessageValidator,
) -> None:
    [violation] = call_request.violations({"op": "call", "queue": {"a/b~c": ""}})
    assert violation.instance_pointer == "/queue/a~1b~0c"
    assert violation.keyword == "minLength"
    assert violation.schema_location == COMMON_ID + "#/$defs/Name"


def test_violations_are_sorted(call_request: MessageValidator) -> None:
    instance = {"op": "nope", "queue": {"concurrency": 0}, "extra": 1, "since": -1}
    found = [(v.instance_pointer, v.keyword) for v in call_request.violations(instance)]
    assert found == [
        ("", "additionalProperties"),
        ("/op", "const"),
        ("/queue/concurrency", "minimum"),
        ("/since", "minimum"),
    ]
    root = call_request.violations(instance)[0]
    assert root.schema_location == JOBS_ID + "#/$defs/CallRequest"
    assert call_request.violations(instance) == call_request.violations(instance)


def test_check_passes_valid_instance(call_request: MessageValidator) -> None:
    call_request.check({"op": "call", "queue": {}})
    call_request.check({"op": "call", "queue": {}}, outbound=True)


def test_check_inbound_raises_remote_protocol_error(call_request: MessageValidator) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        call_request.check({"op": "call"})
    error = caught.value
    assert not isinstance(error, LocalProtocolError)
    assert error.error_type == "invalid_request"
    assert error.violation is not None
    assert error.violation.keyword == "required"
    assert error.violation.instance_pointer == ""
    assert "'queue' is a required property" in str(error)
    assert isinstance(error.__cause__, ValidationError)


def test_check_outbound_raises_local_protocol_error(call_request: MessageValidator) -> None:
    with pytest.raises(LocalProtocolError) as caught:
        call_request.check({"op": "call", "queue": {"concurrency": 0}}, outbound=True)
    assert caught.value.violation is not None
    assert caught.value.violation.instance_pointer == "/queue/concurrency"
    assert "/queue/concurrency" in str(caught.value)


def test_check_error_type_can_be_chosen(call_request: MessageValidator) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        call_request.check([], error_type="bad_request")
    assert caught.value.error_type == "bad_request"


@pytest.mark.parametrize(
    ("ref", "fragment"),
    [
        ("jobs/missing.json#/$defs/CallRequest", "unknown schema document"),
        ("https://example.com/schemas/x.json", "unknown schema document"),
        ("jobs/dispatcher.json#/$defs/Nope", "no schema at pointer"),
        ("jobs/dispatcher.json#nope", "no anchor"),
    ],
)
def test_unknown_ref_is_schema_error(registry: SchemaRegistry, ref: str, fragment: str) -> None:
    with pytest.raises(SchemaError, match=fragment):
        registry.validator(ref)


def test_unresolvable_ref_inside_schema_is_schema_error() -> None:
    broken: dict[str, Any] = {
        "$id": SCHEMA_BASE_URI + "jobs/broken.json",
        "$defs": {"A": {"$ref": "../common/absent.json#/$defs/B"}},
    }
    with pytest.raises(SchemaError, match=r"absent\.json"):  # raised while indexing, today
        SchemaRegistry.from_documents({broken["$id"]: broken}).validator(
            "jobs/broken.json#/$defs/A"
        )


def test_file_without_id_is_schema_error(tmp_path: Path) -> None:
    write_schemas(tmp_path, {"jobs/noid.json": {"type": "object"}})
    with pytest.raises(SchemaError, match=r"noid\.json"):
        SchemaRegistry.from_directory(tmp_path)


def test_file_that_is_not_json_is_schema_error(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(SchemaError, match=r"bad\.json"):
        SchemaRegistry.from_directory(tmp_path)


def test_duplicate_id_is_schema_error(tmp_path: Path) -> None:
    write_schemas(tmp_path, {"a.json": COMMON, "b.json": COMMON})
    with pytest.raises(SchemaError, match="both have"):
        SchemaRegistry.from_directory(tmp_path)


def test_from_documents_rejects_mismatched_id() -> None:
    with pytest.raises(SchemaError, match="declares"):
        SchemaRegistry.from_documents({SCHEMA_BASE_URI + "other.json": COMMON})
