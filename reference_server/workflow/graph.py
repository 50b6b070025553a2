"""The dependency graph of a workflow: parsing Cylc-style graph lines into dependencies.

One graph applies at every cycle point (Cylc's integer cycling with one recurrence). A line is
a chain of segments joined by ``=>``; a segment is one or more nodes joined by ``&``; a node is
``name``, optionally followed by an inter-cycle offset ``[-Pn]``, an output qualifier
``:output`` and ``?`` (the output is optional)::

    fetch => process => summarise        # chains
    a & b => c                           # c after both
    a => b & c                           # b and c after a
    summarise[-P1] => summarise          # after the previous cycle point's instance
    process:report_ready => notify       # after a custom output
    model:fail? => recover               # after a failure (an optional output)

Every node left of an arrow is a prerequisite of every node right of it. Offsets may only
appear in the first segment (Cylc forbids offsets on the right of ``=>``) and only point back
in time. ``|`` (conditional triggers), ``!`` (suicide triggers), parentheses and ``[+Pn]``
(future triggers) are rejected with a :class:`GraphError`. A line ending in ``=>`` or ``&`` (or
a line starting with one) continues the previous line; ``#`` starts a comment.

Completion (Cylc 8's required and optional outputs, simplified): a task's ``succeeded`` output
is required unless the graph marks it optional (``a?``, ``a:succeeded?``) or mentions the task's
``failed`` output at all, in which case finishing either way completes it. Custom outputs named
in the graph without ``?`` are required (when the task succeeds); with ``?`` they are optional.
A custom output marked both ways is an error, as in Cylc.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from runwire.runtime.errors import RunwireError

__all__ = [
    "FINAL_OUTPUTS",
    "OUTPUT_ALIASES",
    "STANDARD_OUTPUTS",
    "Dependency",
    "Graph",
    "GraphError",
    "canonical_output",
    "parse_graph",
]

STANDARD_OUTPUTS: Final = (
    "submitted",
    "submit-failed",
    "started",
    "succeeded",
    "failed",
    "expired",
)
"""Outputs every task has, in Cylc's order; the message of each is its own name."""

FINAL_OUTPUTS: Final = frozenset({"succeeded", "failed", "submit-failed", "expired"})
"""Outputs that end a task's run (each corresponds to the task state of the same name)."""

OUTPUT_ALIASES: Final[Mapping[str, str]] = {
    "submit": "submitted",
    "submit-fail": "submit-failed",
    "start": "started",
    "succeed": "succeeded",
    "fail": "failed",
    "expire": "expired",
}
"""Cylc's short graph qualifiers → the standard output names."""

MAX_GRAPH_LINES: Final = 1000
MAX_OFFSET_POINTS: Final = 1_000_000

_NAME = r"[A-Za-z_][A-Za-z0-9_-]{0,63}"
_NODE_RE: Final = re.compile(
    rf"^(?P<name>{_NAME})"
    r"(?:\[(?P<offset>[^\]]*)\])?"
    rf"(?::(?P<output>{_NAME}))?"
    r"(?P<optional>\?)?$"
)
_OFFSET_RE: Final = re.compile(r"^(?P<sign>[-+]?)P(?P<n>\d{1,7})$")


class GraphError(RunwireError, ValueError):
    """A graph line cannot be parsed or breaks a graph rule.

    Attributes:
        line: 1-based number of the (first physical) line at fault, or None for whole-graph
            problems such as a dependency loop.
        message: what is wrong, without the line number.
    """

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(f"graph line {line}: {message}" if line is not None else message)
        self.line = line
        self.message = message


def canonical_output(name: str) -> str:
    """The standard output name for a Cylc short qualifier (``fail`` → ``failed``); other
    names (standard or custom) unchanged."""
    return OUTPUT_ALIASES.get(name, name)


@dataclass(frozen=True)
class Dependency:
    """One edge of the graph: `child` at cycle point P needs `parent`'s `output` at P+`offset`.

    Attributes:
        parent: upstream task name.
        output: the parent output that satisfies it (canonical name, e.g. ``succeeded``).
        offset: cycle point offset of the parent, 0 or negative (``[-P1]`` is -1), in cycle
            point units (not steps).
        child: downstream task name.
        optional: the parent output was marked optional (``?``).
        line: 1-based graph line it came from.
    """

    parent: str
    output: str
    offset: int
    child: str
    optional: bool = False
    line: int = 0

    def label(self) -> str:
        """The dependency in graph notation, e.g. ``model[-P1]:succeeded => model``."""
        offset = f"[-P{-self.offset}]" if self.offset else ""
        return f"{self.parent}{offset}:{self.output} => {self.child}"


