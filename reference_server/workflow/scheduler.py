"""The workflow scheduler: task proxies over integer cycle points, jobs, commands, data store.

A plain asyncio class with no sockets (the server wiring puts it behind ZeroMQ). Behaviour
follows Cylc 8's scheduler (reference/workflow.md), reduced to integer cycling:

- **Spawn on demand.** Task proxies with no prerequisites at a cycle point are spawned as the
  runahead window reaches it; every other task proxy is spawned when an upstream output it
  depends on is completed. Only cycle points up to ``runahead_limit`` beyond the oldest active
  one may submit jobs (the oldest point holding a task that is not finished and complete).
- **Jobs** are local subprocesses numbered per task (``01``, ``02``...), each with a job
  directory (see :mod:`.jobs`) that is never reused: a task's first job is numbered after the
  highest job directory already in the run directory (left by a previous run of the same
  workflow id, or by a crashed scheduler whose orphaned job may still run), as Cylc keeps
  submit numbers across restarts. A job is ``submitted`` once its process is started and
  ``running`` at once (we own the process); its exit status gives ``succeeded`` or
  ``failed``. Jobs may also report ``started``/``succeeded``/``failed`` and custom output
  messages with the ``message`` command or by ``CYLC_MESSAGE`` lines in ``job.status``.
  Only the task's current job (by submit number) is listened to: messages and exits of any
  other job (superseded, detached by ``remove`` or ``set``, or not this run's) are ignored
  with a log line, as Cylc ignores messages from superseded jobs; a ``message`` command
  naming such a job is not accepted.
- **Retries**: a failed job of a task with retries left puts the task back to ``waiting``
  until the retry delay has passed. A killed job never retries.
- **Completion**: a finished task is complete when it succeeded with every required custom
  output, or failed and the graph handles its failure (``a:fail => b``), or submit-failed
  and the graph handles that, or expired. Complete tasks leave the active pool (their
  elements stay in the data store for ``keep_finished_points`` cycle points); incomplete
  ones stay until an intervention, and a workflow where nothing can run any more but some
  task is incomplete or waiting is **stalled**; after ``stall_timeout_s`` it shuts down.
- **Stop**: the workflow stops by itself (reason ``AUTOMATIC``) when every cycle point up to
  the final one (or the stop point) is done; ``stop`` requests give ``REQUEST(CLEAN)``
  (wait for active tasks), ``REQUEST(NOW)`` (leave active jobs running) and
  ``REQUEST(KILL)`` (kill them, then stop), as in Cylc's shutdown reasons. Like Cylc, a
  clean (or automatic) stop waits for active *tasks* (preparing, submitted, running), not
  for job *processes*: a job that reported its outcome by message while its process goes on
  does not delay the stop, and such stray processes are left running at shutdown (logged
  with their pid), as ``REQUEST(NOW)`` leaves active jobs. Only processes being killed
  (``kill``, ``remove``, ``set``, stop ``kill``) are waited for; SIGKILL follows SIGTERM
  after ``kill_grace_s``, so that wait is bounded.

Commands are validated by :meth:`Scheduler.queue_command`, which replies at once with
``{"accepted", "command_id", "matched", "message"}``; the loop actions them on its next pass,
and the data store shows the effect. After every change batch ``on_deltas`` receives
``{topic: {"added", "updated", "pruned"}}`` (see :mod:`.datastore`).

Everything is bounded: active task proxies by the runahead limit, concurrent jobs by
``max_active_jobs``, queued commands by ``max_queued_commands``, job.status reading by
``max_status_bytes``, broadcasts by ``MAX_BROADCASTS`` and job elements per task proxy by
``MAX_JOBS_PER_TASK``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from runwire.runtime.errors import InvalidState

from .datastore import TOPICS, DataStore, DeltaBatch, UnknownElementType
from .definition import ROOT, TaskDefinition, WorkflowDefinition
from .graph import FINAL_OUTPUTS, STANDARD_OUTPUTS, canonical_output
from .jobs import (
    DEFAULT_MAX_STATUS_BYTES,
    JobFiles,
    JobProcess,
    StatusMessage,
    StatusReader,
    append_status,
    exit_label,
    highest_submit_num,
    iso_time,
    job_files,
    shell_exit_code,
    start_job,
    write_job_script,
)
from .selection import (
    SelectionError,
    TaskSelector,
    format_submit_num,
    parse_selector,
    parse_selectors,
)
from .states import ACTIVE_STATES, FINAL_STATES, TRANSITIONS, TaskState, WorkflowStatus

__all__ = [
    "COMMANDS",
    "MAX_BROADCASTS",
    "MAX_JOBS_PER_TASK",
    "STOP_MODES",
    "Scheduler",
    "UnknownElementType",
]

LOG = logging.getLogger("runwire.reference_server.workflow")

COMMANDS: Final = (
    "pause",
    "resume",
    "stop",
    "hold",
    "release",
    "trigger",
    "kill",
    "set",
    "remove",
    "poll",
    "message",
    "broadcast",
)
"""Control commands :meth:`Scheduler.queue_command` accepts."""

STOP_MODES: Final = ("clean", "now", "kill")
STOP_REASONS: Final = {
    "clean": "REQUEST(CLEAN)",
    "now": "REQUEST(NOW)",
    "kill": "REQUEST(KILL)",
}
MAX_BROADCASTS: Final = 1000
MAX_JOBS_PER_TASK: Final = 20
MAX_FUTURE_HOLDS: Final = 1000
MAX_MESSAGES_PER_COMMAND: Final = 100
MAX_MESSAGE_CHARS: Final = 4096
MAX_ENV_VALUE_CHARS: Final = 65536
MAX_SCRIPT_CHARS: Final = 65536

_ENV_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_POINT_RE: Final = re.compile(r"^\d{1,9}$")
_PREREQ_RE: Final = re.compile(
    r"^(?P<point>\d{1,9})/(?P<name>[A-Za-z_][A-Za-z0-9_-]{0,63}):(?P<output>[A-Za-z_][A-Za-z0-9_-]{0,63})$"
)
_JOB_ID_RE: Final = re.compile(
    r"^(?P<point>\d{1,9})/(?P<name>[A-Za-z_][A-Za-z0-9_-]{0,63})/(?P<job>\d{1,9})$"
)

DeltaCallback = Callable[[DeltaBatch], None]


class CommandRejected(Exception):
    """A command cannot be queued; the message is the reply's ``message``."""


@dataclass
class Prerequisite:
    """One prerequisite of a task proxy: `output` of task `name` at cycle point `point`."""

    point: int
    name: str
    output: str
    satisfied: bool = False

    @property
    def id(self) -> str:
        return f"{self.point}/{self.name}:{self.output}"


@dataclass(eq=False)
class Job:
    """One job of a task proxy (internal; rendered as a ``jobs`` element)."""

    point: int
    name: str
    submit_num: int
    try_num: int
    files: JobFiles
    state: str = "submitted"
    submitted_time: float | None = None
    started_time: float | None = None
    finished_time: float | None = None
    exit_code: int | None = None
    process: JobProcess | None = None
    reader: StatusReader | None = None
    kill_reason: str | None = None
    kill_sent_at: float | None = None
    sigkill_sent: bool = False
    time_limit_at: float | None = None
    detached: bool = False
    """The task proxy no longer follows this job (removed, or its outputs were set)."""

    @property
    def id(self) -> str:
        return f"{self.point}/{self.name}/{format_submit_num(self.submit_num)}"

    @property
    def task_id(self) -> str:
        return f"{self.point}/{self.name}"

    def element(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task_proxy": self.task_id,
            "submit_num": self.submit_num,
            "state": self.state,
            "submitted_time": self.submitted_time,
            "started_time": self.started_time,
            "finished_time": self.finished_time,
            "exit_code": self.exit_code,
            "job_dir": str(self.files.job_dir),
        }


