"""The workflow scheduler (runwire.reference_server.workflow.scheduler) with real subprocess
jobs: cycling and inter-cycle dependencies, states and deltas, job directories and numbering,
retries, custom outputs, every command's effect on the data store, stop modes and bounds.

Each scenario runs under run_bounded; every wait is a bounded wait on the data store.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from runwire.reference_server.workflow import Scheduler, UnknownElementType
from runwire.reference_server.workflow.datastore import TOPICS, DeltaBatch

from .conftest import job_pid, make_definition, run_bounded, running

SLEEP = "sleep 30"  # a job that only ends when killed (or when the test ends)


def job_out(run_dir: Path, job_id: str) -> str:
    point, name, number = job_id.split("/")
    return (run_dir / "log" / "job" / point / name / number / "job.out").read_text()


def job_status(run_dir: Path, job_id: str) -> str:
    point, name, number = job_id.split("/")
    return (run_dir / "log" / "job" / point / name / number / "job.status").read_text()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ---------------------------------------------------------------------- running workflows


def test_cycles_run_in_dependency_order_and_the_workflow_completes(tmp_path: Path) -> None:
    definition = make_definition(
        "a => b\nb[-P1] => b", {"a": {"script": "echo a"}, "b": {"script": "echo b"}}, final=3
    )

    async def scenario() -> None:
        async with running(definition, tmp_path, keep_finished_points=10) as h:
            assert await h.finish() == "AUTOMATIC"
            proxies = {p["id"]: p for p in h.scheduler.elements("task_proxies")}
            assert list(proxies) == ["1/a", "1/b", "2/a", "2/b", "3/a", "3/b"]
            assert {p["state"] for p in proxies.values()} == {"succeeded"}
            assert proxies["1/b"]["prerequisites"] == [{"id": "1/a:succeeded", "satisfied": True}]
            assert proxies["2/b"]["prerequisites"] == [
                {"id": "2/a:succeeded", "satisfied": True},
                {"id": "1/b:succeeded", "satisfied": True},
            ]
            jobs = {j["id"]: j for j in h.scheduler.elements("jobs")}
            for point in (2, 3):
                this, previous = jobs[f"{point}/b/01"], jobs[f"{point - 1}/b/01"]
                assert this["started_time"] >= previous["finished_time"]
                assert this["started_time"] >= jobs[f"{point}/a/01"]["finished_time"]
            edges = {e["id"] for e in h.scheduler.elements("edges")}
            assert {"1/a=>1/b", "2/a=>2/b", "1/b=>2/b", "2/b=>3/b"} <= edges
            assert "0/b=>1/b" not in edges
            workflow = h.workflow()
            assert workflow["status"] == "stopped"
            assert workflow["status_msg"] == "stopped: AUTOMATIC"
            assert workflow["stop_mode"] == "auto"
            assert h.scheduler.stop_reason == "AUTOMATIC"

    run_bounded(scenario())


def test_state_transitions_are_published_in_order(tmp_path: Path) -> None:
    definition = make_definition(
        "a => b", {"b": {"script": "exit 1"}, "a": {"script": "true"}}, stall_timeout_s=None
    )

    async def scenario() -> None:
        async with running(definition, tmp_path) as h:
            await h.until_state("1/b", "failed")
            assert h.states_seen("1/a") == [
                "waiting",
                "preparing",
                "submitted",
                "running",
                "succeeded",
            ]
            assert h.states_seen("1/b") == [
                "waiting",
                "preparing",
                "submitted",
                "running",
                "failed",
            ]
            job_states: list[str] = []
            for batch in h.batches:
                for job in batch.get("jobs", {}).get("added", []) + batch.get("jobs", {}).get(
                    "updated", []
                ):
                    if job["id"] == "1/b/01" and (not job_states or job_states[-1] != job["state"]):
                        job_states.append(job["state"])
            assert job_states == ["submitted", "running", "failed"]
            assert h.job("1/b/01")["exit_code"] == 1  # type: ignore[index]

    run_bounded(scenario())


def test_job_directory_numbering_and_environment(tmp_path: Path) -> None:
    definition = make_definition(
        "a",
        {
            "root": {"environment": {"FROM_ROOT": "r"}},
            "a": {
                "script": "pwd\nenv | grep -E '^(CYLC_|FROM_|DERIVED)' | sort\necho oops >&2",
                "environment": {"DERIVED": "$CYLC_TASK_NAME-at-$CYLC_TASK_CYCLE_POINT"},
            },
        },
        initial=5,
        final=5,
    )

    async def scenario() -> None:
        async with running(definition, tmp_path, workflow_id="test/run1") as h:
            assert await h.finish() == "AUTOMATIC"
            job = h.job("5/a/01")
            assert job is not None
            job_dir = tmp_path / "log" / "job" / "5" / "a" / "01"
            assert job["job_dir"] == str(job_dir)
            assert job["submit_num"] == 1 and job["task_proxy"] == "5/a"
            assert job["exit_code"] == 0 and job["state"] == "succeeded"
            assert sorted(p.name for p in job_dir.iterdir()) == [
                "job",
                "job.err",
                "job.out",
                "job.status",
            ]
            assert (job_dir.parent / "NN").resolve() == job_dir
            lines = job_out(tmp_path, "5/a/01").splitlines()
            assert lines[0] == str(tmp_path / "work" / "5" / "a")
            env = dict(line.split("=", 1) for line in lines[1:])
            assert env["CYLC_WORKFLOW_ID"] == "test/run1"
            assert env["CYLC_WORKFLOW_RUN_DIR"] == str(tmp_path)
            assert env["CYLC_TASK_CYCLE_POINT"] == "5"
            assert env["CYLC_TASK_NAME"] == "a"
            assert env["CYLC_TASK_JOB"] == "5/a/01"
            assert env["CYLC_TASK_SUBMIT_NUMBER"] == "1"
            assert env["CYLC_TASK_TRY_NUMBER"] == "1"
            assert env["CYLC_TASK_LOG_DIR"] == str(job_dir)
            assert env["FROM_ROOT"] == "r" and env["DERIVED"] == "a-at-5"
            assert (job_dir / "job.err").read_text() == "oops\n"
            status = job_status(tmp_path, "5/a/01")
            for key in (
                "CYLC_JOB_RUNNER_NAME=background",
                "CYLC_JOB_PID=",
                "CYLC_JOB_INIT_TIME=",
                "CYLC_JOB_EXIT=SUCCEEDED",
                "CYLC_JOB_EXIT_CODE=0",
                "CYLC_JOB_EXIT_TIME=",
            ):
                assert key in status

    run_bounded(scenario())


def old_job(run_dir: Path, job_id: str, status: str) -> Path:
    """A job directory as a previous run (or a crashed scheduler) left it."""
    point, name, number = job_id.split("/")
    job_dir = run_dir / "log" / "job" / point / name / number
    job_dir.mkdir(parents=True)
    (job_dir / "job").write_text("# an earlier run's job script\n")
    (job_dir / "job.out").write_text(f"output of {job_id}\n")
    (job_dir / "job.status").write_text(status)
    return job_dir


def test_a_new_run_numbers_jobs_after_existing_ones_and_ignores_orphaned_jobs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A scheduler restarted in the run directory of a crashed one: job 01 (an orphan that
    still runs) and 03 exist, so the new job is 04, and the orphans' job.status lines and
    message commands are ignored (before the fix the new job reused 01 and took the
    orphan's custom output as its own)."""
    definition = make_definition(
        "a:x => b", {"a": {"script": SLEEP, "outputs": {"x": "x is ready"}}}
    )
    orphan_status = (
        "CYLC_JOB_RUNNER_NAME=background\nCYLC_JOB_ID=999999\nCYLC_JOB_PID=999999\n"
        "CYLC_MESSAGE=2024-01-01T00:00:00Z|INFO|x is ready\n"
    )
    orphan = old_job(tmp_path, "1/a/01", orphan_status)
    old_job(tmp_path, "1/a/03", "CYLC_JOB_RUNNER_NAME=background\n")

    async def scenario() -> None:
        async with running(definition, tmp_path) as h:
            await h.until_state("1/a", "running")
            proxy = h.proxy("1/a")
            assert proxy is not None
            assert proxy["submit_num"] == 4 and proxy["job_ids"] == ["1/a/04"]
            job_dir = tmp_path / "log" / "job" / "1" / "a" / "04"
            assert h.job("1/a/04")["job_dir"] == str(job_dir)  # type: ignore[index]
            assert (job_dir.parent / "NN").resolve() == job_dir
            # the orphan goes on reporting, by its job.status and by message commands
            with (orphan / "job.status").open("a") as status:
                status.write("CYLC_MESSAGE=2024-01-01T00:00:01Z|INFO|succeeded\n")
            refused = h.scheduler.queue_command(
                "message", {"task_job": "1/a/01", "messages": [["INFO", "x is ready"]]}
            )
            assert refused["accepted"] is False
            assert refused["message"] == (
                "1/a/01: it is not the current job of 1/a (that is 1/a/04); "
                "its messages are ignored"
            )
            h.command("poll", {"tasks": ["1/a"]})
            await h.barrier()
            proxy = h.proxy("1/a")
            assert proxy is not None and proxy["state"] == "running"
            assert proxy["outputs"]["x"] is False and h.proxy("1/b") is None
            env = dict(
                line.removeprefix("export ").split("=", 1)
                for line in (job_dir / "job").read_text().splitlines()
                if line.startswith("export CYLC_TASK_")
            )
            assert env["CYLC_TASK_JOB"] == "'1/a/04'"
            assert env["CYLC_TASK_SUBMIT_NUMBER"] == "'4'"
        # the earlier jobs' files are untouched
        assert (orphan / "job.out").read_text() == "output of 1/a/01\n"
        assert (orphan / "job").read_text() == "# an earlier run's job script\n"
        assert (orphan / "job.status").read_text() == (
            orphan_status + "CYLC_MESSAGE=2024-01-01T00:00:01Z|INFO|succeeded\n"
        )
        ignored = [r.getMessage() for r in caplog.records if "1/a/01" in r.getMessage()]
        assert any("ignored" in line for line in ignored), ignored

    run_bounded(scenario())


