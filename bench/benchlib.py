"""What the benchmarks share: progress lines, percentiles, table rows and the printed table.

The benchmark scripts run as ``python bench/<name>.py``, so this folder is on ``sys.path``
and they import this module by its plain name.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["Row", "ServerProcess", "percentile", "print_table", "progress", "verdict"]

#: How long a server process may take to say where it listens, seconds.
START_TIMEOUT_S = 60.0


def progress(message: str) -> None:
    """A progress line on stderr (the table goes to stdout)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` percentile of ``values`` (nearest rank); NaN when empty."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def verdict(passed: bool) -> str:
    """PASS or MISS against a target."""
    return "PASS" if passed else "MISS"


@dataclass
class Row:
    """One table row."""

    id: str
    metric: str
    ours: str
    raw: str
    ratio: str
    target: str
    verdict: str  # PASS, MISS or info
    data: dict[str, Any] = field(default_factory=dict)


def print_table(
    title: str, rows: Sequence[Row], details: Sequence[str], sizes: Any, elapsed_s: float
) -> None:
    """Print the aligned table of ``rows``, then the details, the sizes (a dataclass) and
    the total time."""
    print()
    print(title)
    header = ("id", "metric", "ours", "raw", "ratio", "target", "verdict")
    cells = [(r.id, r.metric, r.ours, r.raw, r.ratio, r.target, r.verdict) for r in rows]
    widths = [max(len(str(row[i])) for row in [header, *cells]) for i in range(len(header))]
    for row in [header, *cells]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    print()
    print("details:")
    for line in details:
        print(f"  {line}")
    listed = ", ".join(f"{f.name}={getattr(sizes, f.name)}" for f in fields(sizes))
    print(f"  sizes: {listed}")
    print(f"  total time {elapsed_s:.0f} s")


class ServerProcess:
    """A server in its own process, awaited (at most ``START_TIMEOUT_S``) until its stdout
    matches ``pattern`` (kept as ``match``); its stderr goes to ``log_dir/NAME.log``.

    Raises:
        RuntimeError: the process exited or stayed silent (the log tail is in the message).
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        pattern: re.Pattern[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL, env=env
        )
        self.match = self._await(pattern)

    @property
    def pid(self) -> int:
        return self.process.pid

    def _await(self, pattern: re.Pattern[str]) -> re.Match[str]:
        assert self.process.stdout is not None
        descriptor = self.process.stdout.fileno()
        deadline = time.monotonic() + START_TIMEOUT_S
        seen = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([descriptor], [], [], 0.5)
            if ready:
                chunk = os.read(descriptor, 65536)
                if not chunk:
                    break
                seen += chunk
                found = pattern.search(seen.decode(errors="replace"))
                if found:
                    return found
            elif self.process.poll() is not None:
                break
        self.stop()
        raise RuntimeError(
            f"{self.name} did not start; stdout: {seen.decode(errors='replace')!r}; "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the server's log ("" if unreadable)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _status_kib(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise RuntimeError(f"{key} not in /proc/{self.pid}/status")

    def rss_bytes(self) -> int:
        """Resident memory now (VmRSS)."""
        return self._status_kib("VmRSS") * 1024

    def peak_rss_bytes(self) -> int:
        """Highest resident memory so far (VmHWM)."""
        return self._status_kib("VmHWM") * 1024

    def cpu_s(self) -> float:
        """User + system CPU time used so far, seconds."""
        stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM, wait (then SIGKILL). Idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_s)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()
