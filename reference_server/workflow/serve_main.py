"""``runwire serve workflow DEFINITION``: run the reference workflow scheduler (Cylc's
``cylc play``) until the workflow stops.

It loads and validates the definition, claims ``<run root>/<workflow id>/``, makes fresh
CurveZMQ keys in its ``.service/`` folder, binds the request and publish sockets to random
ports of ``--port-range`` on ``--host``, writes the contact file and prints one line::

    runwire workflow pipeline listening on 127.0.0.1:43007 (publish 43052, curve); contact file /srv/runwire-run/pipeline/.service/contact; run directory /srv/runwire-run/pipeline

then runs the workflow until every cycle point is done, a ``stop`` command arrives, or a
signal (below). On the way out it publishes ``shutdown`` with the stop reason, removes the
contact file and keys, and prints ``runwire workflow ID stopped: REASON``. If it cannot start
(no free port, files), it removes what this start created (keys, ``.service/``, and the run
directory itself if this start made it), so the workflow stays "no such workflow".

Signals (:data:`SIGNAL_HELP`, also in ``--help``): SIGTERM, SIGINT (Ctrl-C) and SIGHUP (the
terminal went away) all stop the workflow as ``runwire workflow stop --mode kill`` does:
active jobs are killed (SIGTERM to each job's process group, SIGKILL after the scheduler's
kill grace of 2 s), then the scheduler stops with ``REQUEST(KILL)`` and cleans up as above.
A second signal, or a stop still unfinished after 15 s, stops at once (remaining jobs get
SIGKILL). The handlers stay installed until the process exits: a signal that arrives once the
workflow has stopped (while it cleans up, or after) is ignored, so it does not cut the
clean-up short or turn a clean exit into death by signal. SIGKILL cannot be handled: it leaves
a stale contact file (the next start of the same id cleans it up) and orphaned jobs (their job
directories are never reused, and nothing they report reaches a later run).

Where this differs from the original: reference/workflow.md says only that a scheduler can be
stopped with SIGTERM; Cylc 8's documentation ("Scheduler Signals") says SIGINT, SIGTERM and
SIGHUP stop it in ``--now`` mode, leaving active jobs running for a restart to pick up (a
second signal escalates to ``--now --now``). This scheduler cannot restart from a previous
run's state, so jobs left running would be orphans nobody follows; it kills them instead.

Exit status: 0 when the workflow finished or stopped on request (or signal); 1 when it
aborted (stall timeout, scheduler error) or could not start (ports, files); 2 for an invalid
definition or command line.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import functools
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Final

import zmq

from runwire.reference_server.logging_options import add_log_level_argument, configure_logging
from runwire.runtime.errors import RunwireError

from .contact import RUN_ROOT_ENV, check_workflow_id, default_run_root
from .definition import DefinitionError, load_definition
from .service import DEFAULT_PORT_RANGE, WorkflowAlreadyRunning, WorkflowService, is_clean_stop

DESCRIPTION = "run the reference workflow scheduler (Cylc 8's runtime interface over ZeroMQ)"

PROG = "runwire serve workflow"


def port_range(text: str) -> tuple[int, int]:
    """``MIN-MAX``, inclusive, at least two ports (one for requests, one for publishing;
    argparse type)."""
    first_text, _, last_text = text.partition("-")
    try:
        first, last = int(first_text), int(last_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX, not {text!r}") from None
    if not 0 < first < last <= 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r}: need 1 <= MIN < MAX <= 65535 (two ports: requests and publishing)"
        )
    return first, last


def workflow_id(text: str) -> str:
    """A workflow id (argparse type)."""
    try:
        return check_workflow_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_seconds(text: str) -> float:
    """A positive number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


SIGNAL_HELP: Final = """\
signals:
  SIGTERM, SIGINT (Ctrl-C) and SIGHUP stop the workflow as `runwire workflow stop
  --mode kill` does: active jobs are killed (SIGTERM, then SIGKILL after 2 s), the
  scheduler publishes `shutdown`, removes the contact file and keys, and exits 0
  (stop reason REQUEST(KILL)). A second signal, or a stop unfinished after 15 s,
  stops at once (remaining jobs get SIGKILL). Signals after the workflow has
  stopped are ignored. (Cylc 8 stops in --now mode on these signals and leaves
  active jobs for a restart; this scheduler cannot restart a run, so it kills
  them rather than leave orphans.) SIGKILL leaves a stale contact file, cleaned
  up by the next start, and orphaned jobs, whose job directories are never reused.

exit status: 0 finished or stopped on request or signal; 1 aborted (stall
  timeout, error) or could not start; 2 invalid definition or command line."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``runwire serve workflow`` (and the signal notes in its ``--help``)."""
    parser.epilog = SIGNAL_HELP
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "definition", type=Path, metavar="DEFINITION", help="workflow definition (.yaml/.toml)"
    )
    parser.add_argument(
        "--workflow-id",
        type=workflow_id,
        metavar="ID",
        help="workflow id, the run directory's name under the run root (default: the "
        "definition's name)",
    )
    parser.add_argument(
        "--run-root",
        type=Path,
        metavar="DIR",
        help=f"run root (default: ${RUN_ROOT_ENV}, else ~/runwire-run)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="ADDR",
        help="address to bind (default %(default)s; 0.0.0.0 for all interfaces)",
    )
    parser.add_argument(
        "--port-range",
        type=port_range,
        default=DEFAULT_PORT_RANGE,
        metavar="MIN-MAX",
        help="pick both ports at random from this range (default 43001-43100)",
    )
    parser.add_argument(
        "--insecure-loopback",
        action="store_true",
        help="plain TCP without CurveZMQ keys; refused unless --host is a loopback address",
    )
    parser.add_argument(
        "--paused", action="store_true", help="start paused: no jobs until `resume`"
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=positive_seconds,
        default=5.0,
        metavar="SECONDS",
        help="seconds between heartbeats on the publish socket (default %(default)s)",
    )
    add_log_level_argument(parser, default="WARNING")


STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""The signals that stop the workflow (kill mode; see the module docstring)."""


class StopSignals:
    """SIGTERM/SIGINT/SIGHUP handlers for the rest of the process's life.

    While a service is attached (:meth:`attach`, from its event loop) a signal calls its
    :meth:`WorkflowService.request_stop` on that loop; otherwise (before, and once the
    service has been detached: its run and clean-up are over) the signal is ignored, so that
    a late SIGTERM neither interrupts the clean-up nor makes the process die by signal
    instead of exiting with its status. Plain :func:`signal.signal` handlers are used rather
    than ``loop.add_signal_handler``, which ``loop.close()`` resets to the default action
    (death); and since Python resets its own handlers to the default action while it
    finalizes, an :mod:`atexit` hook switches them to ``SIG_IGN`` first (not
    earlier: job processes would inherit ``SIG_IGN``, and a killed job must die).
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._service: WorkflowService | None = None
        self._previous: dict[int, Any] = {}
        self.ignored = 0
        """Signals received while no service was attached."""

    def install(self) -> bool:
        """Install the handlers (main thread only; False, and nothing done, elsewhere).
        :func:`run`, the process's entry point, never restores them (an in-process caller
        may, with :meth:`restore`)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for number in STOP_SIGNALS:
            self._previous.setdefault(number, signal.signal(number, self._handle))
        _ignore_at_exit()
        return True

    def restore(self) -> None:
        """Put back the handlers :meth:`install` replaced."""
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()

    def attach(self, service: WorkflowService) -> None:
        """Route signals to `service` on the running loop (call from that loop)."""
        self._loop = asyncio.get_running_loop()
        self._service = service

    def detach(self) -> None:
        """Ignore the signals from now on (call once the service has cleaned up)."""
        self._loop = None
        self._service = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # runs in the main thread between bytecodes: only hand over to the loop (no I/O)
        loop, service = self._loop, self._service
        if loop is not None and service is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(service.request_stop)
            except RuntimeError:  # the loop closed meanwhile
                pass
            else:
                return
        self.ignored += 1


@functools.cache
def _ignore_at_exit() -> None:
    """Register (once) the atexit hook that ignores the stop signals while Python finalizes."""
    atexit.register(_ignore_stop_signals)


def _ignore_stop_signals() -> None:
    if threading.current_thread() is threading.main_thread():
        for number in STOP_SIGNALS:
            signal.signal(number, signal.SIG_IGN)


async def serve(service: WorkflowService, signals: StopSignals | None = None) -> str:
    """Start ``service``, print where it listens, run it until the workflow stops (with
    `signals` attached, SIGTERM, SIGINT and SIGHUP request a stop until then); returns the stop
    reason once the service has cleaned up."""
    if signals is not None:
        signals.attach(service)
    try:
        contact = await service.start()
        print(
            f"runwire workflow {service.workflow_id} listening on {contact.host}:{contact.port} "
            f"(publish {contact.publish_port}, {contact.security}); contact file "
            f"{service.contact_file}; run directory {service.run_dir}",
            flush=True,
        )
        return await service.run()
    finally:
        if signals is not None:
            signals.detach()


def run(args: argparse.Namespace) -> int:
    """Entry point of ``runwire serve workflow``; returns the exit status."""
    configure_logging(args.log_level)
    try:
        definition = load_definition(args.definition)
    except DefinitionError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    try:
        service = WorkflowService(
            definition,
            workflow_id=args.workflow_id,
            run_root=args.run_root or default_run_root(),
            host=args.host,
            port_range=args.port_range,
            insecure_loopback=args.insecure_loopback,
            paused=args.paused,
            heartbeat_interval_s=args.heartbeat_interval,
        )
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    signals = StopSignals()
    signals.install()  # from here on a signal never kills the process (see StopSignals)
    try:
        reason = asyncio.run(serve(service, signals))
    except (WorkflowAlreadyRunning, ValueError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except zmq.ZMQBaseError as exc:
        first, last = args.port_range
        print(f"{PROG}: cannot bind on {args.host}, ports {first}-{last}: {exc}", file=sys.stderr)
        return 1
    except (OSError, RunwireError) as exc:  # files, keys
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    print(f"runwire workflow {service.workflow_id} stopped: {reason}", flush=True)
    return 0 if is_clean_stop(reason) else 1
