"""Private files written atomically: keys, password files, contact files, credentials.

A reader never sees a half-written file: the data goes to a temporary file in the same
folder, created with the final mode (so a secret is never readable by others, not even
briefly), is flushed and fsynced, then renamed over the target; the folder is fsynced so
the rename survives a crash.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["fsync_directory", "write_atomically"]


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make the entries of ``directory`` durable (best effort: some filesystems refuse)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def write_atomically(path: str | os.PathLike[str], data: bytes | str, mode: int = 0o600) -> Path:
    """Replace ``path`` with ``data`` (str is written as UTF-8) in one step; returns the path.

    Args:
        mode: permission bits of the new file (default 0600: owner only).

    Raises:
        OSError: the folder does not exist or the file cannot be written (the temporary
            file is removed; the old file, if any, is unchanged).
    """
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    fsync_directory(target.parent)
    return target
