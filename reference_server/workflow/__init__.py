"""The workflow family's reference scheduler (modelled on Cylc 8), as a plain asyncio library.

- :mod:`.definition`: workflow definition files (YAML/TOML, validated by
  ``schemas/workflow/definition.json``).
- :mod:`.graph`: the dependency graph notation.
- :mod:`.selection`: task ids and globs (``1/foo``, ``*/*:failed``...).
- :mod:`.scheduler`: :class:`Scheduler`, which runs task proxies, jobs and commands and keeps
  the data store (:mod:`.datastore`) that clients read and subscribe to.
- :mod:`.jobs`: job directories, job scripts and ``job.status``.

No sockets here: the server wiring calls :meth:`Scheduler.queue_command`,
:meth:`Scheduler.snapshot` and :meth:`Scheduler.elements`, and publishes what
``on_deltas`` receives.
"""

from .datastore import TOPICS, DataStore, UnknownElementType
from .definition import (
    DefinitionError,
    TaskDefinition,
    WorkflowDefinition,
    load_definition,
    parse_definition,
)
from .graph import Graph, GraphError, parse_graph
from .scheduler import COMMANDS, STOP_MODES, Scheduler
from .selection import SelectionError, TaskSelector, parse_selector
from .states import TaskState, WorkflowStatus

__all__ = [
    "COMMANDS",
    "STOP_MODES",
    "TOPICS",
    "DataStore",
    "DefinitionError",
    "Graph",
    "GraphError",
    "Scheduler",
    "SelectionError",
    "TaskDefinition",
    "TaskSelector",
    "TaskState",
    "UnknownElementType",
    "WorkflowDefinition",
    "WorkflowStatus",
    "load_definition",
    "parse_definition",
    "parse_graph",
    "parse_selector",
]
