"""Task selection: the id and glob forms Cylc commands take, relative to the workflow.

Forms (reference/workflow.md, "Common arguments" of the seed document)::

    1              every task proxy at cycle point 1
    1/foo          task foo at cycle point 1
    1/foo/01       the task proxy that ran job 01 of 1/foo
    1/*            everything at cycle point 1
    */*:failed     every failed task proxy (a state selector on the last part)
    *              everything
    2?/f*          fnmatch-style ``*``, ``?`` and ``[...]`` in every part
    //1/foo        the same as 1/foo (Cylc's relative id prefix)
    wf//1/foo      the same, if ``wf`` matches the workflow id

The selector after ``:`` is a task state (waiting, preparing, submitted, running, succeeded,
failed, submit-failed, expired) or ``held`` (the held flag). On a job id it filters by job
state. :func:`parse_selector` checks syntax; :meth:`TaskSelector.matches` tests one task proxy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Final, Protocol

from runwire.runtime.errors import RunwireError

__all__ = [
    "JOB_STATES",
    "MAX_SELECTOR_CHARS",
    "SELECTOR_STATES",
    "TASK_STATES",
    "SelectableTask",
    "SelectionError",
    "TaskSelector",
    "format_submit_num",
    "parse_selector",
    "parse_selectors",
    "select",
]

TASK_STATES: Final = (
    "waiting",
    "preparing",
    "submitted",
    "running",
    "succeeded",
    "failed",
    "submit-failed",
    "expired",
)
"""Task proxy states as Cylc names them."""

JOB_STATES: Final = ("submitted", "running", "succeeded", "failed", "submit-failed")
"""Job states as Cylc names them."""

SELECTOR_STATES: Final = (*TASK_STATES, "held")
"""What may follow ``:`` on a point or task part."""

MAX_SELECTOR_CHARS: Final = 256
MAX_SELECTORS: Final = 1000

_GLOB_CHARS: Final = frozenset("*?[")
_POINT_RE: Final = re.compile(r"^[0-9*?\[\]!-]+$")
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_*?\[\]!-]+$")
_JOB_RE: Final = re.compile(r"^[0-9*?\[\]!-]+$")


class SelectionError(RunwireError, ValueError):
    """A task selector is malformed: the message names the selector and what is wrong."""


def format_submit_num(submit_num: int) -> str:
    """A submit number as it appears in job ids and directories: ``1`` → ``"01"``."""
    return f"{submit_num:02d}"


class SelectableTask(Protocol):
    """What a selector looks at on a task proxy."""

    @property
    def cycle_point(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def is_held(self) -> bool: ...
    @property
    def job_states(self) -> Mapping[int, str]:
        """submit number → job state, for every job of the task proxy."""
        ...


def _is_glob(part: str) -> bool:
    return any(c in _GLOB_CHARS for c in part)


@dataclass(frozen=True)
class TaskSelector:
    """One parsed selector.

    Attributes:
        text: the selector as given.
        point: cycle point pattern (a glob or an integer string).
        name: task name pattern (``*`` when only a point was given).
        job: submit number pattern (``01``, ``0*``...) or None when no job part was given.
        state: the state filter after ``:`` or None.
    """

    text: str
    point: str
    name: str = "*"
    job: str | None = None
    state: str | None = None

    @property
    def is_specific(self) -> bool:
        """True for an exact task id (``1/foo``) with no glob and no job or state part: such a
        selector may name a task proxy that does not exist yet (a future task)."""
        return (
            self.job is None
            and self.state is None
            and self.name != "*"
            and not _is_glob(self.point)
            and not _is_glob(self.name)
        )

    @property
    def task_id(self) -> str:
        """``point/name`` (meaningful when :attr:`is_specific`)."""
        return f"{self.point}/{self.name}"

    def matches(self, task: SelectableTask) -> bool:
        """True if `task` is selected."""
        if not fnmatchcase(task.cycle_point, self.point):
            return False
        if not fnmatchcase(task.name, self.name):
            return False
        if self.job is not None:
            jobs = [state for number, state in task.job_states.items() if self._job_matches(number)]
            if not jobs:
                return False
            return self.state is None or self.state in jobs
        if self.state is None:
            return True
        if self.state == "held":
            return task.is_held
        return task.state == self.state

    def _job_matches(self, number: int) -> bool:
        assert self.job is not None
        if _is_glob(self.job):
            return fnmatchcase(format_submit_num(number), self.job)
        return int(self.job) == number


def parse_selector(text: object, *, workflow_id: str | None = None) -> TaskSelector:
    """Parse one selector string.

    Args:
        text: the selector (see the module docstring for the forms).
        workflow_id: when given, a ``wf//...`` prefix must match it (fnmatch).

    Raises:
        SelectionError: not a string, empty, too long, too many parts, characters not allowed
            in a part, a ``:`` selector before the last part, an unknown state, a job number
            of 0, or a workflow prefix naming another workflow.
    """
    if not isinstance(text, str):
        raise SelectionError(f"a task selector must be a string, not {type(text).__name__}")
    raw = text
    if not text.strip():
        raise SelectionError("empty task selector")
    if len(text) > MAX_SELECTOR_CHARS:
        raise SelectionError(f"task selector longer than {MAX_SELECTOR_CHARS} characters")
    text = text.strip()
    if "//" in text:
        workflow, text = text.split("//", 1)
        if workflow and workflow_id is not None and not fnmatchcase(workflow_id, workflow):
            raise SelectionError(f"{raw!r} names workflow {workflow!r}, not {workflow_id!r}")
    parts = text.split("/")
    if len(parts) > 3:
        raise SelectionError(
            f"{raw!r} has {len(parts)} parts; expected POINT, POINT/TASK or POINT/TASK/JOB"
        )
    state: str | None = None
    last = parts[-1]
    if ":" in last:
        last, state = last.split(":", 1)
        parts[-1] = last
        if state not in (JOB_STATES if len(parts) == 3 else SELECTOR_STATES):
            allowed = JOB_STATES if len(parts) == 3 else SELECTOR_STATES
            raise SelectionError(
                f"{raw!r}: unknown state {state!r}; expected one of {', '.join(allowed)}"
            )
    for part in parts[:-1]:
        if ":" in part:
            raise SelectionError(f"{raw!r}: a ':state' selector may only follow the last part")
    labels = ("cycle point", "task name", "job")
    patterns = (_POINT_RE, _NAME_RE, _JOB_RE)
    for index, part in enumerate(parts):
        if not part:
            raise SelectionError(f"{raw!r}: empty {labels[index]}")
        if not patterns[index].match(part):
            raise SelectionError(f"{raw!r}: {part!r} is not a valid {labels[index]} or glob")
    if len(parts) == 3 and not _is_glob(parts[2]) and int(parts[2]) == 0:
        raise SelectionError(f"{raw!r}: job numbers start at 01")
    return TaskSelector(
        text=raw,
        point=parts[0],
        name=parts[1] if len(parts) > 1 else "*",
        job=parts[2] if len(parts) > 2 else None,
        state=state,
    )


def parse_selectors(texts: object, *, workflow_id: str | None = None) -> list[TaskSelector]:
    """Parse a non-empty list of selectors.

    Raises:
        SelectionError: `texts` is not a non-empty list of at most MAX_SELECTORS strings, or
            one selector is malformed (see :func:`parse_selector`).
    """
    if not isinstance(texts, list) or isinstance(texts, str):
        raise SelectionError("tasks must be a list of task selectors")
    if not texts:
        raise SelectionError("tasks must name at least one task selector")
    if len(texts) > MAX_SELECTORS:
        raise SelectionError(f"at most {MAX_SELECTORS} task selectors per command")
    return [parse_selector(t, workflow_id=workflow_id) for t in texts]


def select(
    selectors: Iterable[TaskSelector], tasks: Iterable[SelectableTask]
) -> list[SelectableTask]:
    """The tasks matched by any selector, in the order of `tasks`, each once."""
    chosen = list(selectors)
    return [task for task in tasks if any(s.matches(task) for s in chosen)]
