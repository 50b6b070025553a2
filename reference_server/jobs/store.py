"""Durable storage of the reference dispatcher: job records, stream packets and results.

One embedded SQLite database in WAL mode (HarpCaller keeps one table file per job; one
database is easier to back up, prune and query). The store is used from the dispatcher's
event-loop thread only: it is a plain synchronous object, and every write is visible to
every later read at once (one connection). What must be durable before a reply is sent
(a new job record, a job's end) is committed at once; stream packets are committed in
batches by :meth:`JobStore.flush`, which the dispatcher schedules soon after each write.

Job records hold the call, the queue name, the limits, the info, the three times (integer
epoch seconds, as the original reports them), the state and, once the job ended, its
outcome: the exact result line a client reads (``{"result": ...}``, ``{"exception": ...}``,
``{"cancelled": true}`` or ``{"error": ...}``).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RESTART_MESSAGE", "JobRecord", "JobStore", "Packet", "canonical_json"]

#: The message of the ``missing_result`` error recorded for jobs a restart interrupted.
RESTART_MESSAGE = "job interrupted: the dispatcher restarted while it was queued or running"

#: Job states (``JobState`` in schemas/jobs/dispatcher.json). ``queued`` and ``running``
#: are live; the others are final.
LIVE_STATES = ("queued", "running")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id        TEXT PRIMARY KEY,
    host          TEXT NOT NULL,
    procedure     TEXT NOT NULL,
    arguments     TEXT NOT NULL,
    info          TEXT NOT NULL,
    queue         TEXT,
    timeout_s     INTEGER NOT NULL,
    max_exec_s    INTEGER NOT NULL,
    submit        INTEGER NOT NULL,
    start         INTEGER,
    end_time      INTEGER,
    state         TEXT NOT NULL,
    outcome       TEXT,
    packet_count  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_submit ON jobs (submit);
CREATE INDEX IF NOT EXISTS jobs_live ON jobs (state) WHERE state IN ('queued', 'running');
CREATE TABLE IF NOT EXISTS packets (
    job_id  TEXT NOT NULL,
    idx     INTEGER NOT NULL,
    time    REAL NOT NULL,
    data    TEXT NOT NULL,
    PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;
"""


