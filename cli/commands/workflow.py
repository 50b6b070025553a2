"""``runwire workflow COMMAND``: talk to a running workflow (Cylc 8's ``cylc client``,
``cylc pause``, ``cylc stop``...).

Every command finds the workflow by id through its contact file
(``<run root>/<id>/.service/contact``; :mod:`runwire.reference_server.workflow.contact`) and
sends requests with :class:`runwire.compat.cylc.WorkflowRuntimeClient` (the generated client
underneath: CURVE keys from the run directory, Lazy Pirate, replies validated).

========================================================  ===================================
command                                                   request
========================================================  ===================================
``client WORKFLOW COMMAND [-n]``                          ``COMMAND`` with args read as a JSON
                                                          object from stdin (``-n``: none);
                                                          prints the reply's data as JSON
``pause WORKFLOW`` / ``resume WORKFLOW``                  ``pause`` / ``resume``
``stop WORKFLOW [--mode clean|now|kill]``                 ``stop`` (``--cycle-point P``: after
``[--cycle-point P | --task ID]``                         that point; ``--task``: after it
                                                          succeeds; either stops cleanly, so
                                                          not with ``--mode now|kill``)
``hold|release|trigger|kill|poll|remove WORKFLOW TASKS``  that command with ``tasks`` (ids
                                                          and globs: ``1/foo``, ``1/*``,
                                                          ``*/*:failed``, ``1/foo/01``, ``1``)
``status WORKFLOW``                                       ``entire_workflow``, shown as a task
                                                          table (id, state, held, submit
                                                          number, latest job state)
========================================================  ===================================

Common options: ``--run-root DIR`` (default ``$RUNWIRE_RUN_ROOT``, else ``~/runwire-run``),
``--timeout SECONDS`` (per request, default 5, as ``--comms-timeout``), ``--json`` (the reply's
data as JSON instead of text; ``client`` always prints JSON).

Task ids, cycle points and stop options are checked before anything is sent: a malformed
one is a usage error naming the value and the form expected (``bad task id 'a b': expected
...``), as are contradictory stop options (Cylc's ``cylc stop`` likewise refuses ``--kill``
with a stop point, and a stop cycle point with a stop task). ``client`` reads its args from
stdin; on a terminal it says so on stderr first.

Exit status: 0 success; 1 the workflow is not running or does not exist, refused the command
(``accepted: false``) or answered with an error; 2 usage errors (bad options or ids,
contradictory options, args that are not a JSON object) and requests that could not be made
(timeout, keys).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, TextIO

PROG: Final = "runwire workflow"
DEFAULT_TIMEOUT_S: Final = 5.0
TASK_COMMANDS: Final = {
    "hold": "hold task proxies: no new jobs until released",
    "release": "release held task proxies",
    "trigger": "submit task proxies now, regardless of their prerequisites",
    "kill": "kill the active jobs of task proxies",
    "poll": "poll the active jobs of task proxies",
    "remove": "remove task proxies from the workflow",
}
STOP_MODES: Final = ("clean", "now", "kill")
MAX_STDIN_BYTES: Final = 1 << 20
STDIN_HINT: Final = (
    "reading the command's JSON args from stdin; end with Ctrl-D, or pass -n for no args"
)
"""Printed to stderr by ``client`` when stdin is a terminal."""
TASK_SELECTOR_FORM: Final = (
    "CYCLE[/TASK[/JOB]][:STATE] with * and ? globs (e.g. 1/foo, 1/*, */*:failed, 1/foo/01, 1)"
)


class UsageError(Exception):
    """A problem with the command line or its input: exit status 2."""


def positive_seconds(text: str) -> float:
    """A positive number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def wire_value(model: str, what: str, expected: str) -> Callable[[str], str]:
    """An argparse type accepting the strings the workflow schema's definition `model`
    accepts (checked with its generated model, so CLI and schema agree), else the usage
    error ``bad WHAT 'VALUE': expected EXPECTED``."""

    def check(text: str) -> str:
        from pydantic import ValidationError

        from runwire.generated.workflow import models

        try:
            getattr(models, model).model_validate(text)
        except ValidationError:
            raise argparse.ArgumentTypeError(f"bad {what} {text!r}: expected {expected}") from None
        return text

    check.__name__ = what.replace(" ", "_")
    return check


task_selector = wire_value("TaskSelector", "task id", TASK_SELECTOR_FORM)
"""``hold``/``release``/... TASKS (argparse type)."""
cycle_point = wire_value("CyclePoint", "cycle point", "an integer cycle point such as 1 or 3")
"""``stop --cycle-point`` (argparse type)."""
task_proxy_id = wire_value(
    "TaskProxyId", "task id", "CYCLE/TASK such as 1/foo (one task, no globs)"
)
"""``stop --task`` (argparse type)."""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


