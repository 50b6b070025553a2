"""Every invalid request of the generated fixture corpus, sent to the real reference agent.

Each gets an error line in harpd's shape (``{"harp": 1, "error": {...}}``, in place of the
acknowledgement) and the agent serves a valid call afterwards.
"""

from __future__ import annotations

import asyncio
import json
from importlib.resources import files
from pathlib import Path
from typing import Any

from runwire.runtime.errors import ConnectionClosed
from runwire.runtime.transport.tcp import open_jsonlines

AGENT_ERROR_TYPES = {"invalid_request", "auth_error", "parse_error", "no_such_procedure"}


def invalid_agent_requests() -> list[Path]:
    root = Path(str(files("runwire.generated").joinpath("jobs", "fixtures", "AgentRequest")))
    return sorted(root.glob("invalid-*.json"))


def test_every_invalid_agent_request_gets_an_error_line_and_the_agent_keeps_serving(
    jobs_agent: Any,
) -> None:
    fixtures = invalid_agent_requests()
    assert len(fixtures) >= 10

    async def exchange(message: Any) -> list[Any]:
        connection = await open_jsonlines(
            jobs_agent.host,
            jobs_agent.port,
            ssl=jobs_agent.ssl_context(),
            server_hostname="localhost",
            timeout_s=5.0,
        )
        lines = []
        async with connection:
            await connection.send(message)
            for _ in range(10):  # the agent closes after its reply lines
                try:
                    lines.append(await connection.receive())
                except ConnectionClosed:  # the agent closed after its reply
                    break
        return lines

    async def body() -> None:
        for path in fixtures:
            instance = json.loads(path.read_text())["instance"]
            lines = await exchange(instance)
            assert len(lines) == 1, (path.name, lines)
            assert set(lines[0]) == {"harp", "error"}, (path.name, lines)
            assert lines[0]["error"]["type"] in AGENT_ERROR_TYPES, (path.name, lines)
        valid = jobs_agent.request("echo", [1, "still serving"]).to_wire()
        assert await exchange(valid) == [
            {"harp": 1, "stream_result": False},
            {"result": [1, "still serving"]},
        ]

    async def bounded() -> None:
        async with asyncio.timeout(60):
            await body()

    asyncio.run(bounded())
