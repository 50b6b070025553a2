"""A fake protocol family for testing the conformance runner (not a test module).

Interface ``echo`` (plain TCP JSON lines, one request per connection) has three operations:
``echo`` (request-reply), ``count`` (request-stream) and ``unused`` (no case: the coverage
report must name it). Interface ``other`` has one operation, ``ping``, whose only case needs a
target for ``other`` (so it is skipped when none is given). The cases give every verdict and
every failure kind, against the loopback server in ``conftest.py``.

``conftest.py`` imports this file as module ``runwire_test_fakefamily`` and adds
``"fake"`` to the family table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from typing import Any

from runwire.conformance import CaseContext, CaseSet, FamilySpec, Option

BASE = "https://runwire.dev/schemas/fake/"
STEP_S = 0.3  # per-step limit in the tests: loopback, a server that answers at once

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": BASE + "echo.json",
    "title": "fake echo messages",
    "description": "Messages of the fake family.",
    "$defs": {
        "EchoRequest": {
            "type": "object",
            "properties": {
                "echo": {},
                "bad": {"type": "boolean"},
                "hang": {"type": "boolean"},
                "notjson": {"type": "boolean"},
            },
            "required": ["echo"],
            "additionalProperties": False,
        },
        "EchoReply": {
            "type": "object",
            "properties": {"echo": {}},
            "required": ["echo"],
            "additionalProperties": False,
        },
        "CountRequest": {
            "type": "object",
            "properties": {"count": {"type": "integer", "minimum": 0, "maximum": 100}},
            "required": ["count"],
            "additionalProperties": False,
        },
        "CountItem": {
            "type": "object",
            "properties": {"item": {"type": "integer", "minimum": 0}},
            "required": ["item"],
            "additionalProperties": False,
        },
        "CountEnd": {
            "type": "object",
            "properties": {"end": {"type": "integer", "minimum": 0}},
            "required": ["end"],
            "additionalProperties": False,
        },
        "PingRequest": {"type": "object", "properties": {"ping": {}}, "required": ["ping"]},
        "PingReply": {"type": "object", "properties": {"pong": {}}, "required": ["pong"]},
    },
}

TRANSPORT = {
    "kind": "jsonlines",
    "security": "none",
    "authentication": "none",
    "default_port": 7001,
    "requests_per_connection": "one",
    "max_message_bytes": 4096,
}


def _op(name: str, pattern: str, interface: str = "echo", **refs: str) -> dict[str, Any]:
    return {
        "name": name,
        "summary": f"The {name} operation.",
        "pattern": pattern,
        "recognised_by": {"key": name},
        **{role: f"echo.json#/$defs/{ref}" for role, ref in refs.items()},
        "errors": [],
        "conformance_id": f"fake/{interface}/{name}",
    }


MANIFEST: dict[str, Any] = {
    "$schema": "https://runwire.dev/schemas/meta/protocol.schema.json",
    "family": "fake",
    "title": "fake family",
    "description": "A family that exists only in the runner's tests.",
    "version": 1,
    "modelled_on": {"system": "nothing", "reference": "reference/none.md"},
    "interfaces": [
        {
            "name": "echo",
            "title": "Echo",
            "description": "Echoes and counts.",
            "schema": "echo.json",
            "class_name": "Echo",
            "transport": TRANSPORT,
            "operations": [
                _op("echo", "request-reply", request="EchoRequest", reply="EchoReply"),
                _op(
                    "count",
                    "request-stream",
                    request="CountRequest",
                    item="CountItem",
                    terminator="CountEnd",
                ),
                _op("unused", "request-reply", request="EchoRequest", reply="EchoReply"),
            ],
        },
        {
            "name": "other",
            "title": "Other",
            "description": "An interface the tests give no target.",
            "schema": "echo.json",
            "class_name": "Other",
            "transport": {**TRANSPORT, "security": "tls", "default_port": 7002},
            "operations": [
                _op("ping", "request-reply", "other", request="PingRequest", reply="PingReply")
            ],
        },
    ],
}

FAMILY = FamilySpec(
    name="fake",
    title="a fake family for the runner's tests",
    case_modules=("runwire_test_fakefamily",),
    options=(
        Option("token", "a value the skips-itself case needs", metavar="TOKEN"),
        Option("secret_word", "a secret option", env="RUNWIRE_FAKE_SECRET", secret=True),
        Option("loud", "a flag", flag=True),
    ),
    manifest=MANIFEST,
    schema_documents={SCHEMA["$id"]: SCHEMA},
)

#: Set by the tests to release the case that blocks its event loop.
RELEASE_BLOCKED = threading.Event()

CASES = CaseSet("fake")
echo = CASES.under("fake/echo/echo")


@echo.case("round-trip", "the reply echoes the value")
async def round_trip(ctx: CaseContext) -> None:
    async with await ctx.open_jsonlines() as conn:
        reply = await conn.request_reply("echo", {"echo": "hi"})
        await conn.expect_closed()
    ctx.check(reply == {"echo": "hi"}, f"expected the value back, got {reply!r}")


@echo.case("bad-reply", "the server adds a key the schema forbids")
async def bad_reply(ctx: CaseContext) -> None:
    async with await ctx.open_jsonlines() as conn:
        await conn.request_reply(ctx.op, {"echo": 1, "bad": True})


@echo.case("wrong-value", "a check that does not hold")
async def wrong_value(ctx: CaseContext) -> None:
    async with await ctx.open_jsonlines() as conn:
        reply = await conn.request_reply("echo", {"echo": "a"})
    ctx.check(reply["echo"] == "b", "the server should have said b", frame=1)


@echo.case("should-be-loud", "a SHOULD rule that does not hold")
async def should_be_loud(ctx: CaseContext) -> None:
    async with await ctx.open_jsonlines() as conn:
        reply = await conn.request_reply("echo", {"echo": "quiet"})
    ctx.should(reply["echo"] == "LOUD", "the echo should be loud")


@echo.case("should-level", "a SHOULD-level case whose check fails", level="SHOULD")
async def should_level(ctx: CaseContext) -> None:
    ctx.check(False, "a SHOULD-level rule")


@echo.case("no-reply", "the server never answers: the step limit ends it")
async def no_reply(ctx: CaseContext) -> None:
    async with await ctx.open_jsonlines() as conn:
        await conn.send({"echo": 0, "hang": True})
        await conn.receive(ctx.op.reply or "", what="the echo reply")


@echo.case("hangs", "the case itself never finishes: the case bound ends it")
async def hangs(ctx: CaseContext) -> None:
    ctx.log("about to wait forever")
    await asyncio.Event().wait()


@echo.case("blocks-loop", "the case blocks its event loop: it is abandoned")
async def blocks_loop(ctx: CaseContext) -> None:
    RELEASE_BLOCKED.wait(30)  # blocks the loop on purpose, until the test releases it


@echo.case("crashes", "the case raises an unexpected exception")
async def crashes(ctx: CaseContext) -> None:
    {}["missing"]


@echo.case("plain-assert", "a plain assert that fails")
async def plain_assert(ctx: CaseContext) -> None:
    value = 2
    assert value == 3, "two is not three"


@echo.case("not-json", "the server answers with a line that is not JSON")
async def not_json(ctx: CaseContext) -> None:
    async with await ctx.open_jsonlines() as conn:
        await conn.request_reply("echo", {"echo": 0, "notjson": True})


@echo.case("skips-itself", "needs the token option")
async def skips_itself(ctx: CaseContext) -> None:
    token = ctx.require_option("token")
    ctx.log(f"token {token}")


@CASES.case("fake/echo/count/three", "three items then the terminator")
async def count_three(ctx: CaseContext) -> None:
    async with await ctx.open_jsonlines() as conn:
        stream = await conn.request_stream(ctx.op, {"count": 3})
    ctx.check(stream.items == [{"item": 0}, {"item": 1}, {"item": 2}], "items 0, 1, 2")
    ctx.check(stream.terminator == {"end": 3}, "the terminator counts them")


@CASES.case("fake/other/ping/needs-target", "needs a target for the other interface")
async def needs_target(ctx: CaseContext) -> None:
    ctx.fail("never runs without a target")


@CASES.case(
    "fake/echo/misc/also-counts",
    "a case filed under no operation that names one",
    exercises=["fake/echo/count"],
)
async def also_counts(ctx: CaseContext) -> None:
    """Runs nothing."""


# -- the fake family's server ---------------------------------------------------------


async def _serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One request per connection, as the jobs interfaces: read a line, answer, close."""
    try:
        async with asyncio.timeout(5):
            line = await reader.readline()
        request: dict[str, Any] = json.loads(line)
        if request.get("hang"):
            async with asyncio.timeout(10):
                await reader.read()  # until the client gives up and closes
        elif request.get("notjson"):
            writer.write(b"this is not json\n")
        elif "count" in request:
            for i in range(int(request["count"])):
                writer.write(json.dumps({"item": i}).encode() + b"\n")
            writer.write(json.dumps({"end": request["count"]}).encode() + b"\n")
        else:
            reply = {"echo": request.get("echo")}
            if request.get("bad"):
                reply["extra"] = "not allowed"
            writer.write(json.dumps(reply).encode() + b"\n")
        await writer.drain()
    except (TimeoutError, ValueError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class LoopbackServer:
    """The fake family's server on 127.0.0.1, port chosen by the OS, on its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.Server | None = None
        self.port = 0

    def start(self) -> None:
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(_serve_one, "127.0.0.1", 0), self.loop
        )
        self.server = future.result(5)
        self.port = self.server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self.server is not None
            self.server.close()
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    @property
    def target(self) -> str:
        return f"echo=tcp://127.0.0.1:{self.port}"