@dataclass(eq=False)
class TaskProxy:
    """A task at one cycle point (internal; rendered as a ``task_proxies`` element)."""

    definition: TaskDefinition
    point: int
    prerequisites: list[Prerequisite]
    state: TaskState = TaskState.WAITING
    is_held: bool = False
    submit_num: int = 0
    try_num: int = 1
    outputs: dict[str, bool] = field(default_factory=dict)
    jobs: dict[int, Job] = field(default_factory=dict)
    retry_at: float | None = None
    manual: bool = False
    """Triggered: submit regardless of prerequisites, hold, pause and runahead."""

    def __post_init__(self) -> None:
        if not self.outputs:
            self.outputs = dict.fromkeys(self.definition.all_outputs(), False)

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def id(self) -> str:
        return f"{self.point}/{self.name}"

    @property
    def cycle_point(self) -> str:
        return str(self.point)

    @property
    def job_states(self) -> Mapping[int, str]:
        return {n: j.state for n, j in self.jobs.items()}

    @property
    def latest_job(self) -> Job | None:
        return self.jobs.get(self.submit_num)

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def is_finished(self) -> bool:
        return self.state in FINAL_STATES

    def prerequisites_met(self) -> bool:
        return all(p.satisfied for p in self.prerequisites)

    def element(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "cycle_point": self.cycle_point,
            "state": str(self.state),
            "is_held": self.is_held,
            "submit_num": self.submit_num,
            "try_num": self.try_num if self.submit_num else 0,
            "outputs": dict(self.outputs),
            "prerequisites": [{"id": p.id, "satisfied": p.satisfied} for p in self.prerequisites],
            "job_ids": [self.jobs[n].id for n in sorted(self.jobs)],
        }


@dataclass
class _Command:
    command_id: str
    name: str
    payload: dict[str, Any]


def _reject(message: str) -> dict[str, Any]:
    return {"accepted": False, "command_id": None, "matched": [], "message": message}


