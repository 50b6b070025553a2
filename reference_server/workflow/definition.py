"""Workflow definition files: loading, schema validation and the rules a schema cannot check.

A definition is YAML (``.yaml``/``.yml``) or TOML (``.toml``) shaped by
``schemas/workflow/definition.json`` (``$id``
https://runwire.dev/schemas/workflow/definition.json), modelled on a Cylc 8 ``flow.cylc``
reduced to integer cycling::

    name: hello
    scheduling:
      initial_cycle_point: 1
      final_cycle_point: 3
      graph: |
        greet => farewell
        farewell[-P1] => farewell
    runtime:
      root:
        environment: {GREETING: hello}
      greet:
        script: echo "$GREETING $CYLC_TASK_CYCLE_POINT"

:func:`load_definition` reads a file, :func:`parse_definition` takes already-decoded data. Both
return a frozen :class:`WorkflowDefinition` or raise :class:`DefinitionError` listing every
problem found (schema violations with their JSON pointer, then graph and cross-reference
errors with the graph line).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from runwire.runtime.errors import RunwireError
from runwire.runtime.validation import SchemaRegistry

from .graph import STANDARD_OUTPUTS, Graph, GraphError, parse_graph

__all__ = [
    "DEFINITION_SCHEMA",
    "MAX_DEFINITION_BYTES",
    "DefinitionError",
    "RetryPolicy",
    "TaskDefinition",
    "WorkflowDefinition",
    "load_definition",
    "parse_definition",
]

DEFINITION_SCHEMA: Final = "workflow/definition.json"
"""Reference of the definition schema in the schema registry."""

MAX_DEFINITION_BYTES: Final = 1 << 20
"""Largest definition file read, in bytes."""

MAX_REPORTED_PROBLEMS: Final = 20

ROOT: Final = "root"
"""The namespace every task inherits from (Cylc's [runtime][root])."""


class DefinitionError(RunwireError, ValueError):
    """A workflow definition is unreadable or invalid.

    Attributes:
        source: the file (or a label) the definition came from.
        problems: one line per problem, e.g. ``at /runtime/fetch: Additional properties are not
            allowed ('scrpt' was unexpected)`` or ``graph line 2: ...``.
    """

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        shown = list(problems[:MAX_REPORTED_PROBLEMS])
        if len(problems) > MAX_REPORTED_PROBLEMS:
            shown.append(f"... and {len(problems) - MAX_REPORTED_PROBLEMS} more")
        super().__init__(f"invalid workflow definition {source}:\n  " + "\n  ".join(shown))
        self.source = source
        self.problems = tuple(problems)


@dataclass(frozen=True)
class RetryPolicy:
    """Automatic retries of failed jobs: up to `count` more tries, `delay_s` seconds apart."""

    count: int = 0
    delay_s: float = 0.0


@dataclass(frozen=True)
class TaskDefinition:
    """One task's runtime settings after `root` inheritance.

    Attributes:
        name: task name.
        script: bash script text (may be empty: the job succeeds at once).
        environment: (name, value) pairs in export order: root's first, then the task's
            (a task entry replaces root's entry of the same name in place).
        outputs: custom output name → message, in definition order.
        retries: retry policy (count 0: no retries).
        execution_time_limit_s: seconds a job may run before it is killed, or None.
        required_outputs: custom outputs a successful run must complete (from the graph).
        success_optional: a failed run completes the task (the graph handles its failure).
    """

    name: str
    script: str = ""
    environment: tuple[tuple[str, str], ...] = ()
    outputs: Mapping[str, str] = field(default_factory=dict)
    retries: RetryPolicy = RetryPolicy()
    execution_time_limit_s: float | None = None
    required_outputs: frozenset[str] = frozenset()
    success_optional: bool = False

    def output_for_message(self, message: str) -> str | None:
        """The output a job message completes: a standard output's name (its message is its
        name) or the custom output whose message is `message`; None if no output matches."""
        if message in STANDARD_OUTPUTS:
            return message
        for output, text in self.outputs.items():
            if text == message:
                return output
        return None

    def all_outputs(self) -> dict[str, str]:
        """Standard then custom outputs, name → message (standard messages are their names)."""
        return {**{o: o for o in STANDARD_OUTPUTS}, **self.outputs}


@dataclass(frozen=True)
class WorkflowDefinition:
    """A validated workflow definition.

    Attributes:
        name: workflow name.
        description: free text ("" if none).
        initial_cycle_point, final_cycle_point, step: integer cycling: points
            initial, initial+step, ... up to final.
        runahead_limit: cycle points beyond the oldest active one that may have jobs.
        stall_timeout_s: seconds a stalled workflow waits before aborting (None: forever).
        graph: the parsed dependency graph.
        tasks: task name → settings, for every task in the graph, in graph order.
        source: the file it was loaded from, if any.
        warnings: non-fatal findings (e.g. a runtime entry no graph line uses).
    """

    name: str
    initial_cycle_point: int
    final_cycle_point: int
    graph: Graph
    tasks: Mapping[str, TaskDefinition]
    step: int = 1
    runahead_limit: int = 4
    stall_timeout_s: float | None = 3600.0
    description: str = ""
    source: Path | None = None
    warnings: tuple[str, ...] = ()

    @property
    def last_cycle_point(self) -> int:
        """The last point on the sequence that is not beyond the final cycle point."""
        return (
            self.initial_cycle_point
            + ((self.final_cycle_point - self.initial_cycle_point) // self.step) * self.step
        )

    def is_on_sequence(self, point: int) -> bool:
        """True if `point` is one of the workflow's cycle points."""
        return (
            self.initial_cycle_point <= point <= self.last_cycle_point
            and (point - self.initial_cycle_point) % self.step == 0
        )

    def prerequisites_at(self, task: str, point: int) -> list[tuple[int, str, str]]:
        """(parent point, parent name, output) of each prerequisite of `task` at `point`;
        prerequisites on points before the initial cycle point are dropped (as in Cylc)."""
        result: list[tuple[int, str, str]] = []
        for dep in self.graph.prerequisites_of(task):
            parent_point = point + dep.offset
            if parent_point >= self.initial_cycle_point:
                result.append((parent_point, dep.parent, dep.output))
        return result

    def parentless_at(self, point: int) -> list[str]:
        """Tasks with no prerequisites at `point`, in graph order."""
        return [t for t in self.tasks if not self.prerequisites_at(t, point)]


def _source_label(source: str | Path | None) -> str:
    return str(source) if source is not None else "<definition>"


def load_definition(
    path: str | Path,
    *,
    registry: SchemaRegistry | None = None,
    max_bytes: int = MAX_DEFINITION_BYTES,
) -> WorkflowDefinition:
    """Read, parse and validate a definition file (YAML or TOML, by extension).

    Args:
        path: ``.yaml``, ``.yml`` or ``.toml`` file.
        registry: schema registry holding ``workflow/definition.json`` (default: the
            packaged schemas).
        max_bytes: refuse larger files.

    Returns:
        the :class:`WorkflowDefinition`; its name defaults to the file name without extension.

    Raises:
        DefinitionError: unreadable, too large, not YAML/TOML, or invalid.
    """
    path = Path(path)
    label = str(path)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".toml"):
        raise DefinitionError(label, [f"unknown format {suffix!r}: use .yaml, .yml or .toml"])
    try:
        with path.open("rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise DefinitionError(label, [f"cannot read: {exc.strerror or exc}"]) from exc
    if len(raw) > max_bytes:
        raise DefinitionError(label, [f"file is larger than {max_bytes} bytes"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DefinitionError(label, [f"not UTF-8: {exc}"]) from exc
    data: Any
    if suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise DefinitionError(label, [f"not valid TOML: {exc}"]) from exc
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DefinitionError(label, [f"not valid YAML: {exc}"]) from exc
    stem = path.stem
    return parse_definition(data, source=path, default_name=stem, registry=registry)


def parse_definition(
    data: Any,
    *,
    source: str | Path | None = None,
    default_name: str = "workflow",
    registry: SchemaRegistry | None = None,
) -> WorkflowDefinition:
    """Validate decoded definition data (the JSON shape of the schema).

    Args:
        data: the decoded document (a mapping).
        source: where it came from, for messages.
        default_name: the workflow name when `data` has no ``name``.
        registry: schema registry holding ``workflow/definition.json`` (default: packaged).

    Raises:
        DefinitionError: every problem found (schema first; if the schema passes, graph and
            cross-reference problems).
    """
    label = _source_label(source)
    validator = (registry or SchemaRegistry.from_package()).validator(DEFINITION_SCHEMA)
    if not isinstance(data, Mapping):
        raise DefinitionError(label, ["the definition must be a mapping (object) at the top level"])
    if not validator.is_valid(data):
        found = [f"at {v.instance_pointer or '/'}: {v.message}" for v in validator.violations(data)]
        raise DefinitionError(label, found or ["does not match the definition schema"])
    scheduling = data["scheduling"]
    runtime: Mapping[str, Any] = data["runtime"]
    problems: list[str] = []
    warnings: list[str] = []
    try:
        graph = parse_graph(scheduling["graph"])
    except GraphError as exc:
        raise DefinitionError(label, [str(exc)]) from exc

    initial = int(scheduling["initial_cycle_point"])
    final = int(scheduling["final_cycle_point"])
    step = int(scheduling.get("step", 1))
    if final < initial:
        problems.append(
            f"at /scheduling: final_cycle_point {final} is before initial_cycle_point {initial}"
        )
    for dep in graph.dependencies:
        if dep.offset % step:
            problems.append(
                f"graph line {dep.line}: offset [-P{-dep.offset}] in '{dep.label()}' is not a "
                f"multiple of the step ({step}), so it names no cycle point"
            )
    if ROOT in graph.tasks:
        problems.append("the graph uses 'root', which is the namespace all tasks inherit from")

    root_settings: Mapping[str, Any] = runtime.get(ROOT, {})
    tasks: dict[str, TaskDefinition] = {}
    for name in graph.tasks:
        settings: Mapping[str, Any] = runtime.get(name, {})
        task = _task_definition(name, root_settings, settings, graph, problems)
        tasks[name] = task
    for name in runtime:
        if name != ROOT and name not in tasks:
            warnings.append(f"runtime entry {name!r} is not used in the graph")
    if problems:
        raise DefinitionError(label, problems)
    stall = scheduling.get("stall_timeout_s", 3600.0)
    return WorkflowDefinition(
        name=str(data.get("name", default_name)),
        description=str(data.get("description", "")),
        initial_cycle_point=initial,
        final_cycle_point=final,
        step=step,
        runahead_limit=int(scheduling.get("runahead_limit", 4)),
        stall_timeout_s=None if stall is None else float(stall),
        graph=graph,
        tasks=tasks,
        source=Path(source) if source is not None else None,
        warnings=tuple(warnings),
    )


def _env_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _task_definition(
    name: str,
    root: Mapping[str, Any],
    own: Mapping[str, Any],
    graph: Graph,
    problems: list[str],
) -> TaskDefinition:
    """Merge `root` and the task's own settings; check its outputs against the graph."""
    environment: dict[str, str] = {k: _env_value(v) for k, v in root.get("environment", {}).items()}
    environment.update({k: _env_value(v) for k, v in own.get("environment", {}).items()})
    outputs: dict[str, str] = dict(root.get("outputs", {}))
    outputs.update(own.get("outputs", {}))
    where = f"at /runtime/{name}/outputs"
    for output, message in outputs.items():
        if output in STANDARD_OUTPUTS or output in ("submit", "start", "succeed", "fail"):
            problems.append(f"{where}: {output!r} is a standard output name")
        if message in STANDARD_OUTPUTS:
            problems.append(f"{where}: message {message!r} of {output!r} is a standard output")
    messages = list(outputs.values())
    for message in sorted({m for m in messages if messages.count(m) > 1}):
        problems.append(f"{where}: message {message!r} is used by more than one output")
    for output in sorted(graph.outputs_used(name)):
        if output not in STANDARD_OUTPUTS and output not in outputs:
            lines = sorted(
                {d.line for d in graph.dependencies if d.parent == name and d.output == output}
            )
            problems.append(
                f"graph line {lines[0] if lines else '?'}: {name}:{output} is not an output of "
                f"{name} (define it under runtime.{name}.outputs)"
            )
    retries = own.get("retries", root.get("retries"))
    limit = own.get("execution_time_limit_s", root.get("execution_time_limit_s"))
    return TaskDefinition(
        name=name,
        script=str(own.get("script", root.get("script", ""))),
        environment=tuple(environment.items()),
        outputs=outputs,
        retries=RetryPolicy(int(retries["count"]), float(retries.get("delay_s", 0.0)))
        if retries
        else RetryPolicy(),
        execution_time_limit_s=float(limit) if limit is not None else None,
        required_outputs=graph.required_custom_outputs(name, outputs),
        success_optional=graph.success_optional(name),
    )