@dataclass(frozen=True)
class _Node:
    name: str
    offset: int
    output: str
    optional: bool
    qualified: bool


@dataclass(frozen=True)
class Graph:
    """A parsed graph. Build one with :func:`parse_graph`.

    Attributes:
        dependencies: every edge, in graph order (duplicates removed).
        tasks: every task name in order of first appearance.
        optional_outputs: (task, output) pairs marked optional by the graph.
        required_outputs: (task, output) pairs referenced as required (custom outputs and
            ``succeeded``), before the completion rules of the module docstring are applied.
        failure_handled: tasks whose ``failed`` output the graph mentions.
    """

    dependencies: tuple[Dependency, ...]
    tasks: tuple[str, ...]
    optional_outputs: frozenset[tuple[str, str]] = frozenset()
    required_outputs: frozenset[tuple[str, str]] = frozenset()
    failure_handled: frozenset[str] = frozenset()
    _by_child: Mapping[str, tuple[Dependency, ...]] = field(default_factory=dict, repr=False)
    _by_parent: Mapping[tuple[str, str], tuple[Dependency, ...]] = field(
        default_factory=dict, repr=False
    )

    def prerequisites_of(self, child: str) -> tuple[Dependency, ...]:
        """Dependencies whose child is `child`, in graph order."""
        return self._by_child.get(child, ())

    def children_of(self, parent: str, output: str) -> tuple[Dependency, ...]:
        """Dependencies satisfied by `parent` completing `output`, in graph order."""
        return self._by_parent.get((parent, output), ())

    @property
    def max_offset(self) -> int:
        """The largest inter-cycle offset magnitude (0 when every dependency is intra-cycle)."""
        return max((-d.offset for d in self.dependencies), default=0)

    def outputs_used(self, task: str) -> set[str]:
        """Outputs of `task` named anywhere in the graph (canonical names)."""
        used = {d.output for d in self.dependencies if d.parent == task}
        used |= {o for t, o in self.optional_outputs | self.required_outputs if t == task}
        return used

    def success_optional(self, task: str) -> bool:
        """True when a failed run of `task` completes it (its success is optional)."""
        return task in self.failure_handled or (task, "succeeded") in self.optional_outputs

    def required_custom_outputs(self, task: str, custom: Iterable[str]) -> frozenset[str]:
        """The custom outputs of `task` (among `custom`) that its success must complete."""
        return frozenset(o for o in custom if (task, o) in self.required_outputs)


def _logical_lines(text: str | Sequence[str]) -> list[tuple[int, str]]:
    """(first physical line number, text) of each logical line: comments stripped, blank lines
    dropped, continuation lines (ending or starting with ``=>`` / ``&``) joined."""
    physical = text.splitlines() if isinstance(text, str) else list(text)
    if len(physical) > MAX_GRAPH_LINES:
        raise GraphError(f"the graph has {len(physical)} lines; at most {MAX_GRAPH_LINES}")
    logical: list[tuple[int, str]] = []
    continues = False
    for number, raw in enumerate(physical, start=1):
        if not isinstance(raw, str):
            raise GraphError("graph lines must be strings", line=number)
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if logical and (continues or line.startswith(("=>", "&"))):
            first, previous = logical[-1]
            logical[-1] = (first, f"{previous} {line}")
        else:
            logical.append((number, line))
        continues = line.endswith(("=>", "&"))
    if continues:
        raise GraphError(
            "the last graph line ends with a dangling '=>' or '&'", line=logical[-1][0]
        )
    return logical


def _parse_offset(text: str, line: int) -> int:
    match = _OFFSET_RE.match(text.strip())
    if match is None:
        raise GraphError(
            f"bad cycle point offset [{text}]: write [-Pn] with an integer n (e.g. [-P1])",
            line=line,
        )
    n = int(match["n"])
    if match["sign"] != "-":
        raise GraphError(
            f"future offset [{text}] is not supported: only offsets back in time ([-Pn])",
            line=line,
        )
    if n == 0 or n > MAX_OFFSET_POINTS:
        raise GraphError(
            f"offset [{text}] must be between -P1 and -P{MAX_OFFSET_POINTS}", line=line
        )
    return -n


def _parse_node(text: str, line: int) -> _Node:
    match = _NODE_RE.match(text)
    if match is None:
        raise GraphError(
            f"cannot parse {text!r}: expected name, name[-Pn], name:output or name:output?",
            line=line,
        )
    offset = _parse_offset(match["offset"], line) if match["offset"] is not None else 0
    output = canonical_output(match["output"] or "succeeded")
    return _Node(
        name=match["name"],
        offset=offset,
        output=output,
        optional=match["optional"] is not None,
        qualified=match["output"] is not None,
    )


