"""Conformance cases of the jobs agent: harpd's protocol (reference/jobs.md, section 2).

Every case has an id ``jobs/agent/call/<name>`` and talks to the ``agent`` target (TLS from
the first byte, one call per connection). The agent must offer the conformance procedures
(``echo``, ``add``, ``stream``, ``fail``, ``not_json``, ``stream_limited``; see
``conformance/README.md``). Cases that need a valid call SKIP unless the credentials are given
(``--agent-user`` and ``--agent-password`` or ``RUNWIRE_AGENT_PASSWORD``).

What is MUST and what SHOULD: the error *types* and the order of lines are MUST (the original
dispatcher acts on them); harpd's exact error texts are SHOULD (a WARN when they differ).
Every received line is validated against ``schemas/jobs/agent.json``, whose reply objects are
closed, because the original dispatcher rejects a reply line with any key it does not expect;
``reply-keys-exact`` checks the key sets once more by hand, with a message naming the key.

Each case that sends bad input ends by checking that the agent still serves a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
import warnings
from typing import Any, Final

from runwire.conformance import CaseContext, CaseFailure, CaseSet, FailureKind, StreamReply
from runwire.conformance.context import Frame

__all__ = ["CASES", "STREAM_LIMITED_TIME_LIMIT_S"]

CASES = CaseSet("jobs")
call = CASES.under("jobs/agent/call")

STREAM_LIMITED_TIME_LIMIT_S: Final = 1.0
"""The time limit the agent gives ``stream_limited`` (conformance/README.md), seconds."""

AGENT_SCHEMA: Final = "https://runwire.dev/schemas/jobs/agent.json#/$defs/"
REPLY_LINE: Final = AGENT_SCHEMA + "AgentReplyLine"
AGENT_ERROR: Final = AGENT_SCHEMA + "AgentError"

AUTH_MESSAGE: Final = "unknown user or wrong password"
INCOMPLETE_MESSAGE: Final = "request incomplete or too long"

REF_MESSAGES: Final = "reference/jobs.md 2.2"
REF_SEQUENCE: Final = "reference/jobs.md 2.3"
REF_ERRORS: Final = "reference/jobs.md 2.4"
REF_TLS: Final = "reference/jobs.md 2.1"
REF_EXECUTION: Final = "reference/jobs.md 2.5"
REF_DEFECTS: Final = "reference/jobs.md, Defects of the original"

EXACT_KEYS: Final[dict[frozenset[str], str]] = {
    frozenset({"harp", "stream_result"}): "acknowledgement",
    frozenset({"stream"}): "stream item",
    frozenset({"result"}): "result",
    frozenset({"exception"}): "exception",
    frozenset({"harp", "error"}): "error",
}
"""The key sets the original dispatcher accepts on an agent reply line (reference/jobs.md
2.2, "Strict matching")."""

INNER_KEYS: Final = ({"type", "message"}, {"type", "message", "data"})
"""The key sets it accepts inside ``exception`` and ``error``."""

MAX_LINES: Final = 100
"""Most lines a case reads from one call before giving up."""


# --- requests and calls -----------------------------------------------------------------


def credentials(ctx: CaseContext) -> tuple[str, str]:
    """(user, password) from the family options; SKIP the case when either is missing."""
    return ctx.require_option("agent_user"), ctx.require_option("agent_password")


def optional_credentials(ctx: CaseContext) -> tuple[str, str] | None:
    """(user, password) when both options are given, else None."""
    user, password = ctx.option("agent_user"), ctx.option("agent_password")
    if isinstance(user, str) and user and isinstance(password, str) and password:
        return user, password
    return None


def request(
    procedure: str, arguments: Any, auth: tuple[str, str] | dict[str, Any] | None
) -> dict[str, Any]:
    """A call request line: ``{"harp": 1, "procedure", "arguments", "auth"}``."""
    if isinstance(auth, tuple):
        auth = {"user": auth[0], "password": auth[1]}
    line: dict[str, Any] = {"harp": 1, "procedure": procedure, "arguments": arguments}
    if auth is not None:
        line["auth"] = auth
    return line


def _show(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=repr)


async def call_procedure(
    ctx: CaseContext, procedure: str, arguments: Any, auth: tuple[str, str] | None = None
) -> StreamReply:
    """Call `procedure` with the case's credentials (or `auth`), read the whole reply (ack or
    error, items, one terminator; each line validated), and expect the agent to close.

    Raises:
        CaseSkip: no credentials given.
        CaseFailure: see :meth:`JsonLinesProbe.read_stream`; the agent does not close after
            the terminator.
    """
    auth = auth or credentials(ctx)
    async with await ctx.open_jsonlines("agent") as conn:
        reply = await conn.request_stream(ctx.op, request(procedure, arguments, auth))
        await conn.expect_closed(what=f"the terminator of the {procedure} call")
    return reply


def check_acknowledged(ctx: CaseContext, reply: StreamReply, streaming: bool, what: str) -> None:
    """The call was acknowledged with ``{"harp": 1, "stream_result": streaming}``."""
    first = reply.frames[0] if reply.frames else None
    ctx.check(
        reply.ack is not None,
        f"{what}: expected the acknowledgement {_show({'harp': 1, 'stream_result': streaming})} "
        f"first, got {_show(reply.terminator)}",
        frame=first,
    )
    ctx.check(
        reply.ack.get("stream_result") is streaming,
        f"{what}: the acknowledgement says stream_result {_show(reply.ack.get('stream_result'))}"
        f", expected {_show(streaming)}",
        frame=first,
    )


def terminator_frame(reply: StreamReply) -> Frame | None:
    """The frame of the terminator, if any."""
    return reply.frames[-1] if reply.frames else None


def check_error(
    ctx: CaseContext,
    reply: StreamReply,
    error_type: str,
    what: str,
    *,
    message: str | None = None,
    acknowledged: bool = False,
) -> dict[str, Any]:
    """The call ended with an error line of `error_type`: instead of the acknowledgement
    (default), or after it (`acknowledged`). A `message` differing from harpd's is a WARN.

    Returns:
        The ``error`` object.
    """
    frame = terminator_frame(reply)
    if acknowledged:
        ctx.check(
            reply.ack is not None,
            f"{what}: expected the acknowledgement, then an error {error_type}; got no "
            f"acknowledgement",
            frame=reply.frames[0] if reply.frames else None,
        )
    else:
        ctx.check(
            reply.ack is None,
            f"{what}: expected the error {error_type} instead of the acknowledgement, got "
            f"{_show(reply.ack)} then {_show(reply.terminator)}",
            frame=reply.frames[0] if reply.frames else None,
        )
    ctx.check(not reply.items, f"{what}: expected no stream items, got {len(reply.items)}")
    terminator = reply.terminator
    ctx.check(
        isinstance(terminator, dict) and "error" in terminator,
        f"{what}: expected an error line of type {error_type}, got {_show(terminator)}",
        frame=frame,
    )
    error: dict[str, Any] = terminator["error"]
    ctx.check(
        error.get("type") == error_type,
        f"{what}: expected error type {error_type}, got {_show(error.get('type'))} "
        f"({_show(error)})",
        frame=frame,
    )
    if message is not None:
        ctx.should(
            error.get("message") == message,
            f"{what}: harpd's message is {message!r}, got {error.get('message')!r}",
            frame=frame,
        )
    return error


async def send_bad(
    ctx: CaseContext, line: Any = None, *, raw: bytes | None = None, note: str
) -> StreamReply:
    """Send one line (a JSON value, or `raw` bytes as they are), read the agent's whole reply
    and expect it to close. Nothing sent is judged; every line received is."""
    async with await ctx.open_jsonlines("agent") as conn:
        if raw is not None:
            await conn.send_raw(raw, note=note)
        else:
            await conn.send(line, note=note)
        reply = await conn.read_stream(ctx.op)
        await conn.expect_closed(what="the error line")
    return reply


async def still_serving(ctx: CaseContext) -> None:
    """The agent serves a new connection: with credentials, ``echo`` returns its argument;
    without, a line that is not JSON gets ``parse_error``."""
    auth = optional_credentials(ctx)
    if auth is not None:
        reply = await call_procedure(ctx, "echo", ["still serving"], auth)
        what = "echo after the bad input"
        check_acknowledged(ctx, reply, False, what)
        ctx.check(
            reply.terminator == {"result": ["still serving"]},
            f"{what}: expected the result ['still serving'], got {_show(reply.terminator)}",
            frame=terminator_frame(reply),
        )
    else:
        reply = await send_bad(ctx, raw=b"still serving?\n", note="not JSON: is it serving?")
        check_error(ctx, reply, "parse_error", "a line that is not JSON, after the bad input")
    ctx.log("the agent still serves new connections")


# --- acknowledgement and results -----------------------------------------------------------


@call.case(
    "ack-exact",
    'the acknowledgement is exactly {"harp": 1, "stream_result": false} for a plain '
    "procedure and true for a streaming one",
    references=(REF_MESSAGES, AGENT_SCHEMA + "AgentAck"),
)
async def ack_exact(ctx: CaseContext) -> None:
    for procedure, arguments, streaming in (("echo", [], False), ("stream", [1], True)):
        reply = await call_procedure(ctx, procedure, arguments)
        frame = reply.frames[0] if reply.frames else None
        expected = {"harp": 1, "stream_result": streaming}
        ctx.check(
            reply.ack == expected
            and type(reply.ack["harp"]) is int
            and reply.ack["stream_result"] is streaming,
            f"{procedure}: the acknowledgement must be exactly {_show(expected)}, got "
            f"{_show(reply.ack if reply.ack is not None else reply.terminator)}",
            frame=frame,
        )


@call.case(
    "echo-positional",
    "echo with positional arguments (a list): ack, no items, the result is the list",
    references=(REF_MESSAGES, REF_EXECUTION),
)
async def echo_positional(ctx: CaseContext) -> None:
    arguments = [1, "a", None, {"k": [2.5, True]}]
    reply = await call_procedure(ctx, "echo", arguments)
    check_acknowledged(ctx, reply, False, "echo [...]")
    ctx.check(not reply.items, f"echo: expected no stream items, got {len(reply.items)}")
    ctx.check(
        reply.terminator == {"result": arguments},
        f"echo: expected the result {_show(arguments)}, got {_show(reply.terminator)}",
        frame=terminator_frame(reply),
    )


@call.case(
    "echo-named",
    "echo with named arguments (an object): ack, no items, the result is the object",
    references=(REF_MESSAGES, REF_EXECUTION),
)
async def echo_named(ctx: CaseContext) -> None:
    arguments = {"x": 1, "y": "z", "nested": {"list": [1, 2]}}
    reply = await call_procedure(ctx, "echo", arguments)
    check_acknowledged(ctx, reply, False, "echo {...}")
    ctx.check(not reply.items, f"echo: expected no stream items, got {len(reply.items)}")
    ctx.check(
        reply.terminator == {"result": arguments},
        f"echo: expected the result {_show(arguments)}, got {_show(reply.terminator)}",
        frame=terminator_frame(reply),
    )


@call.case(
    "stream",
    "stream(3): ack with stream_result true, items 0, 1, 2 in order, then the result 3",
    references=(REF_MESSAGES, REF_SEQUENCE, AGENT_SCHEMA + "AgentStreamItem"),
)
async def stream(ctx: CaseContext) -> None:
    reply = await call_procedure(ctx, "stream", [3])
    check_acknowledged(ctx, reply, True, "stream(3)")
    expected = [{"stream": 0}, {"stream": 1}, {"stream": 2}]
    ctx.check(
        reply.items == expected,
        f"stream(3): expected the items {_show(expected)}, got {_show(reply.items)}",
    )
    ctx.check(
        reply.terminator == {"result": 3},
        f"stream(3): expected the result 3 last, got {_show(reply.terminator)}",
        frame=terminator_frame(reply),
    )


@call.case(
    "exception",
    "fail(message): ack, then an exception of type RuntimeError carrying the message",
    references=(REF_MESSAGES, AGENT_SCHEMA + "AgentException"),
)
async def exception(ctx: CaseContext) -> None:
    message = "conformance: deliberate failure"
    reply = await call_procedure(ctx, "fail", [message])
    check_acknowledged(ctx, reply, False, "fail")
    frame = terminator_frame(reply)
    terminator = reply.terminator
    ctx.check(
        isinstance(terminator, dict) and "exception" in terminator,
        f"fail: expected an exception line, got {_show(terminator)}",
        frame=frame,
    )
    info = terminator["exception"]
    ctx.check(
        info.get("type") == "RuntimeError",
        f"fail: expected exception type RuntimeError, got {_show(info.get('type'))}",
        frame=frame,
    )
    ctx.check(
        info.get("message") == message,
        f"fail: expected the exception message {message!r}, got {info.get('message')!r}",
        frame=frame,
    )


@call.case(
    "wrong-argument-count",
    "add with 3 arguments: ack, then an exception of type TypeError (not an error line)",
    references=(REF_ERRORS, REF_EXECUTION),
)
async def wrong_argument_count(ctx: CaseContext) -> None:
    reply = await call_procedure(ctx, "add", [1, 2, 3])
    check_acknowledged(ctx, reply, False, "add(1, 2, 3)")
    frame = terminator_frame(reply)
    terminator = reply.terminator
    ctx.check(
        isinstance(terminator, dict) and "exception" in terminator,
        f"add(1, 2, 3): expected an exception line (harpd reports a wrong argument count as "
        f"the procedure's TypeError), got {_show(terminator)}",
        frame=frame,
    )
    ctx.check(
        terminator["exception"].get("type") == "TypeError",
        f"add(1, 2, 3): expected exception type TypeError, got "
        f"{_show(terminator['exception'].get('type'))}",
        frame=frame,
    )


@call.case(
    "result-not-json",
    "not_json(): ack, then an error line of type invalid_message",
    references=(REF_ERRORS,),
)
async def result_not_json(ctx: CaseContext) -> None:
    reply = await call_procedure(ctx, "not_json", [])
    check_acknowledged(ctx, reply, False, "not_json()")
    check_error(ctx, reply, "invalid_message", "not_json()", acknowledged=True)


@call.case(
    "stream-time-limit",
    "stream_limited() streams past its 1 s time limit: ack, items in order, then an error "
    "line of type timeout (harpd let streaming procedures run forever)",
    references=(REF_ERRORS, REF_EXECUTION, f"{REF_DEFECTS} 8"),
)
async def stream_time_limit(ctx: CaseContext) -> None:
    op = ctx.op
    assert op.ack is not None and op.item is not None and op.terminator is not None
    bound = STREAM_LIMITED_TIME_LIMIT_S + ctx.timeout_s
    items: list[Any] = []
    async with await ctx.open_jsonlines("agent") as conn:
        await conn.send(request("stream_limited", [], credentials(ctx)))
        started = time.monotonic()
        first = await conn.receive([op.ack, op.terminator], what="the acknowledgement")
        ctx.check(
            "stream_result" in first,
            f"stream_limited(): expected the acknowledgement first, got {_show(first)}",
            frame=conn.last_received,
        )
        ctx.check(
            first["stream_result"] is True,
            "stream_limited(): the acknowledgement must say stream_result true",
            frame=conn.last_received,
        )
        terminator: Any = None
        try:
            async with ctx.step(
                f"read items until the timeout error (at most {bound:g} s)", timeout_s=bound
            ):
                while terminator is None:
                    line = await conn.receive([op.item, op.terminator])
                    if "stream" in line:
                        items.append(line["stream"])
                        ctx.check(len(items) <= 10_000, "stream_limited(): over 10000 items")
                    else:
                        terminator = line
        except CaseFailure as failure:
            if failure.kind is not FailureKind.TIMEOUT:
                raise
            ctx.fail(
                f"stream_limited(): no timeout error within {bound:g} s of the call although "
                f"its time limit is {STREAM_LIMITED_TIME_LIMIT_S:g} s ({len(items)} items "
                "received): the time limit must hold for streaming procedures too",
                frame=conn.last_received,
            )
        elapsed = time.monotonic() - started
        frame = conn.last_received
        ctx.check(
            items == list(range(len(items))),
            f"stream_limited(): expected the items 0, 1, 2, ... in order, got {_show(items[:20])}",
        )
        ctx.check(
            "error" in terminator,
            f"stream_limited(): expected an error line of type timeout, got {_show(terminator)}",
            frame=frame,
        )
        error = terminator["error"]
        ctx.check(
            error.get("type") == "timeout",
            f"stream_limited(): expected error type timeout, got {_show(error.get('type'))}",
            frame=frame,
        )
        ctx.should(
            error.get("message") == "maximum execution time exceeded",
            "stream_limited(): harpd's message is 'maximum execution time exceeded', got "
            f"{error.get('message')!r}",
            frame=frame,
        )
        ctx.should(
            elapsed >= STREAM_LIMITED_TIME_LIMIT_S / 2,
            f"stream_limited(): the timeout came after {elapsed:.2f} s, well before its "
            f"{STREAM_LIMITED_TIME_LIMIT_S:g} s limit",
            frame=frame,
        )
        ctx.log(f"timeout after {elapsed:.2f} s and {len(items)} items")
        await conn.expect_closed(what="the timeout error")


# --- authentication --------------------------------------------------------------------------


async def _auth_failure(ctx: CaseContext, user: str, password: str, what: str) -> dict[str, Any]:
    async with await ctx.open_jsonlines("agent") as conn:
        await conn.send(request("echo", ["must not run"], (user, password)), note=what)
        reply = await conn.read_stream(ctx.op)
        await conn.expect_closed(what="the auth_error line")
    return check_error(ctx, reply, "auth_error", what, message=AUTH_MESSAGE)


def _wrong_password(password: str) -> str:
    return password + "-wrong" if password else "wrong"


@call.case(
    "auth-wrong-password",
    "a known user with a wrong password gets auth_error instead of the acknowledgement",
    references=(REF_ERRORS, AGENT_SCHEMA + "Credentials"),
)
async def auth_wrong_password(ctx: CaseContext) -> None:
    user, password = credentials(ctx)
    await _auth_failure(ctx, user, _wrong_password(password), "wrong password")
    await still_serving(ctx)


@call.case(
    "auth-unknown-user",
    "an unknown user gets auth_error instead of the acknowledgement",
    references=(REF_ERRORS, AGENT_SCHEMA + "Credentials"),
)
async def auth_unknown_user(ctx: CaseContext) -> None:
    user, password = credentials(ctx)
    await _auth_failure(ctx, f"{user}-no-such-user", password, "unknown user")
    await still_serving(ctx)


@call.case(
    "auth-indistinguishable",
    "a wrong password and an unknown user get the same error type and message (similar "
    "timing is not checked)",
    references=(REF_ERRORS, AGENT_SCHEMA + "Credentials"),
)
async def auth_indistinguishable(ctx: CaseContext) -> None:
    user, password = credentials(ctx)
    wrong = await _auth_failure(ctx, user, _wrong_password(password), "wrong password")
    unknown = await _auth_failure(ctx, f"{user}-no-such-user", password, "unknown user")
    ctx.check(
        (wrong.get("type"), wrong.get("message"), "data" in wrong)
        == (unknown.get("type"), unknown.get("message"), "data" in unknown)
        and wrong.get("data") == unknown.get("data"),
        f"the errors tell a wrong password ({_show(wrong)}) from an unknown user "
        f"({_show(unknown)}); they must be identical",
    )


# --- request errors --------------------------------------------------------------------------


@call.case(
    "unknown-procedure",
    'a procedure the agent does not have: no_such_procedure with data {"procedure": name}',
    references=(REF_ERRORS, AGENT_SCHEMA + "AgentErrorType"),
)
async def unknown_procedure(ctx: CaseContext) -> None:
    name = "conformance_no_such_procedure"
    reply = await call_procedure(ctx, name, [])
    error = check_error(ctx, reply, "no_such_procedure", name, message="no such procedure")
    ctx.check(
        error.get("data") == {"procedure": name},
        f"{name}: expected data {_show({'procedure': name})}, got {_show(error.get('data'))}",
        frame=terminator_frame(reply),
    )
    await still_serving(ctx)


@call.case(
    "version-not-1",
    'a request with "harp" other than 1 gets invalid_request',
    references=(REF_ERRORS, AGENT_SCHEMA + "AgentRequest"),
)
async def version_not_1(ctx: CaseContext) -> None:
    auth = credentials(ctx)
    for version in (2, 0, "1"):
        line = {**request("echo", ["must not run"], auth), "harp": version}
        reply = await send_bad(ctx, line, note=f"harp {_show(version)}")
        check_error(
            ctx,
            reply,
            "invalid_request",
            f"harp {_show(version)}",
            message="unsupported protocol version",
        )
    await still_serving(ctx)


@call.case(
    "malformed-auth",
    "a request whose auth is missing, not an object, or lacks the password gets invalid_request",
    references=(REF_ERRORS, AGENT_SCHEMA + "Credentials"),
)
async def malformed_auth(ctx: CaseContext) -> None:
    user = optional_credentials(ctx)
    name = user[0] if user else "conformance"
    variants: list[tuple[str, Any]] = [
        ("no auth", None),
        ("auth not an object", "user:password"),
        ("auth without a password", {"user": name}),
        ("password not a string", {"user": name, "password": 12345}),
    ]
    for what, auth in variants:
        line = request("echo", ["must not run"], None)
        if auth is not None:
            line["auth"] = auth
        reply = await send_bad(ctx, line, note=what)
        check_error(ctx, reply, "invalid_request", what, message="malformed credentials data")
    await still_serving(ctx)


@call.case(
    "arguments-not-list-or-object",
    "arguments that are neither a list nor an object (a string, a number, null) get "
    "invalid_request",
    references=(REF_ERRORS, AGENT_SCHEMA + "Arguments"),
)
async def arguments_not_list_or_object(ctx: CaseContext) -> None:
    auth = credentials(ctx)
    for arguments in ("x", 5, None):
        what = f"arguments {_show(arguments)}"
        reply = await send_bad(ctx, request("echo", arguments, auth), note=what)
        check_error(ctx, reply, "invalid_request", what, message="invalid request")
    await still_serving(ctx)


@call.case(
    "not-json",
    "a request line that is not JSON gets parse_error",
    references=(REF_ERRORS,),
)
async def not_json(ctx: CaseContext) -> None:
    for raw in (b"this is not JSON\n", b'{"harp": 1, "procedure": \n'):
        reply = await send_bad(ctx, raw=raw, note="not JSON")
        check_error(ctx, reply, "parse_error", f"the line {raw!r}")
    await still_serving(ctx)


@call.case(
    "two-requests-one-write",
    "two request lines in one write get invalid_request (excessive data), no acknowledgement",
    references=(REF_ERRORS, REF_TLS),
)
async def two_requests_one_write(ctx: CaseContext) -> None:
    auth = credentials(ctx)
    first = json.dumps(request("echo", ["first"], auth)).encode()
    second = json.dumps(request("echo", ["second"], auth)).encode()
    reply = await send_bad(ctx, raw=first + b"\n" + second + b"\n", note="two requests")
    check_error(
        ctx,
        reply,
        "invalid_request",
        "two requests in one write",
        message="excessive data after request",
    )
    await still_serving(ctx)


@call.case(
    "eof-before-newline",
    "a request cut off by the end of the stream (no newline) gets invalid_request; over TLS "
    "a close without a reply is accepted",
    references=(REF_ERRORS, REF_TLS),
)
async def eof_before_newline(ctx: CaseContext) -> None:
    """harpd answers ``invalid_request`` "request incomplete or too long". Over TLS the
    suite ends its side with a close_notify alert and keeps reading. TLS 1.2 (RFC 5246
    7.2.1) has the receiver of close_notify close at once without answering, and common TLS
    stacks (asyncio's) do so under TLS 1.3 too, so over TLS a close without a reply passes
    (it is logged); any line that does come must be that error."""
    partial = b'{"harp": 1, "procedure": "echo", "argu'
    target = ctx.target("agent")
    if target.tls:
        received, version = await _send_then_close_notify(ctx, partial)
    else:
        async with await ctx.open_jsonlines("agent") as conn:
            await conn.send_raw(partial, note="a request without its newline")
            await conn.finish_sending()
            frame = await conn.receive_frame(what="the invalid_request error")
            received = [] if frame is None else [frame]
            if frame is not None:
                await conn.expect_closed(what="the error line")
        version = None
    if not received:
        ctx.check(
            version is not None,
            "the agent closed without answering the incomplete request over plain TCP; "
            "harpd answers invalid_request",
        )
        ctx.log(
            f"over {version} the agent closed after the close_notify without a reply "
            "(accepted: see the case's description)"
        )
    else:
        frame = received[0]
        ctx.check(
            len(received) == 1,
            f"expected one error line, got {len(received)} lines",
            frame=received[-1],
        )
        ctx.check(frame.is_json, f"expected an error line, got {frame.render()}", frame=frame)
        value = frame.value
        ctx.check(
            value.get("error", {}).get("type") == "invalid_request",
            f"expected error type invalid_request, got {_show(value)}",
            frame=frame,
        )
        ctx.should(
            value["error"].get("message") == INCOMPLETE_MESSAGE,
            f"harpd's message is {INCOMPLETE_MESSAGE!r}, got {value['error'].get('message')!r}",
            frame=frame,
        )
    await still_serving(ctx)


async def _send_then_close_notify(ctx: CaseContext, data: bytes) -> tuple[list[Frame], str]:
    """Over a TLS connection driven through memory BIOs: send `data`, then a close_notify
    alert (ending the suite's side), then read everything the agent sends until it closes.

    asyncio's TLS streams cannot half-close, hence the BIOs.

    Returns:
        (the received lines as recorded frames, validated against AgentError; the
        negotiated TLS version).
    """
    target = ctx.target("agent")
    context = ctx.tls_context("agent")
    where = f"agent at {target.address}"
    limit = ctx.interface("agent").max_message_bytes
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=target.host)
    try:
        async with ctx.step(f"connect to the {where}"):
            reader, writer = await asyncio.open_connection(target.host, target.port)
    except OSError as exc:
        raise CaseFailure(f"cannot connect to {where}: {exc}", kind=FailureKind.TRANSPORT) from exc

    async def close() -> None:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    connection = ctx.new_connection(close)

    async def flush() -> None:
        data = outgoing.read()
        if data:
            writer.write(data)
            await writer.drain()

    async def feed() -> bool:
        chunk = await reader.read(65536)
        if chunk:
            incoming.write(chunk)
        else:
            incoming.write_eof()
        return bool(chunk)

    try:
        async with ctx.step("TLS handshake"):
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await flush()
                    if not await feed():
                        raise ConnectionResetError("closed during the handshake") from None
            await flush()
    except (OSError, ssl.SSLError) as exc:
        raise CaseFailure(
            f"TLS handshake with {where} failed: {exc}", kind=FailureKind.TRANSPORT
        ) from exc
    version = tls.version() or "TLS"
    ctx.log(f"connected to {where} over {version} (memory BIOs)")
    ctx.record_sent(
        interface="agent", connection=connection, raw=data, note="a request without its newline"
    )
    tls.write(data)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.unwrap()
    await flush()
    ctx.log("sent close_notify (the suite's side is closed)")
    received = b""
    ending = "close_notify"
    async with ctx.step("read until the agent closes"):
        while len(received) <= limit:
            try:
                chunk = tls.read(65536)
            except ssl.SSLWantReadError:
                try:
                    if not await feed():
                        continue
                except (ConnectionResetError, BrokenPipeError):
                    ending = "a reset"
                    break
                continue
            except ssl.SSLZeroReturnError:
                break
            except ssl.SSLEOFError:
                ending = "a TCP close without close_notify"
                break
            except ssl.SSLError as exc:
                raise CaseFailure(
                    f"TLS error while reading from {where}: {exc}", kind=FailureKind.TRANSPORT
                ) from exc
            if not chunk:
                break
            received += chunk
    ctx.log(f"the agent ended the connection with {ending}")
    frames = []
    lines = received.split(b"\n")
    for index, line in enumerate(lines):
        if index == len(lines) - 1 and not line:
            break
        try:
            value = json.loads(line)
        except ValueError:
            frames.append(ctx.record_received(interface="agent", connection=connection, raw=line))
            continue
        frames.append(
            ctx.record_received(
                value,
                interface="agent",
                connection=connection,
                schemas=AGENT_ERROR,
                wire_bytes=len(line),
            )
        )
        if index == len(lines) - 1:
            ctx.fail(
                "the agent closed inside a line (no newline after it)",
                frame=frames[-1],
            )
    return frames, version


# --- reply keys, TLS, robustness -------------------------------------------------------------


def _key_problem(value: Any) -> str | None:
    """Why the original dispatcher would reject this reply line's keys, or None."""
    if not isinstance(value, dict):
        return f"is not a JSON object: {_show(value)}"
    keys = frozenset(value)
    if keys not in EXACT_KEYS:
        allowed = "; ".join(sorted(_show(sorted(k)) for k in EXACT_KEYS))
        return (
            f"has the keys {_show(sorted(keys))}; the original dispatcher accepts exactly "
            f"one of these sets: {allowed}"
        )
    for outer in ("exception", "error"):
        if outer in value:
            inner = value[outer]
            if not isinstance(inner, dict) or set(inner) not in INNER_KEYS:
                shown = _show(sorted(inner)) if isinstance(inner, dict) else _show(inner)
                return (
                    f"has {outer} {shown}; the original dispatcher accepts exactly "
                    '["message","type"] or ["data","message","type"]'
                )
    return None


@call.case(
    "reply-keys-exact",
    "every reply line (ack, stream, result, exception, error) has exactly the keys the "
    "original dispatcher accepts: no extra key anywhere",
    references=(REF_MESSAGES, REF_SEQUENCE, AGENT_SCHEMA + "AgentReplyLine"),
)
async def reply_keys_exact(ctx: CaseContext) -> None:
    user, password = credentials(ctx)
    calls: list[tuple[str, Any, tuple[str, str]]] = [
        ("echo", [1], (user, password)),
        ("stream", [2], (user, password)),
        ("fail", ["keys"], (user, password)),
        ("not_json", [], (user, password)),
        ("add", [1], (user, password)),
        ("conformance_no_such_procedure", [], (user, password)),
        ("echo", [], (user, _wrong_password(password))),
    ]
    for procedure, arguments, auth in calls:
        what = f"{procedure}{_show(arguments)}"
        lines = 0
        async with await ctx.open_jsonlines("agent") as conn:
            await conn.send(request(procedure, arguments, auth), note=what)
            while True:
                frame = await conn.receive_frame(what=f"a reply line of {what}")
                if frame is None:
                    break
                lines += 1
                ctx.check(lines <= MAX_LINES, f"{what}: more than {MAX_LINES} reply lines")
                ctx.check(frame.is_json, f"{what}: line {lines} is not JSON", frame=frame)
                problem = _key_problem(frame.value)
                ctx.check(problem is None, f"{what}: line {lines} {problem}", frame=frame)
                _, violations = ctx.validate(frame.value, REPLY_LINE)
                ctx.check(
                    not violations,
                    f"{what}: line {lines} is no AgentReplyLine: "
                    + "; ".join(v.message for v in violations),
                    frame=frame,
                )
        ctx.check(lines > 0, f"{what}: the agent closed without a reply line")


@call.case(
    "tls-below-1-2-refused",
    "a client offering only TLS 1.0/1.1 is refused at the handshake (harpd spoke TLS 1.0)",
    references=(REF_TLS, f"{REF_DEFECTS} 10"),
)
async def tls_below_1_2_refused(ctx: CaseContext) -> None:
    target = ctx.target("agent")
    if not target.tls:
        ctx.skip(f"the agent target {target.address} is plain TCP, not TLS")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ssl.SSLError, ValueError) as exc:
        ctx.skip(f"the local OpenSSL ({ssl.OPENSSL_VERSION}) cannot offer TLS 1.1: {exc}")
    where = f"agent at {target.address}"
    try:
        async with ctx.step(f"TLS 1.0/1.1 handshake with the {where}"):
            _, writer = await asyncio.open_connection(
                target.host, target.port, ssl=context, server_hostname=target.host
            )
    except ssl.SSLError as exc:
        text = f"{exc.reason or ''} {exc}".upper()
        if "NO_PROTOCOLS_AVAILABLE" in text or "NO PROTOCOLS AVAILABLE" in text:
            ctx.skip(
                f"the local OpenSSL ({ssl.OPENSSL_VERSION}) cannot offer TLS 1.1 "
                f"(NO_PROTOCOLS_AVAILABLE): nothing was sent"
            )
        ctx.log(f"refused as required: {exc}")
    except (OSError, EOFError) as exc:
        ctx.log(f"refused as required (the connection ended): {exc!r}")
    else:
        ssl_object = writer.get_extra_info("ssl_object")
        version = ssl_object.version() if ssl_object is not None else "an old TLS version"
        writer.close()
        ctx.fail(f"the agent completed a handshake with {version}; it must require TLS 1.2+")
    await still_serving(ctx)


@call.case(
    "serves-after-bad-input",
    "after a burst of bad inputs (garbage, plain text on the TLS port, half a request then a "
    "close, each malformed request) the agent answers a good call",
    references=(REF_ERRORS, REF_TLS),
)
async def serves_after_bad_input(ctx: CaseContext) -> None:
    target = ctx.target("agent")
    auth = optional_credentials(ctx) or ("conformance", "conformance")
    if target.tls:
        async with ctx.step("plain text to the TLS port"):
            try:
                reader, writer = await asyncio.open_connection(target.host, target.port)
                writer.write(json.dumps(request("echo", [], auth)).encode() + b"\n")
                await writer.drain()
                await reader.read(65536)  # whatever it sends; it must close or alert
                writer.close()
            except OSError as exc:
                ctx.log(f"plain text: the connection ended with {exc!r}")
    async with await ctx.open_jsonlines("agent") as conn:
        await conn.send_raw(b'{"harp": 1, "procedure": "echo", "argum', note="half a request")
    ctx.log("half a request, then closed")
    bad: list[tuple[str, bytes]] = [
        ("not JSON", b"garbage \x00\xff\n"),
        ("an empty line", b"\n"),
        ("a JSON array", b"[1, 2, 3]\n"),
        ("harp 7", json.dumps({**request("echo", [], auth), "harp": 7}).encode() + b"\n"),
        ("no auth", json.dumps(request("echo", [], None)).encode() + b"\n"),
        ("arguments 5", json.dumps(request("echo", 5, auth)).encode() + b"\n"),
    ]
    for what, raw in bad:
        reply = await send_bad(ctx, raw=raw, note=what)
        ctx.check(
            reply.ack is None
            and isinstance(reply.terminator, dict)
            and "error" in reply.terminator,
            f"{what}: expected an error line, got {_show(reply.terminator)}",
            frame=terminator_frame(reply),
        )
    await still_serving(ctx)
