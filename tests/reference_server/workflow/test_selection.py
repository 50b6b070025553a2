"""Task selection (runwire.reference_server.workflow.selection): the id and glob forms of the
seed document ("1", "1/foo", "1/foo/01", "1/*", "*/*:failed") and their errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from runwire.reference_server.workflow.selection import (
    SelectionError,
    TaskSelector,
    format_submit_num,
    parse_selector,
    parse_selectors,
    select,
)


@dataclass
class FakeTask:
    cycle_point: str
    name: str
    state: str = "waiting"
    is_held: bool = False
    job_states: Mapping[int, str] = field(default_factory=dict)


POOL = [
    FakeTask("1", "foo", "succeeded", job_states={1: "succeeded"}),
    FakeTask("1", "bar", "failed", job_states={1: "failed", 2: "failed"}),
    FakeTask("2", "foo", "running", job_states={1: "running"}),
    FakeTask("2", "bar", "waiting", is_held=True),
    FakeTask("10", "foo", "waiting"),
    FakeTask("12", "baz", "failed", job_states={1: "failed"}),
]


def ids(*selectors: str) -> list[str]:
    chosen = [parse_selector(s) for s in selectors]
    return [f"{t.cycle_point}/{t.name}" for t in select(chosen, POOL)]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("1", ["1/foo", "1/bar"]),
        ("1/foo", ["1/foo"]),
        ("1/*", ["1/foo", "1/bar"]),
        ("*", [f"{t.cycle_point}/{t.name}" for t in POOL]),
        ("*/*", [f"{t.cycle_point}/{t.name}" for t in POOL]),
        ("*/*:failed", ["1/bar", "12/baz"]),
        ("*/foo", ["1/foo", "2/foo", "10/foo"]),
        ("1?/*", ["10/foo", "12/baz"]),
        ("[12]/ba?", ["1/bar", "2/bar"]),
        ("*/*:held", ["2/bar"]),
        ("2:running", ["2/foo"]),
        ("1/bar/02", ["1/bar"]),
        ("1/bar/2", ["1/bar"]),
        ("1/bar/03", []),
        ("*/*/0*", ["1/foo", "1/bar", "2/foo", "12/baz"]),
        ("1/*/01:succeeded", ["1/foo"]),
        ("*/*/*:failed", ["1/bar", "12/baz"]),
        ("//1/foo", ["1/foo"]),
        ("3/*", []),
        ("1/fo", []),
    ],
)
def test_forms_select_the_right_task_proxies(selector: str, expected: list[str]) -> None:
    assert ids(selector) == expected


def test_several_selectors_select_each_task_once_in_pool_order() -> None:
    assert ids("2/*", "*/foo", "1/foo") == ["1/foo", "2/foo", "2/bar", "10/foo"]


def test_parsed_parts() -> None:
    assert parse_selector("1/foo/01:failed") == TaskSelector(
        text="1/foo/01:failed", point="1", name="foo", job="01", state="failed"
    )
    assert parse_selector("3") == TaskSelector(text="3", point="3")
    assert parse_selector(" 1/foo ").task_id == "1/foo"


def test_specific_selectors_may_name_future_tasks() -> None:
    assert parse_selector("5/foo").is_specific
    for text in ("5", "5/*", "5/f?o", "*/foo", "5/foo:waiting", "5/foo/01"):
        assert not parse_selector(text).is_specific, text


def test_workflow_prefix() -> None:
    assert parse_selector("wf//1/foo", workflow_id="wf").task_id == "1/foo"
    assert parse_selector("w*//1/foo", workflow_id="wf").task_id == "1/foo"
    with pytest.raises(SelectionError, match="names workflow 'other', not 'wf'"):
        parse_selector("other//1/foo", workflow_id="wf")


@pytest.mark.parametrize(
    ("selector", "fragment"),
    [
        ("", "empty task selector"),
        ("   ", "empty task selector"),
        ("1/foo/01/x", "has 4 parts"),
        ("1//foo", "not a valid cycle point"),  # "1//" is a workflow prefix
        ("1/", "empty task name"),
        ("1/foo:bogus", "unknown state 'bogus'"),
        ("1/foo/01:waiting", "unknown state 'waiting'"),
        ("1:failed/foo", "may only follow the last part"),
        ("a/foo", "not a valid cycle point"),
        ("1/fo o", "not a valid task name"),
        ("1/foo/x1", "not a valid job"),
        ("1/foo/00", "job numbers start at 01"),
        ("1/" + "x" * 300, "longer than 256"),
    ],
)
def test_malformed_selectors_are_rejected_with_a_reason(selector: str, fragment: str) -> None:
    with pytest.raises(SelectionError, match=fragment.replace("(", r"\(")):
        parse_selector(selector)


@pytest.mark.parametrize("value", [None, 1, ["1/foo"], {"a": 1}])
def test_a_selector_must_be_a_string(value: object) -> None:
    with pytest.raises(SelectionError, match="must be a string"):
        parse_selector(value)


def test_selector_lists() -> None:
    assert [s.text for s in parse_selectors(["1", "2/foo"])] == ["1", "2/foo"]
    for bad, fragment in (("1/foo", "must be a list"), ([], "at least one"), ([1], "string")):
        with pytest.raises(SelectionError, match=fragment):
            parse_selectors(bad)
    with pytest.raises(SelectionError, match="at most 1000"):
        parse_selectors(["1"] * 1001)


def test_submit_numbers_have_two_digits_at_least() -> None:
    assert [format_submit_num(n) for n in (1, 9, 10, 100)] == ["01", "09", "10", "100"]