def table(rows: list[list[str]], out: TextIO) -> None:
    """Print ``rows`` (the first is the header) as left-aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
        out.write("\n")


# --- talking to the workflow ----------------------------------------------------------------


def _client(args: argparse.Namespace) -> Any:
    from runwire.compat.cylc import WorkflowRuntimeClient

    return WorkflowRuntimeClient(args.workflow, timeout=args.timeout, run_root=args.run_root)


def _request(args: argparse.Namespace, command: str, payload: Mapping[str, Any]) -> Any:
    """Send one request; return its data (exceptions are turned into exit codes by main)."""
    client = _client(args)
    try:
        return client(command, dict(payload))
    finally:
        client.stop()


def _print_control(args: argparse.Namespace, command: str, reply: Mapping[str, Any]) -> int:
    if args.json:
        print(_dumps(reply))
    elif reply.get("accepted"):
        matched = reply.get("matched") or []
        line = f"{command}: {reply.get('message', 'Command queued')} (id {reply.get('command_id')})"
        if matched:
            line += f"; matched {len(matched)}: {', '.join(str(m) for m in matched)}"
        print(line)
    else:
        print(f"{PROG} {command}: not accepted: {reply.get('message')}", file=sys.stderr)
    return 0 if reply.get("accepted") else 1


def _read_args() -> Any:
    """The args object on stdin (an empty input is ``{}``); a hint goes to stderr first when
    stdin is a terminal, which would otherwise wait silently."""
    if sys.stdin.isatty():
        print(STDIN_HINT, file=sys.stderr, flush=True)
    text = sys.stdin.read(MAX_STDIN_BYTES + 1)
    if len(text) > MAX_STDIN_BYTES:
        raise UsageError(f"args on stdin are larger than {MAX_STDIN_BYTES} bytes")
    if not text.strip():
        return {}
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"args on stdin are not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise UsageError("args on stdin must be a JSON object")
    return payload


def _cmd_client(args: argparse.Namespace) -> int:
    client = _client(args)  # the workflow is found first: no reading stdin for nothing
    try:
        payload = {} if args.no_input else _read_args()
        print(_dumps(client(args.endpoint, payload)))
    finally:
        client.stop()
    return 0


def _cmd_workflow_level(command: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        return _print_control(args, command, _request(args, command, {}))

    return handler


def _cmd_stop(args: argparse.Namespace) -> int:
    payload: dict[str, Any]
    if args.cycle_point is not None:
        payload = {"cycle_point": args.cycle_point}
    elif args.task is not None:
        payload = {"task": args.task}
    else:
        payload = {"mode": args.mode or "clean"}
    return _print_control(args, "stop", _request(args, "stop", payload))


def check_stop_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse ``--mode now|kill`` with ``--cycle-point`` or ``--task`` (``parser.error``:
    exit status 2). A stop point always stops cleanly; Cylc's ``cylc stop`` refuses
    ``--kill`` with one (and would drop ``--now`` without a word). ``--cycle-point`` with
    ``--task`` is refused by their mutually exclusive group."""
    stop_at = (
        "--cycle-point"
        if args.cycle_point is not None
        else "--task"
        if args.task is not None
        else None
    )
    if stop_at is not None and args.mode in ("now", "kill"):
        parser.error(
            f"--mode {args.mode} cannot be combined with {stop_at}: stopping after a cycle "
            "point or a task is always clean (active jobs finish); give one or the other"
        )


