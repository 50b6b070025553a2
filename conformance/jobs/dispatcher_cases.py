"""Conformance cases of the jobs dispatcher (``jobs/dispatcher/...``).

What the cases need from the server under test: a dispatcher target
(``--target dispatcher=tcp://HOST:3502``) and, for every case that runs a job, a host name
(``--jobs-host NAME``) that the dispatcher routes to an agent offering the conformance
procedures (``echo``, ``stream``, ``sleep``, ``fail``, ``not_json``; see
:mod:`runwire.reference_server.jobs.conformance_procedures`). Cases that need no job on a
real agent (unknown job ids, unknown hosts, malformed requests) run without
``--jobs-host``; the others SKIP with that reason.

Groups (each case id is ``jobs/dispatcher/<group>/<name>``):

- ``call``: arguments, ``info``, the two time limits, queues, unknown hosts, the reply;
- ``get_result``, ``get_status``, ``cancel``: their replies in every job state;
- ``follow_stream``, ``read_stream``: ``since``, ``recent``, their defaults, packet
  numbering, one terminator then close, concurrent followers;
- ``list_jobs``: the extension (WARN when the server does not offer it);
- ``malformed``: one error line for each kind of malformed request (the type
  ``bad_request`` is SHOULD level: it is our extension), and the server keeps serving.

Every case submits its own jobs, in queues with fresh names, and cancels at the end the
jobs it left queued or running. Time limits are whole seconds on the wire, so the four
limit cases take one to two seconds each; every other case waits only on replies.

Rules come from ``reference/jobs.md`` (HarpCaller: sections 1 and 3) and
``schemas/jobs/dispatcher.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from runwire.conformance import CaseContext, CaseFailure, CaseSet, FailureKind, Frame
from runwire.conformance.jsonlines import StreamReply

__all__ = ["CASES"]

CASES = CaseSet("jobs")

INTERFACE: Final = "dispatcher"
SCHEMA: Final = "schemas/jobs/dispatcher.json"
ERROR_REPLY: Final = "jobs/dispatcher.json#/$defs/ErrorReply"

#: Seconds a "blocker" job sleeps: long enough to outlast any case, always cancelled.
BLOCKER_S: Final = 30

# Spec references, as cases cite them.
R_TRANSPORT = "reference/jobs.md 1.1"
R_REQUESTS = "reference/jobs.md 1.2"
R_RESULTS = "reference/jobs.md 1.3"
R_STREAMS = "reference/jobs.md 1.4"
R_ERRORS = "reference/jobs.md 1.5"
R_QUEUES = "reference/jobs.md 3.1"
R_LIMITS = "reference/jobs.md 3.2"
R_READERS = "reference/jobs.md 3.5"
R_DEFECTS = "reference/jobs.md, defects of the original"


def _def(name: str) -> str:
    return f"{SCHEMA}#/$defs/{name}"


def _show(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=repr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unknown_id() -> str:
    """A fresh UUIDv4: no dispatcher knows it."""
    return str(uuid.uuid4())


def _queue_name(label: str) -> dict[str, str]:
    """A queue name no other run uses."""
    return {"runwire-conformance": label, "run": uuid.uuid4().hex}


def _is_uuid4(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return False
    return parsed.version == 4 and str(parsed) == value


def _error_type(reply: Any) -> Any:
    if isinstance(reply, Mapping) and isinstance(reply.get("error"), Mapping):
        return reply["error"].get("type")
    return None


def _is_outcome(reply: Any) -> bool:
    """True for a job outcome line (result, exception, cancelled, error)."""
    return isinstance(reply, Mapping) and bool(
        {"result", "exception", "cancelled", "error"} & set(reply)
    )


@dataclass(frozen=True)
class _Read:
    """A read_stream reply with a short repr (for poll's timeout message)."""

    reply: StreamReply

    def __repr__(self) -> str:
        return f"read_stream sent {_show([*self.reply.items, self.reply.terminator])}"


class Jobs:
    """The dispatcher requests a case makes, each on its own recording connection.

    It remembers the jobs it submitted, so that :meth:`cleanup` cancels those a case
    leaves queued or running. ``last`` is the frame of the last reply (for ``frame=``).
    """

    def __init__(self, ctx: CaseContext, host: str | None) -> None:
        self.ctx = ctx
        self._host = host
        self.last: Frame | None = None
        self._submitted: list[str] = []
        self._ended: set[str] = set()

    @property
    def host(self) -> str:
        """The ``--jobs-host`` name (the case asked for it)."""
        assert self._host is not None, "this case runs without --jobs-host"
        return self._host

    # -- requests ----------------------------------------------------------------------

    async def request(self, operation: str, request: Any) -> Any:
        """One request-reply exchange; the reply is validated against the operation's
        reply schema."""
        async with await self.ctx.open_jsonlines(INTERFACE) as conn:
            try:
                return await conn.request_reply(operation, request)
            finally:
                self.last = conn.last_received

    def track(self, reply: Any) -> None:
        """Remember the job a call reply names, for :meth:`cleanup`."""
        if isinstance(reply, Mapping) and isinstance(reply.get("job_id"), str):
            self._submitted.append(reply["job_id"])

    async def call(self, request: Mapping[str, Any]) -> Any:
        """Send a call request as given; return the reply (a job id or an error)."""
        reply = await self.request("call", dict(request))
        self.track(reply)
        return reply

    async def submit(
        self, procedure: str, arguments: Any, *, host: str | None = None, **options: Any
    ) -> str:
        """Submit a job on the ``--jobs-host`` (or `host`); return its id."""
        request = {
            "harpcaller": 1,
            "host": host or self.host,
            "procedure": procedure,
            "arguments": arguments,
            **options,
        }
        reply = await self.call(request)
        self.ctx.check(
            isinstance(reply, Mapping) and "job_id" in reply,
            f"call of {procedure}: expected a job id, got {_show(reply)}",
            frame=self.last,
        )
        return str(reply["job_id"])

    async def blocker(self, queue: Mapping[str, Any] | None = None, **options: Any) -> str:
        """A job that runs until cancelled (``sleep`` of BLOCKER_S), optionally queued."""
        if queue is not None:
            options["queue"] = dict(queue)
        return await self.submit("sleep", [BLOCKER_S], **options)

    async def result(self, job_id: str, wait: bool | None = False) -> Any:
        """get_result; `wait` None leaves the key out."""
        request: dict[str, Any] = {"harpcaller": 1, "get_result": job_id}
        if wait is not None:
            request["wait"] = wait
        reply = await self.request("get_result", request)
        if _is_outcome(reply):
            self._ended.add(job_id)
        return reply

    async def outcome(self, job_id: str) -> Any:
        """get_result with wait true: the job's outcome line (FAIL if it is not one)."""
        reply = await self.result(job_id, wait=True)
        self.ctx.check(
            _is_outcome(reply),
            f"get_result with wait true of job {job_id}: expected the job's outcome, "
            f"got {_show(reply)}",
            frame=self.last,
        )
        return reply

    async def status(self, job_id: str) -> dict[str, Any]:
        """get_status; FAIL unless the reply is a status (not an error)."""
        reply = await self.request("get_status", {"harpcaller": 1, "get_status": job_id})
        self.ctx.check(
            isinstance(reply, dict) and "time" in reply,
            f"get_status of job {job_id}: expected its status, got {_show(reply)}",
            frame=self.last,
        )
        return dict(reply)

    async def cancel(self, job_id: str) -> Any:
        reply = await self.request("cancel", {"harpcaller": 1, "cancel": job_id})
        if isinstance(reply, Mapping) and "cancelled" in reply:
            self._ended.add(job_id)
        return reply

    async def stream(self, operation: str, job_id: str, **options: Any) -> StreamReply:
        """follow_stream or read_stream: packets, exactly one terminator, then the server
        must close the connection."""
        request = {"harpcaller": 1, operation: job_id, **options}
        async with await self.ctx.open_jsonlines(INTERFACE) as conn:
            try:
                reply = await conn.request_stream(operation, request)
                await conn.expect_closed(what=f"the {operation} terminator")
            finally:
                self.last = conn.last_received
        return reply

    # -- waiting -------------------------------------------------------------------------

    async def wait_running(self, job_id: str) -> dict[str, Any]:
        """Poll get_status until the job has started; FAIL if it ended instead."""
        status = await self.ctx.poll(
            lambda: self.status(job_id),
            lambda s: s["time"].get("start") is not None or s["time"].get("end") is not None,
            f"job {job_id} has started",
        )
        self.ctx.check(
            status["time"].get("end") is None,
            f"job {job_id} was expected to be running, but it ended: {_show(status)}",
            frame=self.last,
        )
        return status

    async def wait_packets(self, job_id: str, count: int) -> StreamReply:
        """Poll read_stream until the job has stored at least `count` packets."""
        read = await self.ctx.poll(
            lambda: self._read(job_id),
            lambda read: len(read.reply.items) >= count,
            f"job {job_id} has stored {count} packet(s)",
        )
        return read.reply

    async def _read(self, job_id: str) -> _Read:
        return _Read(await self.stream("read_stream", job_id))

    # -- cleanup -------------------------------------------------------------------------

    async def cleanup(self) -> None:
        """Cancel the submitted jobs not seen to end (best effort, never judged)."""
        pending = [job for job in self._submitted if job not in self._ended]
        task = asyncio.current_task()
        if not pending or (task is not None and task.cancelling()):
            return
        self.ctx.log(f"cleanup: cancelling {len(pending)} job(s) this case left behind")
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.ctx.timeout_s):
                for job_id in pending:
                    await self.cancel(job_id)


