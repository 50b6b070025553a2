"""Helpers for the workflow scheduler tests: definitions from dicts, a running-scheduler harness.

Every scenario runs under :func:`run_bounded` (an overall asyncio timeout); every wait is a
bounded :meth:`Harness.until` on the data store, re-checked after each change batch. Nothing
sleeps to synchronise. Jobs are real short bash subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from runwire.reference_server.workflow import Scheduler, WorkflowDefinition, parse_definition
from runwire.reference_server.workflow.datastore import DeltaBatch
from runwire.runtime.validation import SchemaRegistry

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[3]
SCHEMAS = REPO / "schemas"
EXAMPLES = REPO / "examples" / "workflow"
CONFORMANCE_DEFINITION = REPO / "conformance" / "workflow" / "conformance.yaml"
"""The conformance workflow (package data of runwire.conformance.workflow; its one copy)."""
SCENARIO_TIMEOUT_S = 20.0
WAIT_S = 8.0


@functools.cache
def tree_registry() -> SchemaRegistry:
    """The schemas of this source tree (not the installed copy), loaded once."""
    return SchemaRegistry.from_directory(SCHEMAS)


@pytest.fixture(autouse=True)
def _no_illegal_transitions(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test fails if the scheduler logs a state transition its table forbids."""
    caplog.set_level(logging.INFO, logger="runwire.reference_server.workflow")
    yield
    illegal = [r.getMessage() for r in caplog.records if "illegal transition" in r.getMessage()]
    assert illegal == []


@pytest.fixture
def registry() -> SchemaRegistry:
    """The schemas of this source tree (not the installed copy)."""
    return tree_registry()


def make_definition(
    graph: str,
    runtime: dict[str, Any] | None = None,
    *,
    initial: int = 1,
    final: int = 1,
    registry: SchemaRegistry | None = None,
    **scheduling: Any,
) -> WorkflowDefinition:
    """A definition from a graph and runtime dict (tasks default to an empty script)."""
    data = {
        "name": "test",
        "scheduling": {
            "initial_cycle_point": initial,
            "final_cycle_point": final,
            "graph": graph,
            **scheduling,
        },
        "runtime": runtime or {},
    }
    return parse_definition(data, registry=registry or tree_registry())


def run_bounded(coro: Coroutine[Any, Any, T], timeout_s: float = SCENARIO_TIMEOUT_S) -> T:
    """Run one scenario with an overall bound."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout_s):
            return await coro

    return asyncio.run(bounded())


@dataclass
class Harness:
    """A scheduler running in a task, with every delta batch it published."""

    scheduler: Scheduler
    run_dir: Path
    batches: list[DeltaBatch] = field(default_factory=list)
    task: asyncio.Task[str] | None = None

    def proxy(self, task_id: str) -> dict[str, Any] | None:
        return next(
            (p for p in self.scheduler.elements("task_proxies") if p["id"] == task_id), None
        )

    def state(self, task_id: str) -> str | None:
        proxy = self.proxy(task_id)
        return proxy["state"] if proxy is not None else None

    def job(self, job_id: str) -> dict[str, Any] | None:
        return next((j for j in self.scheduler.elements("jobs") if j["id"] == job_id), None)

    def workflow(self) -> dict[str, Any]:
        return self.scheduler.elements("workflow")[0]

    async def until(self, predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
        await self.scheduler.wait_until(predicate, timeout_s=timeout_s)

    async def until_state(self, task_id: str, state: str, timeout_s: float = WAIT_S) -> None:
        await self.until(lambda: self.state(task_id) == state, timeout_s)

    def command(self, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """Queue a command that must be accepted; returns the reply."""
        reply = self.scheduler.queue_command(name, args or {})
        assert reply["accepted"], reply
        return reply

    async def barrier(self) -> None:
        """Return once the loop has actioned everything queued so far (a broadcast put whose
        effect shows in the workflow element marks the point)."""
        marker = f"m{len(self.batches)}_{id(self)}"
        self.command(
            "broadcast",
            {"mode": "put", "namespaces": ["root"], "settings": {"environment": {marker: "1"}}},
        )
        await self.until(
            lambda: any(
                marker in b["settings"].get("environment", {})
                for b in self.workflow()["broadcasts"]
            )
        )
        self.command(
            "broadcast",
            {"mode": "clear", "namespaces": ["root"], "settings": {"environment": {marker: ""}}},
        )

    async def finish(self, timeout_s: float = WAIT_S) -> str:
        """The stop reason, once run() returns."""
        assert self.task is not None
        async with asyncio.timeout(timeout_s):
            return await self.task

    def status_msgs(self) -> list[str]:
        """Every workflow status_msg published, in order."""
        return [
            element["status_msg"]
            for batch in self.batches
            for element in batch.get("workflow", {}).get("added", [])
            + batch.get("workflow", {}).get("updated", [])
        ]

    def states_seen(self, task_id: str) -> list[str]:
        """Every state of `task_id` published, in order, without repeats."""
        seen: list[str] = []
        for batch in self.batches:
            delta = batch.get("task_proxies")
            if delta is None:
                continue
            for element in delta["added"] + delta["updated"]:
                if element["id"] == task_id and (not seen or seen[-1] != element["state"]):
                    seen.append(element["state"])
        return seen


def job_pid(run_dir: Path, point: int, task: str, submit: int = 1) -> int | None:
    status = run_dir / "log" / "job" / str(point) / task / f"{submit:02d}" / "job.status"
    for line in status.read_text().splitlines():
        if line.startswith("CYLC_JOB_ID="):
            return int(line.split("=", 1)[1])
    return None


@contextlib.asynccontextmanager
async def running(
    definition: WorkflowDefinition, run_dir: Path, **options: Any
) -> AsyncIterator[Harness]:
    """Start a scheduler on `definition`; on exit stop it (kill mode) if still running and
    kill any job process group left behind."""
    options.setdefault("job_poll_interval_s", 0.02)
    options.setdefault("kill_grace_s", 0.5)
    harness = Harness(scheduler=None, run_dir=run_dir)  # type: ignore[arg-type]
    harness.scheduler = Scheduler(definition, run_dir, on_deltas=harness.batches.append, **options)
    harness.task = asyncio.create_task(harness.scheduler.run())
    try:
        await harness.until(lambda: bool(harness.batches))  # started: initial elements out
        yield harness
    finally:
        if not harness.task.done():
            harness.scheduler.queue_command("stop", {"mode": "kill"})
            try:
                async with asyncio.timeout(5):
                    await asyncio.shield(harness.task)
            except TimeoutError:
                harness.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await harness.task
        for status in run_dir.glob("log/job/*/*/[0-9]*/job.status"):
            lines = status.read_text().splitlines()
            if any(line.startswith("CYLC_JOB_EXIT=") for line in lines):
                continue  # the scheduler saw this job end
            for line in lines:
                if line.startswith("CYLC_JOB_ID="):
                    with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                        os.killpg(int(line.split("=", 1)[1]), signal.SIGKILL)
