"""Conformance cases of the workflow runtime interface (reference/workflow.md).

Every case id starts ``workflow/runtime/``. Cases talk to the ``runtime`` target (the request
socket) through a recording REQ probe and, for the publish channel, to the ``publish`` target
(the PUB socket) through a recording SUB probe; every reply and every published message is
validated against ``schemas/workflow/runtime.json``.

The server under test runs the conformance workflow (``conformance.yaml`` in this package;
conformance/README.md describes each task) from a fresh run directory. The cases change the
workflow as they go, so each one sets up what it needs (triggers a task, waits for a state)
instead of assuming what earlier cases left, and observes the effect of every control
command by polling ``data_elements`` (bounded by the step limit) or by reading the publish
channel. Point 2's tasks other than ``sleeper`` and ``listener`` are left alone: the case
``entire_workflow/workflow-runs-by-itself`` checks what the workflow did there unaided.

The three stop modes end the service (``ends_service``): the runner runs them after every
other case, and only the first of them against one server; ``stop/kill`` and ``stop/now``
each need a fresh server (``--select workflow/runtime/stop/kill``). ``tox -e demo`` does
that (conformance/demo.py).

What is MUST and what SHOULD: the wire shapes (schemas), the effects of commands and the
error envelope for every bad request are MUST; the original's exact texts, error codes (an
extension), stop reasons and latency are SHOULD.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar

import zmq

from runwire.conformance import CaseContext, CaseGroup, CaseSet
from runwire.conformance.context import Frame
from runwire.conformance.zmq import PLAIN, Published, ZmqProbe, ZmqSubscription
from runwire.runtime.transport.zmq_security import CurveClientSecurity, CurveKeyPair

__all__ = [
    "CASES",
    "CONFORMANCE_TASKS",
    "NO_REPLY_S",
    "WINDOW_S",
    "Runtime",
]

T = TypeVar("T")

CASES = CaseSet("workflow")
RUNTIME: Final = "workflow/runtime"

SCHEMA: Final = "https://runwire.dev/schemas/workflow/runtime.json#/$defs/"
ERROR_REPLY: Final = SCHEMA + "ErrorReply"

WINDOW_S: Final = 1.0
"""How long a case watches that something does not happen (a held task is not submitted),
seconds. The conformance workflow's retry delay is 0: a server that ignores the hold
resubmits within its job polling interval."""

NO_REPLY_S: Final = 1.0
"""How long a case waits to be sure no reply comes (unauthorised clients), seconds. A CURVE
handshake and a reply take milliseconds on loopback."""

POLL_S: Final = 0.1
"""Interval between two ``data_elements`` requests while waiting for a state, seconds."""

LATENCY_TARGET_S: Final = 0.05
"""The median ``ping_workflow`` round trip a server SHOULD stay under (the original's 0.2 s
poll interval quantises every reply to about 200 ms), seconds."""

CONFORMANCE_TASKS: Final[Mapping[str, tuple[dict[str, str], int]]] = {
    "hello": ({}, 0),
    "flaky": ({}, 1),
    "reporter": ({"ready": "data ready"}, 0),
    "consumer": ({}, 0),
    "sleeper": ({}, 0),
    "doomed": ({}, 0),
    "recover": ({}, 0),
    "listener": ({"heard": "message heard"}, 0),
}
"""The conformance workflow's tasks: name → (custom outputs {output: message}, retries)."""

ACTIVE: Final = frozenset({"preparing", "submitted", "running"})
FINISHED: Final = frozenset({"succeeded", "failed", "submit-failed", "expired"})
DELTA_TOPICS: Final = ("workflow", "tasks", "task_proxies", "jobs", "edges")

REF_ENVELOPE: Final = "reference/workflow.md 1.1-1.3"
REF_ENDPOINTS: Final = "reference/workflow.md 2"
REF_SECURITY: Final = "reference/workflow.md 3.2"
REF_PUBLISH: Final = "reference/workflow.md 4"
REF_DEFECTS: Final = "reference/workflow.md, Defects of the original"

CONTROL_COMMANDS: Final = (
    "pause",
    "resume",
    "stop",
    "hold",
    "release",
    "trigger",
    "kill",
    "poll",
    "remove",
    "set",
    "message",
    "broadcast",
)


