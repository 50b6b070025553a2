"""Graph parsing (runwire.reference_server.workflow.graph): chains, offsets, qualifiers,
continuations, completion rules and every rejected construct."""

from __future__ import annotations

import pytest

from runwire.reference_server.workflow.graph import Dependency, GraphError, parse_graph


def edges(text: str | list[str]) -> set[tuple[str, str, int, str]]:
    return {(d.parent, d.output, d.offset, d.child) for d in parse_graph(text).dependencies}


def test_chain_makes_one_dependency_per_arrow() -> None:
    assert edges("a => b => c") == {("a", "succeeded", 0, "b"), ("b", "succeeded", 0, "c")}


def test_ampersand_on_either_side_is_a_cross_product() -> None:
    assert edges("a & b => c & d") == {
        ("a", "succeeded", 0, "c"),
        ("a", "succeeded", 0, "d"),
        ("b", "succeeded", 0, "c"),
        ("b", "succeeded", 0, "d"),
    }


def test_inter_cycle_offset_and_qualifiers() -> None:
    graph = parse_graph(
        "model[-P1] => model\nmodel:fail? => recover\npost:report_ready => notify\na:start => b"
    )
    assert {(d.parent, d.output, d.offset, d.child) for d in graph.dependencies} == {
        ("model", "succeeded", -1, "model"),
        ("model", "failed", 0, "recover"),
        ("post", "report_ready", 0, "notify"),
        ("a", "started", 0, "b"),
    }
    assert graph.max_offset == 1
    assert graph.prerequisites_of("model") == (
        Dependency("model", "succeeded", -1, "model", line=1),
    )
    assert [d.child for d in graph.children_of("model", "failed")] == ["recover"]


def test_short_qualifiers_are_canonical_output_names() -> None:
    outputs = {
        d.output
        for d in parse_graph(
            "a:submit => z\nb:submit-fail => z\nc:succeed => z\nd:fail => z\ne:expire => z"
        ).dependencies
    }
    assert outputs == {"submitted", "submit-failed", "succeeded", "failed", "expired"}


def test_tasks_in_order_of_first_appearance_and_standalone_nodes() -> None:
    graph = parse_graph("c => a\nlonely\nb[-P2] => c")
    assert graph.tasks == ("c", "a", "lonely", "b")
    assert graph.prerequisites_of("lonely") == ()


def test_comments_blank_lines_and_continuations() -> None:
    text = """
    # a comment
    a =>   # trailing comment
      b &
      c
    d
      => e
    """
    assert edges(text) == {
        ("a", "succeeded", 0, "b"),
        ("a", "succeeded", 0, "c"),
        ("d", "succeeded", 0, "e"),
    }


def test_list_of_lines_equals_text() -> None:
    assert edges(["a => b", "b[-P1] => b"]) == edges("a => b\nb[-P1] => b")


def test_duplicates_are_dropped() -> None:
    assert len(parse_graph("a => b\na => b\na => b & b").dependencies) == 1


def test_completion_rules() -> None:
    graph = parse_graph("a => b\nc? => d\ne:fail => f\ng:x => h\ng:y? => h")
    assert not graph.success_optional("a")
    assert graph.success_optional("c")  # a? makes success optional
    assert graph.success_optional("e")  # a failure handler makes success optional
    assert graph.required_custom_outputs("g", ["x", "y", "z"]) == frozenset({"x"})


@pytest.mark.parametrize(
    ("text", "fragment", "line"),
    [
        ("a | b => c", "conditional triggers", 1),
        ("a => !b", "suicide triggers", 1),
        ("(a & b) => c", "parentheses", 1),
        ("ok\na[+P1] => b", "future offset", 2),
        ("a[P1] => b", "future offset", 1),
        ("a[-1] => b", "bad cycle point offset", 1),
        ("a[-P0] => b", "between -P1", 1),
        ("a => b[-P1]", "right of '=>'", 1),
        ("a => a", "depends on itself", 1),
        ("a => => b", "empty task name", 1),
        ("a & => b", "empty task name", 1),
        ("1a => b", "cannot parse", 1),
        ("a:x => b\na:x? => c", "optional (?) on line 2 but required on line 1", 2),
        ("a =>", "dangling", 1),
    ],
)
def test_rejected_graphs_name_the_line(text: str, fragment: str, line: int) -> None:
    with pytest.raises(GraphError) as info:
        parse_graph(text)
    assert fragment in str(info.value)
    assert info.value.line == line
    assert str(info.value).startswith(f"graph line {line}: ")


def test_loops_within_a_cycle_point_are_rejected_but_inter_cycle_loops_are_fine() -> None:
    with pytest.raises(GraphError, match="dependency loop within a cycle point: a => b => c => a"):
        parse_graph("a => b => c\nc => a")
    assert edges("a => b\nb[-P1] => a")  # not a loop: b at P-1 feeds a at P


def test_empty_graph_is_rejected() -> None:
    with pytest.raises(GraphError, match="names no tasks"):
        parse_graph("# nothing\n\n")
