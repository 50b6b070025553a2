"""Tests for ``runwire.codegen.fixtures``: the valid/invalid fixture-corpus engine.

The corpus is built here from two small documents that ``$ref`` each other:

* ``common.json``: a closed ``QueueSpec`` with integer bounds, an open ``Info`` object, a
  patterned ``JobId`` and an ``Audit`` record referring back to ``dispatcher.json``;
* ``dispatcher.json``: closed requests with a ``harpcaller`` const tag, an enum, a nested
  queue through a cross-document ``$ref``, a key-recognised ``oneOf`` (``Request``) and a
  discriminator-tagged ``oneOf`` (``Event``), plus ``oneOf`` cases for the sibling check.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

import jsonschema_rs
import pytest
import referencing
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from referencing.jsonschema import DRAFT202012

from runwire.codegen.fixtures import Fixture, make_fixtures

BASE = "https://runwire.dev/schemas/test/"
COMMON = BASE + "common.json"
DISPATCHER = BASE + "dispatcher.json"
DRAFT = "https://json-schema.org/draft/2020-12/schema"

JOB_ID = "0123abcd"
CALL = {
    "harpcaller": 1,
    "host": "web01",
    "procedure": "restart_nginx",
    "arguments": [1, "a"],
    "queue": {"name": {"host": "web01"}, "concurrency": 2},
    "priority": "normal",
    "info": {"who": "ops"},
}
CANCEL = {"harpcaller": 1, "cancel": JOB_ID}
GET_RESULT = {"harpcaller": 1, "get_result": JOB_ID, "wait": False}

COMMON_DOC: dict[str, Any] = {
    "$schema": DRAFT,
    "$id": COMMON,
    "$defs": {
        "JobId": {"type": "string", "pattern": "^[0-9a-f]{8}$", "examples": [JOB_ID]},
        "QueueSpec": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "object"},
                "concurrency": {"type": "integer", "minimum": 1, "maximum": 64},
            },
            "additionalProperties": False,
            "examples": [{"name": {"host": "web01"}, "concurrency": 2}],
        },
        "Info": {"type": "object", "examples": [{"who": "ops"}]},
        "Audit": {
            "type": "object",
            "required": ["request"],
            "properties": {
                "request": {"$ref": "dispatcher.json#/$defs/Request"},
                "note": {"type": "string", "maxLength": 12},
            },
            "additionalProperties": False,
            "examples": [{"request": CANCEL, "note": "by ops"}],
        },
    },
}

DISPATCHER_DOC: dict[str, Any] = {
    "$schema": DRAFT,
    "$id": DISPATCHER,
    "$defs": {
        "CallRequest": {
            "type": "object",
            "required": ["harpcaller", "host", "procedure", "arguments"],
            "properties": {
                "harpcaller": {"const": 1},
                "host": {"type": "string", "minLength": 1},
                "procedure": {"type": "string"},
                "arguments": {"type": ["array", "object"]},
                "queue": {"$ref": "common.json#/$defs/QueueSpec"},
                "priority": {"enum": ["low", "normal", "high"]},
                "info": {"$ref": "common.json#/$defs/Info"},
            },
            "additionalProperties": False,
            "examples": [CALL],
        },
        "CancelRequest": {
            "type": "object",
            "required": ["harpcaller", "cancel"],
            "properties": {
                "harpcaller": {"const": 1},
                "cancel": {"$ref": "common.json#/$defs/JobId"},
            },
            "additionalProperties": False,
            "examples": [CANCEL],
        },
        "GetResultRequest": {
            "type": "object",
            "required": ["harpcaller", "get_result"],
            "properties": {
                "harpcaller": {"const": 1},
                "get_result": {"$ref": "common.json#/$defs/JobId"},
                "wait": {"type": "boolean"},
            },
            "additionalProperties": False,
            "examples": [GET_RESULT],
        },
        "Request": {
            "oneOf": [
                {"$ref": "#/$defs/CallRequest"},
                {"$ref": "#/$defs/CancelRequest"},
                {"$ref": "#/$defs/GetResultRequest"},
            ],
            "examples": [CALL, CANCEL, GET_RESULT],
        },
        "Started": {
            "type": "object",
            "required": ["event", "job"],
            "properties": {
                "event": {"const": "started"},
                "job": {"$ref": "common.json#/$defs/JobId"},
            },
            "additionalProperties": False,
            "examples": [{"event": "started", "job": JOB_ID}],
        },
        "Finished": {
            "type": "object",
            "required": ["event", "job", "status"],
            "properties": {
                "event": {"const": "finished"},
                "job": {"$ref": "common.json#/$defs/JobId"},
                "status": {"enum": ["ok", "error", "cancelled"]},
            },
            "additionalProperties": False,
            "examples": [{"event": "finished", "job": JOB_ID, "status": "ok"}],
        },
        "Event": {
            "oneOf": [{"$ref": "#/$defs/Started"}, {"$ref": "#/$defs/Finished"}],
            "discriminator": {"propertyName": "event"},
            "examples": [
                {"event": "started", "job": JOB_ID},
                {"event": "finished", "job": JOB_ID, "status": "cancelled"},
            ],
        },
        # minimum - 1 = 9 is accepted by the second branch: that mutant must be dropped.
        "Window": {
            "oneOf": [
                {"type": "integer", "minimum": 10},
                {"type": "integer", "minimum": 0, "maximum": 9},
            ],
            "examples": [12],
        },
        # Same, but 9 is accepted by no branch: the minimum mutant is kept.
        "NarrowWindow": {
            "oneOf": [
                {"type": "integer", "minimum": 10},
                {"type": "integer", "minimum": 0, "maximum": 5},
            ],
            "examples": [12],
        },
        "Loose": {"type": ["object", "string", "array", "number"], "examples": ["x"]},
    },
}

DOCUMENTS = {COMMON: COMMON_DOC, DISPATCHER: DISPATCHER_DOC}
DEFINITIONS = [f"{uri}#/$defs/{name}" for uri, doc in DOCUMENTS.items() for name in doc["$defs"]]


def make_registry(documents: dict[str, dict[str, Any]]) -> referencing.Registry[Any]:
    """A registry holding ``documents`` (uri -> schema) as draft 2020-12 resources."""
    resources = [(uri, DRAFT202012.create_resource(doc)) for uri, doc in documents.items()]
    return referencing.Registry().with_resources(resources)


def d(name: str, document: str = DISPATCHER) -> str:
    """Absolute URI of a definition."""
    return f"{document}#/$defs/{name}"


@pytest.fixture(scope="module")
def fixtures() -> list[Fixture]:
    return make_fixtures(make_registry(DOCUMENTS), DEFINITIONS)


def of(fixtures: Iterable[Fixture], definition: str) -> list[Fixture]:
    return [f for f in fixtures if f.definition == definition]


def keyed(fixtures: Iterable[Fixture]) -> set[tuple[str | None, str | None, str | None, str]]:
    """(keyword, schema_location, detail, instance_location) of the invalid fixtures."""
    return {
        (f.keyword, f.schema_location, f.detail, f.instance_location)
        for f in fixtures
        if not f.valid
    }


def dump(fixtures: Iterable[Fixture]) -> str:
    return json.dumps([dataclasses.asdict(f) for f in fixtures], sort_keys=True)


# --------------------------------------------------------------------------------------------
# Valid fixtures
# --------------------------------------------------------------------------------------------


def test_every_example_is_a_valid_fixture_in_order(fixtures: list[Fixture]) -> None:
    for definition in DEFINITIONS:
        document, _, pointer = definition.partition("#")
        examples = DOCUMENTS[document]["$defs"][pointer.rsplit("/", 1)[-1]]["examples"]
        valid = [f for f in of(fixtures, definition) if f.valid]
        assert [f.instance for f in valid] == examples
        assert [f.name for f in valid] == [f"valid-{i + 1}" for i in range(len(examples))]
        for fixture in valid:
            assert fixture.keyword is fixture.schema_location is fixture.detail is None
            assert fixture.instance_location == ""


def test_invalid_example_raises_value_error_naming_definition_and_index() -> None:
    bad = {
        "$schema": DRAFT,
        "$id": BASE + "bad.json",
        "$defs": {"Port": {"type": "integer", "maximum": 10, "examples": [3, 11]}},
    }
    registry = make_registry({BASE + "bad.json": bad})
    with pytest.raises(ValueError, match=r"bad\.json#/\$defs/Port.*examples\[1\]"):
        make_fixtures(registry, [BASE + "bad.json#/$defs/Port"])


def test_definition_without_examples_raises_value_error() -> None:
    bare = {"$schema": DRAFT, "$id": BASE + "bare.json", "$defs": {"X": {"type": "string"}}}
    with pytest.raises(ValueError, match="examples"):
        make_fixtures(make_registry({BASE + "bare.json": bare}), [BASE + "bare.json#/$defs/X"])


# --------------------------------------------------------------------------------------------
# Invalid fixtures: coverage of required / const / enum / closed objects
# --------------------------------------------------------------------------------------------


def test_call_request_mutations_point_at_the_right_schema(fixtures: list[Fixture]) -> None:
    call, queue = d("CallRequest"), d("QueueSpec", COMMON)
    expected = {
        ("required", call, "harpcaller", ""),
        ("required", call, "host", ""),
        ("required", call, "procedure", ""),
        ("required", call, "arguments", ""),
        ("additionalProperties", call, "unexpected_key", ""),
        ("const", call + "/properties/harpcaller", "1", "/harpcaller"),
        ("enum", call + "/properties/priority", "normal", "/priority"),
        # Through the cross-document $ref: locations inside common.json.
        ("required", queue, "name", "/queue"),
        ("additionalProperties", queue, "unexpected_key", "/queue"),
        ("type", queue + "/properties/concurrency", None, "/queue/concurrency"),
        ("minimum", queue + "/properties/concurrency", None, "/queue/concurrency"),
        ("maximum", queue + "/properties/concurrency", None, "/queue/concurrency"),
        ("minLength", call + "/properties/host", None, "/host"),
    }
    got = keyed(of(fixtures, call))
    assert expected <= got
    # Info is open on purpose: no additionalProperties mutant there.
    assert not any(key[0] == "additionalProperties" and key[3] == "/info" for key in got)


def test_names_and_instances_of_call_request(fixtures: list[Fixture]) -> None:
    by_name = {f.name: f for f in of(fixtures, d("CallRequest"))}
    assert by_name["invalid-required-host"].instance == {
        k: v for k, v in CALL.items() if k != "host"
    }
    assert by_name["invalid-required-host"].description == (
        "CallRequest without its required key 'host'"
    )
    assert by_name["invalid-const-harpcaller"].instance["harpcaller"] == 2
    assert by_name["invalid-additionalProperties-root"].instance["unexpected_key"] == 1
    assert by_name["invalid-additionalProperties-queue"].instance["queue"]["unexpected_key"] == 1
    assert by_name["invalid-required-queue-name"].instance["queue"] == {"concurrency": 2}
    assert by_name["invalid-type-queue-concurrency"].instance["queue"]["concurrency"] == {
        "unexpected": "type"
    }
    assert by_name["invalid-minimum-queue-concurrency"].instance["queue"]["concurrency"] == 0
    assert by_name["invalid-maximum-queue-concurrency"].instance["queue"]["concurrency"] == 65
    assert by_name["invalid-enum-priority"].instance["priority"] == "normal-mutated"
    assert by_name["invalid-type-root"].instance == "wrong-type"


def test_key_recognised_one_of_walks_the_matching_branch(fixtures: list[Fixture]) -> None:
    request = of(fixtures, d("Request"))
    got = keyed(request)
    cancel, get_result = d("CancelRequest"), d("GetResultRequest")
    expected = {
        ("required", cancel, "cancel", ""),
        ("required", cancel, "harpcaller", ""),
        ("additionalProperties", cancel, "unexpected_key", ""),
        ("const", cancel + "/properties/harpcaller", "1", "/harpcaller"),
        ("pattern", d("JobId", COMMON), None, "/cancel"),
        ("required", get_result, "get_result", ""),
        ("type", get_result + "/properties/wait", None, "/wait"),
        ("required", d("CallRequest"), "host", ""),
        ("required", d("QueueSpec", COMMON), "name", "/queue"),
    }
    assert expected <= got
    # Dropping the optional 'wait' is no violation, so it never appears.
    assert ("required", get_result, "wait", "") not in got


def test_discriminator_tagged_one_of(fixtures: list[Fixture]) -> None:
    got = keyed(of(fixtures, d("Event")))
    started, finished = d("Started"), d("Finished")
    expected = {
        ("const", started + "/properties/event", "started", "/event"),
        ("const", finished + "/properties/event", "finished", "/event"),
        ("required", started, "event", ""),
        ("required", finished, "status", ""),
        ("enum", finished + "/properties/status", "cancelled", "/status"),
        ("additionalProperties", finished, "unexpected_key", ""),
    }
    assert expected <= got
    tag = next(f for f in of(fixtures, d("Event")) if f.name == "invalid-const-event")
    assert tag.instance == {"event": "started-mutated", "job": JOB_ID}


def test_cross_document_ref_back_from_common(fixtures: list[Fixture]) -> None:
    got = keyed(of(fixtures, d("Audit", COMMON)))
    expected = {
        ("required", d("Audit", COMMON), "request", ""),
        ("maxLength", d("Audit", COMMON) + "/properties/note", None, "/note"),
        ("required", d("CancelRequest"), "cancel", "/request"),
        ("pattern", d("JobId", COMMON), None, "/request/cancel"),
    }
    assert expected <= got


def test_type_candidates_follow_the_documented_order(fixtures: list[Fixture]) -> None:
    loose = [f for f in of(fixtures, d("Loose")) if f.keyword == "type"]
    assert [f.instance for f in loose] == [True]  # 123456 is a number, so next is true


# --------------------------------------------------------------------------------------------
# Oracle checks
# --------------------------------------------------------------------------------------------


def test_every_invalid_fixture_is_invalid_for_both_validators(fixtures: list[Fixture]) -> None:
    rs_registry = jsonschema_rs.Registry(list(DOCUMENTS.items()))
    py_registry = make_registry(DOCUMENTS)
    for fixture in fixtures:
        schema = {"$ref": fixture.definition}
        py = Draft202012Validator(schema, registry=py_registry)
        rs = jsonschema_rs.validator_for(schema, registry=rs_registry)
        assert py.is_valid(fixture.instance) is fixture.valid, fixture.name
        assert rs.is_valid(fixture.instance) is fixture.valid, fixture.name


def test_intended_keyword_is_reported_by_the_oracle(fixtures: list[Fixture]) -> None:
    """In this corpus every mutation is reported under its own keyword (error tree incl.
    oneOf context), so no description carries the 'validator reports' note."""
    registry = make_registry(DOCUMENTS)
    for fixture in fixtures:
        if fixture.valid:
            continue
        validator = Draft202012Validator({"$ref": fixture.definition}, registry=registry)
        pending, seen = list(validator.iter_errors(fixture.instance)), set()
        while pending:
            error = pending.pop()
            seen.add(error.validator)
            pending.extend(error.context or ())
        assert fixture.keyword in seen, fixture.name
        assert "validator reports" not in fixture.description


def test_mutant_accepted_by_a_one_of_sibling_is_dropped(fixtures: list[Fixture]) -> None:
    oracle = Draft202012Validator({"$ref": d("Window")}, registry=make_registry(DOCUMENTS))
    assert oracle.is_valid(9)  # minimum - 1 of the first branch: the second branch takes it
    window = of(fixtures, d("Window"))
    assert [f.keyword for f in window if not f.valid] == ["type"]
    # Control: with no sibling accepting 9, the same mutation is kept.
    narrow = [f for f in of(fixtures, d("NarrowWindow")) if f.keyword == "minimum"]
    assert [(f.instance, f.schema_location) for f in narrow] == [
        (9, d("NarrowWindow") + "/oneOf/0")
    ]


# --------------------------------------------------------------------------------------------
# Naming, de-duplication, determinism
# --------------------------------------------------------------------------------------------


def test_names_are_unique_and_instances_distinct_per_definition(fixtures: list[Fixture]) -> None:
    for definition in DEFINITIONS:
        group = of(fixtures, definition)
        assert len({f.name for f in group}) == len(group)
        assert len({json.dumps(f.instance, sort_keys=True) for f in group}) == len(group)
        assert all(f.description for f in group)


def test_colliding_names_get_numbered_suffixes() -> None:
    doc = {
        "$schema": DRAFT,
        "$id": BASE + "pair.json",
        "$defs": {
            "Pair": {
                "type": "object",
                "required": ["a"],
                "properties": {"a": {"type": "integer"}},
                "examples": [{"a": 1}, {"a": 1, "b": 2}],
            }
        },
    }
    result = make_fixtures(
        make_registry({BASE + "pair.json": doc}), [BASE + "pair.json#/$defs/Pair"]
    )
    names = [f.name for f in result]
    assert "invalid-required-a" in names and "invalid-required-a-2" in names
    # Both examples give the same type mutant of /a's parent-less root: kept once.
    assert names.count("invalid-type-root") == 1


def test_output_is_deterministic_within_a_process() -> None:
    first = make_fixtures(make_registry(DOCUMENTS), DEFINITIONS)
    second = make_fixtures(make_registry(DOCUMENTS), DEFINITIONS)
    assert first == second
    assert dump(first) == dump(second)


def test_output_does_not_depend_on_the_hash_seed(fixtures: list[Fixture]) -> None:
    script = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('engine_tests', {__file__!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "registry = module.make_registry(module.DOCUMENTS)\n"
        "fixtures = module.make_fixtures(registry, module.DEFINITIONS)\n"
        "sys.stdout.write(module.dump(fixtures))\n"
    )
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(run.stdout)
    assert outputs == {dump(fixtures)}


# --------------------------------------------------------------------------------------------
# Other keyword families, anchors, embedded $id, if/then/else, reporting mismatch
# --------------------------------------------------------------------------------------------

EXTRA = BASE + "extra.json"
EXTRA_DOC: dict[str, Any] = {
    "$schema": DRAFT,
    "$id": EXTRA,
    "$defs": {
        "Sizes": {
            "type": "object",
            "minProperties": 2,
            "maxProperties": 6,
            "dependentRequired": {"a": ["b"]},
            "properties": {
                "a": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 10},
                "b": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 3,
                    "uniqueItems": True,
                    "items": {"$ref": "#leaf"},
                },
                "c": {"type": "integer", "multipleOf": 3},
                "t": {"prefixItems": [{"type": "string"}], "items": False},
                "sub": {"$ref": "inner.json"},
            },
            "examples": [{"a": 2.5, "b": ["x", "y"], "c": 3, "t": ["s"], "sub": {"q": "v"}}],
        },
        "Leaf": {"$anchor": "leaf", "type": "string", "maxLength": 2, "enum": ["x", "y", "z"]},
        "Inner": {
            "$id": "inner.json",
            "type": "object",
            "properties": {"q": {"$ref": "#/$defs/Q"}},
            "$defs": {"Q": {"type": "string", "const": "v"}},
        },
        "Cond": {
            "type": "object",
            "properties": {"kind": {"type": "string"}, "alpha": {}, "beta": {}},
            "if": {"properties": {"kind": {"const": "a"}}},
            "then": {"required": ["alpha"]},
            "else": {"required": ["beta"]},
            "unevaluatedProperties": False,
            "examples": [{"kind": "a", "alpha": 1}, {"kind": "b", "beta": 2}],
        },
        # "x" -> "x-mutated" breaks branch 0 but satisfies branches 1 and 2: the validator
        # reports oneOf (two matches), not const.
        "Ambiguous": {
            "oneOf": [
                {"const": "x"},
                {"type": "string", "pattern": "-mutated$"},
                {"type": "string", "minLength": 3},
            ],
            "examples": ["x"],
        },
    },
}


@pytest.fixture(scope="module")
def extra() -> list[Fixture]:
    registry = make_registry({EXTRA: EXTRA_DOC})
    return make_fixtures(registry, [d(name, EXTRA) for name in ("Sizes", "Cond", "Ambiguous")])


def test_other_keyword_families(extra: list[Fixture]) -> None:
    sizes, leaf = d("Sizes", EXTRA), d("Leaf", EXTRA)
    inner = BASE + "inner.json#"
    by_name = {f.name: f for f in of(extra, sizes)}
    expected = {
        "invalid-dependentRequired-b": ("dependentRequired", sizes, "b", {"a", "c", "t", "sub"}),
        "invalid-minProperties-root": ("minProperties", sizes, None, {"a"}),
        "invalid-exclusiveMinimum-a": ("exclusiveMinimum", sizes + "/properties/a", None, 0),
        "invalid-exclusiveMaximum-a": ("exclusiveMaximum", sizes + "/properties/a", None, 10),
        "invalid-multipleOf-c": ("multipleOf", sizes + "/properties/c", None, 4),
        "invalid-minItems-b": ("minItems", sizes + "/properties/b", None, []),
        "invalid-maxItems-b": ("maxItems", sizes + "/properties/b", None, ["x", "y", "y", "y"]),
        "invalid-uniqueItems-b": ("uniqueItems", sizes + "/properties/b", None, ["x", "y", "x"]),
        "invalid-items-t": ("items", sizes + "/properties/t", None, ["s", "unexpected-item"]),
        # Reached through "$ref": "#leaf" (an anchor) and an embedded "$id".
        "invalid-enum-b-1": ("enum", leaf, "y", "y-mutated"),
        "invalid-maxLength-b-0": ("maxLength", leaf, None, "xxx"),
        "invalid-const-sub-q": ("const", inner + "/$defs/Q", "v", "v-mutated"),
        "invalid-type-sub": ("type", inner, None, "wrong-type"),
    }
    for name, (keyword, location, detail, value) in expected.items():
        fixture = by_name[name]
        assert (fixture.keyword, fixture.schema_location, fixture.detail) == (
            keyword,
            location,
            detail,
        )
        got = fixture.instance
        for token in fixture.instance_location.split("/")[1:]:
            got = got[int(token) if isinstance(got, list) else token]
        assert (set(got) if isinstance(value, set) else got) == value, name
    assert len(by_name["invalid-maxProperties-root"].instance) == 7


def test_if_then_else_and_unevaluated_properties(extra: list[Fixture]) -> None:
    cond = d("Cond", EXTRA)
    got = keyed(of(extra, cond))
    assert {
        ("required", cond + "/then", "alpha", ""),
        ("required", cond + "/else", "beta", ""),
        ("unevaluatedProperties", cond, "unexpected_key", ""),
    } <= got


def test_mismatching_report_is_kept_and_noted(extra: list[Fixture]) -> None:
    [mutant] = [f for f in of(extra, d("Ambiguous", EXTRA)) if not f.valid]
    assert (mutant.keyword, mutant.instance) == ("const", "x-mutated")
    assert mutant.schema_location == d("Ambiguous", EXTRA) + "/oneOf/0"
    assert mutant.description.endswith("(the validator reports: oneOf)")


def test_extra_fixtures_agree_with_jsonschema_rs(extra: list[Fixture]) -> None:
    registry = jsonschema_rs.Registry([(EXTRA, EXTRA_DOC)])
    for fixture in extra:
        validator = jsonschema_rs.validator_for({"$ref": fixture.definition}, registry=registry)
        assert validator.is_valid(fixture.instance) is fixture.valid, fixture.name
