"""Task proxy and workflow states, named as Cylc 8 names them, and the legal transitions.

Task proxy states (reference/workflow.md; Cylc's task state model)::

    waiting ──► preparing ──► submitted ──► running ──► succeeded
       ▲            │                          │
       │            └──► submit-failed         └──► failed ──(retry)──► waiting
       └─────────────── (trigger of a finished task: ──► preparing)

``expired``, ``succeeded``, ``failed`` and ``submit-failed`` can also be set by the ``set``
command from any state. The held flag (``is_held``) is separate from the state: a held
waiting task is not submitted; holding an active task does not touch its job.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "TRANSITIONS",
    "TaskState",
    "WorkflowStatus",
]


class TaskState(StrEnum):
    """A task proxy's state (Cylc's names)."""

    WAITING = "waiting"
    PREPARING = "preparing"
    SUBMITTED = "submitted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SUBMIT_FAILED = "submit-failed"
    EXPIRED = "expired"


class WorkflowStatus(StrEnum):
    """The workflow element's status."""

    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    STOPPED = "stopped"


ACTIVE_STATES: Final = frozenset({TaskState.PREPARING, TaskState.SUBMITTED, TaskState.RUNNING})
"""States in which the task has a job in progress."""

FINAL_STATES: Final = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.SUBMIT_FAILED, TaskState.EXPIRED}
)
"""States in which the task's run has ended."""

_SET_BY_COMMAND: Final = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.SUBMIT_FAILED, TaskState.EXPIRED}
)

TRANSITIONS: Final[dict[TaskState, frozenset[TaskState]]] = {
    TaskState.WAITING: frozenset({TaskState.PREPARING}) | _SET_BY_COMMAND,
    TaskState.PREPARING: frozenset({TaskState.SUBMITTED, TaskState.WAITING}) | _SET_BY_COMMAND,
    TaskState.SUBMITTED: frozenset({TaskState.RUNNING, TaskState.WAITING}) | _SET_BY_COMMAND,
    TaskState.RUNNING: frozenset({TaskState.WAITING}) | _SET_BY_COMMAND,
    TaskState.SUCCEEDED: frozenset({TaskState.PREPARING}) | _SET_BY_COMMAND,
    TaskState.FAILED: frozenset({TaskState.PREPARING, TaskState.WAITING}) | _SET_BY_COMMAND,
    TaskState.SUBMIT_FAILED: frozenset({TaskState.PREPARING}) | _SET_BY_COMMAND,
    TaskState.EXPIRED: frozenset({TaskState.PREPARING}) | _SET_BY_COMMAND,
}
"""state → states it may move to. ``waiting`` is reached again only by a retry (from a
failed job, which leaves the task running or submitted, or from ``failed`` itself)."""
