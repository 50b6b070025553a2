"""``runwire jobs submit|result|status|follow|read|cancel|list``: a jobs dispatcher client.

Each command sends one request of the dispatcher protocol (``schemas/jobs/dispatcher.json``)
with the generated :class:`~runwire.generated.jobs.client.DispatcherSyncClient`:

=============================================  ===========================================
command                                          request
=============================================  ===========================================
``submit HOST PROCEDURE [ARGS...]``              ``call`` (``--follow``: then ``follow_stream``
                                                 from packet 0 and the job's outcome)
``result [--wait] JOB_ID``                       ``get_result``
``status JOB_ID``                                ``get_status``
``follow [--since N | --recent N] JOB_ID``       ``follow_stream`` (default: new packets only)
``read [--since N | --recent N] JOB_ID``         ``read_stream`` (default: from packet 0)
``cancel JOB_ID``                                ``cancel``
``list [--state S] [--host H] [--queue JSON]``   ``list_jobs`` (extension)
=============================================  ===========================================

Common options: ``--dispatcher HOST:PORT`` (default ``$RUNWIRE_DISPATCHER``, else
127.0.0.1:3502), ``--wait-timeout S`` (this client's bound on connecting and on each wait for
a reply line; ``--timeout-s`` is its deprecated old name), ``--json`` (machine output: one JSON
document, or JSON lines for streams: the wire lines). ``submit --timeout`` is something else:
the job's idle limit, the protocol's ``timeout``.

Waiting (``result --wait``, ``follow``, ``submit --follow``) lasts as long as the job runs:
after ``--wait-timeout`` of silence the request is re-issued on a new connection (a follow
resumes after the last packet received, so nothing is lost or repeated).

Bad input (a job id that is not a UUID, JSON that is not JSON, an empty host name...) is a
usage error found before anything is sent.

Exit status (:data:`EXIT_STATUS_HELP`): 0 success; 1 the job failed (exception or error
outcome) or was cancelled (``result``, ``follow``, ``read`` and ``submit --follow``, when the
outcome is known), or the dispatcher answered the request with an error (for example
``invalid_jobid``, ``overloaded``); 2 usage errors; 3 no usable answer from the dispatcher (it
cannot be reached, the connection broke, it timed out, or its reply breaks the protocol);
130 interrupted (Ctrl-C); 141 standard output closed early (both handled by
:func:`runwire.main.main`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, TextIO

DEFAULT_DISPATCHER: Final = "127.0.0.1:3502"
DISPATCHER_ENV: Final = "RUNWIRE_DISPATCHER"
DEFAULT_TIMEOUT_S: Final = 30.0
NO_RESULT_PAUSE_S: Final = 1.0
"""Pause before asking again when a waiting get_result answers no_result (the dispatcher
held it for its maximum)."""

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
"""The job failed or was cancelled, or the dispatcher answered with an error."""
EXIT_USAGE: Final = 2
"""A usage error (argparse's status too)."""
EXIT_UNREACHABLE: Final = 3
"""No usable answer from the dispatcher: unreachable, timed out, or broke the protocol."""

EXIT_STATUS_HELP: Final = (
    "Exit status: 0 success; 1 the job failed or was cancelled, or the dispatcher answered "
    "with an error (such as invalid_jobid); 2 usage error; 3 no usable answer from the "
    "dispatcher (cannot connect, connection lost, timed out, or a reply that breaks the "
    "protocol); 130 interrupted (Ctrl-C)."
)

JOB_ID_PATTERN: Final = "^[0-9a-f]{8}-[0-9a-f]{4}-[1-5][0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$"
"""The protocol's JobId pattern (schemas/jobs/dispatcher.json; a test checks they agree)."""
_JOB_ID = re.compile(JOB_ID_PATTERN)
MAX_NAME_LENGTH: Final = 255
"""Longest host or procedure name (the protocol's HostName and ProcedureName)."""

#: Error types about the request rather than the job's outcome.
REQUEST_ERRORS: Final = frozenset({"invalid_jobid", "bad_request", "overloaded", "storage_error"})
MAX_LIST_LIMIT: Final = 1000
STATES: Final = ("queued", "running", "finished", "failed", "cancelled", "interrupted")

PROG: Final = "runwire jobs"


class UsageError(Exception):
    """A problem with the command line found by a command: exit status 2."""


class Refused(Exception):
    """The dispatcher answered the request with an error: exit status 1."""


# --- argument types ---------------------------------------------------------------------------


def parse_dispatcher(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``HOST`` (port 3502) or ``[IPV6]:PORT`` → (host, port).

    Raises:
        argparse.ArgumentTypeError: not an address.
    """
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise argparse.ArgumentTypeError(f"{text!r}: missing ']' after the IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise argparse.ArgumentTypeError(f"{text!r}: expected [HOST]:PORT")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host:
        raise argparse.ArgumentTypeError(f"{text!r}: no host (expected HOST:PORT)")
    if not port_text:
        return host, 3502
    try:
        port = int(port_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: port must be a number") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: port must be 1 to 65535")
    return host, port


class _OutOfRange(ValueError):
    """A JSON number too large for a double."""


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _OutOfRange(f"number out of range: {text}")
    return value


def strict_json(text: str) -> Any:
    """``json.loads`` refusing what is not JSON although Python's parser takes it (NaN,
    Infinity) and numbers too large for a double (1e999).

    Raises:
        ValueError: not JSON (:class:`_OutOfRange` for a number out of range).
    """
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)


def json_value(text: str) -> Any:
    """A JSON value (argparse type)."""
    try:
        return strict_json(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {text!r} ({exc})") from None


def json_object(text: str) -> dict[str, Any]:
    """A JSON object (argparse type)."""
    value = json_value(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, not {text!r}")
    return value


def argument(text: str) -> Any:
    """A procedure argument: JSON if it parses as JSON, else the string itself (so ``NaN``
    is the string "NaN"); a number too large for a double is an error (argparse type)."""
    try:
        return strict_json(text)
    except _OutOfRange as exc:
        raise argparse.ArgumentTypeError(f"{exc} (JSON numbers here must fit a double)") from None
    except ValueError:
        return text


def job_id(text: str) -> str:
    """A job id as the dispatcher gives them: a UUID (v4), in lowercase (upper case is
    accepted and lowered: UUIDs are case-insensitive on input) (argparse type)."""
    value = text.strip().lower()
    if not _JOB_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"bad job id {text!r}: expected a UUID v4 as the dispatcher gives"
        )
    return value


def registry_name(text: str) -> str:
    """A host or procedure name: 1 to 255 characters (argparse type)."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    if len(text) > MAX_NAME_LENGTH:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_NAME_LENGTH} characters, not {len(text)}: {text[:20]!r}..."
        )
    return text


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def list_limit(text: str) -> int:
    """An integer from 1 to 1000 (argparse type; the protocol's list_jobs bound)."""
    value = positive_int(text)
    if value > MAX_LIST_LIMIT:
        raise argparse.ArgumentTypeError(f"at most {MAX_LIST_LIMIT}: {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def positive_seconds(text: str) -> float:
    """A positive number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


# --- output -----------------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def format_time(epoch_s: int | None) -> str:
    """Epoch seconds as local ``YYYY-MM-DD HH:MM:SS+HH:MM``; ``-`` for None."""
    if epoch_s is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(epoch_s, tz=datetime.UTC).astimezone()
    return moment.isoformat(sep=" ", timespec="seconds")


def table(rows: list[list[str]], out: TextIO) -> None:
    """Print ``rows`` (the first is the header) as left-aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
        out.write("\n")


def describe_outcome(line: Mapping[str, Any]) -> tuple[str, int]:
    """Human text and exit status for a result line (get_result reply or stream terminator)."""
    if "result" in line:
        return _dumps(line["result"]), 0
    if "no_result" in line:
        return "not finished", 0
    if "continue" in line:
        return "not finished (more packets may follow)", 0
    if "cancelled" in line:
        return "cancelled", 1
    if "exception" in line:
        exc = line["exception"]
        text = f"exception {exc.get('type')}: {exc.get('message')}"
        if exc.get("data") is not None:
            text += f" {_dumps(exc['data'])}"
        return text, 1
    error = line.get("error", {})
    text = f"error {error.get('type')}: {error.get('message')}"
    if error.get("data") is not None:
        text += f" {_dumps(error['data'])}"
    return text, 1


def _request_error(line: Mapping[str, Any]) -> None:
    """Raise Refused when ``line`` is an error about the request itself."""
    error = line.get("error")
    if isinstance(error, Mapping) and error.get("type") in REQUEST_ERRORS:
        raise Refused(
            f"the dispatcher refused the request: {error.get('type')}: {error.get('message')}"
        )


# --- talking to the dispatcher ------------------------------------------------------------------


class Session:
    """One command's view of the dispatcher: the address, the timeouts and the output mode."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.host, self.port = args.dispatcher
        self.timeout_s: float = args.wait_timeout
        self.json: bool = args.json
        self.out: TextIO = sys.stdout

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def client(self) -> Any:
        from runwire.generated.jobs.client import DispatcherSyncClient

        return DispatcherSyncClient(self.host, self.port, timeout_s=self.timeout_s)

    def request(self, operation: str, model: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one request-reply operation; return the reply's wire form."""
        from runwire.generated.jobs import models

        request = getattr(models, model).model_validate({"harpcaller": 1, **payload}, strict=False)
        with self.client() as client:
            reply = getattr(client, operation)(request)
        wire: dict[str, Any] = reply.to_wire()
        return wire

    def stream(
        self, operation: str, model: str, payload: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        """Send one stream operation; yield each wire line (packets, then the terminator)."""
        from runwire.generated.jobs import models

        request = getattr(models, model).model_validate({"harpcaller": 1, **payload}, strict=False)
        with (
            self.client() as client,
            contextlib.closing(getattr(client, operation)(request)) as lines,
        ):
            for line in lines:
                yield line.to_wire()

    def wait_result(self, job_id: str) -> dict[str, Any]:
        """get_result with wait, re-issued after each silent ``timeout_s`` until the job ends."""
        from runwire.runtime.errors import Timeout

        while True:
            try:
                line = self.request(
                    "get_result", "GetResultRequest", {"get_result": job_id, "wait": True}
                )
            except Timeout as exc:
                if exc.operation != "receive":
                    raise
                continue
            if "no_result" not in line:
                return line
            time.sleep(NO_RESULT_PAUSE_S)  # held for the dispatcher's maximum; ask again

    def stream_length(self, job_id: str) -> int:
        """How many packets the job has stored now (read_stream with recent 1)."""
        length = 0
        for line in self.stream(
            "read_stream", "ReadStreamRequest", {"read_stream": job_id, "recent": 1}
        ):
            if "packet" in line:
                length = int(line["packet"]) + 1
            else:
                _request_error(line)
        return length

    def follow(self, job_id: str, since: int) -> Iterator[dict[str, Any]]:
        """follow_stream from ``since``, re-issued after each silent ``timeout_s``, resuming
        after the last packet received; yields the packet lines, then the terminator."""
        from runwire.runtime.errors import Timeout

        while True:
            payload = {"follow_stream": job_id, "since": since}
            try:
                for line in self.stream("follow_stream", "FollowStreamRequest", payload):
                    if "packet" in line:
                        since = int(line["packet"]) + 1
                    yield line
                return
            except Timeout as exc:
                if exc.operation != "receive":
                    raise

    def emit_stream(self, lines: Iterator[dict[str, Any]]) -> int:
        """Print a stream (JSON lines, or each packet's data then the outcome); exit status."""
        status = 0
        for line in lines:
            if self.json:
                self.out.write(_dumps(line) + "\n")
                self.out.flush()
            elif "packet" in line:
                self.out.write(_dumps(line["data"]) + "\n")
                self.out.flush()
            if "packet" in line:
                continue
            _request_error(line)
            text, status = describe_outcome(line)
            if not self.json:
                stream = sys.stderr if "continue" in line else self.out
                stream.write(text + "\n")
        return status


# --- commands -----------------------------------------------------------------------------------


def _submit(session: Session, args: argparse.Namespace) -> int:
    if args.args and args.kwargs is not None:
        raise UsageError("give positional ARGS or --kwargs, not both")
    if args.concurrency is not None and args.queue is None:
        raise UsageError("--concurrency needs --queue (the limit is per queue)")
    payload: dict[str, Any] = {
        "host": args.host,
        "procedure": args.procedure,
        "arguments": args.kwargs if args.kwargs is not None else list(args.args),
    }
    if args.queue is not None:
        payload["queue"] = {"name": args.queue, "concurrency": args.concurrency or 1}
    if args.timeout is not None:
        payload["timeout"] = args.timeout
    if args.max_exec_time is not None:
        payload["max_exec_time"] = args.max_exec_time
    if args.info is not None:
        payload["info"] = args.info
    reply = session.request("call", "CallRequest", payload)
    if "error" in reply:
        error = reply["error"]
        raise Refused(
            f"the dispatcher refused the job: {error.get('type')}: {error.get('message')}"
        )
    job_id = reply["job_id"]
    if session.json:
        session.out.write(_dumps({"job_id": job_id}) + "\n")
    elif args.follow:
        print(f"job {job_id}", file=sys.stderr)
    else:
        session.out.write(job_id + "\n")
    session.out.flush()
    if not args.follow:
        return 0
    return session.emit_stream(session.follow(job_id, 0))


def _result(session: Session, args: argparse.Namespace) -> int:
    job_id = args.job_id
    if args.wait:
        line = session.wait_result(job_id)
    else:
        line = session.request(
            "get_result", "GetResultRequest", {"get_result": job_id, "wait": False}
        )
    _request_error(line)
    text, status = describe_outcome(line)
    session.out.write((_dumps(line) if session.json else text) + "\n")
    return status


def _status(session: Session, args: argparse.Namespace) -> int:
    reply = session.request("get_status", "GetStatusRequest", {"get_status": args.job_id})
    _request_error(reply)
    if "error" in reply:
        error = reply["error"]
        raise Refused(f"status unavailable: {error.get('type')}: {error.get('message')}")
    if session.json:
        session.out.write(_dumps({"job_id": args.job_id, **reply}) + "\n")
        return 0
    call, times = reply["call"], reply["time"]
    rows = [
        ("job", args.job_id),
        ("state", reply.get("state") or "-"),
        ("host", call["host"]),
        ("procedure", call["procedure"]),
        ("arguments", _dumps(call["arguments"])),
        ("submitted", format_time(times["submit"])),
        ("started", format_time(times.get("start"))),
        ("ended", format_time(times.get("end"))),
        ("info", _dumps(reply.get("info"))),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        session.out.write(f"{name.ljust(width)}  {value}\n")
    return 0


def _follow(session: Session, args: argparse.Namespace) -> int:
    since = args.since
    if since is None:  # resolve `recent` (default 0) now, so a re-issued follow resumes exactly
        since = max(0, session.stream_length(args.job_id) - (args.recent or 0))
    return session.emit_stream(session.follow(args.job_id, since))


def _read(session: Session, args: argparse.Namespace) -> int:
    payload: dict[str, Any] = {"read_stream": args.job_id}
    if args.since is not None:
        payload["since"] = args.since
    if args.recent is not None:
        payload["recent"] = args.recent
    return session.emit_stream(session.stream("read_stream", "ReadStreamRequest", payload))


def _cancel(session: Session, args: argparse.Namespace) -> int:
    reply = session.request("cancel", "CancelRequest", {"cancel": args.job_id})
    _request_error(reply)
    if "error" in reply:
        error = reply["error"]
        raise Refused(f"not cancelled: {error.get('type')}: {error.get('message')}")
    if session.json:
        session.out.write(_dumps(reply) + "\n")
    elif reply["cancelled"]:
        session.out.write(f"cancelled {args.job_id}\n")
    else:
        session.out.write(f"{args.job_id} had already ended; nothing cancelled\n")
    return 0


def _list(session: Session, args: argparse.Namespace) -> int:
    selection: dict[str, Any] = {"limit": args.limit}
    for name in ("state", "host", "queue"):
        if getattr(args, name) is not None:
            selection[name] = getattr(args, name)
    reply = session.request("list_jobs", "ListJobsRequest", {"list_jobs": selection})
    _request_error(reply)
    if "error" in reply:
        error = reply["error"]
        raise Refused(f"cannot list jobs: {error.get('type')}: {error.get('message')}")
    if session.json:
        session.out.write(_dumps(reply) + "\n")
        return 0
    rows = [["JOB", "STATE", "HOST", "PROCEDURE", "SUBMITTED", "ENDED", "QUEUE"]]
    for job in reply["jobs"]:
        rows.append(
            [
                job["job_id"],
                job["state"],
                job["call"]["host"],
                job["call"]["procedure"],
                format_time(job["time"]["submit"]),
                format_time(job["time"].get("end")),
                "-" if job.get("queue") is None else _dumps(job["queue"]),
            ]
        )
    table(rows, session.out)
    if reply.get("truncated"):
        print(f"(more jobs match; showing the newest {args.limit}: raise --limit)", file=sys.stderr)
    return 0


# --- wiring -------------------------------------------------------------------------------------


def _run(
    command: Callable[[Session, argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """Wrap a command: build its Session, turn failures into messages and exit statuses."""

    def run(args: argparse.Namespace) -> int:
        from runwire.runtime.errors import (
            LocalProtocolError,
            RemoteProtocolError,
            RunwireError,
            Timeout,
        )

        session = Session(args)
        name = f"{PROG} {args.jobs_command}"
        try:
            return command(session, args)
        except UsageError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except Refused as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except LocalProtocolError as exc:
            print(f"{name}: invalid request: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except ValueError as exc:  # a model refused the values (pydantic's ValidationError)
            print(f"{name}: invalid request: {_validation_summary(exc)}", file=sys.stderr)
            return EXIT_USAGE
        except Timeout as exc:
            print(
                f"{name}: the dispatcher at {session.where} did not answer: {exc}", file=sys.stderr
            )
        except RemoteProtocolError as exc:
            print(
                f"{name}: the dispatcher at {session.where} broke the protocol: {exc}",
                file=sys.stderr,
            )
        except BrokenPipeError:  # standard output closed: runwire.main handles it
            raise
        except (RunwireError, OSError) as exc:
            print(f"{name}: cannot reach the dispatcher at {session.where}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE

    return run


def _validation_summary(exc: ValueError) -> str:
    """One line for a pydantic ValidationError (each error's location and message, no
    links), else ``str(exc)``."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for error in errors():
        where = ".".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(parts) or str(exc)


class _DeprecatedAlias(argparse.Action):
    """Stores the value like the option it stands for, and says on stderr to use that one."""

    def __init__(self, *args: Any, instead: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instead = instead

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(f"{parser.prog}: {option_string} is deprecated; use {self.instead}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("dispatcher connection")
    group.add_argument(
        "--dispatcher",
        type=parse_dispatcher,
        default=os.environ.get(DISPATCHER_ENV, DEFAULT_DISPATCHER),
        metavar="HOST:PORT",
        help=f"the dispatcher (default: ${DISPATCHER_ENV}, else {DEFAULT_DISPATCHER})",
    )
    group.add_argument(
        "--wait-timeout",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help="this command's patience, seconds: the bound on connecting and on each wait for a "
        "reply line (default: %(default)s); result --wait, follow and submit --follow re-ask "
        "after this much silence instead of giving up. Not the job's limit (submit --timeout)",
    )
    group.add_argument(  # the old name of --wait-timeout, kept for scripts
        "--timeout-s",
        dest="wait_timeout",
        type=positive_seconds,
        default=argparse.SUPPRESS,
        action=_DeprecatedAlias,
        instead="--wait-timeout",
        help=argparse.SUPPRESS,
    )
    group.add_argument(
        "--json",
        action="store_true",
        help="machine output: one JSON document, or JSON lines for streams",
    )
    return common


def _position(parser: argparse.ArgumentParser, default: str) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--since", type=non_negative_int, metavar="N", help="start at packet number N"
    )
    where.add_argument(
        "--recent", type=non_negative_int, metavar="N", help="start N packets before the end"
    )
    parser.epilog = f"Without --since or --recent: {default}. {EXIT_STATUS_HELP}"


def add_client_commands(commands: Any) -> None:
    """Add the client commands to the ``jobs`` subparsers object ``commands``."""
    common = _common()

    def add(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name,
            help=help_text,
            description=description,
            parents=[common],
            epilog=EXIT_STATUS_HELP,
        )
        return parser

    submit = add(
        "submit",
        "submit a job: call PROCEDURE on HOST",
        "Submit a job to the dispatcher and print its id (with --follow: follow its stream, "
        "then print its result). Each ARG is parsed as JSON when it is JSON, else taken as a "
        "string (so 1 is a number, '\"1\"' a string, abc a string).",
    )
    submit.add_argument(
        "host",
        type=registry_name,
        metavar="HOST",
        help="the host's name in the dispatcher's registry",
    )
    submit.add_argument(
        "procedure", type=registry_name, metavar="PROCEDURE", help="the procedure to call"
    )
    submit.add_argument(
        "args", nargs="*", type=argument, metavar="ARGS", help="positional arguments"
    )
    submit.add_argument(
        "--kwargs", type=json_object, metavar="JSON", help="keyword arguments, as a JSON object"
    )
    submit.add_argument(
        "--queue",
        type=json_object,
        metavar="JSON",
        help="queue to wait in (its name: a JSON object)",
    )
    submit.add_argument(
        "--concurrency",
        type=positive_int,
        metavar="N",
        help="jobs of the queue running at once (the queue's first job fixes it; default 1)",
    )
    submit.add_argument(
        "--timeout",
        type=positive_int,
        metavar="S",
        help="the job's idle limit (the protocol's timeout): longest silence between stream "
        "packets, or the whole run of a procedure that streams nothing, whole seconds (the "
        "dispatcher caps it). Not how long this command waits: see --wait-timeout",
    )
    submit.add_argument(
        "--max-exec-time",
        type=positive_int,
        metavar="S",
        help="longest total run time, whole seconds (the dispatcher caps it)",
    )
    submit.add_argument(
        "--info", type=json_value, metavar="JSON", help="opaque data stored with the job"
    )
    submit.add_argument(
        "--follow", action="store_true", help="follow the job's stream, then print its result"
    )
    submit.set_defaults(func=_run(_submit))

    result = add(
        "result",
        "print a job's result",
        "Print a job's result: its value (as JSON), or the exception, error or cancellation; "
        "'not finished' while it runs. Exit status 1 when the job failed or was cancelled.",
    )
    result.add_argument("--wait", action="store_true", help="wait until the job ends")
    result.add_argument("job_id", type=job_id, metavar="JOB_ID")
    result.set_defaults(func=_run(_result))

    status = add("status", "print a job's status", "Print a job's state, call, times and info.")
    status.add_argument("job_id", type=job_id, metavar="JOB_ID")
    status.set_defaults(func=_run(_status))

    follow = add(
        "follow",
        "follow a job's stream until it ends",
        "Print a job's stream packets (each packet's data as JSON, one per line) as they come, "
        "until the job ends; then its result.",
    )
    _position(follow, "only packets that come from now on (as --recent 0)")
    follow.add_argument("job_id", type=job_id, metavar="JOB_ID")
    follow.set_defaults(func=_run(_follow))

    read = add(
        "read",
        "print a job's stream as stored now",
        "Print the packets a job has stored so far (each packet's data as JSON, one per "
        "line), then its result if it has ended.",
    )
    _position(read, "every packet (as --since 0)")
    read.add_argument("job_id", type=job_id, metavar="JOB_ID")
    read.set_defaults(func=_run(_read))

    cancel = add("cancel", "cancel a queued or running job", "Cancel a queued or running job.")
    cancel.add_argument("job_id", type=job_id, metavar="JOB_ID")
    cancel.set_defaults(func=_run(_cancel))

    listing = add(
        "list",
        "list jobs, newest first",
        "List jobs matching every filter given, newest submission first.",
    )
    listing.add_argument("--state", choices=STATES, help="only jobs in this state")
    listing.add_argument("--host", type=registry_name, metavar="H", help="only jobs for this host")
    listing.add_argument(
        "--queue", type=json_object, metavar="JSON", help="only jobs of this queue"
    )
    listing.add_argument(
        "--limit",
        type=list_limit,
        default=100,
        metavar="N",
        help="most jobs to show (default: %(default)s; at most 1000)",
    )
    listing.set_defaults(func=_run(_list))