@contextlib.asynccontextmanager
async def jobs(ctx: CaseContext, *, needs_host: bool = True) -> AsyncIterator[Jobs]:
    """A :class:`Jobs` for a case; SKIP when `needs_host` and ``--jobs-host`` is missing.
    Jobs left queued or running are cancelled when the block ends."""
    host = ctx.require_option("jobs_host") if needs_host else None
    session = Jobs(ctx, host)
    try:
        yield session
    finally:
        await session.cleanup()


def check_packets(ctx: CaseContext, reply: StreamReply, expected: list[int], what: str) -> None:
    """The stream's packets are numbered `expected`, and (for the ``stream`` procedure,
    which streams 0, 1, 2...) each packet's data is its number."""
    numbers = [item.get("packet") for item in reply.items]
    if numbers != expected:
        bad = next(
            (i for i, (a, b) in enumerate(zip(numbers, expected, strict=False)) if a != b),
            min(len(numbers), len(expected)),
        )
        frame = reply.frames[bad] if bad < len(reply.frames) else None
        ctx.fail(
            f"{what}: expected packets {_span(expected)}, got {_span_of(numbers)}",
            frame=frame,
        )
    for index, item in enumerate(reply.items):
        ctx.check(
            item.get("data") == item.get("packet"),
            f"{what}: packet {item.get('packet')} of the stream procedure carries "
            f"{_show(item.get('data'))}, expected {item.get('packet')}",
            frame=reply.frames[index],
        )


def _span(numbers: list[int]) -> str:
    if not numbers:
        return "none"
    if numbers == list(range(numbers[0], numbers[0] + len(numbers))) and len(numbers) > 3:
        return f"{numbers[0]}..{numbers[-1]}"
    return ", ".join(map(str, numbers))


def _span_of(numbers: list[Any]) -> str:
    if all(isinstance(n, int) for n in numbers):
        return _span(numbers)
    return _show(numbers)


def check_terminator(ctx: CaseContext, reply: StreamReply, expected: Any, what: str) -> None:
    """The stream ended with exactly `expected` (a dict compared whole, or a predicate)."""
    terminator = reply.terminator
    holds = expected(terminator) if callable(expected) else terminator == expected
    ctx.check(
        holds,
        f"{what}: expected the terminator {_describe(expected)}, got {_show(terminator)}",
        frame=reply.frames[-1] if reply.frames else None,
    )


def _describe(expected: Any) -> str:
    if callable(expected):
        return str(getattr(expected, "__doc__", None) or "as specified")
    return _show(expected)


def error_of(kind: str, message: str | None = None) -> Callable[[Any], bool]:
    """A predicate: an error line of type `kind` (and exactly `message`, when given)."""

    def check(line: Any) -> bool:
        if _error_type(line) != kind:
            return False
        return message is None or line["error"].get("message") == message

    check.__doc__ = f'{{"error": {{"type": "{kind}"' + (
        f', "message": "{message}"}}}}' if message is not None else ", ...}}"
    )
    return check


def check_outcome(ctx: CaseContext, jobs: Jobs, reply: Any, expected: Any, what: str) -> None:
    """A get_result reply is `expected` (a value compared whole, or a predicate)."""
    holds = expected(reply) if callable(expected) else reply == expected
    ctx.check(holds, f"{what}: expected {_describe(expected)}, got {_show(reply)}", frame=jobs.last)


# ======================================================================================
# call
# ======================================================================================

call = CASES.under("jobs/dispatcher/call")


