"""Example procedures for the runwire jobs agent.

Serve them with::

    runwire serve jobs-agent --procedures examples/jobs/procedures.py
    # or: runwire serve jobs-agent --config examples/jobs/agent.toml

They are plain functions, so each call runs in a child process of its own, which the agent
kills (with everything it started) when the caller disconnects or the time limit passes.
The conformance procedures are served too by default and already use the names ``sleep``
and ``fail``; the blocking versions here are ``sleep_blocking`` and ``raise_error``.

``run_command(command, cwd=None)`` (streaming, 1 h limit)
    Runs ``command`` (a list of strings; no shell) with stdout and stderr merged, streams
    each output line as a string, ends with ``{"exit_code": n}``.
``checksum(paths, algorithm="sha256")`` (10 min limit)
    ``{path: hex digest}`` for a path or a list of paths (hashlib algorithm names).
``disk_usage(path=".")`` (10 min limit)
    ``{"path", "bytes", "files", "filesystem": {"total_bytes", "used_bytes", "free_bytes"}}``:
    the apparent size of the files under ``path`` (symbolic links not followed) and the
    usage of its filesystem.
``sleep_blocking(seconds)``
    Sleeps in the child process, returns ``seconds``.
``raise_error(message, kind="RuntimeError")``
    Raises the built-in exception named ``kind`` (an Exception subclass) with ``message``.
``system_info()``
    ``{"hostname", "platform", "python", "cpu_count", "load_average"}``.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from runwire.reference_server.jobs.procedures import Result, procedure, streaming_procedure

HASH_CHUNK_BYTES = 1 << 20


@streaming_procedure(timeout_s=3600)
def run_command(command: list[str], cwd: str | None = None) -> Iterator[Any]:
    """Run ``command`` and stream its output lines; end result ``{"exit_code": n}``."""
    if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
        raise TypeError("command must be a non-empty list of strings (it runs without a shell)")
    with subprocess.Popen(
        command,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            yield line.rstrip("\n")
        code = process.wait()
    yield Result({"exit_code": code})


@procedure(timeout_s=600)
def checksum(paths: str | list[str], algorithm: str = "sha256") -> dict[str, str]:
    """``{path: hex digest}`` of each file."""
    if isinstance(paths, str):
        paths = [paths]
    digests = {}
    for path in paths:
        digest = hashlib.new(algorithm)
        with open(path, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
        digests[path] = digest.hexdigest()
    return digests


@procedure(timeout_s=600)
def disk_usage(path: str = ".") -> dict[str, Any]:
    """Apparent size and count of the files under ``path``, and its filesystem's usage."""
    total = files = 0
    if os.path.isdir(path) and not os.path.islink(path):
        for folder, _, names in os.walk(path):
            for name in names:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_size
                    files += 1
                except OSError:
                    continue  # vanished meanwhile
    else:
        total, files = os.lstat(path).st_size, 1
    usage = shutil.disk_usage(path)
    return {
        "path": path,
        "bytes": total,
        "files": files,
        "filesystem": {
            "total_bytes": usage.total,
            "used_bytes": usage.used,
            "free_bytes": usage.free,
        },
    }


@procedure
def sleep_blocking(seconds: float) -> float:
    """Sleep ``seconds`` in the child process; return them."""
    time.sleep(seconds)
    return seconds


@procedure
def raise_error(message: str, kind: str = "RuntimeError") -> None:
    """Raise the built-in exception ``kind`` with ``message``."""
    cls = getattr(builtins, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        raise ValueError(f"{kind!r} is not a built-in exception")
    raise cls(message)


@procedure
def system_info() -> dict[str, Any]:
    """A few facts about the agent's host."""
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
