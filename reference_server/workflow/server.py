"""The reference scheduler behind ZeroMQ: :class:`WorkflowRuntimeServer`.

Modelled on Cylc 8's ``WorkflowRuntimeServer(schd)`` (reference/workflow.md sections 1, 2 and
4): it implements every handler of the generated
:class:`~runwire.generated.workflow.WorkflowServerBase` on a :class:`.Scheduler`, and publishes
the scheduler's change batches on the PUB socket.

- ``api`` lists the registered commands (or one command's documentation; an unknown name gets
  the original's text ``No method by name "x"`` as data), ``ping_workflow`` answers true.
- The control commands (pause, resume, stop, hold, release, trigger, kill, poll, remove, set,
  message, broadcast) go to :meth:`.Scheduler.queue_command`, which answers at once with
  ``{"accepted", "command_id", "matched", "message"}`` and actions them on its next pass; a
  rejection is still data with ``accepted: false``, as in the original.
- ``entire_workflow`` is :meth:`.Scheduler.snapshot`; ``data_elements`` is
  :meth:`.Scheduler.elements` for one type (an unknown type is an ``invalid_args`` error reply,
  never an empty body: the original's defect 4).
- Every change batch the scheduler reports (``on_deltas``) is published in order: one message
  per non-empty topic (``workflow``, ``tasks``, ``task_proxies``, ``jobs``, ``edges``), then
  ``all`` with every topic's message of the batch. :meth:`stop` publishes what is still queued
  before the base class publishes ``shutdown`` with the stop reason; the heartbeat comes from
  the base class's publisher. Sequence numbers are the publisher's, one counter for all topics.

The scheduler and the server share one event loop (the original runs its server in a thread;
here nothing crosses threads). Every handler is a plain function that never waits, so each
request is answered in the loop turn that reads it. Bounds: the base class bounds request size, queue lengths and
handler time; batches waiting to be published are bounded by ``max_pending_batches`` (beyond
it the oldest is dropped with a warning; a subscriber re-syncs with ``entire_workflow``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any, Final

from runwire.generated.workflow import WorkflowServerBase, models
from runwire.runtime.model import WireModel
from runwire.runtime.transport.zmq_endpoint import CommandError, RequestContext, ServerEndpoints

from .datastore import TOPICS, DeltaBatch, UnknownElementType
from .scheduler import Scheduler

__all__ = ["DEFAULT_MAX_PENDING_BATCHES", "WorkflowRuntimeServer"]

LOG = logging.getLogger("runwire.reference_server.workflow.server")

DEFAULT_MAX_PENDING_BATCHES: Final = 10000
"""Change batches kept while waiting to be published (the oldest is dropped beyond this)."""


class WorkflowRuntimeServer(WorkflowServerBase):
    """The workflow runtime interface of one :class:`.Scheduler` (Cylc's WorkflowRuntimeServer).

    Usage (one event loop for both)::

        scheduler = Scheduler(definition, run_dir)
        server = WorkflowRuntimeServer(scheduler, heartbeat_interval_s=5.0)
        endpoints = await server.start("127.0.0.1", security=keys.server_security())
        reason = await scheduler.run()
        await server.stop(reason)          # publishes pending deltas, then shutdown

    Args:
        scheduler: the scheduler to serve. Its ``on_deltas`` callback is replaced by the
            server's (a callback already set is still called, first).
        max_pending_batches: change batches queued for publishing at most.
        **options: the base class's options (``heartbeat_interval_s``, ``handler_timeout_s``,
            ``max_message_bytes``, ``queue_length``, ``context``...).
    """

    def __init__(
        self,
        scheduler: Scheduler,
        *,
        max_pending_batches: int = DEFAULT_MAX_PENDING_BATCHES,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if max_pending_batches < 1:
            raise ValueError("max_pending_batches must be at least 1")
        self.scheduler = scheduler
        self.max_pending_batches = max_pending_batches
        self._previous_on_deltas = scheduler.on_deltas
        scheduler.on_deltas = self.on_deltas
        self._pending: deque[DeltaBatch] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._pump: asyncio.Task[None] | None = None
        self.batches_published = 0
        self.batches_dropped = 0

    # --- publishing ------------------------------------------------------------------------

    def on_deltas(self, batch: DeltaBatch) -> None:
        """The scheduler's change callback: queue ``batch`` for publishing (never blocks)."""
        if self._previous_on_deltas is not None:
            try:
                self._previous_on_deltas(batch)
            except Exception:
                LOG.exception("the scheduler's own on_deltas callback failed")
        if not batch:
            return
        if len(self._pending) >= self.max_pending_batches:
            self._pending.popleft()
            self.batches_dropped += 1
            LOG.warning(
                "more than %d change batches waiting to be published; the oldest was dropped",
                self.max_pending_batches,
            )
        self._pending.append(batch)
        self._wake.set()

    async def start(self, host: str = "127.0.0.1", **options: Any) -> ServerEndpoints:
        """Bind and serve (see the base class), and start publishing change batches."""
        endpoints = await super().start(host, **options)
        self._closing = False
        if self._pump is None and self._publisher is not None:
            self._pump = asyncio.create_task(self._publish_loop(), name="runwire-workflow-deltas")
        return endpoints

    async def _publish_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.publish_pending()
            if self._closing:
                return

    async def publish_pending(self) -> int:
        """Publish every queued change batch now, in order; returns how many were published.

        Each batch becomes one message per topic (TOPICS order) then ``all``. A message that
        cannot be published (it breaks its schema, the socket failed) is logged and skipped;
        the rest of the batch still goes out.
        """
        count = 0
        while self._pending:
            batch = self._pending.popleft()
            sent: dict[str, Any] = {}
            for topic in TOPICS:
                delta = batch.get(topic)
                if delta is None:
                    continue
                try:
                    sent[topic] = await self.publish(topic, delta)
                except Exception:
                    LOG.exception("%s delta not published", topic)
            try:
                await self.publish("all", {"deltas": sent})
            except Exception:
                LOG.exception("all message not published")
            self.batches_published += 1
            count += 1
        return count

    async def stop(self, reason: str = "stopped", *, drain_s: float = 2.0) -> None:
        """Publish the change batches still queued, then stop as the base class does
        (``shutdown`` with ``reason``, sockets closed). Idempotent."""
        self._closing = True
        pump, self._pump = self._pump, None
        if pump is not None:
            self._wake.set()
            try:
                async with asyncio.timeout(drain_s):
                    await asyncio.shield(pump)
            except TimeoutError:
                LOG.warning("change batches not all published within %s s", drain_s)
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
            except Exception:
                LOG.exception("publishing change batches failed")
        if self._publisher is not None and not self._publisher.closed:
            await self.publish_pending()
        await super().stop(reason, drain_s=drain_s)

    # --- handlers --------------------------------------------------------------------------

    def handle_api(self, args: models.ApiArgs, context: RequestContext) -> models.ApiData:
        """The command names, or one command's documentation (Cylc's ``api``)."""
        if args.endpoint is None:
            return models.ApiData(self.command_names())
        return models.ApiData(self.describe_command(args.endpoint))

    def handle_ping_workflow(
        self, args: models.PingWorkflowArgs, context: RequestContext
    ) -> models.PingData:
        """Always true (the seed's ``ping_workflow``)."""
        return models.PingData(True)

    def _control(self, name: str, args: WireModel, context: RequestContext) -> models.ControlResult:
        reply = self.scheduler.queue_command(name, args.to_wire())
        meta = context.meta or {}
        if reply["accepted"]:
            LOG.info(
                'Command "%s" from %s@%s queued. ID=%s',
                name,
                meta.get("auth_user") or meta.get("prog") or "?",
                meta.get("host") or "?",
                reply["command_id"],
            )
        return models.ControlResult.model_validate(reply, strict=False)

    def handle_pause(self, args: models.PauseArgs, context: RequestContext) -> models.ControlResult:
        """Queue ``pause``."""
        return self._control("pause", args, context)

    def handle_resume(
        self, args: models.ResumeArgs, context: RequestContext
    ) -> models.ControlResult:
        """Queue ``resume``."""
        return self._control("resume", args, context)

    def handle_stop(self, args: models.StopArgs, context: RequestContext) -> models.ControlResult:
        """Queue ``stop`` (modes clean, now, kill; at a cycle point; after a task)."""
        return self._control("stop", args, context)

    def handle_hold(self, args: models.HoldArgs, context: RequestContext) -> models.ControlResult:
        """Queue ``hold``."""
        return self._control("hold", args, context)

    def handle_release(
        self, args: models.ReleaseArgs, context: RequestContext
    ) -> models.ControlResult:
        """Queue ``release``."""
        return self._control("release", args, context)

    def handle_trigger(
        self, args: models.TriggerArgs, context: RequestContext
    ) -> models.ControlResult:
        """Queue ``trigger``."""
        return self._control("trigger", args, context)

    def handle_kill(self, args: models.KillArgs, context: RequestContext) -> models.ControlResult:
        """Queue ``kill``."""
        return self._control("kill", args, context)

    def handle_poll(self, args: models.PollArgs, context: RequestContext) -> models.ControlResult:
        """Queue ``poll``."""
        return self._control("poll", args, context)

    def handle_remove(
        self, args: models.RemoveArgs, context: RequestContext
    ) -> models.ControlResult:
        """Queue ``remove``."""
        return self._control("remove", args, context)

    def handle_set(self, args: models.SetArgs, context: RequestContext) -> models.ControlResult:
        """Queue ``set``."""
        return self._control("set", args, context)

    def handle_message(
        self, args: models.MessageArgs, context: RequestContext
    ) -> models.ControlResult:
        """Queue a job's ``message`` (started, succeeded, failed, custom outputs)."""
        return self._control("message", args, context)

    def handle_broadcast(
        self, args: models.BroadcastArgs, context: RequestContext
    ) -> models.ControlResult:
        """Queue ``broadcast`` (put or clear runtime overrides)."""
        return self._control("broadcast", args, context)

    def handle_entire_workflow(
        self, args: models.EntireWorkflowArgs, context: RequestContext
    ) -> models.EntireWorkflow:
        """The whole data store (in place of ``pb_entire_workflow``)."""
        return models.EntireWorkflow.model_validate(self.scheduler.snapshot(), strict=False)

    def handle_data_elements(
        self, args: models.DataElementsArgs, context: RequestContext
    ) -> models.DataElements:
        """One element type's current elements (in place of ``pb_data_elements``).

        Raises:
            CommandError: ``invalid_args`` for a type the data store does not have.
        """
        element_type = args.element_type.root
        try:
            elements = self.scheduler.elements(element_type)
        except UnknownElementType as exc:
            raise CommandError(str(exc), code="invalid_args") from None
        return models.DataElements.model_validate(
            {"element_type": element_type, "elements": elements}, strict=False
        )