# Encoders made once: ``json.dumps`` with options builds a new encoder on every call, which
# costs more than encoding a stream packet.
_CANONICAL_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_COMPACT_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value``: sorted keys, no spaces, UTF-8 kept.

    Queue names are compared by this text (the original compares the parsed, key-sorted
    object).
    """
    return _CANONICAL_ENCODER.encode(value)


def _dumps(value: Any) -> str:
    return _COMPACT_ENCODER.encode(value)


@dataclass(frozen=True)
class Packet:
    """One stored stream packet: its 0-based index, epoch seconds (float) and data."""

    index: int
    time: float
    data: Any


@dataclass
class JobRecord:
    """One job as stored. Times are integer epoch seconds; ``outcome`` is the final result
    line (None while the job is live)."""

    job_id: str
    host: str
    procedure: str
    arguments: Any
    info: Any
    queue: Any
    timeout_s: int
    max_exec_time_s: int
    submit: int
    start: int | None
    end: int | None
    state: str
    outcome: dict[str, Any] | None
    packet_count: int

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> JobRecord:
        return cls(
            job_id=row[0],
            host=row[1],
            procedure=row[2],
            arguments=json.loads(row[3]),
            info=json.loads(row[4]),
            queue=None if row[5] is None else json.loads(row[5]),
            timeout_s=row[6],
            max_exec_time_s=row[7],
            submit=row[8],
            start=row[9],
            end=row[10],
            state=row[11],
            outcome=None if row[12] is None else json.loads(row[12]),
            packet_count=row[13],
        )

    def call_summary(self) -> dict[str, Any]:
        """The ``call`` object of get_status and list_jobs."""
        return {"procedure": self.procedure, "arguments": self.arguments, "host": self.host}

    def times(self) -> dict[str, int | None]:
        """The ``time`` object of get_status and list_jobs."""
        return {"submit": self.submit, "start": self.start, "end": self.end}


_COLUMNS = (
    "job_id, host, procedure, arguments, info, queue, timeout_s, max_exec_s, submit, start, "
    "end_time, state, outcome, packet_count"
)


class JobStore:
    """The dispatcher's SQLite database (WAL).

    Args:
        path: the database file (created with its folder), or ``":memory:"`` for tests.

    Raises:
        sqlite3.Error: the database cannot be opened or is not a runwire job database.
    """

    def __init__(self, path: str | Path) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a crash of this process (not a power cut).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._in_transaction = False

    # -- transactions -------------------------------------------------------------------

    def _begin(self) -> None:
        if not self._in_transaction:
            self._db.execute("BEGIN")
            self._in_transaction = True

    def flush(self) -> None:
        """Commit every pending write (stream packets written since the last commit)."""
        if self._in_transaction:
            self._db.execute("COMMIT")
            self._in_transaction = False

    @property
    def dirty(self) -> bool:
        """True when writes wait for :meth:`flush`."""
        return self._in_transaction

    def close(self) -> None:
        """Commit and close the database."""
        self.flush()
        self._db.close()

    # -- writes ---------------------------------------------------------------------------

    def insert_job(self, record: JobRecord) -> None:
        """Store a new job and commit (the call reply waits for this)."""
        self._begin()
        self._db.execute(
            f"INSERT INTO jobs ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                record.job_id,
                record.host,
                record.procedure,
                _dumps(record.arguments),
                _dumps(record.info),
                None if record.queue is None else canonical_json(record.queue),
                record.timeout_s,
                record.max_exec_time_s,
                record.submit,
                record.start,
                record.end,
                record.state,
                None if record.outcome is None else _dumps(record.outcome),
                record.packet_count,
            ),
        )
        self.flush()

    def mark_started(self, job_id: str, start: int) -> None:
        """Record that a job left its queue and started (committed with the next flush)."""
        self._begin()
        self._db.execute(
            "UPDATE jobs SET start = ?, state = 'running' WHERE job_id = ?", (start, job_id)
        )

    def append_packet(self, job_id: str, index: int, when: float, data: Any) -> None:
        """Store packet ``index`` of a job (committed with the next flush)."""
        self._begin()
        self._db.execute(
            "INSERT INTO packets (job_id, idx, time, data) VALUES (?,?,?,?)",
            (job_id, index, when, _dumps(data)),
        )
        self._db.execute("UPDATE jobs SET packet_count = ? WHERE job_id = ?", (index + 1, job_id))

    def finish(self, job_id: str, state: str, outcome: dict[str, Any], end: int) -> None:
        """Record a job's end: its final state, outcome and end time; commit."""
        self._begin()
        self._db.execute(
            "UPDATE jobs SET state = ?, outcome = ?, end_time = ? WHERE job_id = ?",
            (state, _dumps(outcome), end, job_id),
        )
        self.flush()

    def interrupt_live_jobs(self, now: int | None = None) -> int:
        """End every queued or running job as interrupted by a restart; commit.

        Their outcome becomes ``{"error": {"type": "missing_result", ...}}`` and their end
        time ``now`` (the original leaves ``end`` null forever). Returns how many.
        """
        end = int(time.time()) if now is None else now
        outcome = _dumps({"error": {"type": "missing_result", "message": RESTART_MESSAGE}})
        self._begin()
        cursor = self._db.execute(
            "UPDATE jobs SET state = 'interrupted', outcome = ?, end_time = ? "
            "WHERE state IN ('queued', 'running')",
            (outcome, end),
        )
        self.flush()
        return cursor.rowcount

    def prune(self, older_than: int) -> int:
        """Delete ended jobs submitted before epoch second ``older_than`` with their
        packets (live jobs are kept); commit. Returns how many jobs were deleted."""
        self._begin()
        rows = self._db.execute(
            "SELECT job_id FROM jobs WHERE submit < ? AND state NOT IN ('queued', 'running')",
            (older_than,),
        ).fetchall()
        for (job_id,) in rows:
            self._db.execute("DELETE FROM packets WHERE job_id = ?", (job_id,))
            self._db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))
        self.flush()
        return len(rows)

    # -- reads ----------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord | None:
        """The job's record, or None if there is no such job."""
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        return None if row is None else JobRecord.from_row(row)

    def packets(self, job_id: str, start: int, stop: int) -> Iterator[Packet]:
        """Stored packets of a job with ``start <= index < stop``, in order."""
        cursor = self._db.execute(
            "SELECT idx, time, data FROM packets WHERE job_id = ? AND idx >= ? AND idx < ? "
            "ORDER BY idx",
            (job_id, start, stop),
        )
        for index, when, data in cursor:
            yield Packet(index, when, json.loads(data))

    def list_jobs(
        self,
        *,
        state: str | None = None,
        host: str | None = None,
        queue: Any = None,
        limit: int = 100,
    ) -> tuple[list[JobRecord], bool]:
        """Jobs matching every given filter, newest submission first, at most ``limit``.

        Returns:
            (records, truncated): ``truncated`` is True when more jobs matched.
        """
        clauses, params = [], []
        if state is not None:
            clauses.append("state = ?")
            params.append(state)
        if host is not None:
            clauses.append("host = ?")
            params.append(host)
        if queue is not None:
            clauses.append("queue = ?")
            params.append(canonical_json(queue))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM jobs {where} ORDER BY submit DESC, rowid DESC LIMIT ?",
            (*params, limit + 1),
        ).fetchall()
        return [JobRecord.from_row(row) for row in rows[:limit]], len(rows) > limit

    def count_live(self) -> int:
        """How many jobs are queued or running."""
        (count,) = self._db.execute(
            "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')"
        ).fetchone()
        return int(count)
