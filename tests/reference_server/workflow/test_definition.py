"""Workflow definition files (runwire.reference_server.workflow.definition): the shipped
examples load, YAML and TOML both work, and every kind of bad definition gets a clear error
naming where it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runwire.reference_server.workflow.definition import (
    DefinitionError,
    load_definition,
    parse_definition,
)
from runwire.runtime.validation import SchemaRegistry

from .conftest import CONFORMANCE_DEFINITION, EXAMPLES, REPO, SCHEMAS


def minimal(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "scheduling": {"initial_cycle_point": 1, "final_cycle_point": 3, "graph": "a => b"},
        "runtime": {"a": {"script": "true"}},
    }
    for key, value in changes.items():
        data[key] = value
    return data


def problems(data: Any, registry: SchemaRegistry) -> tuple[str, ...]:
    with pytest.raises(DefinitionError) as info:
        parse_definition(data, registry=registry, source="test.yaml")
    assert str(info.value).startswith("invalid workflow definition test.yaml:")
    return info.value.problems


@pytest.mark.parametrize("path", [EXAMPLES / "pipeline.yaml", CONFORMANCE_DEFINITION])
def test_shipped_examples_are_valid(path: Path, registry: SchemaRegistry) -> None:
    definition = load_definition(path, registry=registry)
    assert definition.name == path.stem
    assert definition.warnings == ()
    assert definition.graph.max_offset == 1  # each has an inter-cycle dependency


def test_examples_cover_what_they_promise(registry: SchemaRegistry) -> None:
    pipeline = load_definition(EXAMPLES / "pipeline.yaml", registry=registry)
    assert pipeline.tasks["process"].outputs == {"stats_ready": "statistics written"}
    assert [d.label() for d in pipeline.graph.prerequisites_of("summarise")] == [
        "process:succeeded => summarise",
        "summarise[-P1]:succeeded => summarise",
    ]
    conformance = load_definition(CONFORMANCE_DEFINITION, registry=registry)
    assert conformance.tasks["flaky"].retries.count == 1
    assert conformance.tasks["reporter"].output_for_message("data ready") == "ready"
    assert conformance.tasks["doomed"].success_optional
    assert conformance.tasks["sleeper"].execution_time_limit_s == 600
    assert conformance.tasks["listener"].output_for_message("message heard") == "heard"


def test_the_conformance_workflow_has_one_source() -> None:
    """The conformance workflow is the conformance suite's package data only: no second
    copy under examples/ to drift from it, and the READMEs name the packaged file."""
    copies = sorted(
        str(p.relative_to(REPO))
        for folder in ("examples", "conformance", "reference_server", "tests")
        for p in (REPO / folder).rglob("conformance.yaml")
    )
    assert copies == ["conformance/workflow/conformance.yaml"]
    packaged = str(CONFORMANCE_DEFINITION.relative_to(REPO))
    for readme in ("README.md", "conformance/README.md", "examples/workflow/README.md"):
        text = (REPO / readme).read_text()
        assert packaged in text, readme
        assert "examples/workflow/conformance.yaml" not in text, readme


def test_the_schema_file_has_the_agreed_id() -> None:
    schema = json.loads((SCHEMAS / "workflow" / "definition.json").read_text())
    assert schema["$id"] == "https://runwire.dev/schemas/workflow/definition.json"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_the_packaged_registry_finds_the_schema() -> None:
    definition = parse_definition(minimal())  # default registry: the installed schemas
    assert definition.name == "workflow"


def test_defaults_and_root_inheritance(registry: SchemaRegistry) -> None:
    definition = parse_definition(
        {
            "name": "inherit",
            "scheduling": {
                "initial_cycle_point": 0,
                "final_cycle_point": 9,
                "step": 4,
                "graph": "a => b",
            },
            "runtime": {
                "root": {
                    "environment": {"X": "root", "Y": 1},
                    "retries": {"count": 2},
                    "script": "echo root",
                },
                "a": {"environment": {"X": "a", "Z": 2.5}},
            },
        },
        registry=registry,
    )
    a, b = definition.tasks["a"], definition.tasks["b"]
    assert a.environment == (("X", "a"), ("Y", "1"), ("Z", "2.5"))
    assert b.environment == (("X", "root"), ("Y", "1"))
    assert a.script == b.script == "echo root"
    assert a.retries.count == 2 and a.retries.delay_s == 0
    assert definition.runahead_limit == 4 and definition.stall_timeout_s == 3600
    assert definition.last_cycle_point == 8
    assert [p for p in range(0, 12) if definition.is_on_sequence(p)] == [0, 4, 8]


def test_pre_initial_prerequisites_are_dropped(registry: SchemaRegistry) -> None:
    definition = parse_definition(
        minimal(
            scheduling={
                "initial_cycle_point": 1,
                "final_cycle_point": 3,
                "graph": "a => b\nb[-P1] => b\nc[-P2] => c",
            }
        ),
        registry=registry,
    )
    assert definition.prerequisites_at("b", 1) == [(1, "a", "succeeded")]
    assert definition.prerequisites_at("b", 2) == [(2, "a", "succeeded"), (1, "b", "succeeded")]
    assert definition.parentless_at(1) == ["a", "c"]
    assert definition.parentless_at(2) == ["a", "c"]
    assert definition.parentless_at(3) == ["a"]


def test_toml_definitions(tmp_path: Path, registry: SchemaRegistry) -> None:
    path = tmp_path / "hello.toml"
    path.write_text(
        '[scheduling]\ninitial_cycle_point = 1\nfinal_cycle_point = 2\ngraph = "a => b"\n'
        '[runtime.a]\nscript = "echo hi"\n[runtime.a.outputs]\nx = "x done"\n'
    )
    definition = load_definition(path, registry=registry)
    assert definition.name == "hello"
    assert definition.tasks["a"].outputs == {"x": "x done"}


def test_unused_runtime_entries_are_warnings(registry: SchemaRegistry) -> None:
    definition = parse_definition(minimal(runtime={"a": {}, "spare": {}}), registry=registry)
    assert definition.warnings == ("runtime entry 'spare' is not used in the graph",)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([1, 2], "the definition must be a mapping"),
        (minimal(extra=1), "at /: Additional properties are not allowed ('extra' was unexpected)"),
        ({"runtime": {}}, "at /: 'scheduling' is a required property"),
        (
            minimal(runtime={"a": {"scrpt": "x"}}),
            "at /runtime/a: Additional properties are not allowed ('scrpt' was unexpected)",
        ),
        (minimal(runtime={"9a": {}}), "at /runtime: '9a' does not match"),
        (
            minimal(runtime={"a": {"retries": {"count": -1}}}),
            "at /runtime/a/retries/count: -1 is less than the minimum of 0",
        ),
        (
            minimal(runtime={"a": {"environment": {"BAD-NAME": "x"}}}),
            "at /runtime/a/environment: 'BAD-NAME' does not match",
        ),
        (
            minimal(scheduling={"initial_cycle_point": 1, "final_cycle_point": 2, "graph": ""}),
            "at /scheduling/graph:",
        ),
        (
            minimal(scheduling={"initial_cycle_point": 3, "final_cycle_point": 2, "graph": "a"}),
            "at /scheduling: final_cycle_point 2 is before initial_cycle_point 3",
        ),
        (
            minimal(
                scheduling={
                    "initial_cycle_point": 1,
                    "final_cycle_point": 9,
                    "step": 2,
                    "graph": "a[-P1] => a",
                }
            ),
            "graph line 1: offset [-P1] in 'a[-P1]:succeeded => a' is not a multiple of the step (2)",
        ),
        (
            minimal(
                scheduling={
                    "initial_cycle_point": 1,
                    "final_cycle_point": 2,
                    "graph": "a => b\na | b => c",
                }
            ),
            "graph line 2: conditional triggers ('|') are not supported",
        ),
        (
            minimal(
                scheduling={
                    "initial_cycle_point": 1,
                    "final_cycle_point": 2,
                    "graph": "a:ready => b",
                }
            ),
            "graph line 1: a:ready is not an output of a (define it under runtime.a.outputs)",
        ),
        (
            minimal(runtime={"a": {"outputs": {"done": "x", "again": "x"}}}),
            "at /runtime/a/outputs: message 'x' is used by more than one output",
        ),
        (
            minimal(runtime={"a": {"outputs": {"x": "succeeded"}}}),
            "at /runtime/a/outputs: message 'succeeded' of 'x' is a standard output",
        ),
        (
            minimal(
                scheduling={"initial_cycle_point": 1, "final_cycle_point": 2, "graph": "root => a"}
            ),
            "the graph uses 'root'",
        ),
    ],
)
def test_bad_definitions_get_clear_errors(
    data: Any, expected: str, registry: SchemaRegistry
) -> None:
    found = problems(data, registry)
    assert any(p.startswith(expected) for p in found), found


def test_every_schema_problem_is_listed(registry: SchemaRegistry) -> None:
    found = problems(minimal(runtime={"a": {"scrpt": 1}, "b": {"retries": {}}}), registry)
    assert len(found) == 2
    assert found[0].startswith("at /runtime/a:") and found[1].startswith("at /runtime/b/retries:")


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("wf.json", "{}", "unknown format '.json'"),
        ("wf.yaml", "a: [", "not valid YAML"),
        ("wf.toml", "a = ", "not valid TOML"),
        ("wf.yaml", None, "cannot read"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, content: str | None, expected: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DefinitionError) as info:
        load_definition(path)
    assert info.value.problems[0].startswith(expected)
    assert info.value.source == str(path)


def test_oversized_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * 200)
    with pytest.raises(DefinitionError, match="larger than 100 bytes"):
        load_definition(path, max_bytes=100)
