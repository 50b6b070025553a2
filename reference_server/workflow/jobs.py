"""Jobs as local subprocesses: job directories, job scripts, the job.status file, signals.

Each job of a task proxy gets a directory (Cylc's layout)::

    <run_dir>/log/job/<point>/<task>/<NN>/job          the job script (bash)
    <run_dir>/log/job/<point>/<task>/<NN>/job.out      its stdout
    <run_dir>/log/job/<point>/<task>/<NN>/job.err      its stderr
    <run_dir>/log/job/<point>/<task>/<NN>/job.status   KEY=VALUE lines (below)
    <run_dir>/log/job/<point>/<task>/NN -> <NN>        symlink to the latest job

A job directory is never reused: :func:`write_job_script` refuses one that exists, and the
scheduler numbers a task's next job after the highest job directory already there
(:func:`highest_submit_num`), so a job orphaned by a crashed scheduler, or a previous run of
the same workflow id, keeps its own files (Cylc keeps submit numbers across restarts).

``job.status`` follows Cylc's job status file: the scheduler writes
``CYLC_JOB_RUNNER_NAME=background``, ``CYLC_JOB_ID=<pid>`` and
``CYLC_JOB_RUNNER_SUBMIT_TIME=<iso>`` at submission; the job script itself appends
``CYLC_JOB_PID=<pid>`` and ``CYLC_JOB_INIT_TIME=<iso>`` when it starts, and one
``CYLC_MESSAGE=<iso>|<SEVERITY>|<text>`` line per message it reports with the
``runwire_message`` shell function defined in every job script (the engine-independent way
for a job to report custom outputs: any scheduler can read the file); the scheduler appends
``CYLC_JOB_EXIT=<SUCCEEDED|ERR|signal name>``, ``CYLC_JOB_EXIT_CODE=<n>`` (our addition) and
``CYLC_JOB_EXIT_TIME=<iso>`` when the process ends. :class:`StatusReader` reads new lines
incrementally, bounded in bytes per read and in total.

The job runs ``bash <job dir>/job`` in its own session (so a kill reaches its whole process
group), in the task's work directory ``<run_dir>/work/<point>/<task>``, with stdin from
/dev/null. The user script runs with ``set -eo pipefail``: any failing command fails the job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from .selection import format_submit_num

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "DEFAULT_MAX_STATUS_BYTES",
    "JobFiles",
    "JobProcess",
    "StatusMessage",
    "StatusReader",
    "highest_submit_num",
    "iso_time",
    "job_files",
    "start_job",
    "write_job_script",
]

DEFAULT_MAX_STATUS_BYTES: Final = 1 << 20
"""Bytes of one job.status file the scheduler reads at most; later lines are ignored."""

DEFAULT_MAX_LINE_BYTES: Final = 4096
"""Longest job.status line kept; longer lines are skipped."""

READ_CHUNK_BYTES: Final = 64 * 1024


def iso_time(epoch_s: float | None = None) -> str:
    """UTC time as ISO 8601 with a Z suffix, whole seconds (``2024-05-01T12:00:00Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


@dataclass(frozen=True)
class JobFiles:
    """Paths of one job: `job_dir` and the four files in it, plus the work directory."""

    job_dir: Path
    work_dir: Path

    @property
    def script(self) -> Path:
        return self.job_dir / "job"

    @property
    def out(self) -> Path:
        return self.job_dir / "job.out"

    @property
    def err(self) -> Path:
        return self.job_dir / "job.err"

    @property
    def status(self) -> Path:
        return self.job_dir / "job.status"


def job_files(run_dir: Path, point: int | str, task: str, submit_num: int) -> JobFiles:
    """The paths of job `submit_num` of task proxy `point/task` under `run_dir`."""
    return JobFiles(
        job_dir=run_dir / "log" / "job" / str(point) / task / format_submit_num(submit_num),
        work_dir=run_dir / "work" / str(point) / task,
    )


def highest_submit_num(run_dir: Path, point: int | str, task: str) -> int:
    """The highest submit number among the job directories of task `point/task` under
    `run_dir` (entries of ``log/job/<point>/<task>/`` named by digits: ``01``, ``02``...,
    ``100``), or 0 if there are none. Other entries (the ``NN`` link) are ignored; an
    unreadable folder counts as empty (writing the job script then fails instead)."""
    folder = run_dir / "log" / "job" / str(point) / task
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    return max((int(name) for name in names if name.isascii() and name.isdigit()), default=0)


def _double_quoted(value: str) -> str:
    """`value` inside bash double quotes: ``$`` expansions stay live; ``"``, ``\\`` and
    backquotes are escaped so the value cannot end the quoted word."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`")
    return f'"{escaped}"'


def _single_quoted(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


_MESSAGE_FUNCTION: Final = r"""
# Report messages to the scheduler through job.status (read by the scheduler while the job
# runs): runwire_message [-p SEVERITY] MESSAGE...  One message per argument; newlines and
# '|' in a message become spaces.
runwire_message() {
    local severity=INFO text
    if [[ "${1:-}" == "-p" ]]; then
        severity="${2:-INFO}"
        shift 2
    fi
    for text in "$@"; do
        text="${text//$'\n'/ }"
        text="${text//|/ }"
        printf 'CYLC_MESSAGE=%s|%s|%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$severity" "$text" \
            >>"$CYLC_TASK_LOG_DIR/job.status"
    done
}
""".strip("\n")


def write_job_script(
    files: JobFiles,
    *,
    header: str,
    cylc_environment: Sequence[tuple[str, str]],
    task_environment: Sequence[tuple[str, str]],
    script: str,
) -> None:
    """Create the job directory (a new one: it must not exist) and write the job script
    (mode 0700).

    Args:
        files: where.
        header: one comment line naming the job (``workflow//1/foo/01``).
        cylc_environment: CYLC_* variables, exported verbatim (single-quoted).
        task_environment: the task's and broadcast variables, in order, each expanded by bash
            as a double-quoted string.
        script: the user script text.

    Raises:
        FileExistsError: the job directory exists already (job directories are never reused:
            another job, perhaps one still running, owns its files).
        OSError: the directory or file cannot be written.
    """
    files.job_dir.parent.mkdir(parents=True, exist_ok=True)
    files.job_dir.mkdir()
    files.work_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "#!/usr/bin/env bash",
        f"# runwire workflow job script for {header} (written by the scheduler; do not edit)",
        "",
        "# Job identity",
    ]
    lines += [f"export {k}={_single_quoted(v)}" for k, v in cylc_environment]
    lines += [
        "",
        _MESSAGE_FUNCTION,
        "",
        'printf "CYLC_JOB_PID=%s\\nCYLC_JOB_INIT_TIME=%s\\n" "$$" '
        '"$(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$CYLC_TASK_LOG_DIR/job.status"',
        "",
        "# Task environment (task settings, then broadcasts)",
    ]
    lines += [f"export {k}={_double_quoted(v)}" for k, v in task_environment]
    lines += ["", "# Task script", "set -eo pipefail", script.rstrip("\n"), ""]
    files.script.write_text("\n".join(lines), encoding="utf-8")
    files.script.chmod(0o700)
    latest = files.job_dir.parent / "NN"
    with contextlib.suppress(OSError):
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(files.job_dir.name)


def append_status(files: JobFiles, entries: Iterable[tuple[str, str]]) -> None:
    """Append KEY=VALUE lines to the job's job.status (errors are ignored: the status file
    is a record, not the scheduler's source of truth)."""
    text = "".join(f"{k}={v}\n" for k, v in entries)
    with contextlib.suppress(OSError), files.status.open("a", encoding="utf-8") as handle:
        handle.write(text)


@dataclass(frozen=True)
class StatusMessage:
    """One ``CYLC_MESSAGE`` line: event time (as written), severity and text."""

    event_time: str
    severity: str
    text: str


class StatusReader:
    """Reads new lines of one job.status file, from where the last read stopped.

    Bounded: at most `max_bytes` of the file are ever read and lines longer than
    `max_line_bytes` are skipped.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = DEFAULT_MAX_STATUS_BYTES,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_line_bytes = max_line_bytes
        self._offset = 0
        self._partial = b""
        self.values: dict[str, str] = {}
        """Every KEY=VALUE seen so far except messages (the last value of each key)."""
        self.truncated = False
        """True once the file grew beyond `max_bytes` (later lines are not read)."""

    def read_new(self) -> list[StatusMessage]:
        """Messages in complete lines added since the previous call (other keys update
        :attr:`values`). A missing file reads as empty."""
        budget = self.max_bytes - self._offset
        if budget <= 0:
            self.truncated = True
            return []
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read(min(budget, READ_CHUNK_BYTES * 16))
        except FileNotFoundError:
            return []
        except OSError:
            return []
        if not data:
            return []
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > self.max_line_bytes:
            self._partial = b""  # too long to keep; it is skipped whole
        messages: list[StatusMessage] = []
        for raw in lines:
            if not raw or len(raw) > self.max_line_bytes:
                continue
            line = raw.decode("utf-8", errors="replace")
            key, sep, value = line.partition("=")
            if not sep:
                continue
            if key == "CYLC_MESSAGE":
                event_time, _, rest = value.partition("|")
                severity, sep2, text = rest.partition("|")
                if not sep2:
                    severity, text = "INFO", rest
                messages.append(StatusMessage(event_time, severity or "INFO", text))
            else:
                self.values[key] = value
        return messages


class JobProcess:
    """A running job's subprocess (a session leader, so signals reach its process group)."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid

    def poll(self) -> int | None:
        """The exit status once the process has ended (negative: killed by that signal)."""
        return self.popen.poll()

    def signal_group(self, signum: int) -> bool:
        """Send `signum` to the job's process group; False if it is already gone."""
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def kill_now(self) -> None:
        """SIGKILL the process group and reap the process (bounded wait)."""
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)


def start_job(
    files: JobFiles,
    *,
    shell: str = "bash",
    base_environment: Mapping[str, str] | None = None,
) -> JobProcess:
    """Start ``<shell> <job script>`` in the work directory, stdout/stderr to job.out/job.err.

    Raises:
        OSError: the process cannot be started (the job is submit-failed).
    """
    env = dict(os.environ if base_environment is None else base_environment)
    out: IO[bytes]
    with files.out.open("wb") as out, files.err.open("wb") as err:
        popen = subprocess.Popen(
            [shell, str(files.script)],
            cwd=files.work_dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    return JobProcess(popen)


def exit_label(returncode: int) -> str:
    """Cylc's CYLC_JOB_EXIT value: SUCCEEDED, ERR (non-zero exit) or the signal name (TERM,
    KILL, XCPU...) for a job killed by a signal."""
    if returncode == 0:
        return "SUCCEEDED"
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name.removeprefix("SIG")
        except ValueError:
            return f"SIG{-returncode}"
    return "ERR"


def shell_exit_code(returncode: int) -> int:
    """The exit code as a shell reports it: a signal N becomes 128+N."""
    return 128 - returncode if returncode < 0 else returncode
