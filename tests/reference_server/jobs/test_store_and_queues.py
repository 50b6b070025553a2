"""The dispatcher's SQLite store and its FIFO queues, without sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from runwire.reference_server.jobs.queues import FifoSemaphore, QueueRegistry
from runwire.reference_server.jobs.store import RESTART_MESSAGE, JobRecord, JobStore


def record(
    job_id: str, *, submit: int = 100, queue: Any = None, state: str = "queued"
) -> JobRecord:
    return JobRecord(
        job_id=job_id,
        host="web01",
        procedure="echo",
        arguments=[1, "a"],
        info={"who": "ops"},
        queue=queue,
        timeout_s=600,
        max_exec_time_s=600,
        submit=submit,
        start=None,
        end=None,
        state=state,
        outcome=None,
        packet_count=0,
    )


def test_store_round_trips_records_packets_and_outcomes(tmp_path: Path) -> None:
    path = tmp_path / "db" / "jobs.sqlite3"
    store = JobStore(path)
    store.insert_job(record("a", queue={"z": 1, "a": [1, 2]}))
    store.mark_started("a", 101)
    for index in range(3):
        store.append_packet("a", index, 101.5, {"n": index, "text": "é"})
    store.finish("a", "finished", {"result": None}, 102)
    store.close()

    reopened = JobStore(path)
    got = reopened.get("a")
    assert got is not None
    assert (got.start, got.end, got.state, got.packet_count) == (101, 102, "finished", 3)
    assert got.outcome == {"result": None}
    assert got.queue == {"a": [1, 2], "z": 1}
    assert [p.data["n"] for p in reopened.packets("a", 1, 10)] == [1, 2]
    assert next(iter(reopened.packets("a", 0, 1))).data["text"] == "é"
    assert reopened.get("missing") is None


def test_interrupt_live_jobs_sets_missing_result_and_end() -> None:
    store = JobStore(":memory:")
    store.insert_job(record("queued"))
    store.insert_job(record("running"))
    store.mark_started("running", 150)
    store.insert_job(record("done"))
    store.finish("done", "finished", {"result": 1}, 160)
    assert store.interrupt_live_jobs(now=200) == 2
    for job_id in ("queued", "running"):
        got = store.get(job_id)
        assert got is not None and got.state == "interrupted" and got.end == 200
        assert got.outcome == {"error": {"type": "missing_result", "message": RESTART_MESSAGE}}
    done = store.get("done")
    assert done is not None and done.outcome == {"result": 1} and done.end == 160


def test_list_jobs_filters_newest_first_and_truncates() -> None:
    store = JobStore(":memory:")
    for n in range(5):
        store.insert_job(record(f"j{n}", submit=100 + n, queue={"q": n % 2}))
    rows, truncated = store.list_jobs(limit=3)
    assert [row.job_id for row in rows] == ["j4", "j3", "j2"] and truncated
    rows, truncated = store.list_jobs(queue={"q": 1})
    assert [row.job_id for row in rows] == ["j3", "j1"] and not truncated
    assert store.list_jobs(state="running")[0] == []
    assert store.count_live() == 5


def test_prune_keeps_live_jobs() -> None:
    store = JobStore(":memory:")
    store.insert_job(record("old-done", submit=10))
    store.append_packet("old-done", 0, 10.0, 1)
    store.finish("old-done", "finished", {"result": 1}, 11)
    store.insert_job(record("old-live", submit=10))
    store.insert_job(record("new-done", submit=1000))
    store.finish("new-done", "finished", {"result": 1}, 1001)
    assert store.prune(older_than=500) == 1
    assert store.get("old-done") is None
    assert list(store.packets("old-done", 0, 10)) == []
    assert store.get("old-live") is not None and store.get("new-done") is not None


def run(coroutine: Any) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(5):
            return await coroutine

    return asyncio.run(bounded())


def test_fifo_semaphore_grants_in_arrival_order_and_skips_cancelled_waiters() -> None:
    async def body() -> list[str]:
        semaphore = FifoSemaphore(1)
        order: list[str] = []
        await semaphore.acquire()

        async def worker(name: str) -> None:
            await semaphore.acquire()
            order.append(name)
            semaphore.release()

        tasks = {name: asyncio.ensure_future(worker(name)) for name in "abcd"}
        for _ in range(3):
            await asyncio.sleep(0)  # let every worker join the line
        tasks["b"].cancel()
        semaphore.release()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        assert semaphore.running == 0 and not semaphore.waiters
        return order

    assert run(body()) == ["a", "c", "d"]


def test_queue_concurrency_is_fixed_by_the_first_job_and_the_queue_dies_when_idle() -> None:
    async def body() -> None:
        deleted: list[str] = []
        queues = QueueRegistry(on_idle=deleted.append)
        first = queues.join("k", 2)
        second = queues.join("k", 9)
        assert first is second and queues.concurrency("k") == 2
        await queues.acquire("k", first)
        await queues.acquire("k", second)
        third = queues.join("k", 1)
        waiter = asyncio.ensure_future(queues.acquire("k", third))
        await asyncio.sleep(0)
        assert queues.waiting("k") == 1
        queues.release("k", first)
        await asyncio.wait_for(waiter, 1)
        queues.release("k", second)
        assert "k" in queues
        queues.release("k", third)
        assert "k" not in queues and deleted == ["k"]
        assert queues.join("k", 5).limit == 5  # created afresh

    run(body())


@pytest.mark.parametrize("holding", [False, True])
def test_a_job_leaving_before_its_turn_frees_the_queue(holding: bool) -> None:
    async def body() -> None:
        queues = QueueRegistry()
        queue = queues.join("k", 1)
        if holding:
            await queues.acquire("k", queue)
        queues.leave("k", queue, holding=holding)
        assert "k" not in queues and queue.running == 0

    run(body())


def test_release_and_cancellation_in_the_same_turn_leave_a_consistent_semaphore() -> None:
    """A release that meets waiters cancelled in the same turn of the loop (what a graceful
    stop does to a queue) skips them, and the semaphore stays usable."""

    async def body() -> None:
        semaphore = FifoSemaphore(1)
        await semaphore.acquire()
        tasks = [asyncio.ensure_future(semaphore.acquire()) for _ in range(3)]
        await asyncio.sleep(0)  # all three wait
        for task in tasks:
            task.cancel()
        semaphore.release()  # before the cancelled tasks run their except branches
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(result, asyncio.CancelledError) for result in results)
        assert semaphore.running == 0 and semaphore.waiting == 0
        await asyncio.wait_for(semaphore.acquire(), 1)  # the free slot is taken at once
        assert semaphore.running == 1

    run(body())
