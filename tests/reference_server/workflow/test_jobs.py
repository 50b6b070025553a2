"""Job files (runwire.reference_server.workflow.jobs): scripts, quoting, the job.status reader."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from runwire.reference_server.workflow.jobs import (
    StatusMessage,
    StatusReader,
    exit_label,
    job_files,
    shell_exit_code,
    write_job_script,
)


def test_job_paths_follow_cylc_layout(tmp_path: Path) -> None:
    files = job_files(tmp_path, 3, "model", 2)
    assert files.job_dir == tmp_path / "log" / "job" / "3" / "model" / "02"
    assert files.script.name == "job" and files.status.name == "job.status"
    assert files.out.name == "job.out" and files.err.name == "job.err"
    assert files.work_dir == tmp_path / "work" / "3" / "model"


def test_script_exports_and_expands_environment_safely(tmp_path: Path) -> None:
    files = job_files(tmp_path, 1, "a", 1)
    write_job_script(
        files,
        header="wf//1/a/01",
        cylc_environment=[("CYLC_TASK_LOG_DIR", str(files.job_dir)), ("ODD", "it's $HOME")],
        task_environment=[
            ("BASE", "/data"),
            ("DERIVED", "$BASE/in"),
            ("QUOTES", 'say "hi" `no` \\n'),
        ],
        script='echo "$ODD|$DERIVED|$QUOTES"\nrunwire_message -p WARNING "one|two" three',
    )
    assert (files.job_dir.parent / "NN").resolve() == files.job_dir
    result = subprocess.run(
        ["bash", str(files.script)], cwd=tmp_path, capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'it\'s $HOME|/data/in|say "hi" `no` \\n\n'
    reader = StatusReader(files.status)
    messages = reader.read_new()
    assert [(m.severity, m.text) for m in messages] == [
        ("WARNING", "one two"),
        ("WARNING", "three"),
    ]
    assert "CYLC_JOB_PID" in reader.values and "CYLC_JOB_INIT_TIME" in reader.values


def test_a_failing_command_fails_the_job(tmp_path: Path) -> None:
    files = job_files(tmp_path, 1, "a", 1)
    write_job_script(
        files,
        header="x",
        cylc_environment=[("CYLC_TASK_LOG_DIR", str(files.job_dir))],
        task_environment=[],
        script="false | true\necho not reached",
    )
    result = subprocess.run(["bash", str(files.script)], capture_output=True, text=True, timeout=10)
    assert result.returncode == 1 and result.stdout == ""


def test_status_reader_is_incremental_and_bounded(tmp_path: Path) -> None:
    path = tmp_path / "job.status"
    reader = StatusReader(path, max_bytes=200, max_line_bytes=60)
    assert reader.read_new() == []  # no file yet
    path.write_text("CYLC_JOB_PID=12\nCYLC_MESSAGE=t1|INFO|first\nCYLC_MESSAGE=t2|CUSTOM|sec")
    assert reader.read_new() == [StatusMessage("t1", "INFO", "first")]
    with path.open("a") as handle:
        handle.write("ond|with bar\nnot a key value line\nCYLC_MESSAGE=" + "x" * 80 + "\n")
    assert reader.read_new() == [StatusMessage("t2", "CUSTOM", "second|with bar")]
    assert reader.values == {"CYLC_JOB_PID": "12"}
    with path.open("a") as handle:
        handle.write("CYLC_MESSAGE=t3|INFO|" + "y" * 40 + "\n" * 5 + "CYLC_MESSAGE=t4|INFO|late\n")
    reader.read_new()
    assert reader.read_new() == []
    assert reader.truncated  # the 200-byte budget is spent; "late" is never read


def test_exit_labels() -> None:
    assert exit_label(0) == "SUCCEEDED"
    assert exit_label(3) == "ERR"
    assert exit_label(-signal.SIGTERM) == "TERM"
    assert exit_label(-signal.SIGKILL) == "KILL"
    assert shell_exit_code(-signal.SIGTERM) == 143
    assert shell_exit_code(2) == 2