def test_rerunning_a_finished_workflow_keeps_the_previous_jobs(tmp_path: Path) -> None:
    definition = make_definition("a", {"a": {"script": 'echo "job $CYLC_TASK_JOB"'}})

    async def one_run() -> None:
        async with running(definition, tmp_path) as h:
            assert await h.finish() == "AUTOMATIC"

    run_bounded(one_run())
    run_bounded(one_run())
    assert job_out(tmp_path, "1/a/01") == "job 1/a/01\n"
    assert job_out(tmp_path, "1/a/02") == "job 1/a/02\n"
    first = job_status(tmp_path, "1/a/01")
    assert first.count("CYLC_JOB_EXIT=") == 1 and first.count("CYLC_JOB_RUNNER_NAME=") == 1


def test_messages_of_a_superseded_job_are_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Job 01 reports success by message and its process goes on; the task is triggered
    again (job 02). What job 01 reports afterwards changes nothing."""
    definition = make_definition(
        "a:x => b", {"a": {"script": SLEEP, "outputs": {"x": "x is ready"}}, "b": {}}
    )

    async def scenario() -> None:
        async with running(definition, tmp_path) as h:
            await h.until_state("1/a", "running")
            h.command("message", {"task_job": "1/a/01", "messages": [["INFO", "failed"]]})
            await h.until_state("1/a", "failed")
            h.command("trigger", {"tasks": ["1/a"]})
            await h.until(lambda: (h.job("1/a/02") or {}).get("state") == "running")
            with (tmp_path / "log/job/1/a/01/job.status").open("a") as status:
                status.write("CYLC_MESSAGE=2024-01-01T00:00:00Z|INFO|x is ready\n")
            refused = h.scheduler.queue_command(
                "message", {"task_job": "1/a/01", "messages": [["INFO", "x is ready"]]}
            )
            assert refused["accepted"] is False and "1/a/02" in refused["message"]
            h.command("poll", {"tasks": ["1/a"]})
            await h.barrier()  # (the loop read job 01's job.status on the way)
            assert any(
                r.getMessage().startswith("[1/a/01] message 'x is ready' ignored: it is not")
                for r in caplog.records
            )
            proxy = h.proxy("1/a")
            assert proxy is not None and proxy["state"] == "running"
            assert proxy["outputs"]["x"] is False and h.proxy("1/b") is None

    run_bounded(scenario())


def test_retries_number_jobs_and_wait_for_the_delay(tmp_path: Path) -> None:
    definition = make_definition(
        "a",
        {
            "a": {
                "script": 'echo "try $CYLC_TASK_TRY_NUMBER"\n[[ $CYLC_TASK_TRY_NUMBER -ge 3 ]]',
                "retries": {"count": 3, "delay_s": 0.2},
            }
        },
    )

    async def scenario() -> None:
        async with running(definition, tmp_path) as h:
            assert await h.finish() == "AUTOMATIC"
            proxy = h.proxy("1/a")
            assert proxy is not None
            assert proxy["state"] == "succeeded"
            assert proxy["try_num"] == 3 and proxy["submit_num"] == 3
            assert proxy["job_ids"] == ["1/a/01", "1/a/02", "1/a/03"]
            jobs = [h.job(j) for j in proxy["job_ids"]]
            assert [j["state"] for j in jobs if j] == ["failed", "failed", "succeeded"]
            assert [j["exit_code"] for j in jobs if j] == [1, 1, 0]
            for earlier, later in itertools.pairwise(jobs):
                assert earlier and later
                assert later["submitted_time"] - earlier["finished_time"] >= 0.15
            assert job_out(tmp_path, "1/a/02") == "try 2\n"
            assert h.states_seen("1/a").count("waiting") == 3  # spawned, then two retries

    run_bounded(scenario())


def test_exhausted_retries_stall_then_abort(tmp_path: Path) -> None:
    definition = make_definition(
        "a => b", {"a": {"script": "exit 7", "retries": {"count": 1}}}, stall_timeout_s=0.3
    )

    async def scenario() -> None:
        async with running(definition, tmp_path) as h:
            await h.until(lambda: h.workflow()["status_msg"] == "stalled")
            proxy = h.proxy("1/a")
            assert proxy and proxy["state"] == "failed" and proxy["try_num"] == 2
            assert proxy["outputs"]["failed"] and not proxy["outputs"]["succeeded"]
            assert h.proxy("1/b") is None
            assert await h.finish() == "ABORT(stall timeout)"

    run_bounded(scenario())


def test_failure_handlers_complete_the_workflow(tmp_path: Path) -> None:
    definition = make_definition("a => b\na:fail? => recover", {"a": {"script": "exit 3"}}, final=2)

    async def scenario() -> None:
        async with running(definition, tmp_path) as h:
            assert await h.finish() == "AUTOMATIC"
            assert h.state("2/a") == "failed" and h.state("2/recover") == "succeeded"
            assert h.proxy("2/b") is None
            assert h.job("2/a/01")["exit_code"] == 3  # type: ignore[index]

    run_bounded(scenario())


def test_custom_output_from_the_job_status_file_while_the_job_runs(tmp_path: Path) -> None:
    definition = make_definition(
        "a:x => b",
        {"a": {"script": f'runwire_message "x is ready"\n{SLEEP}', "outputs": {"x": "x is ready"}}},
    )

    async def scenario() -> None:
        async with running(definition, tmp_path) as h:
            await h.until_state("1/b", "succeeded")
            proxy = h.proxy("1/a")
            assert proxy and proxy["state"] == "running" and proxy["outputs"]["x"] is True
            assert proxy["outputs"]["succeeded"] is False
            assert h.proxy("1/b")["prerequisites"] == [  # type: ignore[index]
                {"id": "1/a:x", "satisfied": True}
            ]

    run_bounded(scenario())


def test_message_command_reports_outputs_and_outcomes(tmp_path: Path) -> None:
    definition = make_definition(
        "a:x => b\na => c => d",
        {"a": {"script": SLEEP, "outputs": {"x": "x is ready"}}, "d": {"script": SLEEP}},
    )

    async def scenario() -> None:
        async with running(definition, tmp_path) as h:
            await h.until_state("1/a", "running")
            reply = h.command(
                "message",
                {
                    "task_job": "1/a/01",
                    "event_time": "2024-01-01T00:00:00Z",
                    "messages": [["INFO", "started"], ["INFO", "x is ready"], ["DEBUG", "chatter"]],
                },
            )
            assert reply["matched"] == ["1/a"]
            await h.until_state("1/b", "succeeded")
            assert h.state("1/a") == "running" and h.proxy("1/c") is None
            h.command("message", {"task_job": "//1/a/1", "messages": [["INFO", "succeeded"]]})
            await h.until_state("1/d", "running")  # (keeps the workflow from completing)
            assert h.state("1/a") == "succeeded"
            assert h.job("1/a/01")["state"] == "succeeded"  # type: ignore[index]
            rejected = h.scheduler.queue_command(
                "message", {"task_job": "1/a/02", "messages": [["INFO", "succeeded"]]}
            )
            assert rejected["message"] == "no job 1/a/02 in this workflow"
            pid = job_pid(tmp_path, 1, "a")
            assert pid is not None and alive(pid)  # the job reported success but still runs
            h.command("stop", {"mode": "kill"})
            assert await h.finish() == "REQUEST(KILL)"
            job = h.job("1/a/01")
            assert job and job["state"] == "succeeded" and job["exit_code"] == 143
            assert h.state("1/a") == "succeeded"  # the job's own report wins over the kill
            assert h.state("1/d") == "failed"

    run_bounded(scenario())


# ---------------------------------------------------------------------- commands


def test_pause_stops_new_submissions_until_resume(tmp_path: Path) -> None:
    definition = make_definition("a => b", {"a": {"script": SLEEP}})

    async def scenario() -> None:
        async with running(definition, tmp_path) as h:
            await h.until_state("1/a", "running")
            assert h.command("pause")["matched"] == []
            await h.until(lambda: h.workflow()["status"] == "paused")
            assert h.workflow()["status_msg"] == "paused"
            h.command("message", {"task_job": "1/a/01", "messages": [["INFO", "succeeded"]]})
            await h.until_state("1/a", "succeeded")
            await h.barrier()
            assert h.state("1/b") == "waiting"  # spawned, but not submitted while paused
            assert h.proxy("1/b")["submit_num"] == 0  # type: ignore[index]
            h.command("resume")
            await h.until_state("1/b", "succeeded")
            # resumed; done (1/a's process, still running, does not hold the workflow up)
            assert await h.finish() == "AUTOMATIC"

    run_bounded(scenario())


def test_start_paused_submits_nothing(tmp_path: Path) -> None:
    definition = make_definition("a", final=2)

    async def scenario() -> None:
        async with running(definition, tmp_path, start_paused=True) as h:
            await h.barrier()
            assert h.workflow()["status"] == "paused"
            assert [
                (p["id"], p["state"], p["submit_num"]) for p in h.scheduler.elements("task_proxies")
            ] == [("1/a", "waiting", 0), ("2/a", "waiting", 0)]
            assert not (tmp_path / "log" / "job" / "1").exists()
            h.command("resume")
            assert await h.finish() == "AUTOMATIC"

    run_bounded(scenario())


def test_hold_and_release_with_the_held_selector(tmp_path: Path) -> None:
    definition = make_definition("a => b")

    async def scenario() -> None:
        async with running(definition, tmp_path, start_paused=True) as h:
            assert h.command("hold", {"tasks": ["1/*"]})["matched"] == ["1/a"]
            h.command("resume")
            await h.until(lambda: h.proxy("1/a")["is_held"])  # type: ignore[index]
            await h.barrier()
            assert h.state("1/a") == "waiting" and h.proxy("1/a")["submit_num"] == 0  # type: ignore[index]
            assert h.workflow()["status_msg"] == "running"  # held: not stalled
            assert h.command("release", {"tasks": ["*/*:held"]})["matched"] == ["1/a"]
            assert await h.finish() == "AUTOMATIC"
            assert h.proxy("1/a")["is_held"] is False  # type: ignore[index]

    run_bounded(scenario())


def test_hold_a_future_task(tmp_path: Path) -> None:
    definition = make_definition("a", final=3, runahead_limit=0)

    async def scenario() -> None:
        async with running(definition, tmp_path, start_paused=True, keep_finished_points=5) as h:
            assert h.proxy("3/a") is None
            assert h.command("hold", {"tasks": ["3/a"]})["matched"] == ["3/a"]
            h.command("resume")
            await h.until(lambda: h.proxy("3/a") is not None)
            await h.barrier()
            assert h.state("2/a") == "succeeded"
            assert h.proxy("3/a")["is_held"] and h.state("3/a") == "waiting"  # type: ignore[index]
            assert h.command("release", {"tasks": ["3/a"]})["matched"] == ["3/a"]
            assert await h.finish() == "AUTOMATIC"

    run_bounded(scenario())


def test_trigger_runs_now_regardless_of_prerequisites_pause_and_hold(tmp_path: Path) -> None:
    definition = make_definition("a => b", {"b": {"script": "echo b $CYLC_TASK_SUBMIT_NUMBER"}})

    async def scenario() -> None:
        async with running(definition, tmp_path, start_paused=True) as h:
            assert h.proxy("1/b") is None
            reply = h.command("trigger", {"tasks": ["1/b"]})  # not spawned yet: spawns it
            assert reply["matched"] == ["1/b"]
            await h.until_state("1/b", "succeeded")
            assert h.state("1/a") == "waiting" and h.workflow()["status"] == "paused"
            assert h.proxy("1/b")["prerequisites"] == [  # type: ignore[index]
                {"id": "1/a:succeeded", "satisfied": False}
            ]
            h.command("hold", {"tasks": ["1/b"]})
            h.command("trigger", {"tasks": ["1/b"]})  # a re-run: job 02, and released
            await h.until(lambda: h.job("1/b/02") is not None and h.state("1/b") == "succeeded")
            assert h.proxy("1/b")["is_held"] is False  # type: ignore[index]
            assert job_out(tmp_path, "1/b/02") == "b 2\n"

    run_bounded(scenario())


def test_kill_fails_the_task_without_retrying(tmp_path: Path) -> None:
    definition = make_definition(
        "a\nb", {"a": {"script": SLEEP, "retries": {"count": 3}}}, stall_timeout_s=None
    )

    async def scenario() -> None:
        async with running(definition, tmp_path) as h:
            await h.until(lambda: h.state("1/a") == "running" and h.state("1/b") == "succeeded")
            pid = job_pid(tmp_path, 1, "a")
            assert pid is not None and alive(pid)
            assert h.command("kill", {"tasks": ["1/*"]})["matched"] == ["1/a", "1/b"]
            await h.until_state("1/a", "failed")
            job = h.job("1/a/01")
            assert job and job["state"] == "failed" and job["exit_code"] == 143
            assert "CYLC_JOB_EXIT=TERM" in job_status(tmp_path, "1/a/01")
            assert h.proxy("1/a")["job_ids"] == ["1/a/01"]  # type: ignore[index]
            assert not alive(pid)
            assert h.state("1/b") == "succeeded"  # not active: untouched

    run_bounded(scenario())


def test_kill_escalates_to_sigkill(tmp_path: Path) -> None:
    definition = make_definition(
        "a",
        {
            "a": {
                "script": f"trap '' TERM\nrunwire_message armed\n{SLEEP}",
                "outputs": {"armed": "armed"},
            }
        },
    )

    async def scenario() -> None:
        async with running(definition, tmp_path, kill_grace_s=0.2) as h:
            await h.until(lambda: h.proxy("1/a")["outputs"]["armed"])  # type: ignore[index]
            h.command("kill", {"tasks": ["1/a"]})
            await h.until_state("1/a", "failed")
            assert h.job("1/a/01")["exit_code"] == 137  # type: ignore[index]

    run_bounded(scenario())


def test_execution_time_limit_kills_and_retries(tmp_path: Path) -> None:
    definition = make_definition(
        "a",
        {"a": {"script": SLEEP, "execution_time_limit_s": 0.2, "retries": {"count": 1}}},
        stall_timeout_s=0,
    )

    async def scenario() -> None:
        async with running(definition, tmp_path, kill_grace_s=0.2) as h:
            assert await h.finish() == "ABORT(stall timeout)"
            proxy = h.proxy("1/a")
            assert proxy and proxy["state"] == "failed" and proxy["job_ids"] == ["1/a/01", "1/a/02"]
            for job_id in proxy["job_ids"]:
                assert "CYLC_JOB_EXIT=XCPU" in job_status(tmp_path, job_id)
                job = h.job(job_id)
                assert job and job["finished_time"] - job["started_time"] >= 0.2

    run_bounded(scenario())


def test_submission_failure(tmp_path: Path) -> None:
    definition = make_definition("a:submit-fail? => b\na => c", stall_timeout_s=0)

    async def scenario() -> None:
        async with running(definition, tmp_path, job_shell=str(tmp_path / "no-such-shell")) as h:
            await h.until_state("1/a", "submit-failed")
            assert h.states_seen("1/a") == ["waiting", "preparing", "submit-failed"]
            job = h.job("1/a/01")
            assert job and job["state"] == "submit-failed" and job["exit_code"] is None
            assert h.proxy("1/a")["outputs"]["submit-failed"] is True  # type: ignore[index]
            await h.until(lambda: h.proxy("1/b") is not None)  # the handler was spawned
            assert h.proxy("1/c") is None

    run_bounded(scenario())


def test_set_outputs_and_prerequisites(tmp_path: Path) -> None:
    definition = make_definition(
        "a => b\na:x => c\nd => c\nb => e",
        {"a": {"outputs": {"x": "x done"}}, "d": {"script": "exit 1"}},
    )

    async def scenario() -> None:
        async with running(definition, tmp_path, start_paused=True) as h:
            assert h.command("set", {"tasks": ["1/a"], "outputs": ["x"]})["matched"] == ["1/a"]
            await h.until(lambda: h.proxy("1/c") is not None)
            assert h.proxy("1/c")["prerequisites"] == [  # type: ignore[index]
                {"id": "1/a:x", "satisfied": True},
                {"id": "1/d:succeeded", "satisfied": False},
            ]
            assert h.state("1/a") == "waiting"  # a custom output alone keeps the state
            h.command("set", {"tasks": ["1/c"], "prerequisites": ["1/d:succeeded"]})
            h.command("set", {"tasks": ["1/a"]})  # default: succeeded
            await h.until_state("1/a", "succeeded")
            outputs = h.proxy("1/a")["outputs"]  # type: ignore[index]
            assert outputs["submitted"] and outputs["started"] and outputs["succeeded"]
            assert h.proxy("1/a")["submit_num"] == 0  # type: ignore[index]
            h.command("set", {"tasks": ["1/b"], "outputs": ["expire"]})
            await h.until_state("1/b", "expired")
            h.command("set", {"tasks": ["1/d"], "outputs": ["failed"]})
            await h.until_state("1/d", "failed")
            await h.barrier()
            assert h.state("1/c") == "waiting"
            assert all(p["satisfied"] for p in h.proxy("1/c")["prerequisites"])  # type: ignore[index]
            assert h.proxy("1/e") is None  # b expired: no succeeded output
            h.command("remove", {"tasks": ["1/d"]})  # incomplete (failed): would stall
            h.command("resume")
            assert await h.finish() == "AUTOMATIC"
            assert h.state("1/c") == "succeeded"

    run_bounded(scenario())


def test_set_final_output_on_an_active_task_kills_its_job(tmp_path: Path) -> None:
    definition = make_definition("a => b", {"a": {"script": SLEEP}})

    async def scenario() -> None:
        async with running(definition, tmp_path) as h:
            await h.until_state("1/a", "running")
            pid = job_pid(tmp_path, 1, "a")
            h.command("set", {"tasks": ["1/a"], "outputs": ["succeeded"]})
            assert await h.finish() == "AUTOMATIC"
            assert h.state("1/a") == "succeeded" and h.state("1/b") == "succeeded"
            assert h.job("1/a/01")["state"] == "failed"  # type: ignore[index]
            assert pid is not None and not alive(pid)

    run_bounded(scenario())


def test_remove_prunes_task_proxies_and_kills_their_jobs(tmp_path: Path) -> None:
    definition = make_definition("a => b\nc", {"c": {"script": SLEEP}})

    async def scenario() -> None:
        async with running(definition, tmp_path, start_paused=True) as h:
            h.command("trigger", {"tasks": ["1/c"]})
            await h.until_state("1/c", "running")
            pid = job_pid(tmp_path, 1, "c")
            assert h.command("remove", {"tasks": ["1/*"]})["matched"] == ["1/a", "1/c"]
            await h.until(lambda: not h.scheduler.elements("task_proxies"))
            pruned = [i for b in h.batches for i in b.get("task_proxies", {}).get("pruned", [])]
            assert sorted(pruned) == ["1/a", "1/c"]
            assert any("1/c/01" in b.get("jobs", {}).get("pruned", []) for b in h.batches)
            assert h.scheduler.elements("jobs") == []
            assert await h.finish() == "AUTOMATIC"  # nothing left to do
            assert pid is not None and not alive(pid)

    run_bounded(scenario())


def test_poll_reads_messages_the_scheduler_did_not_watch(tmp_path: Path) -> None:
    definition = make_definition("a:x => b", {"a": {"script": SLEEP, "outputs": {"x": "x done"}}})

    async def scenario() -> None:
        async with running(definition, tmp_path, watch_status_files=False) as h:
            await h.until_state("1/a", "running")
            status = tmp_path / "log" / "job" / "1" / "a" / "01" / "job.status"
            with status.open("a") as handle:  # what `runwire_message "x done"` would write
                handle.write("CYLC_MESSAGE=2024-01-01T00:00:00Z|INFO|x done\n")
            await h.barrier()
            assert h.proxy("1/b") is None and not h.proxy("1/a")["outputs"]["x"]  # type: ignore[index]
            assert h.command("poll", {"tasks": ["1/a/01"]})["matched"] == ["1/a"]
            await h.until_state("1/b", "succeeded")
            assert h.proxy("1/a")["outputs"]["x"] is True  # type: ignore[index]

    run_bounded(scenario())


def test_broadcast_overrides_future_jobs(tmp_path: Path) -> None:
    definition = make_definition(
        "a => b",
        {"root": {"script": 'echo "$GREETING"', "environment": {"GREETING": "plain"}}},
        final=2,
    )

    async def scenario() -> None:
        async with running(definition, tmp_path, start_paused=True, keep_finished_points=5) as h:
            assert h.command(
                "broadcast", {"mode": "put", "settings": {"environment": {"GREETING": "hi"}}}
            )["matched"] == ["1/a", "2/a"]
            h.command(
                "broadcast",
                {
                    "mode": "put",
                    "cycle_points": ["2"],
                    "namespaces": ["b"],
                    "settings": {"script": 'echo "override $GREETING"'},
                },
            )
            h.command(
                "broadcast",
                {
                    "mode": "put",
                    "namespaces": ["a"],
                    "settings": {"environment": {"GREETING": "gone", "X": "1"}},
                },
            )
            reply = h.command("broadcast", {"mode": "clear", "namespaces": ["a"]})
            assert reply["matched"] == ["1/a", "2/a"]
            await h.until(lambda: len(h.workflow()["broadcasts"]) == 2)
            assert h.workflow()["broadcasts"] == [
                {
                    "cycle_point": "*",
                    "namespace": "root",
                    "settings": {"environment": {"GREETING": "hi"}},
                },
                {
                    "cycle_point": "2",
                    "namespace": "b",
                    "settings": {"script": 'echo "override $GREETING"'},
                },
            ]
            h.command("resume")
            assert await h.finish() == "AUTOMATIC"
            assert job_out(tmp_path, "1/a/01") == "hi\n"
            assert job_out(tmp_path, "1/b/01") == "hi\n"
            assert job_out(tmp_path, "2/b/01") == "override hi\n"

    run_bounded(scenario())


def test_broadcast_clear_of_single_settings(tmp_path: Path) -> None:
    definition = make_definition("a")

    async def scenario() -> None:
        async with running(definition, tmp_path, start_paused=True) as h:
            h.command(
                "broadcast",
                {
                    "mode": "put",
                    "settings": {"environment": {"A": "1", "B": "2"}, "script": "true"},
                },
            )
            h.command(
                "broadcast", {"mode": "clear", "settings": {"environment": {"A": ""}, "script": ""}}
            )
            await h.until(
                lambda: (
                    h.workflow()["broadcasts"]
                    == [
                        {
                            "cycle_point": "*",
                            "namespace": "root",
                            "settings": {"environment": {"B": "2"}},
                        }
                    ]
                )
            )
            h.command("broadcast", {"mode": "clear"})
            await h.until(lambda: h.workflow()["broadcasts"] == [])

    run_bounded(scenario())


# ---------------------------------------------------------------------- stopping


def test_stop_clean_waits_for_active_jobs(tmp_path: Path) -> None:
    definition = make_definition("a => b", {"a": {"script": "sleep 0.3"}})

    async def scenario() -> None:
        async with running(definition, tmp_path) as h:
            await h.until_state("1/a", "running")
            assert h.command("stop")["matched"] == []
            await h.until(lambda: h.workflow()["status"] == "stopping")
            assert h.workflow()["status_msg"] == "stopping: waiting for active jobs to complete"
            assert h.workflow()["stop_mode"] == "clean"
            rejected = h.scheduler.queue_command("stop", {"mode": "clean"})
            assert rejected["message"] == "the workflow is already stopping (REQUEST(CLEAN))"
            assert h.scheduler.queue_command("trigger", {"tasks": ["1/b"]})["accepted"] is False
            assert await h.finish() == "REQUEST(CLEAN)"
            assert h.state("1/a") == "succeeded"
            assert h.state("1/b") == "waiting"  # spawned, never submitted
            assert h.workflow()["status_msg"] == "stopped: REQUEST(CLEAN)"

    run_bounded(scenario())


@pytest.mark.parametrize("stop", ["clean", None])
def test_stop_does_not_wait_for_processes_of_finished_tasks(
    tmp_path: Path, stop: str | None
) -> None:
    """Cylc waits for active tasks, not job processes: a job that reported success by
    message but goes on running neither delays a clean stop nor the automatic one; its
    process is left running (and not followed any more)."""
    definition = make_definition("a", {"a": {"script": SLEEP}})

    async def scenario() -> None:
        async with running(definition, tmp_path) as h:
            await h.until_state("1/a", "running")
            if stop is not None:
                h.command("stop", {"mode": stop})
                await h.until(lambda: h.workflow()["status"] == "stopping")
            h.command("message", {"task_job": "1/a/01", "messages": [["INFO", "succeeded"]]})
            # the job's process runs for 30 s more: stopping must not wait for it
            assert await h.finish(timeout_s=5) == ("REQUEST(CLEAN)" if stop else "AUTOMATIC")
            pid = job_pid(tmp_path, 1, "a")
            assert pid is not None and alive(pid)
            assert "CYLC_JOB_EXIT" not in job_status(tmp_path, "1/a/01")
            assert h.job("1/a/01")["state"] == "succeeded"  # type: ignore[index]
            # (the harness kills job processes left behind)

    run_bounded(scenario())


def test_stop_now_leaves_jobs_running(tmp_path: Path) -> None:
    definition = make_definition("a", {"a": {"script": SLEEP}})

    async def scenario() -> None:
        async with running(definition, tmp_path) as h:
            await h.until_state("1/a", "running")
            h.command("stop", {"mode": "now"})
            assert await h.finish() == "REQUEST(NOW)"
            pid = job_pid(tmp_path, 1, "a")
            assert pid is not None and alive(pid)
            assert h.state("1/a") == "running"
            assert "CYLC_JOB_EXIT" not in job_status(tmp_path, "1/a/01")
            # (the harness kills job processes left behind)

    run_bounded(scenario())


def test_stop_kill_kills_active_jobs_then_stops(tmp_path: Path) -> None:
    definition = make_definition("a & b", {"a": {"script": SLEEP}, "b": {"script": SLEEP}})

    async def scenario() -> None:
        async with running(definition, tmp_path) as h:
            await h.until(lambda: h.state("1/a") == h.state("1/b") == "running")
            h.command("stop", {"mode": "kill"})
            assert await h.finish() == "REQUEST(KILL)"
            assert h.state("1/a") == h.state("1/b") == "failed"
            messages = [
                b["workflow"]["updated"][0]["status_msg"]
                for b in h.batches
                if b.get("workflow", {}).get("updated")
            ]
            assert "stopping: killing active jobs" in messages
            assert h.workflow()["stop_mode"] == "kill"

    run_bounded(scenario())


def test_stop_clean_escalates_to_kill(tmp_path: Path) -> None:
    definition = make_definition("a", {"a": {"script": SLEEP}})

    async def scenario() -> None:
        async with running(definition, tmp_path) as h:
            await h.until_state("1/a", "running")
            h.command("stop", {"mode": "clean"})
            await h.until(lambda: h.workflow()["status"] == "stopping")
            h.command("stop", {"mode": "kill"})
            assert await h.finish() == "REQUEST(KILL)"

    run_bounded(scenario())


def test_stop_after_a_cycle_point(tmp_path: Path) -> None:
    definition = make_definition("a", final=5, runahead_limit=1)

    async def scenario() -> None:
        async with running(definition, tmp_path, start_paused=True, keep_finished_points=9) as h:
            assert h.command("stop", {"mode": "clean", "cycle_point": "2"})["matched"] == []
            await h.until(lambda: h.workflow()["stop_mode"] == "after cycle point 2")
            h.command("resume")
            assert await h.finish() == "AUTOMATIC"
            assert "running to stop at 2" in h.status_msgs()
            assert [p["id"] for p in h.scheduler.elements("task_proxies")] == ["1/a", "2/a"]
            assert sorted(p.name for p in (tmp_path / "log" / "job").iterdir()) == ["1", "2"]

    run_bounded(scenario())


def test_stop_after_a_task(tmp_path: Path) -> None:
    definition = make_definition("a", final=5, runahead_limit=0)

    async def scenario() -> None:
        async with running(definition, tmp_path, start_paused=True, keep_finished_points=9) as h:
            assert h.command("stop", {"task": "2/a"})["matched"] == ["2/a"]
            await h.until(lambda: h.workflow()["stop_mode"] == "after task 2/a")
            h.command("resume")
            assert await h.finish() == "REQUEST(CLEAN)"
            assert "running to stop after 2/a" in h.status_msgs()
            assert sorted(p.name for p in (tmp_path / "log" / "job").iterdir()) == ["1", "2"]

    run_bounded(scenario())


def test_cancelling_run_kills_jobs(tmp_path: Path) -> None:
    definition = make_definition("a", {"a": {"script": SLEEP}})

    async def scenario() -> None:
        scheduler = Scheduler(definition, tmp_path, job_poll_interval_s=0.02)
        task = asyncio.create_task(scheduler.run())
        await scheduler.wait_until(
            lambda: any(p["state"] == "running" for p in scheduler.elements("task_proxies")),
            timeout_s=5,
        )
        pid = job_pid(tmp_path, 1, "a")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pid is not None and not alive(pid)
        assert scheduler.status == "stopped" and scheduler.stop_reason == "CANCELLED"
        assert scheduler.queue_command("pause")["message"] == "the workflow has stopped"

    run_bounded(scenario())


# ---------------------------------------------------------------------- data store, bounds


def test_deltas_carry_whole_elements_for_non_empty_topics_only(tmp_path: Path) -> None:
    definition = make_definition("a => b", final=3, runahead_limit=0)

    async def scenario() -> None:
        async with running(definition, tmp_path, keep_finished_points=0) as h:
            assert await h.finish() == "AUTOMATIC"
        first = h.batches[0]
        assert list(first) == ["workflow", "tasks", "task_proxies"]
        assert [t["id"] for t in first["tasks"]["added"]] == ["a", "b"]
        assert first["tasks"]["added"][0] == {
            "id": "a",
            "name": "a",
            "script": "",
            "outputs": {},
            "retries": 0,
        }
        assert [p["id"] for p in first["task_proxies"]["added"]] == ["1/a"]
        for batch in h.batches:
            assert batch and list(batch) == [t for t in TOPICS if t in batch]
            for delta in batch.values():
                assert set(delta) == {"added", "updated", "pruned"}
                assert delta["added"] or delta["updated"] or delta["pruned"]
            assert "workflow" in batch  # last_updated moves with every batch
        pruned = {i for b in h.batches for i in b.get("task_proxies", {}).get("pruned", [])}
        assert {"1/a", "1/b"} <= pruned  # finished, complete and behind the window
        assert [p["id"] for p in h.scheduler.elements("task_proxies")] == ["3/a", "3/b"]
        last = h.batches[-1]["workflow"]["updated"][0]
        assert last["status"] == "stopped" and last["status_msg"] == "stopped: AUTOMATIC"
        times = [b["workflow"]["updated"][0]["last_updated"] for b in h.batches[1:]]
        assert times == sorted(times)

    run_bounded(scenario())


def test_element_shapes_and_numeric_ordering(tmp_path: Path) -> None:
    definition = make_definition("a[-P1] => a", final=11, runahead_limit=20)

    async def scenario() -> None:
        async with running(definition, tmp_path, keep_finished_points=20) as h:
            assert await h.finish() == "AUTOMATIC"
            snapshot = h.scheduler.snapshot()
            assert set(snapshot) == {"workflow", "tasks", "task_proxies", "jobs", "edges"}
            assert set(snapshot["workflow"]) == {
                "id",
                "name",
                "status",
                "status_msg",
                "initial_cycle_point",
                "final_cycle_point",
                "run_dir",
                "last_updated",
                "stop_mode",
                "broadcasts",
            }
            assert snapshot["workflow"]["initial_cycle_point"] == "1"
            assert snapshot["workflow"]["final_cycle_point"] == "11"
            assert [p["id"] for p in snapshot["task_proxies"]] == [f"{n}/a" for n in range(1, 12)]
            assert set(snapshot["task_proxies"][0]) == {
                "id",
                "name",
                "cycle_point",
                "state",
                "is_held",
                "submit_num",
                "try_num",
                "outputs",
                "prerequisites",
                "job_ids",
            }
            assert [j["id"] for j in snapshot["jobs"]][:3] == ["1/a/01", "2/a/01", "3/a/01"]
            assert set(snapshot["jobs"][0]) == {
                "id",
                "task_proxy",
                "submit_num",
                "state",
                "submitted_time",
                "started_time",
                "finished_time",
                "exit_code",
                "job_dir",
            }
            assert snapshot["edges"][0] == {"id": "1/a=>2/a", "source": "1/a", "target": "2/a"}
            assert set(snapshot["tasks"][0]) == {"id", "name", "script", "outputs", "retries"}
            assert h.scheduler.elements("workflow") == [snapshot["workflow"]]
            with pytest.raises(UnknownElementType):
                h.scheduler.elements("families")

    run_bounded(scenario())


def test_runahead_limit_bounds_active_cycle_points(tmp_path: Path) -> None:
    definition = make_definition("a", final=8, runahead_limit=1)

    async def scenario() -> None:
        async with running(definition, tmp_path) as h:
            assert await h.finish() == "AUTOMATIC"
        states: dict[str, str] = {}
        widest = 0
        for batch in h.batches:
            delta = batch.get("task_proxies", {"added": [], "updated": [], "pruned": []})
            for element in delta["added"] + delta["updated"]:
                states[element["id"]] = element["state"]
            for pruned in delta["pruned"]:
                states.pop(pruned, None)
            points = {int(i.split("/")[0]) for i, s in states.items() if s != "succeeded"}
            if points:
                widest = max(widest, max(points) - min(points))
        assert widest == 1  # runahead 1: two cycle points at once, never three
        assert len(list((tmp_path / "log" / "job").iterdir())) == 8

    run_bounded(scenario())


def test_max_active_jobs(tmp_path: Path) -> None:
    definition = make_definition("a & b & c & d")

    async def scenario() -> None:
        async with running(definition, tmp_path, max_active_jobs=2) as h:
            assert await h.finish() == "AUTOMATIC"
        states: dict[str, str] = {}
        most = 0
        for batch in h.batches:
            for element in batch.get("task_proxies", {}).get("added", []) + batch.get(
                "task_proxies", {}
            ).get("updated", []):
                states[element["id"]] = element["state"]
            most = max(
                most, sum(s in ("preparing", "submitted", "running") for s in states.values())
            )
        assert most == 2

    run_bounded(scenario())


def test_on_deltas_errors_do_not_stop_the_scheduler(tmp_path: Path) -> None:
    definition = make_definition("a => b")
    calls: list[DeltaBatch] = []

    def broken(batch: DeltaBatch) -> None:
        calls.append(batch)
        raise RuntimeError("subscriber bug")

    async def scenario() -> None:
        scheduler = Scheduler(definition, tmp_path, on_deltas=broken, job_poll_interval_s=0.02)
        assert await asyncio.wait_for(scheduler.run(), 10) == "AUTOMATIC"
        assert len(calls) > 3

    run_bounded(scenario())


def test_run_only_once(tmp_path: Path) -> None:
    definition = make_definition("a")

    async def scenario() -> None:
        scheduler = Scheduler(definition, tmp_path, job_poll_interval_s=0.02)
        assert await scheduler.run() == "AUTOMATIC"
        with pytest.raises(Exception, match="only once"):
            await scheduler.run()

    run_bounded(scenario())


# ---------------------------------------------------------------------- rejected commands

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        (
            "nope",
            {},
            "unknown command 'nope'; expected one of pause, resume, stop, hold, "
            "release, trigger, kill, set, remove, poll, message, broadcast",
        ),
        ("pause", [], "args of pause must be an object"),
        ("pause", {"x": 1}, "unexpected argument 'x'"),
        ("hold", {}, "missing argument 'tasks'"),
        ("hold", {"tasks": "1/a"}, "tasks must be a list of task selectors"),
        ("hold", {"tasks": []}, "tasks must name at least one task selector"),
        (
            "hold",
            {"tasks": ["1/a:bogus"]},
            "'1/a:bogus': unknown state 'bogus'; expected one of waiting, preparing, submitted, "
            "running, succeeded, failed, submit-failed, expired, held",
        ),
        ("hold", {"tasks": ["1/nosuch"]}, "'1/nosuch': no task named 'nosuch'"),
        (
            "hold",
            {"tasks": ["7/a"]},
            "'7/a': 7 is not a cycle point of this workflow (1 to 2, step 1)",
        ),
        ("hold", {"tasks": ["2/*"]}, "no task proxies match 2/*"),
        ("kill", {"tasks": ["1/b"]}, "no task proxies match 1/b"),
        ("release", {"tasks": ["1/b"]}, "no task proxies match 1/b"),
        ("stop", {"mode": "later"}, "mode must be one of clean, now, kill, not 'later'"),
        ("stop", {"cycle_point": "x"}, "cycle_point must be an integer cycle point, not 'x'"),
        ("stop", {"cycle_point": "0"}, "cycle_point 0 is before the initial cycle point 1"),
        ("stop", {"cycle_point": "1", "task": "1/a"}, "give cycle_point or task, not both"),
        (
            "stop",
            {"mode": "now", "cycle_point": "1"},
            "mode now cannot be combined with cycle_point: stopping after a cycle point is "
            "always clean (once its tasks finish); give one or the other",
        ),
        (
            "stop",
            {"mode": "kill", "task": "1/a"},
            "mode kill cannot be combined with task: stopping after a task is always clean "
            "(once it succeeds); give one or the other",
        ),
        ("stop", {"task": "1/*"}, "task must be one task id such as 1/foo, not '1/*'"),
        ("set", {"tasks": ["1/a"], "outputs": ["nosuch"]}, "a has no output 'nosuch'"),
        (
            "set",
            {"tasks": ["1/a"], "outputs": []},
            "outputs must be a non-empty list of output names",
        ),
        (
            "set",
            {"tasks": ["1/b"], "prerequisites": ["1/c:succeeded"]},
            "1/b has no prerequisite 1/c:succeeded",
        ),
        (
            "set",
            {"tasks": ["1/b"], "prerequisites": ["1/a"]},
            'prerequisite \'1/a\' is not "point/task:output" (or "all")',
        ),
        (
            "message",
            {"task_job": "1/a", "messages": [["INFO", "x"]]},
            "task_job must be a job id such as 1/foo/01, not '1/a'",
        ),
        (
            "message",
            {"task_job": "1/a/01", "messages": [["INFO", "x"]]},
            "no job 1/a/01 in this workflow",
        ),
        ("message", {"task_job": "1/a/00", "messages": []}, "'1/a/00': job numbers start at 01"),
        ("broadcast", {"mode": "put"}, "broadcast put needs settings"),
        ("broadcast", {"mode": "zap"}, "mode must be put or clear, not 'zap'"),
        (
            "broadcast",
            {"mode": "put", "namespaces": ["z"], "settings": {"script": ""}},
            "no task or namespace named 'z'",
        ),
        (
            "broadcast",
            {"mode": "put", "cycle_points": ["x"], "settings": {"script": ""}},
            "cycle point 'x' must be an integer or \"*\"",
        ),
        (
            "broadcast",
            {"mode": "put", "settings": {"platform": "x"}},
            "unknown broadcast setting 'platform' (environment, script)",
        ),
        (
            "broadcast",
            {"mode": "put", "settings": {"environment": {"1X": "y"}}},
            "'1X' is not an environment variable name",
        ),
        (
            "broadcast",
            {"mode": "put", "settings": {"environment": {"X": 1}}},
            "environment value of X must be a string",
        ),
    ],
)
def test_command_rejections(tmp_path: Path, name: str, args: Any, message: str) -> None:
    definition = make_definition(
        "a => b\na:x => c", {"a": {"outputs": {"x": "x"}}}, final=2, runahead_limit=0
    )
    scheduler = Scheduler(definition, tmp_path)
    reply = scheduler.queue_command(name, args)
    assert reply == {"accepted": False, "command_id": None, "matched": [], "message": message}


def test_accepted_reply_and_queue_bound(tmp_path: Path) -> None:
    scheduler = Scheduler(make_definition("a"), tmp_path, max_queued_commands=2)
    first = scheduler.queue_command("hold", {"tasks": ["1/a"]})
    assert first["accepted"] is True and first["message"] == "Command queued"
    assert UUID4.match(first["command_id"])
    assert first["matched"] == ["1/a"]  # not spawned before run(): a future task
    assert scheduler.queue_command("pause", {})["accepted"]
    full = scheduler.queue_command("resume", {})
    assert full["accepted"] is False
    assert full["message"] == "command queue is full (2 commands waiting); try again later"
    assert uuid.UUID(first["command_id"]).version == 4


def test_set_all_prerequisites_lets_a_task_run(tmp_path: Path) -> None:
    definition = make_definition("a & b => c", {"a": {"script": SLEEP}, "b": {"script": SLEEP}})

    async def scenario() -> None:
        async with running(definition, tmp_path, start_paused=True) as h:
            reply = h.command("set", {"tasks": ["1/c"], "prerequisites": ["all"]})
            assert reply["matched"] == ["1/c"]  # a future task: spawned with all satisfied
            h.command("hold", {"tasks": ["1/a", "1/b"]})
            h.command("resume")
            await h.until_state("1/c", "succeeded")
            assert h.proxy("1/c")["prerequisites"] == [  # type: ignore[index]
                {"id": "1/a:succeeded", "satisfied": True},
                {"id": "1/b:succeeded", "satisfied": True},
            ]
            assert h.state("1/a") == h.state("1/b") == "waiting"

    run_bounded(scenario())


def test_an_elapsed_retry_delay_of_a_held_task_does_not_spin_the_loop(tmp_path: Path) -> None:
    definition = make_definition(
        "a", {"a": {"script": SLEEP, "execution_time_limit_s": 0.3, "retries": {"count": 1}}}
    )

    async def scenario() -> None:
        async with running(definition, tmp_path, kill_grace_s=0.1) as h:
            await h.until_state("1/a", "running")
            h.command("hold", {"tasks": ["1/a"]})
            await h.until(lambda: h.state("1/a") == "waiting" and h.proxy("1/a")["try_num"] == 2)  # type: ignore[index]
            await h.barrier()
            assert h.proxy("1/a")["is_held"] and h.proxy("1/a")["submit_num"] == 1  # type: ignore[index]
            # the retry delay (0 s) has passed; only a release may wake the loop for it
            assert h.scheduler._next_wakeup() is None
            h.command("release", {"tasks": ["1/a"]})
            await h.until(lambda: h.job("1/a/02") is not None)

    run_bounded(scenario())