def parse_graph(text: str | Sequence[str]) -> Graph:
    """Parse graph text (one string with newlines, or a list of lines).

    Returns:
        the :class:`Graph`.

    Raises:
        GraphError: a syntax error, an unsupported construct (``|``, ``!``, parentheses,
            future offsets, offsets right of ``=>``), a task depending on itself in the same
            cycle point, a dependency loop within a cycle point, a custom output marked both
            optional and required, or an empty graph.
    """
    dependencies: list[Dependency] = []
    seen: set[tuple[str, str, int, str]] = set()
    tasks: dict[str, None] = {}
    optional: set[tuple[str, str]] = set()
    required: set[tuple[str, str]] = set()
    where: dict[tuple[str, str], tuple[bool, int]] = {}
    failure_handled: set[str] = set()

    def note_output(node: _Node, line: int) -> None:
        key = (node.name, node.output)
        if node.output == "failed":
            failure_handled.add(node.name)
        previous = where.get(key)
        if (
            previous is not None
            and previous[0] != node.optional
            and node.output not in ("succeeded", "failed")
        ):
            raise GraphError(
                f"output {node.name}:{node.output} is optional (?) on line "
                f"{previous[1] if previous[0] else line} but required on line "
                f"{line if previous[0] else previous[1]}",
                line=line,
            )
        where.setdefault(key, (node.optional, line))
        (optional if node.optional else required).add(key)

    for number, line in _logical_lines(text):
        for bad, why in (
            ("|", "conditional triggers ('|') are not supported"),
            ("!", "suicide triggers ('!') are not supported"),
            ("(", "parentheses are not supported"),
            (")", "parentheses are not supported"),
        ):
            if bad in line:
                raise GraphError(why, line=number)
        segments: list[list[_Node]] = []
        for segment_text in line.split("=>"):
            parts = [p.strip() for p in segment_text.split("&")]
            if any(not p for p in parts):
                raise GraphError("empty task name around '=>' or '&'", line=number)
            segments.append([_parse_node(p, number) for p in parts])
        for index, segment in enumerate(segments):
            for node in segment:
                tasks.setdefault(node.name, None)
                if node.offset and index > 0:
                    raise GraphError(
                        f"offset on {node.name} right of '=>': only the first segment of a "
                        f"chain may refer to other cycle points",
                        line=number,
                    )
                if node.qualified or node.optional or index < len(segments) - 1:
                    note_output(node, number)
        for left, right in itertools.pairwise(segments):
            for parent in left:
                for child in right:
                    if parent.name == child.name and parent.offset == 0:
                        raise GraphError(
                            f"{child.name} depends on itself in the same cycle point", line=number
                        )
                    key = (parent.name, parent.output, parent.offset, child.name)
                    if key in seen:
                        continue
                    seen.add(key)
                    dependencies.append(
                        Dependency(
                            parent=parent.name,
                            output=parent.output,
                            offset=parent.offset,
                            child=child.name,
                            optional=parent.optional,
                            line=number,
                        )
                    )
    if not tasks:
        raise GraphError("the graph names no tasks")
    _check_no_loops(dependencies)
    by_child: dict[str, list[Dependency]] = {}
    by_parent: dict[tuple[str, str], list[Dependency]] = {}
    for dep in dependencies:
        by_child.setdefault(dep.child, []).append(dep)
        by_parent.setdefault((dep.parent, dep.output), []).append(dep)
    return Graph(
        dependencies=tuple(dependencies),
        tasks=tuple(tasks),
        optional_outputs=frozenset(optional),
        required_outputs=frozenset(required - optional),
        failure_handled=frozenset(failure_handled),
        _by_child={k: tuple(v) for k, v in by_child.items()},
        _by_parent={k: tuple(v) for k, v in by_parent.items()},
    )


def _check_no_loops(dependencies: Sequence[Dependency]) -> None:
    """Raise GraphError if the same-cycle-point dependencies contain a loop."""
    edges: dict[str, set[str]] = {}
    for dep in dependencies:
        if dep.offset == 0:
            edges.setdefault(dep.parent, set()).add(dep.child)
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(edges):
        if state.get(start):
            continue
        path: list[str] = [start]
        stack: list[list[str]] = [sorted(edges.get(start, ()))]
        state[start] = 1
        while stack:
            if not stack[-1]:
                state[path.pop()] = 2
                stack.pop()
                continue
            nxt = stack[-1].pop()
            mark = state.get(nxt)
            if mark == 1:
                loop = [*path[path.index(nxt) :], nxt]
                raise GraphError(f"dependency loop within a cycle point: {' => '.join(loop)}")
            if mark is None:
                state[nxt] = 1
                path.append(nxt)
                stack.append(sorted(edges.get(nxt, ())))
