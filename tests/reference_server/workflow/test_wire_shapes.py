"""What the engine produces matches the workflow protocol's schemas (schemas/workflow/
runtime.json, owned by the protocol layer): snapshots, data elements, delta batches (with the
publisher's seq/time added) and control replies; and every valid args fixture of a control
command is handled without an internal error."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from runwire.reference_server.workflow import COMMANDS, TOPICS
from runwire.runtime.validation import MessageValidator

from .conftest import REPO, make_definition, run_bounded, running, tree_registry

RUNTIME = "workflow/runtime.json#/$defs/"
FIXTURES = REPO / "generated" / "workflow" / "fixtures"
DELTA_DEFS = {
    "workflow": "WorkflowDelta",
    "tasks": "TasksDelta",
    "task_proxies": "TaskProxiesDelta",
    "jobs": "JobsDelta",
    "edges": "EdgesDelta",
}


def validator(name: str) -> MessageValidator:
    return tree_registry().validator(RUNTIME + name)


def check(name: str, instance: Any) -> None:
    validator(name).check(instance, outbound=True)


pytestmark = pytest.mark.skipif(
    not (REPO / "schemas" / "workflow" / "runtime.json").exists(),
    reason="the workflow protocol schemas are not in this tree",
)

DEFINITION_ARGS: dict[str, Any] = {
    "graph": "foo => bar\nmodel[-P1] => model\nmodel:ready => bar\nflaky:fail? => fix",
    "runtime": {
        "foo": {"script": "echo foo"},
        "model": {
            "script": 'runwire_message "data ready for processing"',
            "outputs": {"ready": "data ready for processing"},
        },
        "flaky": {"script": "exit 1", "retries": {"count": 1}},
    },
    "final": 3,
}


def test_snapshots_elements_and_deltas_match_the_protocol_schemas(tmp_path: Path) -> None:
    definition = make_definition(DEFINITION_ARGS["graph"], DEFINITION_ARGS["runtime"], final=3)

    async def scenario() -> None:
        async with running(definition, tmp_path, keep_finished_points=5) as h:
            check("EntireWorkflow", h.scheduler.snapshot())
            h.command("hold", {"tasks": ["3/foo"]})
            h.command("broadcast", {"mode": "put", "settings": {"environment": {"X": "1"}}})
            await h.until(lambda: h.proxy("3/foo") is not None)
            check("EntireWorkflow", h.scheduler.snapshot())
            h.command("release", {"tasks": ["3/foo"]})
            assert await h.finish() == "AUTOMATIC"
            snapshot = h.scheduler.snapshot()
            check("EntireWorkflow", snapshot)
            assert {p["state"] for p in snapshot["task_proxies"]} == {"succeeded", "failed"}
            for topic in TOPICS:
                check(
                    "DataElements",
                    {"element_type": topic, "elements": h.scheduler.elements(topic)},
                )
        seq = 0
        for batch in h.batches:
            published: dict[str, Any] = {}
            for topic, delta in batch.items():
                message = {"seq": seq, "time": time.time(), **delta}
                check(DELTA_DEFS[topic], message)
                published[topic] = message
                seq += 1
            check("AllDeltas", {"seq": seq, "time": time.time(), "deltas": published})
            seq += 1
        check("Shutdown", {"seq": seq, "time": time.time(), "reason": h.scheduler.stop_reason})

    run_bounded(scenario())


def _fixture_args() -> list[tuple[str, dict[str, Any]]]:
    cases: list[tuple[str, dict[str, Any]]] = []
    for command in COMMANDS:
        folder = FIXTURES / f"{command.capitalize()}Args"
        for path in sorted(folder.glob("valid-*.json")):
            cases.append((command, json.loads(path.read_text())["instance"]))
    return cases


def test_every_valid_args_fixture_gets_a_valid_reply_and_no_internal_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cases = _fixture_args()
    if not cases:
        pytest.skip("no generated workflow fixtures in this tree")
    assert {name for name, _ in cases} == set(COMMANDS)
    definition = make_definition(DEFINITION_ARGS["graph"], DEFINITION_ARGS["runtime"], final=3)
    caplog.set_level(logging.ERROR, logger="runwire.reference_server.workflow")

    async def scenario() -> None:
        async with running(definition, tmp_path, start_paused=True) as h:
            for name, args in cases:
                if name == "stop":
                    continue  # stopping is covered by test_scheduler; keep this one running
                reply = h.scheduler.queue_command(name, args)
                check("ControlResult", reply)
                await h.barrier()
            for args in (a for n, a in cases if n == "stop"):
                check("ControlResult", h.scheduler.queue_command("stop", args))
            await h.finish()

    run_bounded(scenario())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_rejections_are_valid_control_results(tmp_path: Path) -> None:
    definition = make_definition("foo")
    from runwire.reference_server.workflow import Scheduler

    scheduler = Scheduler(definition, tmp_path)
    for name, args in (
        ("hold", {"tasks": ["1/nosuch"]}),
        ("nosuch", {}),
        ("broadcast", {"mode": "put"}),
        ("hold", {"tasks": ["1/foo"]}),
    ):
        check("ControlResult", scheduler.queue_command(name, args))