def show(value: Any) -> str:
    """Compact JSON for messages, cut to 300 characters."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=repr)
    return text if len(text) <= 300 else text[:297] + "..."


def request(command: str, args: Any = None, **extra: Any) -> dict[str, Any]:
    """A request envelope ``{"command", "args", ...extra}`` (args default ``{}``)."""
    return {"command": command, "args": {} if args is None else args, **extra}


def under(name: str) -> CaseGroup:
    """Cases filed under ``workflow/runtime/<name>``."""
    return CASES.under(f"{RUNTIME}/{name}")


# --- the workflow under test, seen through one REQ probe ------------------------------------


class Runtime:
    """A case's view of the workflow under test over one recording REQ probe."""

    def __init__(self, ctx: CaseContext, conn: ZmqProbe) -> None:
        self.ctx = ctx
        self.conn = conn

    async def reply(
        self, command: str, args: Any = None, *, note: str | None = None, **extra: Any
    ) -> Frame:
        """Send one command and return its reply frame: the command's reply or the error
        reply (validated against the one it matches)."""
        operation = self.ctx.operation(f"{RUNTIME}/{command}")
        return await self.conn.exchange(operation, request(command, args, **extra), note=note)

    async def call(self, command: str, args: Any = None, **extra: Any) -> Any:
        """The reply's ``data``; an error reply FAILs the case, showing it."""
        frame = await self.reply(command, args, **extra)
        value = frame.value
        self.ctx.check(
            isinstance(value, dict) and "data" in value,
            f"{command} {show(args or {})}: expected data, got {frame.render()}",
            frame=frame,
        )
        return value["data"]

    async def control(
        self,
        command: str,
        args: Any = None,
        *,
        matched: Iterable[str] | None = None,
        accepted: bool = True,
    ) -> dict[str, Any]:
        """Send a control command and check its reply: accepted (a UUID4 command id) or not
        (command id null); with `matched`, exactly those task proxy ids (in any order).

        Returns:
            The reply's data.
        """
        frame = await self.reply(command, args)
        what = f"{command} {show(args or {})}"
        value = frame.value
        self.ctx.check(
            isinstance(value, dict) and "data" in value,
            f"{what}: expected the control reply (data), got {frame.render()}",
            frame=frame,
        )
        data: dict[str, Any] = value["data"]
        if accepted:
            self.ctx.check(
                data.get("accepted") is True and isinstance(data.get("command_id"), str),
                f"{what}: expected accepted true with a command id, got {show(data)}",
                frame=frame,
            )
        else:
            self.ctx.check(
                data.get("accepted") is False and data.get("command_id") is None,
                f"{what}: expected accepted false and command_id null, got {show(data)}",
                frame=frame,
            )
        if matched is not None:
            want = sorted(set(matched))
            self.ctx.check(
                sorted(set(data.get("matched", []))) == want,
                f"{what}: expected matched {show(want)}, got {show(data.get('matched'))}",
                frame=frame,
            )
        return data

    async def elements(self, element_type: str) -> list[dict[str, Any]]:
        """The current elements of one type (``data_elements``)."""
        data = await self.call("data_elements", {"element_type": element_type})
        self.ctx.check(
            data.get("element_type") == element_type,
            f"data_elements {element_type}: the reply names element_type "
            f"{show(data.get('element_type'))}",
            frame=self.conn.last_received,
        )
        elements: list[dict[str, Any]] = data["elements"]
        return elements

    async def proxies(self) -> dict[str, dict[str, Any]]:
        """Task proxies by id."""
        return {p["id"]: p for p in await self.elements("task_proxies")}

    async def jobs(self) -> dict[str, dict[str, Any]]:
        """Jobs by id."""
        return {j["id"]: j for j in await self.elements("jobs")}

    async def workflow(self) -> dict[str, Any]:
        """The workflow element."""
        elements = await self.elements("workflow")
        self.ctx.check(
            len(elements) == 1,
            f"data_elements workflow: expected one element, got {len(elements)}",
            frame=self.conn.last_received,
        )
        return elements[0]

    async def wait_proxies(
        self,
        until: Callable[[dict[str, dict[str, Any]]], object],
        description: str,
        *,
        timeout_s: float | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Poll the task proxies until `until` holds (bounded by the step limit)."""
        return await self.ctx.poll(
            self.proxies, until, description, interval_s=POLL_S, timeout_s=timeout_s
        )

    async def wait_proxy(
        self,
        task_id: str,
        until: Callable[[dict[str, Any]], object],
        description: str,
        *,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Poll until task proxy `task_id` exists and `until(proxy)` holds; return it."""
        proxies = await self.wait_proxies(
            lambda ps: task_id in ps and until(ps[task_id]),
            f"{task_id} {description}",
            timeout_s=timeout_s,
        )
        return proxies[task_id]

    async def wait_workflow(
        self, until: Callable[[dict[str, Any]], object], description: str
    ) -> dict[str, Any]:
        """Poll the workflow element until `until` holds."""
        return await self.ctx.poll(
            self.workflow, until, f"the workflow {description}", interval_s=POLL_S
        )

    async def job(self, job_id: str) -> dict[str, Any] | None:
        """One job element, or None."""
        return (await self.jobs()).get(job_id)

    async def wait_job(
        self, job_id: str, until: Callable[[dict[str, Any]], object], description: str
    ) -> dict[str, Any]:
        """Poll until job `job_id` exists and `until(job)` holds; return it."""
        jobs = await self.ctx.poll(
            self.jobs,
            lambda js: job_id in js and until(js[job_id]),
            f"job {job_id} {description}",
            interval_s=POLL_S,
        )
        return jobs[job_id]

    async def settled(self, task_id: str) -> dict[str, Any] | None:
        """Task proxy `task_id` once it is not active (None when it does not exist)."""
        proxies = await self.proxies()
        if task_id not in proxies:
            return None
        if proxies[task_id]["state"] not in ACTIVE:
            return proxies[task_id]
        return await self.wait_proxy(
            task_id, lambda p: p["state"] not in ACTIVE, "is no longer active"
        )

    async def run_to_end(self, task_id: str) -> dict[str, Any]:
        """Trigger `task_id` (once it is not active) and wait for the new job to finish;
        returns the task proxy."""
        before = await self.settled(task_id)
        submits = before["submit_num"] if before else 0
        await self.control("trigger", {"tasks": [task_id]}, matched=[task_id])
        return await self.wait_proxy(
            task_id,
            lambda p: p["submit_num"] > submits and p["state"] in FINISHED,
            f"has run again (submit_num above {submits}) and finished",
        )

    async def active_job(self, task_id: str) -> tuple[dict[str, Any], str]:
        """Make sure `task_id` has a running job (triggering it when it is not active);
        returns the task proxy and its latest job id."""
        proxies = await self.proxies()
        proxy = proxies.get(task_id)
        if proxy is None or proxy["state"] not in ACTIVE:
            submits = proxy["submit_num"] if proxy else 0
            await self.control("trigger", {"tasks": [task_id]}, matched=[task_id])
            proxy = await self.wait_proxy(
                task_id,
                lambda p: p["submit_num"] > submits and p["state"] in ACTIVE,
                f"has a new job (submit_num above {submits})",
            )
        proxy = await self.wait_proxy(task_id, lambda p: p["state"] == "running", "is running")
        self.ctx.check(proxy["job_ids"], f"{task_id} is running but lists no job")
        return proxy, proxy["job_ids"][-1]

    async def ensure_state(self, task_id: str, state: str) -> dict[str, Any]:
        """Task proxy `task_id` in `state`, re-running it when it is in another finished
        state (for tasks whose runs always end so: doomed fails, hello succeeds)."""
        proxy = await self.settled(task_id)
        if proxy is not None and proxy["state"] == state:
            return proxy
        proxy = await self.run_to_end(task_id)
        self.ctx.check(
            proxy["state"] == state, f"{task_id} ran again and ended {proxy['state']}, not {state}"
        )
        return proxy


async def open_runtime(ctx: CaseContext, **options: Any) -> Runtime:
    """A :class:`Runtime` over a new probe of the ``runtime`` target."""
    return Runtime(ctx, await ctx.open_zmq("runtime", **options))


async def watch_steady(
    ctx: CaseContext,
    attempt: Callable[[], Awaitable[T]],
    steady: Callable[[T], object],
    description: str,
    window_s: float = WINDOW_S,
) -> T:
    """Check for `window_s` seconds that `steady(attempt())` keeps holding (something that
    must not happen does not); returns the last result."""
    deadline = time.monotonic() + window_s
    async with ctx.step(f"check for {window_s:g} s that {description}", window_s + ctx.timeout_s):
        while True:
            result = await attempt()
            ctx.check(steady(result), f"expected {description} for {window_s:g} s; got {result!r}")
            if time.monotonic() >= deadline:
                return result
            await asyncio.sleep(POLL_S)


async def still_serving(ctx: CaseContext, rt: Runtime | None = None) -> None:
    """The server answers ``ping_workflow`` on `rt`'s connection (if given) and on a new one."""
    if rt is not None:
        data = await rt.call("ping_workflow", note="still serving (same connection)")
        ctx.check(data is True, f"ping_workflow: expected data true, got {show(data)}")
    async with await ctx.open_zmq("runtime") as conn:
        fresh = Runtime(ctx, conn)
        data = await fresh.call("ping_workflow", note="still serving (new connection)")
        ctx.check(data is True, f"ping_workflow: expected data true, got {show(data)}")


def job_states(job_ids: Sequence[str], jobs: Mapping[str, dict[str, Any]]) -> list[str]:
    """The states of `job_ids` (``?`` for a job the store does not list)."""
    return [jobs[j]["state"] if j in jobs else "?" for j in job_ids]


# --- api --------------------------------------------------------------------------------------

api = under("api")


@api.case(
    "lists-commands",
    "api without args lists every command of the manifest, and only public names",
    references=[REF_ENDPOINTS],
)
async def api_lists_commands(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    data = await rt.call("api")
    frame = rt.conn.last_received
    ctx.check(
        isinstance(data, list), f"api: expected a list of names, got {show(data)}", frame=frame
    )
    commands = [
        op.name for op in ctx.interface("runtime").operations if op.pattern == "request-reply"
    ]
    missing = [name for name in commands if name not in data]
    ctx.check(not missing, f"api: the list lacks {show(missing)}: {show(data)}", frame=frame)
    private = [name for name in data if str(name).startswith("_")]
    ctx.check(not private, f"api: lists names that are not commands: {show(private)}", frame=frame)


@api.case("endpoint-doc", "api with endpoint: that command's documentation, as a string")
async def api_endpoint_doc(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    data = await rt.call("api", {"endpoint": "hold"})
    ctx.check(
        isinstance(data, str) and data.strip(),
        f"api {{endpoint: hold}}: expected a non-empty documentation string, got {show(data)}",
        frame=rt.conn.last_received,
    )


@api.case(
    "unknown-endpoint",
    "api with an unknown endpoint: data, the original's text 'No method by name \"x\"'",
    references=[REF_ENDPOINTS],
)
async def api_unknown_endpoint(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    data = await rt.call("api", {"endpoint": "nosuch"})
    frame = rt.conn.last_received
    ctx.check(isinstance(data, str), f"expected a string as data, got {show(data)}", frame=frame)
    ctx.should(
        data == 'No method by name "nosuch"',
        f"the original answers 'No method by name \"nosuch\"', got {data!r}",
        frame=frame,
    )


# --- ping_workflow ------------------------------------------------------------------------------

ping = under("ping_workflow")


@ping.case("answers-true", "ping_workflow answers data true (and no id when none was sent)")
async def ping_answers_true(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    frame = await rt.reply("ping_workflow")
    ctx.check(
        frame.value.get("data") is True,
        f"ping_workflow: expected data true, got {frame.render()}",
        frame=frame,
    )
    ctx.should(
        "id" not in frame.value,
        "a reply to a request without id should carry no id",
        frame=frame,
    )


@ping.case(
    "request-id-echoed",
    "a request's id (extension) is echoed in its reply",
    references=["schemas/workflow/runtime.json#/$defs/RequestId"],
)
async def ping_request_id(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    frame = await rt.reply("ping_workflow", id="conformance-ping-1")
    ctx.check(
        frame.value.get("id") == "conformance-ping-1",
        f"expected id 'conformance-ping-1' echoed, got {frame.render()}",
        frame=frame,
    )


@ping.case("meta-accepted", "a request with the original's meta header is served")
async def ping_meta(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    meta = {"prog": "conformance", "host": "localhost", "comms_method": "zmq"}
    data = await rt.call("ping_workflow", meta=meta)
    ctx.check(data is True, f"expected data true, got {show(data)}", frame=rt.conn.last_received)


@ping.case(
    "no-poll-interval",
    f"requests are answered as they arrive: median round trip under {LATENCY_TARGET_S:g} s",
    level="SHOULD",
    references=[REF_DEFECTS + " 7"],
)
async def ping_latency(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    await rt.call("ping_workflow")  # the CURVE handshake is not a round trip
    samples = []
    for _ in range(20):
        started = time.perf_counter()
        await rt.call("ping_workflow")
        samples.append(time.perf_counter() - started)
    median = statistics.median(samples)
    ctx.log(
        f"ping_workflow round trips: median {median * 1000:.2f} ms, max {max(samples) * 1000:.2f} ms"
    )
    ctx.check(
        median < LATENCY_TARGET_S,
        f"median ping_workflow round trip {median * 1000:.1f} ms, over "
        f"{LATENCY_TARGET_S * 1000:g} ms (a poll interval?)",
    )


@ping.case("concurrent-clients", "eight clients at once each get their own replies")
async def ping_concurrent(ctx: CaseContext) -> None:
    async def client(number: int) -> None:
        async with await ctx.open_zmq("runtime") as conn:
            rt = Runtime(ctx, conn)
            for index in range(5):
                request_id = f"client-{number}-{index}"
                frame = await rt.reply("ping_workflow", id=request_id)
                ctx.check(
                    frame.value.get("data") is True and frame.value.get("id") == request_id,
                    f"client {number}: expected data true with id {request_id}, got "
                    f"{frame.render()}",
                    frame=frame,
                )

    async with ctx.step("eight clients, five pings each"):
        await asyncio.gather(*(client(n) for n in range(8)))


# --- entire_workflow and data_elements ------------------------------------------------------------

entire = under("entire_workflow")


@entire.case(
    "snapshot",
    "entire_workflow: every element type; the workflow and task definitions as defined",
)
async def entire_snapshot(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    data = await rt.call("entire_workflow")
    frame = rt.conn.last_received
    workflow = data["workflow"]
    ctx.check(
        workflow["initial_cycle_point"] == "1" and workflow["final_cycle_point"] == "3",
        f"the conformance workflow cycles from 1 to 3, got {show(workflow)}",
        frame=frame,
    )
    ctx.check(
        workflow["status"] in ("running", "paused"),
        f"a workflow serving requests is running or paused, got status {workflow['status']!r}",
        frame=frame,
    )
    tasks = {t["name"]: t for t in data["tasks"]}
    ctx.check(
        set(tasks) == set(CONFORMANCE_TASKS),
        f"tasks: expected {sorted(CONFORMANCE_TASKS)}, got {sorted(tasks)}",
        frame=frame,
    )
    for name, (outputs, retries) in CONFORMANCE_TASKS.items():
        task = tasks[name]
        ctx.check(
            task["id"] == name and task["outputs"] == outputs and task["retries"] == retries,
            f"task {name}: expected custom outputs {show(outputs)} and retries {retries}, got "
            f"{show(task)}",
            frame=frame,
        )


@entire.case("consistent", "entire_workflow: jobs, task proxies and tasks refer to each other")
async def entire_consistent(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    data = await rt.call("entire_workflow")
    frame = rt.conn.last_received
    proxies = {p["id"]: p for p in data["task_proxies"]}
    jobs = {j["id"]: j for j in data["jobs"]}
    names = {t["name"] for t in data["tasks"]}
    for proxy in proxies.values():
        ctx.check(
            proxy["id"] == f"{proxy['cycle_point']}/{proxy['name']}" and proxy["name"] in names,
            f"task proxy {show(proxy['id'])}: id, cycle point and name disagree, or no such task",
            frame=frame,
        )
        listed = [j for j in proxy["job_ids"] if j not in jobs]
        ctx.check(
            not listed, f"task proxy {proxy['id']} lists jobs {listed} that jobs lacks", frame=frame
        )
    for job in jobs.values():
        ctx.check(
            job["task_proxy"] in proxies and job["id"] in proxies[job["task_proxy"]]["job_ids"],
            f"job {job['id']}: its task proxy {job['task_proxy']} is missing or does not list it",
            frame=frame,
        )
        ctx.check(
            job["id"].startswith(job["task_proxy"] + "/")
            and int(job["id"].rsplit("/", 1)[1]) == job["submit_num"],
            f"job {job['id']}: id, task proxy and submit_num disagree",
            frame=frame,
        )
    for edge in data["edges"]:
        ctx.check(
            edge["id"] == f"{edge['source']}=>{edge['target']}",
            f"edge {show(edge)}: id is not source=>target",
            frame=frame,
        )


@entire.case(
    "workflow-runs-by-itself",
    "without commands, point 2 runs as defined: flaky retries once, custom output ready "
    "starts consumer, doomed fails and recover runs",
)
async def entire_runs_by_itself(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)

    def done(proxies: dict[str, dict[str, Any]]) -> bool:
        return all(
            proxies.get(f"2/{name}", {}).get("state") == state
            for name, state in (
                ("flaky", "succeeded"),
                ("consumer", "succeeded"),
                ("doomed", "failed"),
                ("recover", "succeeded"),
            )
        )

    proxies = await rt.wait_proxies(done, "point 2 has run (flaky, consumer, recover)")
    jobs = await rt.jobs()
    flaky = proxies["2/flaky"]
    ctx.check(
        flaky["submit_num"] == 2 and flaky["try_num"] == 2,
        f"2/flaky fails its first try and succeeds on the retry: expected submit_num 2 and "
        f"try_num 2, got {show(flaky)}",
    )
    ctx.check(
        flaky["job_ids"] == ["2/flaky/01", "2/flaky/02"]
        and job_states(flaky["job_ids"], jobs) == ["failed", "succeeded"],
        f"2/flaky: expected jobs 01 failed then 02 succeeded, got {flaky['job_ids']} "
        f"{job_states(flaky['job_ids'], jobs)}",
    )
    failed = jobs.get("2/flaky/01", {})
    ctx.check(
        failed.get("exit_code") == 1 and failed.get("finished_time") is not None,
        f"job 2/flaky/01 exits 1: got {show(failed)}",
    )
    reporter = proxies.get("2/reporter", {})
    ctx.check(
        reporter.get("outputs", {}).get("ready") is True,
        f"2/reporter completes its custom output ready: got {show(reporter)}",
    )
    consumer = proxies["2/consumer"]
    ctx.check(
        {"id": "2/reporter:ready", "satisfied": True} in consumer["prerequisites"],
        f"2/consumer waits for 2/reporter:ready: got {show(consumer['prerequisites'])}",
    )
    doomed_job = jobs.get("2/doomed/01", {})
    ctx.check(
        doomed_job.get("state") == "failed" and doomed_job.get("exit_code") == 3,
        f"job 2/doomed/01 fails with exit code 3: got {show(doomed_job)}",
    )


data_elements = under("data_elements")


@data_elements.case(
    "each-type", "data_elements answers each element type with that type's elements"
)
async def elements_each_type(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    snapshot = await rt.call("entire_workflow")
    for element_type in DELTA_TOPICS:
        elements = await rt.elements(element_type)
        frame = rt.conn.last_received
        if element_type == "workflow":
            ctx.check(
                len(elements) == 1 and elements[0]["id"] == snapshot["workflow"]["id"],
                f"workflow: expected the one workflow element, got {show(elements)}",
                frame=frame,
            )
        elif element_type == "tasks":
            ctx.check(
                elements == snapshot["tasks"],
                "tasks: expected the same task definitions as entire_workflow",
                frame=frame,
            )
        else:
            ids = [e["id"] for e in elements]
            ctx.check(
                len(ids) == len(set(ids)),
                f"{element_type}: ids repeat: {show(ids)}",
                frame=frame,
            )


@data_elements.case(
    "unknown-type",
    "an unknown element type (or 'all') gets the error reply, never an empty body",
    references=[REF_DEFECTS + " 4"],
)
async def elements_unknown(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    for element_type in ("nosuch", "all"):
        frame = await rt.reply("data_elements", {"element_type": element_type})
        ctx.check(
            "error" in frame.value,
            f"data_elements {element_type!r}: expected the error reply, got {frame.render()}",
            frame=frame,
        )
        ctx.should(
            frame.value["error"].get("code") == "invalid_args",
            f"data_elements {element_type!r}: error code should be invalid_args",
            frame=frame,
        )
    await still_serving(ctx, rt)


# --- pause and resume ------------------------------------------------------------------------------

pause = under("pause")
resume = under("resume")


async def retry_pending(rt: Runtime, task_id: str = "1/flaky") -> dict[str, Any]:
    """Trigger flaky (its first try fails, the retry comes at once) and wait until the
    retry is pending: state waiting, try_num 2, the new job failed. For a paused workflow
    (the retry must wait)."""
    before = await rt.settled(task_id)
    submits = before["submit_num"] if before else 0
    await rt.control("trigger", {"tasks": [task_id]}, matched=[task_id])
    return await rt.wait_proxy(
        task_id,
        lambda p: p["submit_num"] == submits + 1 and p["state"] == "waiting" and p["try_num"] == 2,
        f"failed its first try (job {submits + 1}) and waits for its retry",
    )


@pause.case(
    "holds-back-jobs",
    "pause: the workflow is paused and submits no job (flaky's retry waits) until resume",
    exercises=[f"{RUNTIME}/resume", f"{RUNTIME}/trigger"],
    timeout_steps=10,
)
async def pause_holds_back(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    try:
        await rt.control("pause", matched=[])
        await rt.wait_workflow(lambda w: w["status"] == "paused", "is paused")
        pending = await retry_pending(rt)
        submits = pending["submit_num"]
        await watch_steady(
            ctx,
            lambda: rt.proxies(),
            lambda ps: (
                ps["1/flaky"]["submit_num"] == submits and ps["1/flaky"]["state"] == "waiting"
            ),
            "1/flaky's retry is not submitted while the workflow is paused",
        )
        await rt.control("resume", matched=[])
        await rt.wait_workflow(lambda w: w["status"] == "running", "runs again")
        done = await rt.wait_proxy(
            "1/flaky",
            lambda p: p["submit_num"] == submits + 1 and p["state"] == "succeeded",
            "ran its retry after resume and succeeded",
        )
        ctx.check(done["try_num"] == 2, f"1/flaky: expected try_num 2, got {show(done)}")
    finally:
        await rt.reply("resume", note="clean up: resume")


@resume.case(
    "resumes", "resume after pause: status back to running", exercises=[f"{RUNTIME}/pause"]
)
async def resume_resumes(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    try:
        await rt.control("pause")
        paused = await rt.wait_workflow(lambda w: w["status"] == "paused", "is paused")
        ctx.should(
            paused["status_msg"] == "paused",
            f"status_msg should be 'paused', got {paused['status_msg']!r}",
        )
        await rt.control("resume")
        await rt.wait_workflow(lambda w: w["status"] == "running", "runs again")
    finally:
        await rt.reply("resume", note="clean up: resume")


# --- hold, release and the task selection globs ---------------------------------------------------

hold = under("hold")
release = under("release")


@hold.case(
    "holds-a-task",
    "hold: a held task is not submitted (flaky's pending retry waits after resume) until release",
    exercises=[f"{RUNTIME}/release", f"{RUNTIME}/pause", f"{RUNTIME}/resume"],
    timeout_steps=12,
)
async def hold_holds(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    try:
        await rt.control("pause")
        await rt.wait_workflow(lambda w: w["status"] == "paused", "is paused")
        pending = await retry_pending(rt)
        submits = pending["submit_num"]
        await rt.control("hold", {"tasks": ["1/flaky"]}, matched=["1/flaky"])
        await rt.wait_proxy("1/flaky", lambda p: p["is_held"] is True, "is held")
        await rt.control("resume")
        await rt.wait_workflow(lambda w: w["status"] == "running", "runs again")
        await watch_steady(
            ctx,
            lambda: rt.proxies(),
            lambda ps: (
                ps["1/flaky"]["submit_num"] == submits
                and ps["1/flaky"]["state"] == "waiting"
                and ps["1/flaky"]["is_held"] is True
            ),
            "held 1/flaky stays waiting (its retry not submitted) while the workflow runs",
        )
        await rt.control("release", {"tasks": ["1/flaky"]}, matched=["1/flaky"])
        done = await rt.wait_proxy(
            "1/flaky",
            lambda p: p["submit_num"] == submits + 1 and p["state"] == "succeeded",
            "ran its retry after release and succeeded",
        )
        ctx.check(done["is_held"] is False, f"1/flaky is released: got {show(done)}")
    finally:
        await rt.reply("resume", note="clean up: resume")
        await rt.reply("release", {"tasks": ["1/flaky"]}, note="clean up: release")


async def check_selector(
    ctx: CaseContext,
    selector: str,
    expected: Callable[[dict[str, dict[str, Any]]], set[str]],
    description: str,
) -> None:
    """Hold with `selector`: the reply matches `expected(task proxies)` (computed before
    and after, to allow for task proxies that came or went meanwhile), and exactly the
    matched task proxies become held; release with it: they are released again."""
    rt = await open_runtime(ctx)
    held = await rt.proxies()
    already = {i for i, p in held.items() if p["is_held"]}
    ctx.check(
        not already,
        f"precondition: no task proxy is held before this case, got {sorted(already)}",
    )
    before = expected(held)
    ctx.check(before, f"precondition: {selector!r} should match something ({description})")
    data = await rt.control("hold", {"tasks": [selector]})
    after = expected(await rt.proxies())
    matched = set(data["matched"])
    ctx.check(
        before & after <= matched <= before | after,
        f"hold {selector!r} ({description}): expected matched {sorted(before)}, got "
        f"{sorted(matched)}",
        frame=rt.conn.last_received,
    )
    try:
        proxies = await rt.wait_proxies(
            lambda ps: all(ps[i]["is_held"] for i in matched if i in ps),
            f"every task proxy matched by {selector!r} is held",
        )
        others = sorted(i for i, p in proxies.items() if p["is_held"] and i not in matched)
        ctx.check(not others, f"hold {selector!r} also held {others}")
        data = await rt.control("release", {"tasks": [selector]})
        ctx.check(
            set(data["matched"]) >= {i for i in matched if i in proxies},
            f"release {selector!r}: expected matched {sorted(matched)}, got "
            f"{sorted(data['matched'])}",
            frame=rt.conn.last_received,
        )
        await rt.wait_proxies(
            lambda ps: not any(ps[i]["is_held"] for i in matched if i in ps),
            f"every task proxy matched by {selector!r} is released",
        )
    finally:
        await rt.reply("release", {"tasks": [selector]}, note="clean up: release")


def at_point(point: str) -> Callable[[dict[str, dict[str, Any]]], set[str]]:
    return lambda proxies: {i for i, p in proxies.items() if p["cycle_point"] == point}


@hold.case("glob-task-id", "selector '1/hello': that task proxy", exercises=[f"{RUNTIME}/release"])
async def glob_task_id(ctx: CaseContext) -> None:
    await check_selector(ctx, "1/hello", lambda ps: {"1/hello"} & set(ps), "one task proxy")


@hold.case(
    "glob-cycle-wildcard",
    "selector '1/*': every task proxy of cycle point 1",
    exercises=[f"{RUNTIME}/release"],
)
async def glob_cycle_wildcard(ctx: CaseContext) -> None:
    await check_selector(ctx, "1/*", at_point("1"), "every task proxy of point 1")


@hold.case(
    "glob-cycle-point",
    "selector '1' (a cycle point): every task proxy of cycle point 1",
    exercises=[f"{RUNTIME}/release"],
)
async def glob_cycle_point(ctx: CaseContext) -> None:
    await check_selector(ctx, "1", at_point("1"), "every task proxy of point 1")


@hold.case(
    "glob-state",
    "selector '*/*:failed': every failed task proxy (2/doomed at least)",
    exercises=[f"{RUNTIME}/release"],
)
async def glob_state(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    await rt.wait_proxy("2/doomed", lambda p: p["state"] == "failed", "has failed")
    await check_selector(
        ctx,
        "*/*:failed",
        lambda ps: {i for i, p in ps.items() if p["state"] == "failed"},
        "every failed task proxy",
    )


@hold.case(
    "glob-job-id",
    "selector '1/hello/01' (a job): the task proxy that ran it",
    exercises=[f"{RUNTIME}/release"],
)
async def glob_job_id(ctx: CaseContext) -> None:
    await check_selector(
        ctx,
        "1/hello/01",
        lambda ps: (
            {"1/hello"} if "1/hello/01" in ps.get("1/hello", {}).get("job_ids", []) else set()
        ),
        "the task proxy of job 1/hello/01",
    )


@hold.case(
    "glob-fnmatch",
    "selector '?/hel*': fnmatch patterns in both parts (1/hello and 2/hello)",
    exercises=[f"{RUNTIME}/release"],
)
async def glob_fnmatch(ctx: CaseContext) -> None:
    await check_selector(
        ctx,
        "?/hel*",
        lambda ps: {
            i for i, p in ps.items() if len(p["cycle_point"]) == 1 and p["name"] == "hello"
        },
        "hello at every one-digit cycle point",
    )


@hold.case(
    "no-match",
    "a selector matching nothing: data with accepted false and command_id null (not an "
    "error reply)",
)
async def hold_no_match(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    data = await rt.control("hold", {"tasks": ["1/nosuch*"]}, accepted=False, matched=[])
    ctx.check(isinstance(data["message"], str), "a message says why")


@release.case("releases", "release: a held task proxy is released", exercises=[f"{RUNTIME}/hold"])
async def release_releases(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    try:
        await rt.control("hold", {"tasks": ["1/hello"]}, matched=["1/hello"])
        await rt.wait_proxy("1/hello", lambda p: p["is_held"] is True, "is held")
        await rt.control("release", {"tasks": ["1/hello"]}, matched=["1/hello"])
        await rt.wait_proxy("1/hello", lambda p: p["is_held"] is False, "is released")
    finally:
        await rt.reply("release", {"tasks": ["1/hello"]}, note="clean up: release")


# --- trigger, kill, poll, remove ------------------------------------------------------------------

trigger = under("trigger")
kill = under("kill")
poll = under("poll")
remove = under("remove")


@trigger.case(
    "reruns-a-task",
    "trigger a finished task: a new job (submit_num + 1) runs and succeeds",
    timeout_steps=8,
)
async def trigger_reruns(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    before = await rt.ensure_state("1/hello", "succeeded")
    submits = before["submit_num"]
    await rt.control("trigger", {"tasks": ["1/hello"]}, matched=["1/hello"])
    job_id = f"1/hello/{submits + 1:02d}"
    proxy = await rt.wait_proxy(
        "1/hello",
        lambda p: p["submit_num"] == submits + 1 and p["state"] == "succeeded",
        f"ran again (job {job_id}) and succeeded",
    )
    ctx.check(
        proxy["job_ids"][-1] == job_id, f"1/hello: expected latest job {job_id}: {show(proxy)}"
    )
    job = await rt.wait_job(job_id, lambda j: j["state"] == "succeeded", "succeeded")
    ctx.check(
        job["exit_code"] == 0
        and job["submit_num"] == submits + 1
        and None not in (job["submitted_time"], job["started_time"], job["finished_time"]),
        f"job {job_id}: expected exit code 0 and its three times, got {show(job)}",
    )


@trigger.case(
    "future-task",
    "trigger a task proxy that does not exist yet (3/hello): it is spawned and runs",
    timeout_steps=8,
)
async def trigger_future(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    proxies = await rt.proxies()
    submits = proxies.get("3/hello", {}).get("submit_num", 0)
    if "3/hello" in proxies:
        await rt.settled("3/hello")
    await rt.control("trigger", {"tasks": ["3/hello"]}, matched=["3/hello"])
    await rt.wait_proxy(
        "3/hello",
        lambda p: p["submit_num"] == submits + 1 and p["state"] == "succeeded",
        "was spawned, ran and succeeded",
    )


@trigger.case(
    "unknown-task",
    "trigger a task the workflow does not define: not accepted (data, accepted false), or "
    "the error reply",
)
async def trigger_unknown(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    frame = await rt.reply("trigger", {"tasks": ["1/nosuch"]})
    value = frame.value
    ctx.check(
        "error" in value or value["data"]["accepted"] is False,
        f"trigger of an undefined task: expected accepted false or an error, got {frame.render()}",
        frame=frame,
    )
    await still_serving(ctx, rt)


@kill.case(
    "kills-a-running-job",
    "kill a running task: its job ends failed and the task proxy is failed",
    exercises=[f"{RUNTIME}/trigger"],
    timeout_steps=8,
)
async def kill_kills(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    proxy, job_id = await rt.active_job("1/sleeper")
    await rt.control("kill", {"tasks": ["1/sleeper"]}, matched=["1/sleeper"])
    killed = await rt.wait_proxy("1/sleeper", lambda p: p["state"] == "failed", "is failed")
    ctx.check(
        killed["submit_num"] == proxy["submit_num"],
        f"a killed job is not retried: submit_num went from {proxy['submit_num']} to "
        f"{killed['submit_num']}",
    )
    job = await rt.wait_job(job_id, lambda j: j["state"] == "failed", "is failed")
    ctx.check(job["finished_time"] is not None, f"job {job_id}: finished_time set: {show(job)}")


@kill.case(
    "by-job-id",
    "kill with a job id selector (1/sleeper/NN): that job's task proxy is killed",
    exercises=[f"{RUNTIME}/trigger"],
    timeout_steps=8,
)
async def kill_by_job_id(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    _, job_id = await rt.active_job("1/sleeper")
    await rt.control("kill", {"tasks": [job_id]}, matched=["1/sleeper"])
    await rt.wait_job(job_id, lambda j: j["state"] == "failed", "is failed")


@poll.case(
    "polls-a-running-job",
    "poll a running task: accepted, matched, the job still running",
    exercises=[f"{RUNTIME}/trigger"],
)
async def poll_running(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    _, job_id = await rt.active_job("1/sleeper")
    await rt.control("poll", {"tasks": ["1/sleeper"]}, matched=["1/sleeper"])
    await rt.control("poll", {"tasks": ["1/hello"]}, matched=["1/hello"])
    await watch_steady(
        ctx,
        lambda: rt.jobs(),
        lambda jobs: jobs.get(job_id, {}).get("state") == "running",
        f"job {job_id} is still running after the poll",
        window_s=0.3,
    )


@remove.case(
    "removes-a-task",
    "remove a task proxy (1/recover): it leaves task_proxies, and its jobs leave jobs",
    exercises=[f"{RUNTIME}/trigger"],
    timeout_steps=8,
)
async def remove_removes(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    proxies = await rt.proxies()
    if "1/recover" not in proxies:
        await rt.run_to_end("1/recover")
    proxy = await rt.settled("1/recover")
    assert proxy is not None
    await rt.control("remove", {"tasks": ["1/recover"]}, matched=["1/recover"])
    await rt.wait_proxies(lambda ps: "1/recover" not in ps, "1/recover is removed")
    jobs = await rt.jobs()
    left = [j for j in proxy["job_ids"] if j in jobs]
    ctx.check(not left, f"the jobs of the removed task proxy are still listed: {left}")


# --- set -----------------------------------------------------------------------------------------

set_ = under("set")


@set_.case(
    "outputs-succeeded",
    "set outputs [succeeded] on a failed task (1/doomed): it becomes succeeded",
    timeout_steps=8,
)
async def set_succeeded(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    await rt.ensure_state("1/doomed", "failed")
    await rt.control("set", {"tasks": ["1/doomed"], "outputs": ["succeeded"]}, matched=["1/doomed"])
    proxy = await rt.wait_proxy("1/doomed", lambda p: p["state"] == "succeeded", "is succeeded")
    ctx.check(
        proxy["outputs"].get("succeeded") is True,
        f"1/doomed: output succeeded completed: {show(proxy['outputs'])}",
    )


@set_.case(
    "default-output",
    "set without outputs or prerequisites marks succeeded (3/recover, spawned by it)",
)
async def set_default(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    await rt.control("set", {"tasks": ["3/recover"]}, matched=["3/recover"])
    await rt.wait_proxy(
        "3/recover",
        lambda p: p["state"] == "succeeded" and p["outputs"].get("succeeded") is True,
        "is succeeded",
    )


@set_.case(
    "custom-output",
    "set a custom output (3/reporter:ready): completed, and its child 3/consumer's "
    "prerequisite satisfied",
)
async def set_custom_output(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    await rt.control("set", {"tasks": ["3/reporter"], "outputs": ["ready"]}, matched=["3/reporter"])
    await rt.wait_proxy(
        "3/reporter", lambda p: p["outputs"].get("ready") is True, "has completed ready"
    )
    consumer = await rt.wait_proxy(
        "3/consumer",
        lambda p: {"id": "3/reporter:ready", "satisfied": True} in p["prerequisites"],
        "has its prerequisite 3/reporter:ready satisfied",
    )
    ctx.check(
        consumer["state"] == "waiting" and consumer["submit_num"] == 0,
        f"3/consumer is beyond the runahead limit: it waits, got {show(consumer)}",
    )


@set_.case(
    "prerequisites",
    "set prerequisites [3/hello:succeeded] on 3/flaky: that prerequisite is satisfied",
)
async def set_prerequisites(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    await rt.control(
        "set",
        {"tasks": ["3/flaky"], "prerequisites": ["3/hello:succeeded"]},
        matched=["3/flaky"],
    )
    await rt.wait_proxy(
        "3/flaky",
        lambda p: {"id": "3/hello:succeeded", "satisfied": True} in p["prerequisites"],
        "has its prerequisite 3/hello:succeeded satisfied",
    )


@set_.case(
    "unknown-output",
    "set an output the task does not have: not accepted (data, accepted false), or the error reply",
)
async def set_unknown_output(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    frame = await rt.reply("set", {"tasks": ["1/hello"], "outputs": ["nosuch"]})
    value = frame.value
    ctx.check(
        "error" in value or value["data"]["accepted"] is False,
        f"expected accepted false or an error, got {frame.render()}",
        frame=frame,
    )


# --- message ---------------------------------------------------------------------------------------

message = under("message")


@message.case(
    "custom-output-then-succeeded",
    "a job's messages: a plain message changes nothing, the custom output's message "
    "completes it, 'succeeded' ends the job and the task succeeded",
    exercises=[f"{RUNTIME}/trigger"],
    timeout_steps=8,
)
async def message_custom(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    _, job_id = await rt.active_job("1/listener")
    await rt.control(
        "message",
        {"task_job": job_id, "messages": [["WARNING", "a message that is no output"]]},
        matched=["1/listener"],
    )
    await rt.control(
        "message",
        {
            "task_job": job_id,
            "event_time": "2026-01-01T00:00:00Z",
            "messages": [["INFO", "message heard"]],
        },
        matched=["1/listener"],
    )
    proxy = await rt.wait_proxy(
        "1/listener", lambda p: p["outputs"].get("heard") is True, "has completed heard"
    )
    ctx.check(proxy["state"] == "running", f"1/listener still runs: {show(proxy)}")
    await rt.control(
        "message", {"task_job": job_id, "messages": [["INFO", "succeeded"]]}, matched=["1/listener"]
    )
    await rt.wait_proxy("1/listener", lambda p: p["state"] == "succeeded", "is succeeded")
    await rt.wait_job(job_id, lambda j: j["state"] == "succeeded", "is succeeded")


@message.case(
    "failed",
    "a job's message 'failed': the job and its task (no retries) are failed",
    exercises=[f"{RUNTIME}/trigger"],
    timeout_steps=8,
)
async def message_failed(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    _, job_id = await rt.active_job("2/listener")
    await rt.control(
        "message", {"task_job": job_id, "messages": [["ERROR", "failed"]]}, matched=["2/listener"]
    )
    await rt.wait_proxy("2/listener", lambda p: p["state"] == "failed", "is failed")
    await rt.wait_job(job_id, lambda j: j["state"] == "failed", "is failed")


@message.case(
    "unknown-job",
    "a message from a job the workflow does not have: not accepted, or the error reply",
)
async def message_unknown_job(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    frame = await rt.reply(
        "message", {"task_job": "1/hello/99", "messages": [["INFO", "succeeded"]]}
    )
    value = frame.value
    ctx.check(
        "error" in value or value["data"]["accepted"] is False,
        f"expected accepted false or an error, got {frame.render()}",
        frame=frame,
    )


# --- broadcast -------------------------------------------------------------------------------------

broadcast = under("broadcast")

BROADCAST_ENV: Final = {"CONFORMANCE_SETTING": "on"}


def broadcast_entry(workflow: dict[str, Any], point: str, namespace: str) -> dict[str, Any] | None:
    for entry in workflow["broadcasts"]:
        if entry["cycle_point"] == point and entry["namespace"] == namespace:
            found: dict[str, Any] = entry
            return found
    return None


@broadcast.case(
    "put-and-clear",
    "broadcast put: the override is listed in the workflow's broadcasts; clear removes it",
)
async def broadcast_put_clear(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    where = {"cycle_points": ["1"], "namespaces": ["hello"]}
    try:
        await rt.control(
            "broadcast", {"mode": "put", **where, "settings": {"environment": BROADCAST_ENV}}
        )
        workflow = await rt.wait_workflow(
            lambda w: broadcast_entry(w, "1", "hello") is not None, "lists the broadcast"
        )
        entry = broadcast_entry(workflow, "1", "hello")
        assert entry is not None
        ctx.check(
            entry["settings"].get("environment") == BROADCAST_ENV,
            f"broadcast 1/hello: expected environment {show(BROADCAST_ENV)}, got {show(entry)}",
        )
        await rt.control("broadcast", {"mode": "clear", **where})
        await rt.wait_workflow(
            lambda w: broadcast_entry(w, "1", "hello") is None, "no longer lists the broadcast"
        )
    finally:
        await rt.reply("broadcast", {"mode": "clear", **where}, note="clean up: clear")


@broadcast.case(
    "changes-jobs",
    "a broadcast script applies to jobs submitted after it (1/hello exits 7), and not after clear",
    exercises=[f"{RUNTIME}/trigger"],
    timeout_steps=12,
)
async def broadcast_changes_jobs(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    where = {"cycle_points": ["1"], "namespaces": ["hello"]}
    try:
        await rt.settled("1/hello")
        await rt.control("broadcast", {"mode": "put", **where, "settings": {"script": "exit 7"}})
        await rt.wait_workflow(
            lambda w: broadcast_entry(w, "1", "hello") is not None, "lists the broadcast"
        )
        proxy = await rt.run_to_end("1/hello")
        jobs = await rt.jobs()
        job = jobs.get(proxy["job_ids"][-1], {})
        ctx.check(
            proxy["state"] == "failed" and job.get("exit_code") == 7,
            f"with the broadcast script 'exit 7', 1/hello's job exits 7: got task "
            f"{proxy['state']}, job {show(job)}",
        )
        await rt.control("broadcast", {"mode": "clear", **where})
        await rt.wait_workflow(
            lambda w: broadcast_entry(w, "1", "hello") is None, "no longer lists the broadcast"
        )
        proxy = await rt.run_to_end("1/hello")
        ctx.check(
            proxy["state"] == "succeeded",
            f"after clear, 1/hello runs its own script and succeeds: got {show(proxy)}",
        )
    finally:
        await rt.reply("broadcast", {"mode": "clear", **where}, note="clean up: clear")


@broadcast.case(
    "put-without-settings",
    "broadcast put without settings: not accepted (data, accepted false), or the error reply",
)
async def broadcast_no_settings(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    frame = await rt.reply("broadcast", {"mode": "put"})
    value = frame.value
    ctx.check(
        "error" in value or value["data"]["accepted"] is False,
        f"expected accepted false or an error, got {frame.render()}",
        frame=frame,
    )


# --- stop: the forms that do not stop at once ------------------------------------------------------

stop = under("stop")


@stop.case(
    "at-cycle-point",
    "stop at the final cycle point: accepted, the workflow says so and keeps running",
)
async def stop_at_point(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    await rt.control("stop", {"cycle_point": "3"}, matched=[])
    workflow = await rt.wait_workflow(lambda w: w["stop_mode"] is not None, "has a pending stop")
    ctx.check(
        workflow["status"] in ("running", "paused"),
        f"stop at a cycle point does not stop now: status {workflow['status']!r}",
    )
    ctx.should(
        "3" in (workflow["stop_mode"] or "") + workflow["status_msg"],
        f"stop_mode or status_msg should name cycle point 3: {show(workflow)}",
    )
    await still_serving(ctx, rt)


@stop.case(
    "after-task",
    "stop after a task that never succeeds (3/doomed): accepted, the workflow keeps running",
)
async def stop_after_task(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    await rt.control("stop", {"task": "3/doomed"})
    workflow = await rt.wait_workflow(
        lambda w: "3/doomed" in (w["stop_mode"] or "") + w["status_msg"],
        "names the stop task 3/doomed",
    )
    ctx.check(
        workflow["status"] in ("running", "paused"),
        f"stop after a task does not stop now: status {workflow['status']!r}",
    )
    await still_serving(ctx, rt)


# --- stop: the three modes (each ends the service: one per server) ---------------------------------


async def subscribed(ctx: CaseContext) -> ZmqSubscription:
    """A subscription to the ``publish`` target that has received its first message (a
    heartbeat at the latest), so nothing published afterwards is missed."""
    sub = await ctx.subscribe_zmq("publish")
    await sub.receive(what="a first message (a heartbeat at the latest)")
    return sub


def elements_in(message: Published, topic: str) -> list[dict[str, Any]]:
    """Added and updated elements of `topic` in a per-topic message or an ``all``."""
    payload = message.payload
    if message.topic == "all":
        payload = payload.get("deltas", {}).get(topic)
    elif message.topic != topic:
        return []
    if not isinstance(payload, dict):
        return []
    return [*payload.get("added", []), *payload.get("updated", [])]


def final_job_state(messages: Iterable[Published], job_id: str) -> str | None:
    """The last state of `job_id` published in `messages` (per-topic ``jobs`` messages)."""
    state = None
    for message in messages:
        if message.topic == "jobs":
            for element in elements_in(message, "jobs"):
                if element.get("id") == job_id:
                    state = element.get("state")
    return state


async def wait_shutdown(ctx: CaseContext, sub: ZmqSubscription, limit_s: float) -> Published:
    shutdown = await sub.wait_for(
        lambda m: m.topic == "shutdown", what="the shutdown message", timeout_s=limit_s
    )
    return shutdown


def check_one_shutdown(ctx: CaseContext, sub: ZmqSubscription, reason: str) -> None:
    shutdowns = [m for m in sub.messages if m.topic == "shutdown"]
    ctx.check(len(shutdowns) == 1, f"expected one shutdown message, got {len(shutdowns)}")
    ctx.should(
        shutdowns[0].payload.get("reason") == reason,
        f"the shutdown reason should be {reason!r}, got {shutdowns[0].payload.get('reason')!r}",
        frame=shutdowns[0].frame,
    )


@stop.case(
    "clean",
    "stop (clean): the workflow is stopping but waits for its active job; once that job "
    "ends (killed), shutdown is published",
    ends_service=True,
    exercises=[f"{RUNTIME}/shutdown", f"{RUNTIME}/kill"],
    timeout_steps=14,
    references=[REF_PUBLISH],
)
async def stop_clean(ctx: CaseContext) -> None:
    sub = await subscribed(ctx)
    rt = await open_runtime(ctx)
    _, job_id = await rt.active_job("1/sleeper")
    await rt.control("stop", {}, matched=[])
    await rt.wait_workflow(lambda w: w["status"] == "stopping", "is stopping")
    await watch_steady(
        ctx,
        lambda: rt.jobs(),
        lambda jobs: jobs.get(job_id, {}).get("state") == "running",
        f"a clean stop waits: job {job_id} still runs",
        window_s=0.5,
    )
    await rt.control("kill", {"tasks": ["*/*"]})
    shutdown = await wait_shutdown(ctx, sub, 3 * ctx.timeout_s)
    before = sub.messages[: sub.messages.index(shutdown)]
    ctx.check(
        final_job_state(before, job_id) == "failed",
        f"the killed job {job_id} is published as failed before shutdown (a clean stop "
        f"waits for active jobs); last published state: {final_job_state(before, job_id)}",
        frame=shutdown.frame,
    )
    check_one_shutdown(ctx, sub, "REQUEST(CLEAN)")


@stop.case(
    "kill",
    "stop (kill): the active job is killed (published failed), then shutdown",
    ends_service=True,
    exercises=[f"{RUNTIME}/shutdown"],
    timeout_steps=12,
    references=[REF_PUBLISH],
)
async def stop_kill(ctx: CaseContext) -> None:
    sub = await subscribed(ctx)
    rt = await open_runtime(ctx)
    _, job_id = await rt.active_job("1/sleeper")
    await rt.control("stop", {"mode": "kill"}, matched=[])
    shutdown = await wait_shutdown(ctx, sub, 2 * ctx.timeout_s)
    before = sub.messages[: sub.messages.index(shutdown)]
    ctx.check(
        final_job_state(before, job_id) == "failed",
        f"the active job {job_id} is killed and published as failed before shutdown; last "
        f"published state: {final_job_state(before, job_id)}",
        frame=shutdown.frame,
    )
    check_one_shutdown(ctx, sub, "REQUEST(KILL)")


@stop.case(
    "now",
    "stop (now): shutdown at once, the active job left running (not published finished)",
    ends_service=True,
    exercises=[f"{RUNTIME}/shutdown", f"{RUNTIME}/kill"],
    timeout_steps=12,
    references=[REF_PUBLISH],
)
async def stop_now(ctx: CaseContext) -> None:
    sub = await subscribed(ctx)
    rt = await open_runtime(ctx)
    await rt.control("kill", {"tasks": ["*/sleeper"]})  # no five-minute job left behind
    await rt.wait_proxies(
        lambda ps: not any(p["state"] in ACTIVE for p in ps.values() if p["name"] == "sleeper"),
        "no sleeper is active",
    )
    _, job_id = await rt.active_job("1/listener")
    await rt.control("stop", {"mode": "now"}, matched=[])
    shutdown = await wait_shutdown(ctx, sub, ctx.timeout_s)
    before = sub.messages[: sub.messages.index(shutdown)]
    ctx.check(
        final_job_state(before, job_id) not in FINISHED,
        f"stop now leaves job {job_id} running, but it was published "
        f"{final_job_state(before, job_id)} before shutdown",
        frame=shutdown.frame,
    )
    check_one_shutdown(ctx, sub, "REQUEST(NOW)")


# --- the publish channel ------------------------------------------------------------------------------


def split_batches(messages: Sequence[Published]) -> list[tuple[list[Published], Published, bool]]:
    """(per-topic messages, the ``all`` closing them, complete) for each batch in
    `messages`; heartbeats are left out. A batch is complete when an ``all`` (or nothing
    but heartbeats) came before it in `messages`."""
    batches = []
    current: list[Published] = []
    complete = False
    for message in messages:
        if message.topic in DELTA_TOPICS:
            current.append(message)
        elif message.topic == "all":
            batches.append((current, message, complete))
            current, complete = [], True
    return batches


def check_batches(ctx: CaseContext, messages: Sequence[Published]) -> int:
    """Every batch: per-topic messages only for non-empty deltas, then ``all`` holding
    exactly those messages. Returns the number of complete batches checked."""
    checked = 0
    for topic_messages, closing, complete in split_batches(messages):
        deltas = closing.payload.get("deltas", {})
        for message in topic_messages:
            payload = message.payload
            ctx.check(
                any(payload.get(key) for key in ("added", "updated", "pruned")),
                f"a {message.topic!r} message is published only when its delta is not empty: "
                f"{message.frame.render()}",
                frame=message.frame,
            )
            ctx.check(
                deltas.get(message.topic) == payload,
                f"the 'all' message closing the batch must hold the batch's {message.topic!r} "
                f"message (seq {payload.get('seq')}) unchanged; it holds "
                f"{show(deltas.get(message.topic))}",
                frame=closing.frame,
            )
        if complete:
            seen = {m.topic for m in topic_messages}
            ctx.check(
                set(deltas) == seen,
                f"the 'all' message lists topics {sorted(deltas)}, but the batch published "
                f"{sorted(seen)}",
                frame=closing.frame,
            )
            checked += 1
    return checked


def check_seq(ctx: CaseContext, messages: Sequence[Published]) -> None:
    """``seq`` goes up by one per message on any topic, without gaps."""
    previous: Published | None = None
    for message in messages:
        seq = message.payload.get("seq")
        if previous is not None:
            expected = previous.payload.get("seq", -2) + 1
            ctx.check(
                seq == expected,
                f"seq must go up by one per message: after {previous.topic!r} seq "
                f"{previous.payload.get('seq')}, got {message.topic!r} seq {seq}",
                frame=message.frame,
            )
        previous = message


def held_in(message: Published, task_id: str, held: bool) -> bool:
    return any(
        e.get("id") == task_id and e.get("is_held") is held
        for e in elements_in(message, "task_proxies")
    )


all_deltas = under("all_deltas")
task_proxies_delta = under("task_proxies_delta")
jobs_delta = under("jobs_delta")
workflow_delta = under("workflow_delta")
edges_delta = under("edges_delta")
heartbeat = under("heartbeat")


@all_deltas.case(
    "batch-then-all",
    "each change batch: one message per changed topic (never an empty delta), then 'all' "
    "holding exactly those messages",
    interfaces=["runtime", "publish"],
    exercises=[
        f"{RUNTIME}/{topic}_delta" for topic in ("workflow", "tasks", "task_proxies", "jobs")
    ],
    timeout_steps=10,
    references=[REF_PUBLISH],
)
async def publish_batches(ctx: CaseContext) -> None:
    sub = await subscribed(ctx)
    rt = await open_runtime(ctx)
    try:
        await rt.control("hold", {"tasks": ["1/hello"]}, matched=["1/hello"])
        await sub.wait_for(
            lambda m: m.topic == "all" and held_in(m, "1/hello", True),
            what="an 'all' message with 1/hello held",
        )
        await rt.control("release", {"tasks": ["1/hello"]}, matched=["1/hello"])
        await sub.wait_for(
            lambda m: m.topic == "all" and held_in(m, "1/hello", False),
            what="an 'all' message with 1/hello released",
        )
        await rt.run_to_end("1/hello")
        await sub.wait_for(
            lambda m: (
                m.topic == "all"
                and any(
                    e.get("id") == "1/hello" and e.get("state") in FINISHED
                    for e in elements_in(m, "task_proxies")
                )
            ),
            what="an 'all' message with 1/hello finished",
        )
    finally:
        await rt.reply("release", {"tasks": ["1/hello"]}, note="clean up: release")
    checked = check_batches(ctx, sub.messages)
    ctx.check(checked >= 3, f"expected at least three complete batches, checked {checked}")
    check_seq(ctx, sub.messages)


@all_deltas.case(
    "seq-without-gaps",
    "seq goes up by one per message, on every topic (heartbeats included), while the "
    "workflow changes",
    interfaces=["runtime", "publish"],
    exercises=[f"{RUNTIME}/heartbeat"],
    timeout_steps=10,
    references=[REF_PUBLISH],
)
async def publish_seq(ctx: CaseContext) -> None:
    sub = await subscribed(ctx)
    rt = await open_runtime(ctx)
    for _ in range(2):
        await rt.run_to_end("1/hello")
    await sub.wait_for(
        lambda m: (
            m.topic == "all"
            and any(
                e.get("id") == "1/hello" and e.get("state") == "succeeded"
                for e in elements_in(m, "task_proxies")
            )
        ),
        what="an 'all' message with 1/hello succeeded",
    )
    ctx.check(len(sub.messages) >= 5, f"expected several messages, got {len(sub.messages)}")
    check_seq(ctx, sub.messages)
    times = [m.payload.get("time", 0) for m in sub.messages]
    ctx.should(
        all(a <= b for a, b in itertools.pairwise(times)),
        "time should not go backwards between messages",
    )


@task_proxies_delta.case(
    "hold-and-release",
    "hold and release are published: task_proxies updates with is_held true, then false",
    interfaces=["runtime", "publish"],
    exercises=[f"{RUNTIME}/hold", f"{RUNTIME}/release"],
    references=[REF_PUBLISH],
)
async def publish_hold(ctx: CaseContext) -> None:
    sub = await subscribed(ctx)
    rt = await open_runtime(ctx)
    try:
        await rt.control("hold", {"tasks": ["1/hello"]}, matched=["1/hello"])
        await sub.wait_for(
            lambda m: m.topic == "task_proxies" and held_in(m, "1/hello", True),
            what="a task_proxies message with 1/hello held",
        )
        await rt.control("release", {"tasks": ["1/hello"]}, matched=["1/hello"])
        await sub.wait_for(
            lambda m: m.topic == "task_proxies" and held_in(m, "1/hello", False),
            what="a task_proxies message with 1/hello released",
        )
    finally:
        await rt.reply("release", {"tasks": ["1/hello"]}, note="clean up: release")


@jobs_delta.case(
    "trigger",
    "a triggered task's new job is published (jobs: added, then updated to succeeded), and "
    "its task proxy goes through submitted and running to succeeded",
    interfaces=["runtime", "publish"],
    exercises=[f"{RUNTIME}/trigger", f"{RUNTIME}/task_proxies_delta"],
    timeout_steps=8,
    references=[REF_PUBLISH],
)
async def publish_trigger(ctx: CaseContext) -> None:
    sub = await subscribed(ctx)
    rt = await open_runtime(ctx)
    before = await rt.settled("1/hello")
    submits = before["submit_num"] if before else 0
    job_id = f"1/hello/{submits + 1:02d}"
    await rt.control("trigger", {"tasks": ["1/hello"]}, matched=["1/hello"])
    await sub.wait_for(
        lambda m: (
            m.topic == "jobs"
            and any(
                e.get("id") == job_id and e.get("state") == "succeeded"
                for e in elements_in(m, "jobs")
            )
        ),
        what=f"a jobs message with {job_id} succeeded",
    )
    added = [
        m
        for m in sub.messages
        if m.topic == "jobs" and any(e.get("id") == job_id for e in m.payload.get("added", []))
    ]
    ctx.check(added, f"the new job {job_id} is first published under added")
    await sub.first(
        lambda m: (
            m.topic == "task_proxies"
            and any(
                e.get("id") == "1/hello" and e.get("state") == "succeeded"
                for e in elements_in(m, "task_proxies")
            )
        ),
        what="a task_proxies message with 1/hello succeeded",
    )
    states = [
        e.get("state")
        for m in sub.messages
        if m.topic == "task_proxies"
        for e in elements_in(m, "task_proxies")
        if e.get("id") == "1/hello"
    ]
    ctx.check(
        states and states[-1] == "succeeded",
        f"1/hello's published states end succeeded: {states}",
    )
    order = ["preparing", "submitted", "running", "succeeded"]
    ranks = [order.index(s) for s in states if s in order]
    ctx.check(
        ranks == sorted(ranks),
        f"1/hello's published states go forward (preparing, submitted, running, "
        f"succeeded): {states}",
    )
    ctx.should(
        {"submitted", "running"} <= set(states),
        f"the submitted and running states should each be published: {states}",
    )


@workflow_delta.case(
    "pause-and-resume",
    "pause and resume are published: workflow updates with status paused, then running",
    interfaces=["runtime", "publish"],
    exercises=[f"{RUNTIME}/pause", f"{RUNTIME}/resume"],
    references=[REF_PUBLISH],
)
async def publish_pause(ctx: CaseContext) -> None:
    sub = await subscribed(ctx)
    rt = await open_runtime(ctx)

    def status(wanted: str) -> Callable[[Published], bool]:
        return lambda m: (
            m.topic == "workflow"
            and any(e.get("status") == wanted for e in elements_in(m, "workflow"))
        )

    try:
        await rt.control("pause")
        await sub.wait_for(status("paused"), what="a workflow message with status paused")
        await rt.control("resume")
        await sub.wait_for(status("running"), what="a workflow message with status running")
    finally:
        await rt.reply("resume", note="clean up: resume")


@edges_delta.case(
    "remove-and-respawn",
    "removing 1/recover prunes it and its edge 1/doomed=>1/recover; triggering it again "
    "adds both back",
    interfaces=["runtime", "publish"],
    exercises=[f"{RUNTIME}/remove", f"{RUNTIME}/trigger", f"{RUNTIME}/task_proxies_delta"],
    timeout_steps=10,
    references=[REF_PUBLISH],
)
async def publish_edges(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    if "1/recover" not in await rt.proxies():
        await rt.run_to_end("1/recover")
    await rt.settled("1/recover")
    sub = await subscribed(ctx)
    edge = "1/doomed=>1/recover"
    await rt.control("remove", {"tasks": ["1/recover"]}, matched=["1/recover"])
    await sub.wait_for(
        lambda m: m.topic == "edges" and edge in m.payload.get("pruned", []),
        what=f"an edges message pruning {edge}",
    )
    await sub.first(
        lambda m: m.topic == "task_proxies" and "1/recover" in m.payload.get("pruned", []),
        what="a task_proxies message pruning the removed 1/recover",
    )
    await rt.control("trigger", {"tasks": ["1/recover"]}, matched=["1/recover"])
    await sub.wait_for(
        lambda m: (
            m.topic == "edges" and any(e.get("id") == edge for e in m.payload.get("added", []))
        ),
        what=f"an edges message adding {edge} back",
    )
    await rt.wait_proxy("1/recover", lambda p: p["state"] in FINISHED, "has run again")


@heartbeat.case(
    "periodic",
    "a heartbeat comes every interval_s seconds (its own seq), even when nothing changes",
    interfaces=["publish"],
    timeout_steps=8,
    references=[REF_PUBLISH],
)
async def publish_heartbeat(ctx: CaseContext) -> None:
    sub = await ctx.subscribe_zmq("publish")
    first = await sub.wait_for(lambda m: m.topic == "heartbeat", what="a heartbeat")
    interval = first.payload["interval_s"]
    ctx.check(
        interval <= 2 * ctx.timeout_s,
        f"heartbeat interval {interval} s is beyond what this run can check (--timeout "
        f"{ctx.timeout_s:g})",
    )
    second = await sub.wait_for(
        lambda m: m.topic == "heartbeat",
        what="the next heartbeat",
        timeout_s=2 * interval + 1.0,
    )
    ctx.check(
        second.payload["seq"] > first.payload["seq"],
        f"heartbeats carry seq: {first.payload['seq']} then {second.payload['seq']}",
        frame=second.frame,
    )
    gap = second.received_s - first.received_s
    ctx.should(
        gap <= 1.5 * interval + 0.5,
        f"heartbeats {gap:.2f} s apart, interval_s says {interval}",
        frame=second.frame,
    )


# --- malformed requests: the error envelope, and the server keeps serving -------------------------

malformed = under("malformed")


async def expect_error(
    ctx: CaseContext,
    conn: ZmqProbe,
    *,
    value: Any = None,
    raw: Sequence[bytes] = (),
    codes: Sequence[str],
    what: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Send one bad request (a JSON `value`, or `raw` frames) and expect the error reply
    (validated against ErrorReply); its ``code`` SHOULD be one of `codes`; with
    `request_id`, the reply MUST echo it. Returns the error object."""
    if raw:
        await conn.send_raw(*raw, note=what)
    else:
        await conn.send(value, note=what)
    frame = await conn.expect_frame([ERROR_REPLY], what=f"the error reply to {what}")
    error: dict[str, Any] = frame.value["error"]
    ctx.should(
        error.get("code") in codes,
        f"{what}: error code should be {' or '.join(codes)}, got {error.get('code')!r}",
        frame=frame,
    )
    if request_id is not None:
        ctx.check(
            frame.value.get("id") == request_id,
            f"{what}: the error reply must echo id {request_id!r}: {frame.render()}",
            frame=frame,
        )
    return error


async def bad_requests(
    ctx: CaseContext,
    items: Sequence[tuple[str, Any, Sequence[str]]],
    *,
    raw: bool = False,
) -> None:
    """Send each (what, request, codes), expect an error reply to each, then check the
    server still serves (same connection and a new one)."""
    rt = await open_runtime(ctx)
    for what, value, codes in items:
        if raw:
            await expect_error(ctx, rt.conn, raw=value, codes=codes, what=what)
        else:
            await expect_error(ctx, rt.conn, value=value, codes=codes, what=what)
    await still_serving(ctx, rt)


@malformed.case(
    "not-json",
    "a frame that is not JSON (or not UTF-8, or empty): the error reply, serving goes on",
    references=[REF_ENVELOPE],
)
async def malformed_not_json(ctx: CaseContext) -> None:
    await bad_requests(
        ctx,
        [
            ("truncated JSON", [b'{"command": "ping_workflow",'], ["parse_error"]),
            ("bytes that are not UTF-8", [b"\xff\xfe{}"], ["parse_error"]),
            ("an empty frame", [b""], ["parse_error"]),
            (
                "NaN",
                [b'{"command": "ping_workflow", "args": {"x": NaN}}'],
                ["parse_error", "invalid_args"],
            ),
        ],
        raw=True,
    )


@malformed.case(
    "not-an-object",
    "JSON that is not an object ([1, 2], [], a string, a number, null): the error reply, "
    "serving goes on (the original's server thread died)",
    references=[REF_DEFECTS + " 1"],
)
async def malformed_not_object(ctx: CaseContext) -> None:
    await bad_requests(
        ctx,
        [
            ("[1, 2]", [1, 2], ["invalid_request"]),
            ("[]", [], ["invalid_request"]),
            ('"ping_workflow"', "ping_workflow", ["invalid_request"]),
            ("42", 42, ["invalid_request"]),
            ("null", None, ["invalid_request"]),
        ],
    )


@malformed.case(
    "missing-command",
    "no command, or a command that is not a string: the error reply",
    references=[REF_ENVELOPE],
)
async def malformed_missing_command(ctx: CaseContext) -> None:
    await bad_requests(
        ctx,
        [
            ("no command", {"args": {}}, ["invalid_request"]),
            ("command 5", {"command": 5, "args": {}}, ["invalid_request"]),
            (
                "command [ping_workflow]",
                {"command": ["ping_workflow"], "args": {}},
                ["invalid_request"],
            ),
        ],
    )


@malformed.case(
    "missing-args",
    "a command without args (even one taking none): the error reply, as the original's "
    "\"Request missing field 'args'\"",
    references=[REF_ENVELOPE],
)
async def malformed_missing_args(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    error = await expect_error(
        ctx,
        rt.conn,
        value={"command": "ping_workflow"},
        codes=["invalid_request"],
        what="ping_workflow without args",
    )
    ctx.should(
        "args" in error["message"],
        f"the message should name the missing field args: {error['message']!r}",
    )
    await still_serving(ctx, rt)


@malformed.case(
    "unknown-command",
    "an unknown command: the error reply naming it",
    references=[REF_ENVELOPE],
)
async def malformed_unknown(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    for command in ("nosuch", "graphql", "pb_entire_workflow"):
        error = await expect_error(
            ctx,
            rt.conn,
            value=request(command),
            codes=["unknown_command"],
            what=f"unknown command {command!r}",
        )
        ctx.should(
            command in error["message"],
            f"the message should name the command {command!r}: {error['message']!r}",
        )
    await still_serving(ctx, rt)


@malformed.case(
    "dunder-names",
    "commands named like Python internals (__dir__, __class__, __init__...): the error "
    "reply, never dispatched",
    references=[REF_DEFECTS + " 2"],
)
async def malformed_dunder(ctx: CaseContext) -> None:
    names = ("__dir__", "__class__", "__init__", "__getattribute__", "__repr__", "__dict__")
    await bad_requests(ctx, [(f"command {n!r}", request(n), ["unknown_command"]) for n in names])


@malformed.case(
    "attribute-names",
    "commands named like server attributes and methods (receiver, port, start, "
    "handle_api...): the error reply, never dispatched",
    references=[REF_DEFECTS + " 2"],
)
async def malformed_attributes(ctx: CaseContext) -> None:
    names = (
        "register_endpoints",
        "receiver",
        "port",
        "endpoints",
        "start",
        "publish",
        "serve_frame",
        "handle_api",
        "handle_ping_workflow",
        "scheduler",
        "_dispatch",
    )
    await bad_requests(ctx, [(f"command {n!r}", request(n), ["unknown_command"]) for n in names])


@malformed.case(
    "invalid-args",
    "args against the command's schema: the error reply, nothing actioned",
    references=["schemas/workflow/runtime.json"],
)
async def malformed_invalid_args(ctx: CaseContext) -> None:
    cases = [
        ("args a list", request("ping_workflow", [1]), ["invalid_args", "invalid_request"]),
        ("args a string", request("api", "hold"), ["invalid_args", "invalid_request"]),
        ("an unexpected argument", request("ping_workflow", {"x": 1}), ["invalid_args"]),
        ("hold without tasks", request("hold", {}), ["invalid_args"]),
        ("hold tasks not a list", request("hold", {"tasks": "1/hello"}), ["invalid_args"]),
        ("hold with no tasks", request("hold", {"tasks": []}), ["invalid_args"]),
        ("a malformed selector", request("hold", {"tasks": ["1/hello:"]}), ["invalid_args"]),
        ("stop in mode sideways", request("stop", {"mode": "sideways"}), ["invalid_args"]),
        (
            "a task_job that is no job id",
            request("message", {"task_job": "nope", "messages": [["INFO", "started"]]}),
            ["invalid_args"],
        ),
        (
            "a message that is not [severity, text]",
            request("message", {"task_job": "1/hello/01", "messages": [["LOUD"]]}),
            ["invalid_args"],
        ),
        ("broadcast mode sometimes", request("broadcast", {"mode": "sometimes"}), ["invalid_args"]),
        ("data_elements without a type", request("data_elements", {}), ["invalid_args"]),
    ]
    await bad_requests(ctx, cases)


@malformed.case(
    "envelope-keys",
    "an envelope key the protocol lacks, or meta that is not an object: the error reply",
    references=["schemas/workflow/runtime.json#/$defs/WorkflowRequest"],
)
async def malformed_envelope(ctx: CaseContext) -> None:
    await bad_requests(
        ctx,
        [
            ("an extra envelope key", request("ping_workflow", nosuch=1), ["invalid_request"]),
            ("meta a string", request("ping_workflow", meta="x"), ["invalid_request"]),
            ("id a number", request("ping_workflow", id=5), ["invalid_request"]),
        ],
    )


@malformed.case(
    "id-echoed-on-errors",
    "the error reply to a request with an id echoes it (extension)",
    references=["schemas/workflow/runtime.json#/$defs/ErrorReply"],
)
async def malformed_id_echoed(ctx: CaseContext) -> None:
    rt = await open_runtime(ctx)
    await expect_error(
        ctx,
        rt.conn,
        value=request("nosuch", id="bad-1"),
        codes=["unknown_command"],
        what="an unknown command with id bad-1",
        request_id="bad-1",
    )
    await expect_error(
        ctx,
        rt.conn,
        value=request("hold", {"tasks": 7}, id="bad-2"),
        codes=["invalid_args"],
        what="invalid args with id bad-2",
        request_id="bad-2",
    )
    await still_serving(ctx, rt)


@malformed.case(
    "oversize",
    "a request over the size bound (max_message_bytes + 1): the error reply, serving goes on",
    references=["schemas/workflow/protocol.json (max_message_bytes)"],
)
async def malformed_oversize(ctx: CaseContext) -> None:
    limit = ctx.interface("runtime").max_message_bytes
    head = b'{"command": "ping_workflow", "args": {}, "meta": {"prog": "'
    tail = b'"}}'
    frame = head + b"x" * (limit + 1 - len(head) - len(tail)) + tail
    assert len(frame) == limit + 1
    await bad_requests(ctx, [(f"a {len(frame)}-byte request", [frame], ["too_large"])], raw=True)


@malformed.case(
    "multipart",
    "a request of two frames: the error reply (a request is one frame)",
    references=[REF_ENVELOPE],
)
async def malformed_multipart(ctx: CaseContext) -> None:
    one = json.dumps(request("ping_workflow")).encode()
    await bad_requests(ctx, [("a two-frame request", [one, one], ["invalid_request"])], raw=True)


# --- security: CurveZMQ drops what it does not authorise, silently -------------------------------

security = under("security")


def authorised_keys(ctx: CaseContext) -> CurveClientSecurity:
    """The family's client keys; SKIP when the run uses plain TCP."""
    factory = ctx.family.spec.zmq_security
    keys = factory("runtime", ctx.options) if factory is not None else None
    if keys is None:
        ctx.skip("the server under test runs without CurveZMQ (--insecure): nothing to check")
    return keys


def stranger(keys: CurveClientSecurity) -> CurveClientSecurity:
    """A fresh client keypair the server never authorised, with the right server key."""
    public, secret = zmq.curve_keypair()
    return CurveClientSecurity(CurveKeyPair(public, secret), keys.server_public_key)


async def unanswered(ctx: CaseContext, security: Any, who: str) -> None:
    async with await ctx.open_zmq("runtime", security=security) as conn:
        await conn.send(request("ping_workflow"), note=f"from {who}")
        await conn.expect_no_reply(NO_REPLY_S, what=f"ping_workflow from {who}")


@security.case(
    "unauthorised-key",
    "a client whose key the server never authorised gets no reply; others are served",
    references=[REF_SECURITY],
)
async def security_unauthorised(ctx: CaseContext) -> None:
    keys = authorised_keys(ctx)
    await unanswered(ctx, stranger(keys), "an unauthorised key")
    await still_serving(ctx)


@security.case(
    "plaintext-client",
    "a client without CurveZMQ gets no reply; others are served",
    references=[REF_SECURITY],
)
async def security_plaintext(ctx: CaseContext) -> None:
    authorised_keys(ctx)
    await unanswered(ctx, PLAIN, "a plaintext client")
    await still_serving(ctx)


@security.case(
    "wrong-server-key",
    "a client with an authorised key but the wrong server key gets no reply",
    references=[REF_SECURITY],
)
async def security_wrong_server_key(ctx: CaseContext) -> None:
    keys = authorised_keys(ctx)
    wrong = CurveClientSecurity(keys.keypair, zmq.curve_keypair()[0])
    await unanswered(ctx, wrong, "a client expecting another server key")
    await still_serving(ctx)


@security.case(
    "subscribers",
    "subscribers with an unauthorised key or without CurveZMQ receive nothing, while an "
    "authorised one receives a change's deltas",
    interfaces=["runtime", "publish"],
    exercises=[f"{RUNTIME}/task_proxies_delta"],
    references=[REF_SECURITY, REF_PUBLISH],
)
async def security_subscribers(ctx: CaseContext) -> None:
    keys = authorised_keys(ctx)
    outsiders = [
        await ctx.subscribe_zmq("publish", security=stranger(keys)),
        await ctx.subscribe_zmq("publish", security=PLAIN),
    ]
    sub = await subscribed(ctx)
    rt = await open_runtime(ctx)
    try:
        await rt.control("hold", {"tasks": ["1/hello"]}, matched=["1/hello"])
        await sub.wait_for(
            lambda m: m.topic == "all" and held_in(m, "1/hello", True),
            what="an 'all' message with 1/hello held",
        )
    finally:
        await rt.reply("release", {"tasks": ["1/hello"]}, note="clean up: release")
    for outsider, who in zip(outsiders, ("an unauthorised key", "plain TCP"), strict=True):
        await outsider.expect_silence(0.2, why=f"a subscriber with {who}")