def _cmd_tasks(command: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        return _print_control(args, command, _request(args, command, {"tasks": args.tasks}))

    return handler


def status_rows(snapshot: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per task proxy of an ``entire_workflow`` snapshot: ``id``, ``state``,
    ``is_held``, ``submit_num`` and ``job_state`` (the latest job's state, or None)."""
    jobs = {job["id"]: job for job in snapshot.get("jobs", [])}
    rows = []
    for proxy in snapshot.get("task_proxies", []):
        job_ids = proxy.get("job_ids") or []
        latest = jobs.get(job_ids[-1]) if job_ids else None
        rows.append(
            {
                "id": proxy["id"],
                "state": proxy["state"],
                "is_held": proxy.get("is_held", False),
                "submit_num": proxy.get("submit_num", 0),
                "job_state": latest["state"] if latest is not None else None,
            }
        )
    return rows


def _cmd_status(args: argparse.Namespace) -> int:
    snapshot = _request(args, "entire_workflow", {})
    workflow = snapshot["workflow"]
    rows = status_rows(snapshot)
    if args.json:
        summary = {key: workflow.get(key) for key in ("id", "status", "status_msg")}
        print(_dumps({"workflow": summary, "task_proxies": rows}))
        return 0
    print(
        f"workflow {workflow['id']}: {workflow['status']} ({workflow.get('status_msg', '')}); "
        f"cycle points {workflow.get('initial_cycle_point')}..{workflow.get('final_cycle_point')}"
    )
    if not rows:
        print("no task proxies")
        return 0
    cells = [["ID", "STATE", "HELD", "SUBMIT", "JOB"]]
    for row in rows:
        cells.append(
            [
                row["id"],
                row["state"],
                "yes" if row["is_held"] else "no",
                f"{row['submit_num']:02d}" if row["submit_num"] else "-",
                row["job_state"] or "-",
            ]
        )
    table(cells, sys.stdout)
    return 0


# --- the parsers ----------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser, *, json_option: bool = True) -> None:
    parser.add_argument("workflow", metavar="WORKFLOW", help="workflow id")
    parser.add_argument(
        "--run-root",
        type=Path,
        metavar="DIR",
        help="run root (default: $RUNWIRE_RUN_ROOT, else ~/runwire-run)",
    )
    parser.add_argument(
        "--timeout",
        "--comms-timeout",
        dest="timeout",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="seconds to wait for each reply (default %(default)s)",
    )
    if json_option:
        parser.add_argument("--json", action="store_true", help="print the reply data as JSON")


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the client's exceptions into messages and exit statuses."""

    def run(args: argparse.Namespace) -> int:
        from runwire.compat.cylc import ClientError, ClientTimeout, RequestError, WorkflowStopped

        name = f"{PROG} {args.workflow_command}"
        try:
            return handler(args)
        except UsageError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 2
        except WorkflowStopped as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
        except RequestError as exc:
            code = f" [{exc.code}]" if exc.code else ""
            print(f"{name}: error{code}: {exc}", file=sys.stderr)
            return 1
        except ClientTimeout as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 2
        except ClientError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 130

    return run


def register(sub: Any) -> None:
    """Add the ``workflow`` subcommand to ``sub`` (an argparse subparsers action)."""
    workflow = sub.add_parser(
        "workflow",
        help="talk to a running workflow (client, pause, stop, hold, status...)",
        description=(
            "Commands of the workflow family: talk to a workflow started with `runwire serve "
            "workflow`, found by id through its contact file."
        ),
    )
    commands = workflow.add_subparsers(dest="workflow_command", required=True, metavar="COMMAND")

    client = commands.add_parser(
        "client",
        help="send any command; args as a JSON object on stdin (as `cylc client`)",
        description=(
            "Send COMMAND with the args JSON object read from stdin (-n: no args) and print "
            "the reply's data as JSON."
        ),
    )
    _common(client, json_option=False)
    client.add_argument("endpoint", metavar="COMMAND", help="command (see `api`)")
    client.add_argument(
        "-n", "--no-input", action="store_true", help="send empty args; do not read stdin"
    )
    client.set_defaults(func=_guarded(_cmd_client))

    for name, text in (("pause", "pause the workflow"), ("resume", "resume a paused workflow")):
        parser = commands.add_parser(name, help=text, description=text)
        _common(parser)
        parser.set_defaults(func=_guarded(_cmd_workflow_level(name)))

    stop = commands.add_parser(
        "stop",
        help="stop the workflow",
        description=(
            "Stop the workflow: clean (after active jobs finish; default), now (leave them "
            "running) or kill (kill them first); --cycle-point or --task to stop later."
        ),
    )
    _common(stop)
    stop.add_argument(
        "--mode",
        choices=STOP_MODES,
        help="clean (the default), now or kill; not with --cycle-point or --task",
    )
    stop_at = stop.add_mutually_exclusive_group()
    stop_at.add_argument(
        "--cycle-point", type=cycle_point, metavar="POINT", help="stop after this cycle point"
    )
    stop_at.add_argument(
        "--task",
        type=task_proxy_id,
        metavar="ID",
        help="stop after this task (POINT/NAME) succeeds",
    )

    def stop_handler(args: argparse.Namespace) -> int:
        check_stop_options(stop, args)
        return _cmd_stop(args)

    stop.set_defaults(func=_guarded(stop_handler))

    for name, text in TASK_COMMANDS.items():
        parser = commands.add_parser(name, help=text, description=text)
        _common(parser)
        parser.add_argument(
            "tasks",
            nargs="+",
            type=task_selector,
            metavar="TASKS",
            help="task ids or globs (1/foo, 1/*, */*:failed, 1/foo/01, 1)",
        )
        parser.set_defaults(func=_guarded(_cmd_tasks(name)))

    status = commands.add_parser(
        "status",
        help="show the workflow's task table",
        description="Show the workflow status and one line per task proxy.",
    )
    _common(status)
    status.set_defaults(func=_guarded(_cmd_status))