@call.case(
    "returns-job-id",
    "a call is answered with {harpcaller: 1, job_id} where job_id is a fresh lowercase "
    "UUIDv4, then the connection closes",
    references=(R_TRANSPORT, R_REQUESTS, _def("CallReply")),
)
async def call_returns_job_id(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        request = {"harpcaller": 1, "host": session.host, "procedure": "echo", "arguments": []}
        ids = []
        for _ in range(2):
            async with await ctx.open_jsonlines(INTERFACE) as conn:
                reply = await conn.request_reply("call", request)
                session.track(reply)
                ctx.check(
                    "job_id" in reply,
                    f"expected a job id, got {_show(reply)}",
                    frame=conn.last_received,
                )
                await conn.expect_closed(what="the call reply")
            ctx.check(
                reply.get("harpcaller") == 1,
                f"the call reply must carry harpcaller 1: {_show(reply)}",
                frame=conn.last_received,
            )
            ctx.check(
                _is_uuid4(reply["job_id"]),
                f"job id {reply['job_id']!r} is not a lowercase UUIDv4",
                frame=conn.last_received,
            )
            ids.append(reply["job_id"])
        ctx.check(ids[0] != ids[1], f"two calls got the same job id {ids[0]}")


@call.case(
    "reply-is-immediate",
    "the call reply comes at once, before the job ends: a job that sleeps for 30 s is "
    "answered with its id, and reads no_result right after",
    references=(R_REQUESTS, _def("CallRequest")),
)
async def call_reply_is_immediate(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        job = await session.blocker()
        reply = await session.result(job, wait=False)
        check_outcome(ctx, session, reply, {"no_result": True}, f"get_result of job {job}")


@call.case(
    "positional-arguments",
    "arguments given as a list reach the procedure as positional arguments, and the "
    "result comes back verbatim (echo)",
    references=(R_REQUESTS, R_RESULTS, _def("CallRequest")),
)
async def call_positional_arguments(ctx: CaseContext) -> None:
    arguments = [1, "a", {"b": [None, True]}, 2.5, []]
    async with jobs(ctx) as session:
        job = await session.submit("echo", arguments)
        reply = await session.outcome(job)
        check_outcome(ctx, session, reply, {"result": arguments}, f"echo{_show(arguments)}")
        empty = await session.outcome(await session.submit("echo", []))
        check_outcome(ctx, session, empty, {"result": []}, "echo with no arguments")


@call.case(
    "named-arguments",
    "arguments given as an object reach the procedure as keyword arguments (echo returns "
    "them as an object)",
    references=(R_REQUESTS, _def("CallRequest")),
)
async def call_named_arguments(ctx: CaseContext) -> None:
    arguments = {"x": 1, "y": "z", "nested": {"k": [1, 2]}}
    async with jobs(ctx) as session:
        reply = await session.outcome(await session.submit("echo", arguments))
        check_outcome(ctx, session, reply, {"result": arguments}, f"echo({_show(arguments)})")


@call.case(
    "info-round-trip",
    "info is stored verbatim and returned by get_status; without info (or with null) "
    "get_status says null",
    references=(R_REQUESTS, _def("CallRequest"), _def("StatusReply")),
    exercises=["jobs/dispatcher/get_status"],
)
async def call_info_round_trip(ctx: CaseContext) -> None:
    info: Any = {"who": "conformance", "list": [1, 2.5, None, "ü"], "nested": {"empty": {}}}
    async with jobs(ctx) as session:
        for given, expected in ((info, info), ("just a string", "just a string"), (None, None)):
            options: dict[str, Any] = {} if given is None else {"info": given}
            job = await session.submit("echo", [], **options)
            status = await session.status(job)
            ctx.check(
                "info" in status and status["info"] == expected,
                f"job submitted with info {_show(given)}: get_status says info "
                f"{_show(status.get('info'))}, expected {_show(expected)}",
                frame=session.last,
            )
        job = await session.submit("echo", [], info=None)
        status = await session.status(job)
        ctx.check(
            status.get("info") is None,
            f"job submitted with info null: get_status says {_show(status.get('info'))}",
            frame=session.last,
        )


@call.case(
    "timeout",
    "timeout is the idle limit: a procedure silent for longer (sleep 5 with timeout 1) "
    'ends with {"error": {"type": "timeout", "message": "reading result timed out"}}',
    references=(R_LIMITS, R_ERRORS, _def("CallRequest"), _def("DispatcherErrorType")),
)
async def call_timeout(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        job = await session.submit("sleep", [5], timeout=1)
        reply = await session.outcome(job)
        check_outcome(
            ctx,
            session,
            reply,
            error_of("timeout", "reading result timed out"),
            f"sleep 5 with timeout 1 (job {job})",
        )


@call.case(
    "timeout-is-idle-time",
    "timeout bounds the time between packets, not the whole run: stream(4, 0.4 s) with "
    "timeout 1 runs about 1.2 s and still ends with its result",
    references=(R_LIMITS, _def("CallRequest")),
)
async def call_timeout_is_idle_time(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        job = await session.submit("stream", [4, 0.4], timeout=1)
        reply = await session.outcome(job)
        check_outcome(
            ctx, session, reply, {"result": 4}, f"stream(4, 0.4) with timeout 1 (job {job})"
        )


@call.case(
    "max-exec-time",
    "max_exec_time bounds the whole run even while packets keep coming: stream(40, "
    '0.05 s) with max_exec_time 1 ends with {"error": {"type": "timeout", "message": '
    '"maximum execution time exceeded"}} and keeps the packets streamed so far',
    references=(R_LIMITS, R_ERRORS, R_DEFECTS + " 4", _def("CallRequest")),
    exercises=["jobs/dispatcher/read_stream"],
)
async def call_max_exec_time(ctx: CaseContext) -> None:
    expected = error_of("timeout", "maximum execution time exceeded")
    async with jobs(ctx) as session:
        job = await session.submit("stream", [40, 0.05], max_exec_time=1)
        reply = await session.outcome(job)
        what = f"stream(40, 0.05) with max_exec_time 1 (job {job})"
        check_outcome(ctx, session, reply, expected, what)
        stored = await session.stream("read_stream", job)
        check_terminator(ctx, stored, expected, f"read_stream of {what}")
        count = len(stored.items)
        ctx.check(
            0 < count < 40,
            f"{what}: expected some but not all 40 packets stored, got {count}",
            frame=stored.frames[-1],
        )
        check_packets(ctx, stored, list(range(count)), f"read_stream of {what}")


@call.case(
    "limits-count-from-start",
    "the time limits count from the job's start, not its submission: a job with timeout "
    "1 and max_exec_time 1 that waits 1.5 s in its queue still runs to its result",
    references=(R_LIMITS, _def("CallRequest")),
)
async def call_limits_count_from_start(ctx: CaseContext) -> None:
    queue = {"name": _queue_name("limits-from-start"), "concurrency": 1}
    async with jobs(ctx) as session:
        first = await session.blocker(queue)
        waiting = await session.submit("echo", ["waited"], queue=queue, timeout=1, max_exec_time=1)
        await session.wait_running(first)
        # Not synchronisation: the queued job's limits must have run out, were they counted
        # from its submission.
        await asyncio.sleep(1.5)
        status = await session.status(waiting)
        ctx.check(
            status["time"].get("start") is None,
            f"job {waiting} started while job {first} held its concurrency-1 queue: "
            f"{_show(status)}",
            frame=session.last,
        )
        await session.cancel(first)
        reply = await session.outcome(waiting)
        check_outcome(
            ctx, session, reply, {"result": ["waited"]}, f"queued job {waiting} once started"
        )


@call.case(
    "queue-serialises",
    "a queue of concurrency 1 runs one job at a time: the second job stays queued "
    "(no_result, start null) while the first runs, and runs once it ends",
    references=(R_QUEUES, _def("QueueSpec")),
)
async def call_queue_serialises(ctx: CaseContext) -> None:
    queue = {"name": _queue_name("serialises"), "concurrency": 1}
    async with jobs(ctx) as session:
        first = await session.blocker(queue)
        second = await session.submit("echo", ["second"], queue=queue)
        await session.wait_running(first)
        status = await session.status(second)
        ctx.check(
            status["time"].get("start") is None and status["time"].get("end") is None,
            f"job {second} should wait while job {first} runs in their concurrency-1 queue, "
            f"but get_status says {_show(status['time'])}",
            frame=session.last,
        )
        reply = await session.result(second)
        check_outcome(ctx, session, reply, {"no_result": True}, f"queued job {second}")
        await session.cancel(first)
        reply = await session.outcome(second)
        check_outcome(ctx, session, reply, {"result": ["second"]}, f"job {second}")
        ended = (await session.status(first))["time"].get("end")
        started = (await session.status(second))["time"].get("start")
        ctx.check(
            isinstance(ended, int) and isinstance(started, int) and started >= ended,
            f"job {second} started at {started}, before job {first} ended at {ended}",
            frame=session.last,
        )


@call.case(
    "queue-fifo",
    "a queue of concurrency 1 starts its jobs in submission order (FIFO)",
    references=(R_QUEUES, _def("QueueSpec")),
    exercises=["jobs/dispatcher/cancel"],
)
async def call_queue_fifo(ctx: CaseContext) -> None:
    queue = {"name": _queue_name("fifo"), "concurrency": 1}
    async with jobs(ctx) as session:
        order = [await session.blocker(queue) for _ in range(4)]
        for position, job in enumerate(order):
            await session.wait_running(job)
            for later in order[position + 1 :]:
                status = await session.status(later)
                ctx.check(
                    status["time"].get("start") is None,
                    f"job #{order.index(later) + 1} ({later}) started while job "
                    f"#{position + 1} ({job}), submitted before it, runs: the queue is not "
                    f"FIFO or not serialised ({_show(status['time'])})",
                    frame=session.last,
                )
            await session.cancel(job)


@call.case(
    "queue-concurrency-fixed-by-first-job",
    "a queue's concurrency is the first job's: a later job asking for 2 in a queue made "
    "with 1 still waits, and a later job asking for 1 in a queue made with 2 runs at once",
    references=(R_QUEUES, _def("QueueSpec")),
)
async def call_queue_concurrency_fixed(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        narrow = _queue_name("fixed-1")
        first = await session.blocker({"name": narrow, "concurrency": 1})
        wider = await session.blocker({"name": narrow, "concurrency": 2})
        await session.wait_running(first)
        status = await session.status(wider)
        ctx.check(
            status["time"].get("start") is None,
            f"job {wider} asked for concurrency 2 in a queue made with 1 and started while "
            f"job {first} runs: later concurrency values must be ignored",
            frame=session.last,
        )
        wide = _queue_name("fixed-2")
        a = await session.blocker({"name": wide, "concurrency": 2})
        b = await session.blocker({"name": wide, "concurrency": 1})
        await session.wait_running(a)
        await session.wait_running(b)  # FAILs by timeout if b waits for a


@call.case(
    "queue-name-canonical",
    "queue names are JSON objects compared as canonical JSON: the same keys in another "
    "order name the same queue",
    references=(R_QUEUES, _def("QueueSpec")),
)
async def call_queue_name_canonical(ctx: CaseContext) -> None:
    run = uuid.uuid4().hex
    async with jobs(ctx) as session:
        first = await session.blocker({"name": {"run": run, "k": [1, 2]}, "concurrency": 1})
        second = await session.blocker({"name": {"k": [1, 2], "run": run}})
        await session.wait_running(first)
        status = await session.status(second)
        ctx.check(
            status["time"].get("start") is None,
            f"job {second} (queue name with the keys in another order) started while job "
            f"{first} holds the same concurrency-1 queue",
            frame=session.last,
        )


@call.case(
    "queue-recreated-when-idle",
    "a queue whose jobs have all ended is deleted: the next job that names it creates it "
    "anew with its own concurrency",
    references=(R_QUEUES, _def("QueueSpec")),
)
async def call_queue_recreated_when_idle(ctx: CaseContext) -> None:
    name = _queue_name("recreated")
    async with jobs(ctx) as session:
        first = await session.submit("echo", [], queue={"name": name, "concurrency": 1})
        await session.outcome(first)
        a = await session.blocker({"name": name, "concurrency": 2})
        b = await session.blocker({"name": name, "concurrency": 2})
        await session.wait_running(a)
        await session.wait_running(b)  # FAILs by timeout if the old queue (1) lives on


@call.case(
    "null-options",
    "null for timeout, max_exec_time, queue and info means the key was not given: the job "
    "runs at once to its result and its info reads null",
    references=(R_REQUESTS, _def("CallRequest")),
)
async def call_null_options(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        job = await session.submit(
            "echo", ["nulls"], timeout=None, max_exec_time=None, queue=None, info=None
        )
        reply = await session.outcome(job)
        check_outcome(ctx, session, reply, {"result": ["nulls"]}, f"job {job} with null options")
        status = await session.status(job)
        ctx.check(
            status.get("info") is None,
            f"job {job} submitted with info null: get_status says {_show(status.get('info'))}",
            frame=session.last,
        )


@call.case(
    "unknown-host",
    "a call naming a host the dispatcher does not know is still answered with a job id; "
    'the job ends with {"error": {"type": "unknown_host"}}',
    references=(R_REQUESTS, R_ERRORS, _def("DispatcherErrorType")),
)
async def call_unknown_host(ctx: CaseContext) -> None:
    host = f"runwire-no-such-host-{uuid.uuid4().hex[:12]}.invalid"
    async with jobs(ctx, needs_host=False) as session:
        reply = await session.call(
            {"harpcaller": 1, "host": host, "procedure": "echo", "arguments": []}
        )
        ctx.check(
            isinstance(reply, Mapping) and "job_id" in reply,
            f"a call to unknown host {host} must be answered with a job id (the host is "
            f"looked up later), got {_show(reply)}",
            frame=session.last,
        )
        job = reply["job_id"]
        outcome = await session.outcome(job)
        check_outcome(ctx, session, outcome, error_of("unknown_host"), f"job {job} on {host}")


# ======================================================================================
# get_result
# ======================================================================================

get_result = CASES.under("jobs/dispatcher/get_result")


@get_result.case(
    "wait",
    "get_result with wait true is answered when the job ends, with its result",
    references=(R_REQUESTS, R_RESULTS, _def("GetResultRequest")),
)
async def get_result_wait(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        job = await session.submit("sleep", [0.5])
        reply = await session.result(job, wait=True)
        check_outcome(ctx, session, reply, {"result": 0.5}, f"sleep 0.5 (job {job})")


@get_result.case(
    "no-wait-unfinished",
    'get_result with wait false of a queued and of a running job is {"no_result": true}',
    references=(R_REQUESTS, R_RESULTS, _def("NoResultReply")),
)
async def get_result_no_wait_unfinished(ctx: CaseContext) -> None:
    queue = {"name": _queue_name("no-wait"), "concurrency": 1}
    async with jobs(ctx) as session:
        running = await session.blocker(queue)
        queued = await session.blocker(queue)
        await session.wait_running(running)
        for job, state in ((running, "running"), (queued, "queued")):
            reply = await session.result(job, wait=False)
            check_outcome(ctx, session, reply, {"no_result": True}, f"{state} job {job}")


@get_result.case(
    "no-wait-finished",
    "get_result with wait false gives the result once the job has ended",
    references=(R_REQUESTS, R_RESULTS, _def("ResultReply")),
)
async def get_result_no_wait_finished(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        job = await session.submit("echo", ["done"])
        reply = await ctx.poll(
            lambda: session.result(job, wait=False),
            lambda r: r != {"no_result": True},
            f"job {job} has ended",
        )
        check_outcome(ctx, session, reply, {"result": ["done"]}, f"echo (job {job})")


@get_result.case(
    "missing-wait-means-false",
    "get_result without the wait key does not wait: a running job reads no_result at once",
    references=(R_REQUESTS, _def("GetResultRequest")),
)
async def get_result_missing_wait(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        job = await session.blocker()
        await session.wait_running(job)
        reply = await session.result(job, wait=None)
        check_outcome(ctx, session, reply, {"no_result": True}, f"running job {job}")


@get_result.case(
    "exception",
    "a procedure that raises ends its job with an exception line carrying the type and "
    'message (fail("...") raises RuntimeError)',
    references=(R_RESULTS, _def("ExceptionReply")),
)
async def get_result_exception(ctx: CaseContext) -> None:
    message = "conformance says boom"
    async with jobs(ctx) as session:
        job = await session.submit("fail", [message])
        reply = await session.outcome(job)
        exception = reply.get("exception") if isinstance(reply, Mapping) else None
        ctx.check(
            isinstance(exception, Mapping)
            and exception.get("type") == "RuntimeError"
            and exception.get("message") == message,
            f"fail({message!r}) (job {job}): expected "
            f'{{"exception": {{"type": "RuntimeError", "message": "{message}", ...}}}}, '
            f"got {_show(reply)}",
            frame=session.last,
        )


@get_result.case(
    "agent-error",
    "an error the agent reports is passed through as the job's error: not_json() "
    'ends with {"error": {"type": "invalid_message"}}',
    references=(R_ERRORS, _def("DispatcherErrorType")),
)
async def get_result_agent_error(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        job = await session.submit("not_json", [])
        reply = await session.outcome(job)
        check_outcome(ctx, session, reply, error_of("invalid_message"), f"not_json (job {job})")


@get_result.case(
    "unknown-job",
    'get_result of an unknown job id: {"error": {"type": "invalid_jobid"}}',
    references=(R_REQUESTS, _def("ErrorReply")),
)
async def get_result_unknown_job(ctx: CaseContext) -> None:
    async with jobs(ctx, needs_host=False) as session:
        job = _unknown_id()
        for wait in (False, True):
            reply = await session.result(job, wait=wait)
            check_outcome(
                ctx, session, reply, error_of("invalid_jobid"), f"get_result (wait {wait})"
            )


# ======================================================================================
# get_status
# ======================================================================================

get_status = CASES.under("jobs/dispatcher/get_status")


@get_status.case(
    "call-summary",
    "get_status names the call as submitted: procedure, arguments and host name",
    references=(R_REQUESTS, _def("CallSummary")),
)
async def get_status_call_summary(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        for arguments in ([1, "two", None], {"named": [3]}):
            job = await session.submit("echo", arguments)
            status = await session.status(job)
            expected = {"procedure": "echo", "arguments": arguments, "host": session.host}
            ctx.check(
                status.get("call") == expected,
                f"job {job}: get_status call is {_show(status.get('call'))}, "
                f"expected {_show(expected)}",
                frame=session.last,
            )


@get_status.case(
    "times-ended",
    "an ended job's times are integer epoch seconds with submit <= start <= end",
    references=(R_REQUESTS, _def("JobTimes")),
)
async def get_status_times_ended(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        before = int(time.time())
        job = await session.submit("echo", [])
        await session.outcome(job)
        status = await session.status(job)
        times = status["time"]
        submit, start, end = times.get("submit"), times.get("start"), times.get("end")
        ctx.check(
            all(isinstance(t, int) for t in (submit, start, end)),
            f"job {job} has ended: submit, start and end must all be set, got {_show(times)}",
            frame=session.last,
        )
        ctx.check(
            submit <= start <= end,
            f"job {job}: expected submit <= start <= end, got {_show(times)}",
            frame=session.last,
        )
        ctx.should(
            abs(submit - before) < 24 * 3600,
            f"job {job} was submitted at {submit}, more than a day from this machine's "
            f"clock ({before}): times should be epoch seconds",
            frame=session.last,
        )


@get_status.case(
    "times-queued-and-running",
    "start is null while a job waits in its queue, end is null while it runs, and a job "
    "cancelled while queued keeps start null and gets end",
    references=(R_REQUESTS, _def("JobTimes")),
    exercises=["jobs/dispatcher/cancel"],
)
async def get_status_times_live(ctx: CaseContext) -> None:
    queue = {"name": _queue_name("times"), "concurrency": 1}
    async with jobs(ctx) as session:
        running = await session.blocker(queue)
        queued = await session.blocker(queue)
        await session.wait_running(running)
        times = (await session.status(running))["time"]
        ctx.check(
            isinstance(times.get("start"), int)
            and times.get("end") is None
            and times["start"] >= times.get("submit", 0),
            f"running job {running}: expected start set (>= submit) and end null, "
            f"got {_show(times)}",
            frame=session.last,
        )
        times = (await session.status(queued))["time"]
        ctx.check(
            isinstance(times.get("submit"), int)
            and times.get("start") is None
            and times.get("end") is None,
            f"queued job {queued}: expected submit set, start and end null, got {_show(times)}",
            frame=session.last,
        )
        await session.cancel(queued)
        times = (await session.status(queued))["time"]
        ctx.check(
            times.get("start") is None and isinstance(times.get("end"), int),
            f"job {queued} cancelled while queued: expected start null and end set, "
            f"got {_show(times)}",
            frame=session.last,
        )


@get_status.case(
    "state",
    "the state extension, when present, follows the job: queued, running, finished, "
    "failed, cancelled (WARN when the server does not send it)",
    references=(R_DEFECTS + " 12", _def("JobState"), _def("StatusReply")),
)
async def get_status_state(ctx: CaseContext) -> None:
    queue = {"name": _queue_name("state"), "concurrency": 1}
    async with jobs(ctx) as session:
        running = await session.blocker(queue)
        queued = await session.blocker(queue)
        status = await session.wait_running(running)
        if not ctx.should(
            "state" in status,
            "get_status has no state field (an extension: SHOULD be sent)",
            frame=session.last,
        ):
            return

        async def expect(job: str, state: str) -> None:
            got = (await session.status(job)).get("state")
            ctx.check(
                got == state,
                f"job {job} should be in state {state!r}, get_status says {got!r}",
                frame=session.last,
            )

        await expect(running, "running")
        await expect(queued, "queued")
        await session.cancel(queued)
        await expect(queued, "cancelled")
        await session.cancel(running)
        await expect(running, "cancelled")
        finished = await session.submit("echo", [])
        await session.outcome(finished)
        await expect(finished, "finished")
        failed = await session.submit("fail", ["state"])
        await session.outcome(failed)
        await expect(failed, "failed")


@get_status.case(
    "unknown-job",
    'get_status of an unknown job id: {"error": {"type": "invalid_jobid"}}',
    references=(R_REQUESTS, _def("GetStatusReply")),
)
async def get_status_unknown_job(ctx: CaseContext) -> None:
    async with jobs(ctx, needs_host=False) as session:
        reply = await session.request("get_status", {"harpcaller": 1, "get_status": _unknown_id()})
        check_outcome(ctx, session, reply, error_of("invalid_jobid"), "get_status")


# ======================================================================================
# cancel
# ======================================================================================

cancel = CASES.under("jobs/dispatcher/cancel")


@cancel.case(
    "queued",
    'cancel of a queued job answers {"cancelled": true}; the job then reads '
    '{"cancelled": true} and never starts',
    references=(R_REQUESTS, _def("CancelReply"), _def("CancelledReply")),
)
async def cancel_queued(ctx: CaseContext) -> None:
    queue = {"name": _queue_name("cancel-queued"), "concurrency": 1}
    async with jobs(ctx) as session:
        running = await session.blocker(queue)
        queued = await session.submit("echo", ["never"], queue=queue)
        await session.wait_running(running)
        reply = await session.cancel(queued)
        check_outcome(ctx, session, reply, {"cancelled": True}, f"cancel of queued job {queued}")
        reply = await session.result(queued, wait=True)
        check_outcome(ctx, session, reply, {"cancelled": True}, f"cancelled job {queued}")
        await session.cancel(running)
        status = await session.status(queued)
        ctx.check(
            status["time"].get("start") is None,
            f"job {queued} was cancelled while queued but started later: {_show(status)}",
            frame=session.last,
        )


@cancel.case(
    "running",
    'cancel of a running job answers {"cancelled": true}; its result and its stream '
    'terminator are then {"cancelled": true}',
    references=(R_REQUESTS, R_STREAMS, _def("CancelReply"), _def("CancelledReply")),
    exercises=["jobs/dispatcher/get_result", "jobs/dispatcher/read_stream"],
)
async def cancel_running(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        job = await session.blocker()
        await session.wait_running(job)
        reply = await session.cancel(job)
        check_outcome(ctx, session, reply, {"cancelled": True}, f"cancel of running job {job}")
        reply = await session.result(job, wait=True)
        check_outcome(ctx, session, reply, {"cancelled": True}, f"cancelled job {job}")
        stream = await session.stream("read_stream", job)
        check_terminator(ctx, stream, {"cancelled": True}, f"read_stream of cancelled job {job}")
        status = await session.status(job)
        ctx.check(
            isinstance(status["time"].get("end"), int),
            f"cancelled job {job} has no end time: {_show(status['time'])}",
            frame=session.last,
        )


@cancel.case(
    "finished",
    'cancel of a job that has ended answers {"cancelled": false} and leaves its result',
    references=(R_REQUESTS, _def("CancelReply")),
)
async def cancel_finished(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        job = await session.submit("echo", ["kept"])
        await session.outcome(job)
        reply = await session.cancel(job)
        check_outcome(ctx, session, reply, {"cancelled": False}, f"cancel of ended job {job}")
        reply = await session.result(job)
        check_outcome(ctx, session, reply, {"result": ["kept"]}, f"job {job} after the cancel")


@cancel.case(
    "unknown-job",
    'cancel of an unknown job id: {"error": {"type": "invalid_jobid"}} (the original '
    "answers false)",
    references=(R_REQUESTS, _def("CancelOrErrorReply")),
)
async def cancel_unknown_job(ctx: CaseContext) -> None:
    async with jobs(ctx, needs_host=False) as session:
        reply = await session.cancel(_unknown_id())
        check_outcome(ctx, session, reply, error_of("invalid_jobid"), "cancel")


# ======================================================================================
# follow_stream
# ======================================================================================

follow = CASES.under("jobs/dispatcher/follow_stream")

STREAM_COUNT: Final = 5


async def _finished_stream(session: Jobs, count: int = STREAM_COUNT) -> str:
    """A job of ``stream(count)`` that has ended with result `count`."""
    job = await session.submit("stream", [count])
    reply = await session.outcome(job)
    check_outcome(session.ctx, session, reply, {"result": count}, f"stream({count}) job {job}")
    return job


@follow.case(
    "live",
    "following a job from since 0 while it streams gives every packet, numbered 0, 1, "
    "2... without gaps, then exactly one terminator (its result), then the close",
    references=(R_STREAMS, _def("StreamPacket"), _def("FollowStreamTerminator")),
)
async def follow_live(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        job = await session.submit("stream", [10, 0.05])
        reply = await session.stream("follow_stream", job, since=0)
        check_packets(ctx, reply, list(range(10)), f"follow_stream of job {job}")
        check_terminator(ctx, reply, {"result": 10}, f"follow_stream of job {job}")


@follow.case(
    "since",
    "follow_stream with since N replays from packet N",
    references=(R_STREAMS, _def("FollowStreamRequest")),
)
async def follow_since(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        job = await _finished_stream(session)
        reply = await session.stream("follow_stream", job, since=2)
        check_packets(ctx, reply, [2, 3, 4], f"follow_stream since 2 of job {job}")
        check_terminator(ctx, reply, {"result": STREAM_COUNT}, "follow_stream since 2")


@follow.case(
    "recent",
    "follow_stream with recent N replays the last N packets (all of them when N is more "
    "than were stored)",
    references=(R_STREAMS, _def("FollowStreamRequest")),
)
async def follow_recent(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        job = await _finished_stream(session)
        for recent, expected in ((2, [3, 4]), (0, []), (10, [0, 1, 2, 3, 4])):
            reply = await session.stream("follow_stream", job, recent=recent)
            what = f"follow_stream recent {recent} of job {job}"
            check_packets(ctx, reply, expected, what)
            check_terminator(ctx, reply, {"result": STREAM_COUNT}, what)


@follow.case(
    "default-recent-zero",
    "follow_stream without since or recent sends only new packets (as recent 0): none for "
    "a job that has ended",
    references=(R_STREAMS, _def("FollowStreamRequest")),
)
async def follow_default(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        job = await _finished_stream(session)
        reply = await session.stream("follow_stream", job)
        check_packets(ctx, reply, [], f"follow_stream of ended job {job} without since/recent")
        check_terminator(ctx, reply, {"result": STREAM_COUNT}, "follow_stream")


@follow.case(
    "since-beyond-end",
    "follow_stream with since past the last packet of an ended job: no packets, one terminator",
    references=(R_STREAMS, _def("FollowStreamRequest")),
)
async def follow_since_beyond_end(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        job = await _finished_stream(session)
        reply = await session.stream("follow_stream", job, since=STREAM_COUNT + 5)
        check_packets(ctx, reply, [], f"follow_stream since {STREAM_COUNT + 5} of job {job}")
        check_terminator(ctx, reply, {"result": STREAM_COUNT}, "follow_stream beyond the end")


@follow.case(
    "concurrent-followers",
    "three clients following one job at once all see the same packets, in order, and the "
    "same terminator",
    references=(R_READERS, R_STREAMS),
)
async def follow_concurrent(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        job = await session.submit("stream", [10, 0.05])
        replies = await asyncio.gather(
            *(session.stream("follow_stream", job, since=0) for _ in range(3))
        )
        for number, reply in enumerate(replies, 1):
            what = f"follower {number} of job {job}"
            check_packets(ctx, reply, list(range(10)), what)
            check_terminator(ctx, reply, {"result": 10}, what)
        sequences = {_show([*r.items, r.terminator], 10_000) for r in replies}
        ctx.check(len(sequences) == 1, f"the followers of job {job} saw different streams")


@follow.case(
    "unknown-job",
    'follow_stream of an unknown job id: no packets and one terminator {"error": {"type": '
    '"invalid_jobid"}} (the original closes silently)',
    references=(R_STREAMS, R_DEFECTS + " 2", _def("FollowStreamTerminator")),
)
async def follow_unknown_job(ctx: CaseContext) -> None:
    async with jobs(ctx, needs_host=False) as session:
        reply = await session.stream("follow_stream", _unknown_id(), since=0)
        check_packets(ctx, reply, [], "follow_stream of an unknown job")
        check_terminator(ctx, reply, error_of("invalid_jobid"), "follow_stream of an unknown job")


# ======================================================================================
# read_stream
# ======================================================================================

read = CASES.under("jobs/dispatcher/read_stream")


@read.case(
    "default-since-zero",
    "read_stream without since or recent sends every stored packet (as since 0), numbered "
    "0, 1, 2... without gaps, then exactly one terminator (the result), then the close",
    references=(R_STREAMS, _def("ReadStreamRequest"), _def("StreamPacket")),
)
async def read_default(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        job = await _finished_stream(session, 20)
        reply = await session.stream("read_stream", job)
        check_packets(ctx, reply, list(range(20)), f"read_stream of job {job}")
        check_terminator(ctx, reply, {"result": 20}, f"read_stream of job {job}")


@read.case(
    "since",
    "read_stream with since N sends the stored packets from N on",
    references=(R_STREAMS, _def("ReadStreamRequest")),
)
async def read_since(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        job = await _finished_stream(session)
        for since, expected in ((0, [0, 1, 2, 3, 4]), (2, [2, 3, 4]), (4, [4])):
            reply = await session.stream("read_stream", job, since=since)
            what = f"read_stream since {since} of job {job}"
            check_packets(ctx, reply, expected, what)
            check_terminator(ctx, reply, {"result": STREAM_COUNT}, what)


@read.case(
    "recent",
    "read_stream with recent N sends the last N stored packets (all of them when N is "
    "more than were stored)",
    references=(R_STREAMS, _def("ReadStreamRequest")),
)
async def read_recent(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        job = await _finished_stream(session)
        for recent, expected in ((2, [3, 4]), (0, []), (10, [0, 1, 2, 3, 4])):
            reply = await session.stream("read_stream", job, recent=recent)
            what = f"read_stream recent {recent} of job {job}"
            check_packets(ctx, reply, expected, what)
            check_terminator(ctx, reply, {"result": STREAM_COUNT}, what)


@read.case(
    "since-beyond-end",
    "read_stream with since past the last stored packet: no packets, one terminator",
    references=(R_STREAMS, _def("ReadStreamRequest")),
)
async def read_since_beyond_end(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        job = await _finished_stream(session)
        for since in (STREAM_COUNT, STREAM_COUNT + 100):
            reply = await session.stream("read_stream", job, since=since)
            what = f"read_stream since {since} of job {job}"
            check_packets(ctx, reply, [], what)
            check_terminator(ctx, reply, {"result": STREAM_COUNT}, what)


@read.case(
    "unfinished-continue",
    'read_stream of a job that has not ended sends what is stored, then {"continue": '
    "true}: none for a job still sleeping, packet 0 for a stream that has sent only it",
    references=(R_STREAMS, _def("ContinueMarker"), _def("ReadStreamTerminator")),
)
async def read_unfinished(ctx: CaseContext) -> None:
    async with jobs(ctx) as session:
        sleeping = await session.blocker()
        await session.wait_running(sleeping)
        reply = await session.stream("read_stream", sleeping)
        check_packets(ctx, reply, [], f"read_stream of running job {sleeping}")
        check_terminator(ctx, reply, {"continue": True}, f"read_stream of job {sleeping}")
        # stream(2, 30 s): packet 0 at once, then nothing for 30 s (the case cancels it).
        streaming = await session.submit("stream", [2, BLOCKER_S])
        reply = await session.wait_packets(streaming, 1)
        check_packets(ctx, reply, [0], f"read_stream of running job {streaming}")
        check_terminator(ctx, reply, {"continue": True}, f"read_stream of job {streaming}")


@read.case(
    "unknown-job",
    'read_stream of an unknown job id: no packets and one terminator {"error": {"type": '
    '"invalid_jobid"}} (the original closes silently)',
    references=(R_STREAMS, R_DEFECTS + " 2", _def("ReadStreamTerminator")),
)
async def read_unknown_job(ctx: CaseContext) -> None:
    async with jobs(ctx, needs_host=False) as session:
        reply = await session.stream("read_stream", _unknown_id())
        check_packets(ctx, reply, [], "read_stream of an unknown job")
        check_terminator(ctx, reply, error_of("invalid_jobid"), "read_stream of an unknown job")


# ======================================================================================
# list_jobs (extension)
# ======================================================================================

list_jobs = CASES.under("jobs/dispatcher/list_jobs")


async def _list(ctx: CaseContext, session: Jobs, job_filter: dict[str, Any]) -> Any:
    """list_jobs; None (after a WARN) when the server does not offer the extension."""
    request = {"harpcaller": 1, "list_jobs": job_filter}
    async with await ctx.open_jsonlines(INTERFACE) as conn:
        try:
            reply = await conn.request_reply("list_jobs", request)
        except CaseFailure as failure:
            if failure.kind is FailureKind.PROTOCOL and conn.last_received is None:
                ctx.warn("list_jobs (an extension) is not offered: closed without a reply")
                return None
            raise
        finally:
            session.last = conn.last_received
    if _error_type(reply) == "bad_request":
        ctx.warn(f"list_jobs (an extension) is not offered: {_show(reply)}", frame=session.last)
        return None
    ctx.check(
        "jobs" in reply, f"list_jobs: expected a job list, got {_show(reply)}", frame=session.last
    )
    return reply


@list_jobs.case(
    "by-queue",
    "list_jobs filtered by queue lists exactly the jobs of that queue, with their call, "
    "times, state, queue and info (WARN when the extension is not offered)",
    references=("reference/jobs.md, additive extensions", _def("ListJobsRequest"), _def("JobList")),
)
async def list_by_queue(ctx: CaseContext) -> None:
    name = _queue_name("list")
    async with jobs(ctx) as session:
        job = await session.submit("echo", [7], queue={"name": name}, info={"listed": True})
        await session.outcome(job)
        reply = await _list(ctx, session, {"queue": name})
        if reply is None:
            return
        rows = reply["jobs"]
        ctx.check(
            [row.get("job_id") for row in rows] == [job] and reply.get("truncated") is False,
            f"list_jobs of queue {_show(name)}: expected only job {job}, not truncated, "
            f"got {_show(reply)}",
            frame=session.last,
        )
        row = rows[0]
        expected = {
            "call": {"procedure": "echo", "arguments": [7], "host": session.host},
            "state": "finished",
            "queue": name,
            "info": {"listed": True},
        }
        got = {key: row.get(key) for key in expected}
        ctx.check(
            got == expected,
            f"list_jobs row of job {job}: expected {_show(expected)}, got {_show(got)}",
            frame=session.last,
        )
        ctx.check(
            isinstance(row["time"].get("end"), int),
            f"list_jobs row of ended job {job} has no end time: {_show(row['time'])}",
            frame=session.last,
        )


@list_jobs.case(
    "limit",
    "list_jobs returns at most limit jobs, newest submission first, and says truncated "
    "when more matched (WARN when the extension is not offered)",
    references=("reference/jobs.md, additive extensions", _def("JobFilter"), _def("JobList")),
)
async def list_limit(ctx: CaseContext) -> None:
    name = _queue_name("list-limit")
    async with jobs(ctx) as session:
        older = await session.submit("echo", [1], queue={"name": name})
        newer = await session.submit("echo", [2], queue={"name": name})
        reply = await _list(ctx, session, {"queue": name, "limit": 1})
        if reply is None:
            return
        ids = [row.get("job_id") for row in reply["jobs"]]
        ctx.check(
            len(ids) == 1 and ids[0] in (older, newer) and reply.get("truncated") is True,
            f"list_jobs with limit 1 of a queue of two jobs: expected one of them and "
            f"truncated true, got {_show(reply)}",
            frame=session.last,
        )
        ctx.should(
            ids == [newer],
            f"list_jobs should list the newest submission ({newer}) first, listed {ids}",
            frame=session.last,
        )
        reply = await _list(ctx, session, {"queue": name, "limit": 2})
        if reply is None:
            return
        ids = [row.get("job_id") for row in reply["jobs"]]
        ctx.check(
            sorted(ids) == sorted([older, newer]) and reply.get("truncated") is False,
            f"list_jobs with limit 2 of a queue of two jobs: expected both, not truncated, "
            f"got {_show(reply)}",
            frame=session.last,
        )


# ======================================================================================
# malformed requests
# ======================================================================================

malformed = CASES.under("jobs/dispatcher/malformed")

#: A job id in canonical form that no dispatcher knows (a fresh one per use is not needed:
#: malformed requests are refused before any lookup).
SOME_ID: Final = "8ec71d6b-28d1-4c5e-9f1a-3b0c2d4e5f60"


async def check_malformed(
    ctx: CaseContext, line: bytes | None = None, value: Any = None, *, what: str
) -> None:
    """Send one malformed request (`line` as raw bytes, or `value` as JSON): exactly one
    error line must come back (type bad_request: SHOULD), then the close; then a valid
    request on a new connection must still be served."""
    async with await ctx.open_jsonlines(INTERFACE) as conn:
        if line is not None:
            try:
                await conn.send_raw(line, note=what)
            except CaseFailure as failure:  # a server may close before reading it all
                if failure.kind is not FailureKind.TRANSPORT:
                    raise
                ctx.log(f"sending stopped early: {failure.message}")
        else:
            await conn.send(value, note=what)
        try:
            reply = await conn.receive(ERROR_REPLY, what=f"the error line answering {what}")
        except CaseFailure as failure:
            if failure.kind is FailureKind.PROTOCOL and conn.last_received is None:
                ctx.fail(
                    f"{what}: the dispatcher closed without an error line (one error line "
                    f"is required; the original's silent close is a defect)"
                )
            raise
        frame = conn.last_received
        ctx.should(
            _error_type(reply) == "bad_request",
            f"{what}: the error type should be bad_request, got {_show(reply)}",
            frame=frame,
        )
        await conn.expect_closed(what="the error line")
    await check_still_serving(ctx)


async def check_still_serving(ctx: CaseContext) -> None:
    """A valid request (get_status of an unknown id) is answered with invalid_jobid."""
    async with await ctx.open_jsonlines(INTERFACE) as conn:
        reply = await conn.request_reply(
            "get_status", {"harpcaller": 1, "get_status": _unknown_id()}
        )
        ctx.check(
            _error_type(reply) == "invalid_jobid",
            f"after the malformed request, a valid get_status was answered {_show(reply)}, "
            f"expected invalid_jobid",
            frame=conn.last_received,
        )


MALFORMED_REFS = (R_TRANSPORT, R_DEFECTS + " 1", _def("ErrorReply"))


@malformed.case(
    "bad-json",
    "a request line that is not JSON gets one error line, then the close; the server keeps serving",
    references=MALFORMED_REFS,
)
async def malformed_bad_json(ctx: CaseContext) -> None:
    await check_malformed(ctx, b'{"harpcaller": 1, "get_status": \n', what="a line of bad JSON")


@malformed.case(
    "non-object",
    "a request that is JSON but not an object gets one error line; the server keeps serving",
    references=MALFORMED_REFS,
)
async def malformed_non_object(ctx: CaseContext) -> None:
    await check_malformed(ctx, value=["harpcaller", 1], what="a JSON array")
    await check_malformed(ctx, value="get_status", what="a JSON string")


@malformed.case(
    "missing-version",
    "a request without the harpcaller key gets one error line; the server keeps serving",
    references=MALFORMED_REFS,
    exercises=["jobs/dispatcher/get_status"],
)
async def malformed_missing_version(ctx: CaseContext) -> None:
    await check_malformed(ctx, value={"get_status": SOME_ID}, what="get_status without harpcaller")


@malformed.case(
    "wrong-version",
    "a request with harpcaller other than 1 gets one error line; the server keeps serving",
    references=MALFORMED_REFS,
    exercises=["jobs/dispatcher/get_status"],
)
async def malformed_wrong_version(ctx: CaseContext) -> None:
    await check_malformed(
        ctx, value={"harpcaller": 2, "get_status": SOME_ID}, what="get_status with harpcaller 2"
    )


@malformed.case(
    "unknown-key",
    "a request with a key its operation does not know gets one error line; the server "
    "keeps serving",
    references=MALFORMED_REFS,
    exercises=["jobs/dispatcher/get_status", "jobs/dispatcher/get_result"],
)
async def malformed_unknown_key(ctx: CaseContext) -> None:
    await check_malformed(
        ctx,
        value={"harpcaller": 1, "get_status": SOME_ID, "colour": "red"},
        what="get_status with an unknown key",
    )
    await check_malformed(
        ctx,
        value={"harpcaller": 1, "get_result": SOME_ID, "since": 0},
        what="get_result with since (an option of another operation)",
    )


@malformed.case(
    "no-operation",
    "a request naming no operation, or two, gets one error line; the server keeps serving",
    references=MALFORMED_REFS,
)
async def malformed_no_operation(ctx: CaseContext) -> None:
    await check_malformed(ctx, value={"harpcaller": 1}, what="a request naming no operation")
    await check_malformed(
        ctx,
        value={"harpcaller": 1, "get_status": SOME_ID, "cancel": SOME_ID},
        what="a request naming two operations",
    )


@malformed.case(
    "since-and-recent",
    "a stream request with both since and recent gets one error line, not a stream; the "
    "server keeps serving",
    references=(R_STREAMS, *MALFORMED_REFS),
    exercises=["jobs/dispatcher/read_stream", "jobs/dispatcher/follow_stream"],
)
async def malformed_since_and_recent(ctx: CaseContext) -> None:
    # A job that exists (its host is unknown, so it needs no agent): only the option
    # combination is wrong.
    async with jobs(ctx, needs_host=False) as session:
        reply = await session.call(
            {
                "harpcaller": 1,
                "host": f"runwire-no-such-host-{uuid.uuid4().hex[:12]}.invalid",
                "procedure": "echo",
                "arguments": [],
            }
        )
        ctx.check("job_id" in reply, f"call: expected a job id, got {_show(reply)}")
        job = reply["job_id"]
        for operation in ("read_stream", "follow_stream"):
            await check_malformed(
                ctx,
                value={"harpcaller": 1, operation: job, "since": 0, "recent": 1},
                what=f"{operation} with both since and recent",
            )


@malformed.case(
    "bad-job-id",
    "a job id that is not a lowercase UUID gets one error line (it is not mapped to "
    "another id); the server keeps serving",
    references=(R_TRANSPORT, R_DEFECTS + " 3", _def("JobId")),
    exercises=["jobs/dispatcher/get_status", "jobs/dispatcher/read_stream"],
)
async def malformed_bad_job_id(ctx: CaseContext) -> None:
    await check_malformed(
        ctx,
        value={"harpcaller": 1, "get_status": SOME_ID.upper()},
        what="get_status of an uppercase job id",
    )
    await check_malformed(
        ctx, value={"harpcaller": 1, "read_stream": 42}, what="read_stream of a number"
    )


@malformed.case(
    "bad-call",
    "a call with a queue name that is not an object, a concurrency below 1 or a missing "
    "procedure gets one error line and no job; the server keeps serving",
    references=(R_REQUESTS, R_DEFECTS + " 7", _def("CallRequest"), _def("QueueSpec")),
    exercises=["jobs/dispatcher/call"],
)
async def malformed_bad_call(ctx: CaseContext) -> None:
    base = {"harpcaller": 1, "host": "localhost", "procedure": "echo", "arguments": []}
    await check_malformed(
        ctx, value={**base, "queue": {"name": "q"}}, what="a call whose queue name is a string"
    )
    await check_malformed(
        ctx,
        value={**base, "queue": {"name": {}, "concurrency": 0}},
        what="a call with queue concurrency 0",
    )
    await check_malformed(
        ctx,
        value={"harpcaller": 1, "host": "localhost", "arguments": []},
        what="a call without procedure",
    )


@malformed.case(
    "oversize",
    "a request line longer than 1 MiB gets one error line; the server keeps serving",
    references=(R_TRANSPORT, *MALFORMED_REFS),
)
async def malformed_oversize(ctx: CaseContext) -> None:
    limit = ctx.interface(INTERFACE).max_message_bytes
    line = b'{"harpcaller": 1, "get_status": "' + b"x" * limit + b'"}\n'
    await check_malformed(ctx, line, what=f"a request line of {len(line) - 1} bytes")
