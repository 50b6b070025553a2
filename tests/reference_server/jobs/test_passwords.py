"""Tests of the agent's password file (runwire.reference_server.jobs.passwords) and of
``runwire jobs agent-passwd``."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import Any

import argon2
import pytest

from runwire.main import main
from runwire.reference_server.jobs.passwords import PasswordFile, PasswordFileError


def cheap() -> argon2.PasswordHasher:
    return argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture
def passwords(tmp_path: Path) -> PasswordFile:
    file = PasswordFile(tmp_path / "state" / "passwd", hasher=cheap())
    file.set_password("alice", "correct horse")
    return file


def test_set_password_writes_a_private_file_of_argon2_hashes(passwords: PasswordFile) -> None:
    mode = passwords.path.stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(passwords.path.parent.stat().st_mode) == 0o700
    (line,) = passwords.path.read_text().splitlines()
    user, _, hashed = line.partition(":")
    assert user == "alice" and hashed.startswith("$argon2id$")
    assert "correct horse" not in passwords.path.read_text()
    assert not [p for p in passwords.path.parent.iterdir() if p.name != "passwd"]  # no leftovers


def test_authenticate(passwords: PasswordFile) -> None:
    assert passwords.authenticate("alice", "correct horse")
    assert not passwords.authenticate("alice", "wrong")
    assert not passwords.authenticate("alice", "")
    assert not passwords.authenticate("bob", "correct horse")
    assert not passwords.authenticate("", "")
    assert not passwords.authenticate("alice", "\ud800")  # a lone surrogate from JSON


def test_unknown_users_are_checked_against_a_dummy_hash(
    passwords: PasswordFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []
    real_hasher = passwords.hasher

    class Spy:
        def verify(self, hashed: str, secret: Any) -> bool:
            checked.append(hashed)
            return real_hasher.verify(hashed, secret)

        def hash(self, secret: Any) -> str:
            return real_hasher.hash(secret)

    monkeypatch.setattr(passwords, "hasher", Spy())
    assert not passwords.authenticate("mallory", "x")
    assert not passwords.authenticate("alice", "x")
    dummy, real = checked
    assert dummy != real
    # the dummy has the same cost parameters as the real hash: similar time
    assert argon2.extract_parameters(dummy) == argon2.extract_parameters(real)


def test_successful_credentials_are_remembered(passwords: PasswordFile) -> None:
    assert passwords.authenticate_cached("alice", "correct horse") is None
    assert passwords.authenticate("alice", "correct horse")
    assert passwords.authenticate_cached("alice", "correct horse") is True
    assert passwords.authenticate_cached("alice", "wrong") is None
    assert passwords.authenticate_cached("bob", "correct horse") is None
    passwords.set_password("alice", "new one")
    assert passwords.authenticate_cached("alice", "correct horse") is None
    assert not passwords.authenticate("alice", "correct horse")


def test_no_cache_when_disabled(tmp_path: Path) -> None:
    file = PasswordFile(tmp_path / "passwd", hasher=cheap(), cache_ttl_s=0)
    file.set_password("alice", "pw")
    assert file.authenticate("alice", "pw")
    assert file.authenticate_cached("alice", "pw") is None


def test_set_password_keeps_other_lines(passwords: PasswordFile) -> None:
    text = passwords.path.read_text()
    passwords.path.write_text("# operators\n" + text + "\n")
    passwords.set_password("bob", "b")
    old_alice = passwords.path.read_text().splitlines()[1]
    passwords.set_password("alice", "a2")
    lines = passwords.path.read_text().splitlines()
    assert lines[0] == "# operators"
    assert lines[1].startswith("alice:") and lines[1] != old_alice
    assert lines[-1].startswith("bob:")
    assert passwords.users() == ["alice", "bob"]
    assert passwords.authenticate("alice", "a2") and passwords.authenticate("bob", "b")


def test_changes_on_disk_are_picked_up(passwords: PasswordFile, tmp_path: Path) -> None:
    other = PasswordFile(passwords.path, hasher=cheap())
    assert passwords.authenticate("alice", "correct horse")
    other.set_password("carol", "c")
    assert passwords.authenticate("carol", "c")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("alice\n", "expected user:argon2-hash"),
        ("alice:$2b$12$notargon\n", "expected user:argon2-hash"),
        ("alice:$argon2id$garbage\n", "passwd:1"),
        ("a b:$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaA\n", "invalid user name"),
    ],
)
def test_malformed_files_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "passwd"
    path.write_text(content)
    with pytest.raises(PasswordFileError, match=message):
        PasswordFile(path).load()
    with pytest.raises(PasswordFileError):
        PasswordFile(path).set_password("dave", "d")


def test_duplicate_users_are_refused(passwords: PasswordFile) -> None:
    line = passwords.path.read_text()
    passwords.path.write_text(line + line)
    with pytest.raises(PasswordFileError, match="appears twice"):
        PasswordFile(passwords.path).load()


def test_a_running_agent_keeps_the_old_file_when_the_new_one_is_broken(
    passwords: PasswordFile,
) -> None:
    assert passwords.authenticate("alice", "correct horse")
    passwords.path.write_text("garbage without a colon\n")
    assert passwords.authenticate("alice", "correct horse")


@pytest.mark.parametrize("user", ["", "a b", "a:b", "#a", "x" * 256, "tab\there"])
def test_bad_user_names(tmp_path: Path, user: str) -> None:
    with pytest.raises(PasswordFileError, match="invalid user name"):
        PasswordFile(tmp_path / "passwd").set_password(user, "pw")


def test_empty_password_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PasswordFileError, match="empty"):
        PasswordFile(tmp_path / "passwd").set_password("alice", "")


def test_missing_file_has_no_users(tmp_path: Path) -> None:
    file = PasswordFile(tmp_path / "nothing")
    assert file.load() == [] and file.users() == []
    assert not file.authenticate("alice", "x")


# --- runwire jobs agent-passwd --------------------------------------------------------------


def test_agent_passwd_from_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "passwd"
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret pass\nignored\n"))
    assert main(["jobs", "agent-passwd", "--password-file", str(path), "--stdin", "ops"]) == 0
    assert PasswordFile(path).authenticate("ops", "s3cret pass")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_agent_passwd_prompts_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "passwd"
    answers = iter(["one", "two"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert main(["jobs", "agent-passwd", "--password-file", str(path), "ops"]) == 1
    assert not path.exists()
    answers = iter(["same", "same"])
    assert main(["jobs", "agent-passwd", "--password-file", str(path), "ops"]) == 0
    assert PasswordFile(path).authenticate("ops", "same")


def test_agent_passwd_default_file_is_the_development_agents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    assert main(["jobs", "agent-passwd", "--stdin", "ops"]) == 0
    assert (tmp_path / "runwire" / "jobs-agent" / "passwd").exists()


def test_agent_passwd_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "passwd")
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    with pytest.raises(SystemExit) as exited:  # a usage error, reported by argparse
        main(["jobs", "agent-passwd", "--password-file", path, "--stdin", "a:b"])
    assert exited.value.code == 2
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["jobs", "agent-passwd", "--password-file", path, "--stdin", "ops"]) == 2
