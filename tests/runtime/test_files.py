"""Private files written atomically (runtime/files.py)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from runwire.runtime.files import write_atomically


def test_replaces_the_file_with_the_given_mode_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    target.write_text("old")
    target.chmod(0o644)
    assert write_atomically(target, "new é") == target
    assert target.read_text(encoding="utf-8") == "new é"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    write_atomically(target, b"\x00bytes", 0o640)
    assert target.read_bytes() == b"\x00bytes"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(path.name for path in tmp_path.iterdir()) == ["secret"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "folder"
    target.mkdir()  # os.replace of a file over a directory fails
    with pytest.raises(OSError):
        write_atomically(target, "data")
    assert target.is_dir()
    assert list(tmp_path.iterdir()) == [target]