class Scheduler:
    """Runs one workflow definition in a run directory until it stops.

    Typical use::

        scheduler = Scheduler(load_definition("pipeline.yaml"), run_dir, on_deltas=publish)
        reason = await scheduler.run()            # "AUTOMATIC", "REQUEST(CLEAN)"...
        # meanwhile, from the same event loop:
        scheduler.queue_command("hold", {"tasks": ["2/*"]})
        scheduler.snapshot()                      # entire_workflow data
        scheduler.elements("task_proxies")        # one element type

    Not thread-safe: call every method from the event loop that runs :meth:`run` (a server
    in another thread must hand calls over with ``loop.call_soon_threadsafe``).

    Args:
        definition: the validated workflow definition.
        run_dir: the workflow run directory (created if missing): ``log/job/...`` job
            directories, ``share/`` (CYLC_WORKFLOW_SHARE_DIR), ``work/<point>/<task>`` work
            directories.
        on_deltas: called after every change batch with ``{topic: delta}`` (non-empty topics
            only); exceptions it raises are logged and ignored.
        workflow_id: the workflow id (default: the definition's name).
        max_active_jobs: most jobs in progress at once (Cylc's queue limit); more ready tasks
            wait.
        max_queued_commands: most commands waiting to be actioned; more are rejected.
        job_poll_interval_s: how often running jobs' processes and job.status files are
            checked, in seconds.
        watch_status_files: read CYLC_MESSAGE lines from job.status while jobs run (else only
            on ``poll`` and at job exit).
        kill_grace_s: seconds between SIGTERM and SIGKILL when a job is killed.
        keep_finished_points: finished complete task proxies stay in the data store while
            their cycle point is at most this many cycle points behind the oldest active one.
        job_shell: the program that runs job scripts (a missing one makes jobs submit-fail).
        job_environment: the base environment of jobs (default: this process's).
        start_paused: start paused (no jobs until ``resume``), as ``cylc play --pause``.
        max_status_bytes: bytes of one job.status file read at most.
    """

    def __init__(
        self,
        definition: WorkflowDefinition,
        run_dir: str | os.PathLike[str],
        *,
        on_deltas: DeltaCallback | None = None,
        workflow_id: str | None = None,
        max_active_jobs: int = 32,
        max_queued_commands: int = 100,
        job_poll_interval_s: float = 0.1,
        watch_status_files: bool = True,
        kill_grace_s: float = 2.0,
        keep_finished_points: int = 2,
        job_shell: str = "bash",
        job_environment: Mapping[str, str] | None = None,
        start_paused: bool = False,
        max_status_bytes: int = DEFAULT_MAX_STATUS_BYTES,
    ) -> None:
        if max_active_jobs < 1 or max_queued_commands < 1:
            raise ValueError("max_active_jobs and max_queued_commands must be at least 1")
        if job_poll_interval_s <= 0 or kill_grace_s < 0 or keep_finished_points < 0:
            raise ValueError("intervals must be positive and keep_finished_points >= 0")
        self.definition = definition
        self.run_dir = Path(run_dir).absolute()
        self.workflow_id = workflow_id or definition.name
        self.on_deltas = on_deltas
        self.max_active_jobs = max_active_jobs
        self.max_queued_commands = max_queued_commands
        self.job_poll_interval_s = job_poll_interval_s
        self.watch_status_files = watch_status_files
        self.kill_grace_s = kill_grace_s
        self.keep_finished_points = keep_finished_points
        self.job_shell = job_shell
        self.job_environment = job_environment
        self.max_status_bytes = max_status_bytes

        self._task_order = {name: i for i, name in enumerate(definition.tasks)}
        self._store = DataStore()
        self._pool: dict[str, TaskProxy] = {}
        self._jobs: dict[str, Job] = {}
        self._running: dict[str, Job] = {}  # jobs with a live process, by id
        self._orphans: list[Job] = []
        self._done_outputs: dict[tuple[int, str], set[str]] = {}
        self._future_holds: set[tuple[int, str]] = set()
        self._broadcasts: dict[tuple[str, str], dict[str, Any]] = {}
        self._commands: deque[_Command] = deque()
        self._dirty_proxies: set[str] = set()
        self._dirty_jobs: set[str] = set()
        self._cursor = definition.initial_cycle_point
        self._status = WorkflowStatus.PAUSED if start_paused else WorkflowStatus.RUNNING
        self._stop_mode: str | None = None
        self._stop_reason: str | None = None
        self._stop_point: int | None = None
        self._stop_task: str | None = None
        self._stalled_since: float | None = None
        self._last_updated = time.time()
        self._started = False
        self._stopped = False
        self._wake: asyncio.Event | None = None
        self._waiters: list[asyncio.Future[None]] = []
        steady_point = definition.initial_cycle_point + definition.graph.max_offset
        self._steady_from = steady_point
        self._steady_parentless = bool(definition.parentless_at(steady_point + definition.step))
        self._put_static_elements()

    # ------------------------------------------------------------------ public API

    @property
    def status(self) -> WorkflowStatus:
        """The workflow status (running, paused, stopping, stopped)."""
        return self._status

    @property
    def stop_reason(self) -> str | None:
        """Why the workflow stopped (or is stopping), e.g. ``AUTOMATIC``; None before."""
        return self._stop_reason

    def snapshot(self) -> dict[str, Any]:
        """The whole data store (the ``entire_workflow`` reply data)::

            {"workflow": {...}, "tasks": [...], "task_proxies": [...], "jobs": [...],
             "edges": [...]}

        Lists are sorted: task definitions in graph order, task proxies and jobs by cycle
        point (numerically), task and submit number, edges by id.
        """
        return {
            "workflow": self._workflow_view(),
            **{topic: self.elements(topic) for topic in TOPICS if topic != "workflow"},
        }

    def elements(self, element_type: str) -> list[dict[str, Any]]:
        """The current elements of one type (``data_elements`` reply ``elements``), sorted as
        in :meth:`snapshot`; ``workflow`` gives a one-element list.

        Raises:
            UnknownElementType: `element_type` is not one of workflow, tasks, task_proxies,
                jobs, edges.
        """
        if element_type == "workflow":
            return [self._workflow_view()]
        items = self._store.elements(element_type)
        if element_type == "task_proxies" or element_type == "jobs":
            items.sort(key=lambda e: self._id_key(e["id"]))
        elif element_type == "edges":
            items.sort(key=lambda e: (self._id_key(e["target"]), self._id_key(e["source"])))
        return items

    def queue_command(self, name: str, args: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Validate a control command and queue it for the scheduler loop.

        Args:
            name: one of :data:`COMMANDS`.
            args: the command's args object (see the workflow design notes).

        Returns:
            ``{"accepted": bool, "command_id": str | None, "matched": [ids], "message": str}``:
            accepted with a uuid4 command id and the matched task ids (task proxies, or
            future task ids a command may spawn), or not accepted with the reason (unknown
            command, bad args, malformed selector, nothing matched, queue full, stopped).
            Never raises for bad input.
        """
        if self._stopped:
            return _reject("the workflow has stopped")
        if name not in COMMANDS:
            return _reject(f"unknown command {name!r}; expected one of {', '.join(COMMANDS)}")
        if args is None:
            args = {}
        if not isinstance(args, Mapping):
            return _reject(f"args of {name} must be an object")
        if len(self._commands) >= self.max_queued_commands:
            return _reject(
                f"command queue is full ({self.max_queued_commands} commands waiting); "
                "try again later"
            )
        try:
            matched, payload = getattr(self, f"_prepare_{name}")(dict(args))
        except CommandRejected as exc:
            return _reject(str(exc))
        command = _Command(str(uuid.uuid4()), name, payload)
        self._commands.append(command)
        LOG.info('Command "%s" received. ID=%s', name, command.command_id)
        self._kick()
        return {
            "accepted": True,
            "command_id": command.command_id,
            "matched": matched,
            "message": "Command queued",
        }

    def stop(self, mode: str = "clean") -> dict[str, Any]:
        """Ask the scheduler to stop (the ``stop`` command without point or task).

        Args:
            mode: ``clean`` (after active tasks finish; processes of finished tasks' jobs
                are left running), ``now`` (leave active jobs running) or ``kill`` (kill
                them first).

        Returns:
            the control reply, as :meth:`queue_command`.
        """
        return self.queue_command("stop", {"mode": mode})

    async def wait_until(self, predicate: Callable[[], bool], *, timeout_s: float) -> None:
        """Return once `predicate()` is true, re-checking after every change batch.

        Raises:
            TimeoutError: not true within `timeout_s` seconds.
        """
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            while not predicate():
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.append(waiter)
                await waiter

    async def run(self) -> str:
        """Run the workflow until it stops.

        Returns:
            the stop reason: ``AUTOMATIC`` (all cycle points done, or the stop point
            reached), ``REQUEST(CLEAN)``, ``REQUEST(NOW)``, ``REQUEST(KILL)`` or
            ``ABORT(stall timeout)``. (If run() raises, :attr:`stop_reason` is ``CANCELLED``
            or ``ERROR(<exception type>)``.)

        Raises:
            InvalidState: run() was already called.
            OSError: the run directory cannot be created.

        If the task running this is cancelled, active jobs are killed (SIGKILL) and the
        workflow is marked stopped before the cancellation propagates.
        """
        if self._started:
            raise InvalidState("Scheduler.run() may be called only once")
        self._started = True
        self._wake = asyncio.Event()
        for sub in ("log/job", "share", "work"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        LOG.info("Workflow %s starting in %s", self.workflow_id, self.run_dir)
        reason = "CANCELLED"
        try:
            self._spawn_parentless()
            self._flush()
            while True:
                self._wake.clear()
                self._process_commands()
                self._tick_jobs()
                self._spawn_parentless()
                self._submit_ready()
                self._prune()
                self._flush()
                finished = self._check_shutdown()
                if finished is not None:
                    reason = finished
                    break
                self._flush()
                timeout = self._next_wakeup()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                LOG.exception("Workflow %s: scheduler error", self.workflow_id)
                reason = f"ERROR({type(exc).__name__})"
            for job in list(self._running.values()):
                if job.process is not None:
                    job.process.kill_now()
                self._running.pop(job.id, None)
            raise
        finally:
            self._finish(reason)
        return reason

    # ------------------------------------------------------------------ loop steps

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _finish(self, reason: str) -> None:
        self._stopped = True
        self._stop_reason = reason
        self._status = WorkflowStatus.STOPPED
        for job in self._running.values():
            # left running (stop now, or a finished task's process that goes on); keep the
            # Popen referenced
            if job.process is not None:
                LOG.warning("[%s] job process %d left running at shutdown", job.id, job.process.pid)
            self._orphans.append(job)
        self._running.clear()
        self._commands.clear()
        LOG.info("Workflow %s stopped: %s", self.workflow_id, reason)
        self._flush()
        self._release_waiters()

    def _next_wakeup(self) -> float | None:
        """Seconds until the loop must look again without being woken (None: only when
        woken): job polling while jobs run, else the next retry or stall deadline."""
        if self._running:
            return self.job_poll_interval_s
        now = time.monotonic()
        # a retry whose delay has passed waits for something else (pause, hold, runahead),
        # which wakes the loop when it changes: only future deadlines count
        deadlines = [
            p.retry_at for p in self._pool.values() if p.retry_at is not None and p.retry_at > now
        ]
        if self._stalled_since is not None and self.definition.stall_timeout_s is not None:
            deadlines.append(self._stalled_since + self.definition.stall_timeout_s)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - now)

    @property
    def _last_point(self) -> int:
        last = self.definition.last_cycle_point
        if self._stop_point is not None:
            last = min(last, self._stop_point)
        return last

    def _is_complete_task(self, proxy: TaskProxy) -> bool:
        """Finished and complete (see the module docstring)."""
        state = proxy.state
        if state == TaskState.SUCCEEDED:
            return all(proxy.outputs.get(o, False) for o in proxy.definition.required_outputs)
        if state == TaskState.FAILED:
            return proxy.definition.success_optional
        if state == TaskState.SUBMIT_FAILED:
            return "submit-failed" in self.definition.graph.outputs_used(proxy.name)
        return state == TaskState.EXPIRED

    def _unfinished(self, proxy: TaskProxy) -> bool:
        return proxy.point <= self._last_point and not (
            proxy.is_finished and self._is_complete_task(proxy)
        )

    def _runahead_base(self) -> int | None:
        points = [p.point for p in self._pool.values() if self._unfinished(p)]
        if points:
            return min(points)
        return self._cursor if self._cursor <= self._last_point else None

    def _runahead_max(self) -> int:
        base = self._runahead_base()
        if base is None:
            return self._last_point
        return base + self.definition.runahead_limit * self.definition.step

    def _spawn_parentless(self) -> None:
        """Spawn parentless task proxies at each cycle point the runahead window reaches."""
        if self._stop_mode is not None:
            return
        step = self.definition.step
        while self._cursor <= self._last_point:
            if self._cursor > self._runahead_max():
                break
            for name in self.definition.parentless_at(self._cursor):
                self._spawn(name, self._cursor)
            self._cursor += step
            if self._cursor > self._steady_from and not self._steady_parentless:
                self._cursor = self.definition.last_cycle_point + step  # nothing more to spawn
                break

    def _spawn(self, name: str, point: int) -> TaskProxy | None:
        """The task proxy `point/name`, spawned if absent (None beyond the last point)."""
        task_id = f"{point}/{name}"
        existing = self._pool.get(task_id)
        if existing is not None:
            return existing
        if not self.definition.is_on_sequence(point) or point > self._last_point:
            return None
        prerequisites: list[Prerequisite] = []
        for parent_point, parent, output in self.definition.prerequisites_at(name, point):
            prerequisite = Prerequisite(parent_point, parent, output)
            prerequisite.satisfied = self._output_done(parent_point, parent, output)
            if not any(p.id == prerequisite.id for p in prerequisites):
                prerequisites.append(prerequisite)
        proxy = TaskProxy(self.definition.tasks[name], point, prerequisites)
        if (point, name) in self._future_holds:
            self._future_holds.discard((point, name))
            proxy.is_held = True
        self._pool[task_id] = proxy
        self._dirty_proxies.add(task_id)
        for prerequisite in prerequisites:
            source = f"{prerequisite.point}/{prerequisite.name}"
            self._store.put(
                "edges", {"id": f"{source}=>{task_id}", "source": source, "target": task_id}
            )
        LOG.debug("[%s] spawned", task_id)
        return proxy

    def _output_done(self, point: int, name: str, output: str) -> bool:
        proxy = self._pool.get(f"{point}/{name}")
        if proxy is not None and proxy.outputs.get(output):
            return True
        return output in self._done_outputs.get((point, name), ())

    def _complete_output(self, proxy: TaskProxy, output: str) -> None:
        """Mark `output` of `proxy` completed and satisfy (spawning if needed) its children."""
        if proxy.outputs.get(output):
            return
        proxy.outputs[output] = True
        self._dirty_proxies.add(proxy.id)
        self._done_outputs.setdefault((proxy.point, proxy.name), set()).add(output)
        for dep in self.definition.graph.children_of(proxy.name, output):
            child_point = proxy.point - dep.offset
            child = self._spawn(dep.child, child_point)
            if child is None:
                continue
            for prerequisite in child.prerequisites:
                if (
                    prerequisite.point == proxy.point
                    and prerequisite.name == proxy.name
                    and prerequisite.output == output
                    and not prerequisite.satisfied
                ):
                    prerequisite.satisfied = True
                    self._dirty_proxies.add(child.id)
        if output == "succeeded" and proxy.id == self._stop_task and self._stop_mode is None:
            LOG.info("Stop task %s succeeded", proxy.id)
            self._begin_stop("clean", "REQUEST(CLEAN)")

    def _set_state(self, proxy: TaskProxy, state: TaskState) -> None:
        if proxy.state != state:
            if state not in TRANSITIONS[proxy.state]:  # a scheduler bug: say so, carry on
                LOG.error("[%s] illegal transition %s => %s", proxy.id, proxy.state, state)
            LOG.info("[%s] %s => %s", proxy.id, proxy.state, state)
            proxy.state = state
            self._dirty_proxies.add(proxy.id)

    def _ready(self, proxy: TaskProxy, now: float, runahead_max: int) -> bool:
        if proxy.manual:
            return not proxy.is_active
        return (
            proxy.state == TaskState.WAITING
            and self._status == WorkflowStatus.RUNNING
            and not proxy.is_held
            and proxy.point <= runahead_max
            and proxy.point <= self._last_point
            and (proxy.retry_at is None or proxy.retry_at <= now)
            and proxy.prerequisites_met()
        )

    def _submit_ready(self) -> None:
        """Submit jobs for ready task proxies (preparing → submitted → running, each state
        published in its own change batch), at most max_active_jobs in progress."""
        if self._stop_mode is not None:
            return
        now = time.monotonic()
        runahead_max = self._runahead_max()
        in_progress = len(self._running) + sum(
            1 for p in self._pool.values() if p.state == TaskState.PREPARING
        )
        ready = sorted(
            (p for p in self._pool.values() if self._ready(p, now, runahead_max)),
            key=lambda p: (not p.manual, p.point, self._task_order[p.name]),
        )
        ready = ready[: max(0, self.max_active_jobs - in_progress)]
        if not ready:
            return
        self._flush()  # publish what led here (e.g. a child spawned waiting) first
        for proxy in ready:
            if proxy.is_finished:  # a manual re-run starts afresh
                proxy.outputs = dict.fromkeys(proxy.outputs, False)
                proxy.try_num = 1
            proxy.manual = False
            proxy.retry_at = None
            proxy.submit_num = self._next_submit_num(proxy)
            self._set_state(proxy, TaskState.PREPARING)
        self._flush()
        started: list[TaskProxy] = []
        for proxy in ready:
            if self._pool.get(proxy.id) is not proxy or proxy.state != TaskState.PREPARING:
                continue
            if self._start_job(proxy):
                started.append(proxy)
        self._flush()
        for proxy in started:
            job = proxy.latest_job
            if job is None or job.state != "submitted" or proxy.state != TaskState.SUBMITTED:
                continue
            job.state = "running"
            job.started_time = time.time()
            limit = proxy.definition.execution_time_limit_s
            job.time_limit_at = time.monotonic() + limit if limit is not None else None
            self._dirty_jobs.add(job.id)
            self._set_state(proxy, TaskState.RUNNING)
            self._complete_output(proxy, "started")
        self._flush()

    def _next_submit_num(self, proxy: TaskProxy) -> int:
        """The submit number of `proxy`'s next job: after its latest job and after every job
        directory of the task already on disk (a previous run's, or a crashed scheduler's
        orphan that may still be writing to it), so no job directory is ever reused."""
        on_disk = highest_submit_num(self.run_dir, proxy.point, proxy.name)
        if on_disk > proxy.submit_num:
            LOG.info(
                "[%s] job directories up to %s exist already: the next job is %s",
                proxy.id,
                format_submit_num(on_disk),
                format_submit_num(on_disk + 1),
            )
        return max(proxy.submit_num, on_disk) + 1

    def _job_environment(self, proxy: TaskProxy, files: JobFiles) -> list[tuple[str, str]]:
        job_id = f"{proxy.id}/{format_submit_num(proxy.submit_num)}"
        return [
            ("CYLC_WORKFLOW_ID", self.workflow_id),
            ("CYLC_WORKFLOW_NAME", self.definition.name),
            ("CYLC_WORKFLOW_RUN_DIR", str(self.run_dir)),
            ("CYLC_WORKFLOW_SHARE_DIR", str(self.run_dir / "share")),
            ("CYLC_WORKFLOW_WORK_DIR", str(self.run_dir / "work")),
            ("CYLC_WORKFLOW_INITIAL_CYCLE_POINT", str(self.definition.initial_cycle_point)),
            ("CYLC_WORKFLOW_FINAL_CYCLE_POINT", str(self.definition.final_cycle_point)),
            ("CYLC_CYCLING_MODE", "integer"),
            ("CYLC_TASK_ID", proxy.id),
            ("CYLC_TASK_NAME", proxy.name),
            ("CYLC_TASK_CYCLE_POINT", proxy.cycle_point),
            ("CYLC_TASK_JOB", job_id),
            ("CYLC_TASK_SUBMIT_NUMBER", str(proxy.submit_num)),
            ("CYLC_TASK_TRY_NUMBER", str(proxy.try_num)),
            ("CYLC_TASK_LOG_DIR", str(files.job_dir)),
            ("CYLC_TASK_LOG_ROOT", str(files.script)),
            ("CYLC_TASK_WORK_DIR", str(files.work_dir)),
        ]

    def _broadcast_overrides(self, point: int, name: str) -> tuple[dict[str, str], str | None]:
        """Broadcast environment and script for a job at `point/name`, applied in order
        (later wins): all points/root, all points/task, the point/root, the point/task."""
        environment: dict[str, str] = {}
        script: str | None = None
        for key in (("*", ROOT), ("*", name), (str(point), ROOT), (str(point), name)):
            settings = self._broadcasts.get(key)
            if not settings:
                continue
            environment.update(settings.get("environment", {}))
            if "script" in settings:
                script = settings["script"]
        return environment, script

    def _start_job(self, proxy: TaskProxy) -> bool:
        """Write the job files and start the process; False if it submit-failed."""
        files = job_files(self.run_dir, proxy.point, proxy.name, proxy.submit_num)
        job = Job(proxy.point, proxy.name, proxy.submit_num, proxy.try_num, files)
        job.reader = StatusReader(files.status, max_bytes=self.max_status_bytes)
        overrides, script_override = self._broadcast_overrides(proxy.point, proxy.name)
        environment = dict(proxy.definition.environment)
        environment.update(overrides)
        script = proxy.definition.script if script_override is None else script_override
        try:
            write_job_script(
                files,
                header=f"{self.workflow_id}//{job.id}",
                cylc_environment=self._job_environment(proxy, files),
                task_environment=list(environment.items()),
                script=script,
            )
            append_status(
                files,
                [
                    ("CYLC_JOB_RUNNER_NAME", "background"),
                    ("CYLC_JOB_RUNNER_SUBMIT_TIME", iso_time()),
                ],
            )
            job.process = start_job(
                files, shell=self.job_shell, base_environment=self.job_environment
            )
        except OSError as exc:
            LOG.warning("[%s] job submission failed: %s", job.id, exc)
            job.state = "submit-failed"
            job.submitted_time = job.finished_time = time.time()
            append_status(files, [("CYLC_JOB_SUBMIT_FAILED", str(exc).replace("\n", " "))])
            self._add_job(proxy, job)
            self._set_state(proxy, TaskState.SUBMIT_FAILED)
            self._complete_output(proxy, "submit-failed")
            return False
        append_status(files, [("CYLC_JOB_ID", str(job.process.pid))])
        job.submitted_time = time.time()
        self._add_job(proxy, job)
        self._running[job.id] = job
        self._set_state(proxy, TaskState.SUBMITTED)
        self._complete_output(proxy, "submitted")
        LOG.info("[%s] submitted, pid %d", job.id, job.process.pid)
        return True

    def _add_job(self, proxy: TaskProxy, job: Job) -> None:
        proxy.jobs[job.submit_num] = job
        self._jobs[job.id] = job
        self._dirty_jobs.add(job.id)
        self._dirty_proxies.add(proxy.id)
        while len(proxy.jobs) > MAX_JOBS_PER_TASK:
            oldest = proxy.jobs.pop(min(proxy.jobs))
            if oldest.id not in self._running:
                self._jobs.pop(oldest.id, None)
            self._store.delete("jobs", oldest.id)

    def _tick_jobs(self) -> None:
        """Read job.status messages, notice exits, enforce time limits and kill escalation."""
        now = time.monotonic()
        for job in list(self._running.values()):
            if job.process is None:
                continue
            if self.watch_status_files and job.reader is not None:
                for message in job.reader.read_new():
                    self._handle_message(job, message)
            returncode = job.process.poll()
            if returncode is not None:
                self._job_exited(job, returncode)
                continue
            if (
                job.time_limit_at is not None
                and now >= job.time_limit_at
                and job.kill_reason is None
            ):
                LOG.warning("[%s] execution time limit exceeded", job.id)
                self._kill_job(job, "timeout")
            if (
                job.kill_sent_at is not None
                and not job.sigkill_sent
                and now >= job.kill_sent_at + self.kill_grace_s
            ):
                job.sigkill_sent = True
                job.process.signal_group(signal.SIGKILL)

    def _kill_job(self, job: Job, reason: str) -> None:
        """SIGTERM the job's process group (SIGKILL follows after kill_grace_s)."""
        if job.process is None or job.id not in self._running:
            return
        if job.kill_reason is None or reason in ("kill", "remove", "stop", "set"):
            job.kill_reason = reason
        if job.kill_sent_at is None:
            job.kill_sent_at = time.monotonic()
            if self.kill_grace_s == 0:
                job.sigkill_sent = True
                job.process.signal_group(signal.SIGKILL)
            else:
                job.process.signal_group(signal.SIGTERM)
        self._kick()

    def _owner(self, job: Job) -> TaskProxy | None:
        """The task proxy that follows `job` (None if detached or superseded)."""
        if job.detached:
            return None
        proxy = self._pool.get(job.task_id)
        if proxy is None or proxy.jobs.get(job.submit_num) is not job:
            return None
        if proxy.submit_num != job.submit_num:
            return None
        return proxy

    def _job_exited(self, job: Job, returncode: int) -> None:
        if job.reader is not None:
            for message in job.reader.read_new():
                self._handle_message(job, message)
        self._running.pop(job.id, None)
        label = (
            "XCPU" if job.kill_reason == "timeout" and returncode < 0 else exit_label(returncode)
        )
        append_status(
            job.files,
            [
                ("CYLC_JOB_EXIT", label),
                ("CYLC_JOB_EXIT_CODE", str(shell_exit_code(returncode))),
                ("CYLC_JOB_EXIT_TIME", iso_time()),
            ],
        )
        job.exit_code = shell_exit_code(returncode)
        if job.finished_time is None:
            job.finished_time = time.time()
        if job.id in self._jobs:
            self._dirty_jobs.add(job.id)
        LOG.info("[%s] exited: %s (%d)", job.id, label, job.exit_code)
        if job.state in ("succeeded", "failed"):
            return  # the job reported its outcome already
        job.state = "succeeded" if returncode == 0 else "failed"
        proxy = self._owner(job)
        if proxy is None:
            LOG.info("[%s] exit ignored: %s", job.id, self._not_followed(job.id, job))
            return
        if returncode == 0:
            self._task_succeeded(proxy)
        else:
            self._task_failed(proxy, retry=job.kill_reason in (None, "timeout"))

    def _task_succeeded(self, proxy: TaskProxy) -> None:
        for output in ("submitted", "started"):
            self._complete_output(proxy, output)
        proxy.retry_at = None
        self._set_state(proxy, TaskState.SUCCEEDED)
        self._complete_output(proxy, "succeeded")

    def _task_failed(self, proxy: TaskProxy, *, retry: bool) -> None:
        retries = proxy.definition.retries
        if retry and proxy.try_num <= retries.count:
            proxy.try_num += 1
            proxy.retry_at = time.monotonic() + retries.delay_s
            LOG.info("[%s] failed; retry %d of %d", proxy.id, proxy.try_num - 1, retries.count)
            self._set_state(proxy, TaskState.WAITING)
            self._dirty_proxies.add(proxy.id)
            return
        proxy.retry_at = None
        self._set_state(proxy, TaskState.FAILED)
        self._complete_output(proxy, "failed")

    def _not_followed(self, job_id: str, job: Job | None) -> str:
        """Why the job `job_id` (`job`: this run's Job of that id, if any) is not its task's
        current job, in words."""
        task_id = job_id.rsplit("/", 1)[0]
        proxy = self._pool.get(task_id)
        submit_num = int(job_id.rsplit("/", 1)[1])
        if job is None and (proxy is None or submit_num > proxy.submit_num):
            return f"no job {job_id} in this workflow"
        if proxy is None:
            return f"its task {task_id} is no longer in the workflow"
        if job is not None and job.detached:
            return f"its task {task_id} no longer follows it (outputs set, or removed)"
        current = proxy.latest_job
        now = current.id if current is not None else f"{task_id}/{proxy.submit_num:02d}"
        return f"it is not the current job of {task_id} (that is {now})"

    def _handle_message(self, job: Job, message: StatusMessage) -> None:
        """Apply one job message (from job.status or the ``message`` command); a message of
        a job that is not its task's current job is logged and ignored."""
        text = message.text.strip()
        LOG.info("[%s] message %s: %s", job.id, message.severity, text)
        proxy = self._owner(job)
        if proxy is None:
            LOG.warning(
                "[%s] message %r ignored: %s", job.id, text, self._not_followed(job.id, job)
            )
            return
        if text == "started":
            if job.state == "submitted":
                job.state = "running"
                job.started_time = time.time()
                self._dirty_jobs.add(job.id)
                self._set_state(proxy, TaskState.RUNNING)
                self._complete_output(proxy, "started")
            return
        if text == "succeeded" or text == "failed" or text.startswith("failed/"):
            if job.state in ("succeeded", "failed", "submit-failed"):
                return
            job.state = "succeeded" if text == "succeeded" else "failed"
            job.finished_time = time.time()
            self._dirty_jobs.add(job.id)
            if text == "succeeded":
                self._task_succeeded(proxy)
            else:
                self._task_failed(proxy, retry=True)
            return
        output = proxy.definition.output_for_message(text)
        if output is None or output in STANDARD_OUTPUTS:
            return  # an ordinary message: logged only
        self._complete_output(proxy, output)

    def _prune(self) -> None:
        """Drop finished, complete task proxies that are far enough behind, and old records
        of completed outputs."""
        base = self._runahead_base()
        if base is None:
            return
        horizon = base - self.keep_finished_points * self.definition.step
        for proxy in list(self._pool.values()):
            if (
                proxy.point < horizon
                and proxy.is_finished
                and self._is_complete_task(proxy)
                and not any(j.id in self._running for j in proxy.jobs.values())
            ):
                self._remove_proxy(proxy)
        record_horizon = base - self.definition.graph.max_offset - self.definition.step
        for key in [k for k in self._done_outputs if k[0] < record_horizon]:
            del self._done_outputs[key]

    def _remove_proxy(self, proxy: TaskProxy) -> None:
        self._pool.pop(proxy.id, None)
        self._dirty_proxies.add(proxy.id)
        for job in proxy.jobs.values():
            job.detached = True
            if job.id not in self._running:
                self._jobs.pop(job.id, None)
            self._store.delete("jobs", job.id)
        for edge_id in self._store.ids("edges"):
            if edge_id.endswith(f"=>{proxy.id}"):
                self._store.delete("edges", edge_id)

    # ------------------------------------------------------------------ stopping

    def _begin_stop(self, mode: str, reason: str) -> None:
        order = {"auto": 0, "clean": 1, "kill": 2, "now": 3}
        if self._stop_mode is not None and order[mode] <= order[self._stop_mode]:
            return
        self._stop_mode = mode
        self._stop_reason = reason
        self._status = WorkflowStatus.STOPPING
        LOG.info("Workflow stopping: %s", reason)
        if mode == "kill":
            for job in list(self._running.values()):
                if not job.detached:
                    self._kill_job(job, "stop")
        self._kick()

    def _check_shutdown(self) -> str | None:
        """The stop reason once the workflow may stop, else None (also tracks stalls)."""
        if self._stop_mode == "now":
            return self._stop_reason
        if self._stop_mode is not None:
            return None if self._must_wait() else self._stop_reason
        if self._complete():
            if self._must_wait():
                return None  # removed or set jobs still being killed
            reason = "AUTOMATIC"
            self._begin_stop("auto", reason)
            return reason
        if self._is_stalled():
            now = time.monotonic()
            if self._stalled_since is None:
                self._stalled_since = now
                LOG.warning("Workflow stalled")
            timeout = self.definition.stall_timeout_s
            if timeout is not None and now >= self._stalled_since + timeout:
                self._begin_stop("auto", "ABORT(stall timeout)")
                return self._stop_reason
        else:
            self._stalled_since = None
        return None

    def _must_wait(self) -> bool:
        """Whether a clean, kill or automatic stop must wait: while a task is active
        (preparing, submitted, running: Cylc's "stop after active tasks finish"), or while a
        job process we are killing has not exited (SIGKILL follows SIGTERM after
        kill_grace_s, so that wait is bounded). Other job processes do not count: a job whose
        task has finished (it reported ``succeeded`` or ``failed`` by message but its process
        goes on) is left running when the workflow stops, as Cylc leaves it."""
        if any(proxy.is_active for proxy in self._pool.values()):
            return True
        return any(job.kill_sent_at is not None for job in self._running.values())

    def _complete(self) -> bool:
        if self._cursor <= self._last_point:
            return False
        return not any(self._unfinished(p) for p in self._pool.values())

    def _is_stalled(self) -> bool:
        if self._status != WorkflowStatus.RUNNING or self._running or self._commands:
            return False
        now = time.monotonic()
        runahead_max = self._runahead_max()
        for proxy in self._pool.values():
            if proxy.point > self._last_point:
                continue
            if proxy.is_active or proxy.manual or proxy.is_held or proxy.retry_at is not None:
                return False
            if self._ready(proxy, now, runahead_max):
                return False
        return not self._complete()

    # ------------------------------------------------------------------ data store

    def _id_key(self, element_id: str) -> tuple[int, int, str, str]:
        point, _, rest = element_id.partition("/")
        name, _, job = rest.partition("/")
        try:
            number = int(point)
        except ValueError:
            number = -1
        return (number, self._task_order.get(name, len(self._task_order)), name, job)

    def _put_static_elements(self) -> None:
        for task in self.definition.tasks.values():
            self._store.put(
                "tasks",
                {
                    "id": task.name,
                    "name": task.name,
                    "script": task.script,
                    "outputs": dict(task.outputs),
                    "retries": task.retries.count,
                },
            )
        self._store.put("workflow", self._workflow_element())

    def _status_msg(self) -> str:
        if self._status == WorkflowStatus.STOPPED:
            return f"stopped: {self._stop_reason}"
        if self._status == WorkflowStatus.STOPPING:
            if self._stop_mode == "kill":
                return "stopping: killing active jobs"
            if self._stop_mode == "now":
                return "stopping: leaving active jobs running"
            return "stopping: waiting for active jobs to complete"
        if self._status == WorkflowStatus.PAUSED:
            return "paused"
        if self._stalled_since is not None:
            return "stalled"
        if self._stop_point is not None:
            return f"running to stop at {self._stop_point}"
        if self._stop_task is not None:
            return f"running to stop after {self._stop_task}"
        return "running"

    def _stop_mode_text(self) -> str | None:
        """The pending stop: a stop mode (``clean``, ``now``, ``kill``, or ``auto`` when the
        workflow completed), else the stop point or stop task, else None."""
        if self._stop_mode is not None:
            return self._stop_mode
        if self._stop_point is not None:
            return f"after cycle point {self._stop_point}"
        if self._stop_task is not None:
            return f"after task {self._stop_task}"
        return None

    def _broadcast_elements(self) -> list[dict[str, Any]]:
        def key(item: tuple[tuple[str, str], Any]) -> tuple[int, int, str]:
            (point, namespace), _ = item
            return (-1 if point == "*" else int(point), 0 if namespace == ROOT else 1, namespace)

        return [
            {"cycle_point": point, "namespace": namespace, "settings": _copy_settings(settings)}
            for (point, namespace), settings in sorted(self._broadcasts.items(), key=key)
        ]

    def _workflow_element(self) -> dict[str, Any]:
        return {
            "id": self.workflow_id,
            "name": self.definition.name,
            "status": str(self._status),
            "status_msg": self._status_msg(),
            "initial_cycle_point": str(self.definition.initial_cycle_point),
            "final_cycle_point": str(self.definition.final_cycle_point),
            "run_dir": str(self.run_dir),
            "last_updated": self._last_updated,
            "stop_mode": self._stop_mode_text(),
            "broadcasts": self._broadcast_elements(),
        }

    def _workflow_view(self) -> dict[str, Any]:
        element = self._store.get("workflow", self.workflow_id)
        assert element is not None
        return element

    def _flush(self) -> None:
        """Render changed elements into the store and publish one change batch."""
        for task_id in self._dirty_proxies:
            proxy = self._pool.get(task_id)
            if proxy is None:
                self._store.delete("task_proxies", task_id)
            else:
                self._store.put("task_proxies", proxy.element())
        self._dirty_proxies.clear()
        for job_id in self._dirty_jobs:
            job = self._jobs.get(job_id)
            owner = self._pool.get(job.task_id) if job is not None else None
            if job is None or owner is None or owner.jobs.get(job.submit_num) is not job:
                self._store.delete("jobs", job_id)
            else:
                self._store.put("jobs", job.element())
        self._dirty_jobs.clear()
        self._store.put("workflow", self._workflow_element())
        if not self._store.has_changes():
            return
        self._last_updated = time.time()
        self._store.put("workflow", self._workflow_element())
        batch = self._store.flush()
        if self.on_deltas is not None:
            try:
                self.on_deltas(batch)
            except Exception:
                LOG.exception("on_deltas callback failed; the scheduler carries on")
        self._release_waiters()

    def _release_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # ------------------------------------------------------------------ commands: matching

    def _parse(self, texts: object) -> list[TaskSelector]:
        try:
            selectors = parse_selectors(texts, workflow_id=self.workflow_id)
        except SelectionError as exc:
            raise CommandRejected(str(exc)) from exc
        for selector in selectors:
            if (
                not any(c in selector.name for c in "*?[")
                and selector.name not in self.definition.tasks
            ):
                raise CommandRejected(f"{selector.text!r}: no task named {selector.name!r}")
            if not any(c in selector.point for c in "*?[") and not _POINT_RE.match(selector.point):
                raise CommandRejected(f"{selector.text!r}: {selector.point!r} is not a cycle point")
        return selectors

    def _sorted_pool(self) -> list[TaskProxy]:
        return sorted(self._pool.values(), key=lambda p: (p.point, self._task_order[p.name]))

    def _match(
        self, selectors: list[TaskSelector], *, future: bool
    ) -> tuple[list[TaskProxy], list[tuple[int, str]]]:
        """Task proxies matched by any selector, and (if `future`) the exact ids naming
        task proxies not in the pool (which the command may spawn).

        Raises:
            CommandRejected: an exact future id is not a cycle point of the workflow.
        """
        proxies = [p for p in self._sorted_pool() if any(s.matches(p) for s in selectors)]
        found = {p.id for p in proxies}
        spawn: list[tuple[int, str]] = []
        if future:
            for selector in selectors:
                if not selector.is_specific or selector.task_id in found:
                    continue
                point = int(selector.point)
                if not self.definition.is_on_sequence(point):
                    d = self.definition
                    raise CommandRejected(
                        f"{selector.text!r}: {point} is not a cycle point of this workflow "
                        f"({d.initial_cycle_point} to {d.last_cycle_point}, step {d.step})"
                    )
                if (point, selector.name) not in spawn:
                    spawn.append((point, selector.name))
        return proxies, spawn

    def _select(
        self, args: dict[str, Any], *, future: bool, extra: Iterable[str] = ()
    ) -> tuple[list[str], dict[str, Any]]:
        _check_args(args, required=("tasks",), optional=tuple(extra))
        selectors = self._parse(args["tasks"])
        proxies, spawn = self._match(selectors, future=future)
        matched = [p.id for p in proxies] + [f"{point}/{name}" for point, name in spawn]
        if not matched:
            raise CommandRejected(f"no task proxies match {', '.join(s.text for s in selectors)}")
        return matched, {"selectors": selectors, **args}

    def _for_action(self, payload: dict[str, Any], *, future: bool) -> list[TaskProxy]:
        """Re-match at action time (the pool may have changed), spawning future ids."""
        selectors: list[TaskSelector] = payload["selectors"]
        try:
            proxies, spawn = self._match(selectors, future=future)
        except CommandRejected:
            proxies, spawn = self._match(selectors, future=False)
        for point, name in spawn:
            proxy = self._spawn(name, point)
            if proxy is not None:
                proxies.append(proxy)
        return proxies

    # ------------------------------------------------------------------ commands: prepare

    def _prepare_pause(self, args: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        _check_args(args)
        return [], {}

    def _prepare_resume(self, args: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        _check_args(args)
        return [], {}

    def _prepare_stop(self, args: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        _check_args(args, optional=("mode", "cycle_point", "task"))
        mode = args.get("mode", "clean")
        if mode not in STOP_MODES:
            raise CommandRejected(f"mode must be one of {', '.join(STOP_MODES)}, not {mode!r}")
        if "cycle_point" in args and "task" in args:
            raise CommandRejected("give cycle_point or task, not both")
        stop_at = next((key for key in ("cycle_point", "task") if key in args), None)
        if stop_at is not None and mode != "clean":
            # a stop point always stops cleanly; Cylc's `cylc stop` refuses --kill with a
            # stop point (and its scheduler would drop the mode silently)
            when = {
                "cycle_point": "after a cycle point is always clean (once its tasks finish)",
                "task": "after a task is always clean (once it succeeds)",
            }[stop_at]
            raise CommandRejected(
                f"mode {mode} cannot be combined with {stop_at}: stopping {when}; "
                "give one or the other"
            )
        if "cycle_point" in args:
            point = args["cycle_point"]
            if not isinstance(point, str) or not _POINT_RE.match(point):
                raise CommandRejected(f"cycle_point must be an integer cycle point, not {point!r}")
            if int(point) < self.definition.initial_cycle_point:
                raise CommandRejected(
                    f"cycle_point {point} is before the initial cycle point "
                    f"{self.definition.initial_cycle_point}"
                )
            return [], {"cycle_point": int(point)}
        if "task" in args:
            try:
                selector = parse_selector(args["task"], workflow_id=self.workflow_id)
            except SelectionError as exc:
                raise CommandRejected(str(exc)) from exc
            if not selector.is_specific or not _POINT_RE.match(selector.point):
                raise CommandRejected(
                    f"task must be one task id such as 1/foo, not {args['task']!r}"
                )
            if selector.name not in self.definition.tasks:
                raise CommandRejected(f"{selector.text!r}: no task named {selector.name!r}")
            return [selector.task_id], {"task": selector.task_id}
        if self._stop_mode is not None and mode == "clean":
            raise CommandRejected(f"the workflow is already stopping ({self._stop_reason})")
        return [], {"mode": mode}

    def _prepare_hold(self, args: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        return self._select(args, future=True)

    def _prepare_release(self, args: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        _check_args(args, required=("tasks",))
        selectors = self._parse(args["tasks"])
        proxies, _ = self._match(selectors, future=False)
        held = [
            f"{point}/{name}"
            for point, name in sorted(self._future_holds)
            if any(s.matches(_FutureTask(point, name)) for s in selectors)
        ]
        matched = [p.id for p in proxies] + held
        if not matched:
            raise CommandRejected(f"no task proxies match {', '.join(s.text for s in selectors)}")
        return matched, {"selectors": selectors}

    def _prepare_trigger(self, args: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        if self._stop_mode is not None:
            raise CommandRejected("the workflow is stopping: no more jobs are submitted")
        return self._select(args, future=True)

    def _prepare_kill(self, args: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        return self._select(args, future=False)

    def _prepare_poll(self, args: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        return self._select(args, future=False)

    def _prepare_remove(self, args: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        return self._select(args, future=False)

    def _prepare_set(self, args: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        matched, payload = self._select(args, future=True, extra=("outputs", "prerequisites"))
        outputs = args.get("outputs")
        prerequisites = args.get("prerequisites")
        if outputs is None and prerequisites is None:
            outputs = ["succeeded"]
        selectors: list[TaskSelector] = payload["selectors"]
        proxies, spawn = self._match(selectors, future=True)
        targets: list[tuple[int, TaskDefinition]] = [(p.point, p.definition) for p in proxies]
        targets += [(point, self.definition.tasks[name]) for point, name in spawn]
        canonical: list[str] = []
        if outputs is not None:
            if not _string_list(outputs, max_items=64):
                raise CommandRejected("outputs must be a non-empty list of output names")
            for output in outputs:
                name = canonical_output(output)
                for _, task in targets:
                    if name not in STANDARD_OUTPUTS and name not in task.outputs:
                        raise CommandRejected(f"{task.name} has no output {output!r}")
                if name not in canonical:
                    canonical.append(name)
        wanted: list[tuple[int, str, str]] | None = None
        if prerequisites is not None:
            if not _string_list(prerequisites, max_items=256):
                raise CommandRejected(
                    'prerequisites must be a non-empty list of "point/task:output" or "all"'
                )
            if prerequisites != ["all"]:
                wanted = []
                for text in prerequisites:
                    match = _PREREQ_RE.match(text)
                    if match is None:
                        raise CommandRejected(
                            f'prerequisite {text!r} is not "point/task:output" (or "all")'
                        )
                    wanted.append(
                        (int(match["point"]), match["name"], canonical_output(match["output"]))
                    )
                for point, task in targets:
                    have = set(self.definition.prerequisites_at(task.name, point))
                    for prerequisite in wanted:
                        if prerequisite not in have:
                            p, n, o = prerequisite
                            raise CommandRejected(
                                f"{point}/{task.name} has no prerequisite {p}/{n}:{o}"
                            )
            else:
                wanted = None
        return matched, {
            "selectors": selectors,
            "outputs": canonical,
            "prerequisites": prerequisites is not None,
            "wanted": wanted,
        }

    def _prepare_message(self, args: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        _check_args(args, required=("task_job", "messages"), optional=("event_time",))
        task_job = args["task_job"]
        if not isinstance(task_job, str) or _JOB_ID_RE.match(task_job.removeprefix("//")) is None:
            raise CommandRejected(f"task_job must be a job id such as 1/foo/01, not {task_job!r}")
        match = _JOB_ID_RE.match(task_job.removeprefix("//"))
        assert match is not None
        if int(match["job"]) == 0:
            raise CommandRejected(f"{task_job!r}: job numbers start at 01")
        job_id = f"{int(match['point'])}/{match['name']}/{format_submit_num(int(match['job']))}"
        job = self._jobs.get(job_id)
        if job is None or self._owner(job) is None:
            # not this run's job (a previous run's, or an orphan of a crashed scheduler:
            # job directories are never reused), or one its task no longer follows
            reason = self._not_followed(job_id, job)
            LOG.warning("[%s] message command ignored: %s", job_id, reason)
            if reason.startswith("no job"):
                raise CommandRejected(reason)
            raise CommandRejected(f"{job_id}: {reason}; its messages are ignored")
        event_time = args.get("event_time")
        if event_time is not None and not isinstance(event_time, str):
            raise CommandRejected("event_time must be a string")
        messages = args["messages"]
        if (
            not isinstance(messages, list)
            or not messages
            or len(messages) > MAX_MESSAGES_PER_COMMAND
        ):
            raise CommandRejected(
                f"messages must be a list of 1 to {MAX_MESSAGES_PER_COMMAND} [severity, text] pairs"
            )
        parsed: list[StatusMessage] = []
        for item in messages:
            if (
                not isinstance(item, list)
                or len(item) != 2
                or not all(isinstance(x, str) for x in item)
                or len(item[1]) > MAX_MESSAGE_CHARS
            ):
                raise CommandRejected(
                    f"each message must be [severity, text] (text at most {MAX_MESSAGE_CHARS} "
                    f"characters), not {item!r:.80}"
                )
            parsed.append(StatusMessage(event_time or iso_time(), item[0], item[1]))
        return [self._jobs[job_id].task_id], {"job_id": job_id, "messages": parsed}

    def _prepare_broadcast(self, args: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        _check_args(args, required=("mode",), optional=("cycle_points", "namespaces", "settings"))
        mode = args["mode"]
        if mode not in ("put", "clear"):
            raise CommandRejected(f"mode must be put or clear, not {mode!r}")
        points = args.get("cycle_points", ["*"])
        if not _string_list(points, max_items=100):
            raise CommandRejected('cycle_points must be a non-empty list of points or "*"')
        for point in points:
            if point != "*" and not _POINT_RE.match(point):
                raise CommandRejected(f'cycle point {point!r} must be an integer or "*"')
        namespaces = args.get("namespaces", [ROOT])
        if not _string_list(namespaces, max_items=100):
            raise CommandRejected("namespaces must be a non-empty list of task names or root")
        for namespace in namespaces:
            if namespace != ROOT and namespace not in self.definition.tasks:
                raise CommandRejected(f"no task or namespace named {namespace!r}")
        settings = args.get("settings")
        if settings is not None:
            settings = _check_settings(settings, clearing=mode == "clear")
        elif mode == "put":
            raise CommandRejected("broadcast put needs settings")
        keys = [(str(p) if p == "*" else str(int(p)), n) for p in points for n in namespaces]
        if mode == "put":
            new = sum(1 for k in keys if k not in self._broadcasts)
            if len(self._broadcasts) + new > MAX_BROADCASTS:
                raise CommandRejected(f"at most {MAX_BROADCASTS} broadcast entries")
        matched = [
            p.id
            for p in self._sorted_pool()
            if any(point in ("*", p.cycle_point) and ns in (ROOT, p.name) for point, ns in keys)
        ]
        return matched, {"mode": mode, "keys": keys, "settings": settings}

    # ------------------------------------------------------------------ commands: action

    def _process_commands(self) -> None:
        while self._commands:
            command = self._commands.popleft()
            try:
                getattr(self, f"_action_{command.name}")(command.payload)
            except Exception:
                LOG.exception('Command "%s" failed. ID=%s', command.name, command.command_id)
                continue
            LOG.info('Command "%s" actioned. ID=%s', command.name, command.command_id)

    def _action_pause(self, payload: dict[str, Any]) -> None:
        if self._status == WorkflowStatus.RUNNING:
            self._status = WorkflowStatus.PAUSED
            self._stalled_since = None

    def _action_resume(self, payload: dict[str, Any]) -> None:
        if self._status == WorkflowStatus.PAUSED:
            self._status = WorkflowStatus.RUNNING

    def _action_stop(self, payload: dict[str, Any]) -> None:
        if "cycle_point" in payload:
            self._stop_point = payload["cycle_point"]
            for proxy in list(self._pool.values()):
                if proxy.point > self._stop_point and proxy.state == TaskState.WAITING:
                    self._remove_proxy(proxy)
            return
        if "task" in payload:
            self._stop_task = payload["task"]
            stop_task = self._pool.get(payload["task"])
            if stop_task is not None and stop_task.state == TaskState.SUCCEEDED:
                self._begin_stop("clean", "REQUEST(CLEAN)")
            return
        mode = payload["mode"]
        self._begin_stop(mode, STOP_REASONS[mode])

    def _action_hold(self, payload: dict[str, Any]) -> None:
        selectors: list[TaskSelector] = payload["selectors"]
        proxies, _ = self._match(selectors, future=False)
        for proxy in proxies:
            if not proxy.is_held:
                proxy.is_held = True
                self._dirty_proxies.add(proxy.id)
        for selector in selectors:
            if selector.is_specific and selector.task_id not in self._pool:
                point = int(selector.point)
                if (
                    self.definition.is_on_sequence(point)
                    and len(self._future_holds) < MAX_FUTURE_HOLDS
                ):
                    self._future_holds.add((point, selector.name))

    def _action_release(self, payload: dict[str, Any]) -> None:
        selectors: list[TaskSelector] = payload["selectors"]
        proxies, _ = self._match(selectors, future=False)
        for proxy in proxies:
            if proxy.is_held:
                proxy.is_held = False
                self._dirty_proxies.add(proxy.id)
        for point, name in list(self._future_holds):
            if any(s.matches(_FutureTask(point, name)) for s in selectors):
                self._future_holds.discard((point, name))

    def _action_trigger(self, payload: dict[str, Any]) -> None:
        for proxy in self._for_action(payload, future=True):
            if proxy.is_active:
                LOG.info("[%s] is already active: not triggered", proxy.id)
                continue
            proxy.manual = True
            proxy.retry_at = None
            if proxy.is_held:
                proxy.is_held = False
            self._dirty_proxies.add(proxy.id)

    def _action_kill(self, payload: dict[str, Any]) -> None:
        for proxy in self._for_action(payload, future=False):
            job = proxy.latest_job
            if proxy.is_active and job is not None:
                self._kill_job(job, "kill")

    def _action_poll(self, payload: dict[str, Any]) -> None:
        for proxy in self._for_action(payload, future=False):
            job = proxy.latest_job
            if job is None or job.reader is None:
                continue
            for message in job.reader.read_new():
                self._handle_message(job, message)
            if job.process is not None and job.id in self._running:
                returncode = job.process.poll()
                if returncode is not None:
                    self._job_exited(job, returncode)

    def _action_remove(self, payload: dict[str, Any]) -> None:
        for proxy in self._for_action(payload, future=False):
            for job in proxy.jobs.values():
                if job.id in self._running:
                    self._kill_job(job, "remove")
            self._remove_proxy(proxy)
            self._future_holds.discard((proxy.point, proxy.name))

    def _action_set(self, payload: dict[str, Any]) -> None:
        for proxy in self._for_action(payload, future=True):
            if payload["prerequisites"]:
                wanted = payload["wanted"]
                for prerequisite in proxy.prerequisites:
                    key = (prerequisite.point, prerequisite.name, prerequisite.output)
                    if (wanted is None or key in wanted) and not prerequisite.satisfied:
                        prerequisite.satisfied = True
                        self._dirty_proxies.add(proxy.id)
            for output in payload["outputs"]:
                self._set_output(proxy, output)

    def _set_output(self, proxy: TaskProxy, output: str) -> None:
        """The ``set`` command's effect of one output (final outputs also set the state; on
        an active task the job is killed first and no longer followed)."""
        if output in FINAL_OUTPUTS:
            job = proxy.latest_job
            if proxy.is_active and job is not None and job.id in self._running:
                self._kill_job(job, "set")
                job.detached = True
                job.state = "failed"
                job.finished_time = time.time()
                self._dirty_jobs.add(job.id)
            proxy.manual = False
            proxy.retry_at = None
            if output in ("succeeded", "failed"):
                for implied in ("submitted", "started"):
                    self._complete_output(proxy, implied)
            self._set_state(proxy, TaskState(output))
        self._complete_output(proxy, output)

    def _action_message(self, payload: dict[str, Any]) -> None:
        job = self._jobs.get(payload["job_id"])
        if job is None:
            return
        for message in payload["messages"]:
            self._handle_message(job, message)

    def _action_broadcast(self, payload: dict[str, Any]) -> None:
        settings: dict[str, Any] | None = payload["settings"]
        for key in payload["keys"]:
            if payload["mode"] == "put":
                assert settings is not None
                entry = self._broadcasts.setdefault(key, {})
                if "environment" in settings:
                    entry.setdefault("environment", {}).update(settings["environment"])
                if "script" in settings:
                    entry["script"] = settings["script"]
                continue
            if key not in self._broadcasts:
                continue
            if settings is None:
                del self._broadcasts[key]
                continue
            entry = self._broadcasts[key]
            for name in settings.get("environment", {}):
                entry.get("environment", {}).pop(name, None)
            if not entry.get("environment"):
                entry.pop("environment", None)
            if "script" in settings:
                entry.pop("script", None)
            if not entry:
                del self._broadcasts[key]


@dataclass(frozen=True)
class _FutureTask:
    """A task id that is not in the pool, for matching selectors against future holds."""

    point_value: int
    name: str

    @property
    def cycle_point(self) -> str:
        return str(self.point_value)

    @property
    def state(self) -> str:
        return "waiting"

    @property
    def is_held(self) -> bool:
        return True

    @property
    def job_states(self) -> Mapping[int, str]:
        return {}


def _copy_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = {}
    if "environment" in settings:
        copied["environment"] = dict(settings["environment"])
    if "script" in settings:
        copied["script"] = settings["script"]
    return copied


def _check_args(
    args: Mapping[str, Any], *, required: Iterable[str] = (), optional: Iterable[str] = ()
) -> None:
    required = tuple(required)
    allowed = set(required) | set(optional)
    for key in args:
        if key not in allowed:
            raise CommandRejected(f"unexpected argument {key!r}")
    for key in required:
        if key not in args:
            raise CommandRejected(f"missing argument {key!r}")


def _string_list(value: object, *, max_items: int) -> bool:
    return (
        isinstance(value, list)
        and 0 < len(value) <= max_items
        and all(isinstance(v, str) and 0 < len(v) <= 256 for v in value)
    )


def _check_settings(settings: object, *, clearing: bool) -> dict[str, Any]:
    """Validate broadcast settings ``{"environment"?: {name: value}, "script"?: str}``.

    When clearing, environment values are ignored (only names count) and ``script`` may be
    any string.
    """
    if not isinstance(settings, Mapping) or not settings:
        raise CommandRejected('settings must be an object with "environment" and/or "script"')
    for key in settings:
        if key not in ("environment", "script"):
            raise CommandRejected(f"unknown broadcast setting {key!r} (environment, script)")
    checked: dict[str, Any] = {}
    if "environment" in settings:
        environment = settings["environment"]
        if not isinstance(environment, Mapping) or not environment or len(environment) > 256:
            raise CommandRejected("settings.environment must be an object of 1 to 256 variables")
        for name, value in environment.items():
            if not isinstance(name, str) or not _ENV_NAME_RE.match(name):
                raise CommandRejected(f"{name!r} is not an environment variable name")
            if not clearing and (not isinstance(value, str) or len(value) > MAX_ENV_VALUE_CHARS):
                raise CommandRejected(f"environment value of {name} must be a string")
        checked["environment"] = {str(k): str(v) for k, v in environment.items()}
    if "script" in settings:
        script = settings["script"]
        if not isinstance(script, str) or len(script) > MAX_SCRIPT_CHARS:
            raise CommandRejected(
                f"settings.script must be a string of at most {MAX_SCRIPT_CHARS} characters"
            )
        checked["script"] = script
    return checked
