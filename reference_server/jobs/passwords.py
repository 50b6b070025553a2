"""The jobs agent's password file: one ``user:argon2-hash`` line per user.

harpd checked ``user:crypt-hash`` lines (reference/jobs.md, section 2.5); we store salted
Argon2id hashes made by argon2-cffi (its RFC 9106 defaults: 64 MiB, 3 passes, 4 lanes, about
0.1 to 0.2 s per check), compared by the library in constant time. Blank lines and lines
starting with ``#`` are ignored. ``runwire jobs agent-passwd`` adds or changes a user.

Checking a password is deliberately slow, so :class:`PasswordFile` remembers credentials
that passed (an HMAC of them under a random per-process key, never the password) for a while:
:meth:`PasswordFile.authenticate_cached` answers repeated calls with the same credentials
without hashing. Wrong passwords and unknown users always take the slow path, and an unknown
user is checked against a dummy hash with the file's own parameters, so both take about the
same time and get the same answer.

The file is read again whenever it changes on disk (size, modification time, inode), so a
running agent picks up ``agent-passwd`` changes at its next call.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from runwire.runtime.files import write_atomically

__all__ = ["PasswordFile", "PasswordFileError", "check_user_name"]

logger = logging.getLogger(__name__)

DEFAULT_CACHE_TTL_S: Final = 600.0
"""How long, in seconds, credentials that passed are remembered."""

DEFAULT_CACHE_SIZE: Final = 1024
"""Most users remembered at once."""

MAX_USER_LENGTH: Final = 255
"""Longest user name, in characters."""

_USER_NAME = re.compile(r"[^\s:#][^\s:]*")


class PasswordFileError(ValueError):
    """The password file cannot be used (unreadable, malformed line, bad user name)."""


def check_user_name(user: str) -> str:
    """Return ``user`` if it can be stored: 1 to 255 characters, no whitespace or ``:``,
    not starting with ``#``.

    Raises:
        PasswordFileError: it cannot.
    """
    if not isinstance(user, str) or len(user) > MAX_USER_LENGTH or not _USER_NAME.fullmatch(user):
        raise PasswordFileError(
            f"invalid user name {user!r}: 1 to {MAX_USER_LENGTH} characters, "
            "no whitespace or ':', not starting with '#'"
        )
    return user


def _secret(password: str) -> bytes:
    # JSON strings may hold lone surrogates; hash exactly what was sent.
    return password.encode("utf-8", "surrogatepass")


FileVersion = tuple[int, int, int, int]


@dataclass
class _Remembered:
    mac: bytes
    version: FileVersion
    expires: float


class PasswordFile:
    """A password file, checked and updated.

    Thread-safe: the agent checks passwords in worker threads.

    Args:
        path: the file (need not exist yet for :meth:`set_password`).
        hasher: hasher for new hashes (default: argon2-cffi's defaults). Checking always uses
            the parameters stored in each hash.
        cache_ttl_s: how long credentials that passed are remembered, in seconds (0: never).
        cache_size: most users remembered at once.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        hasher: argon2.PasswordHasher | None = None,
        cache_ttl_s: float = DEFAULT_CACHE_TTL_S,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self.path = Path(path)
        self.hasher = hasher or argon2.PasswordHasher()
        self.cache_ttl_s = cache_ttl_s
        self.cache_size = cache_size
        self._lock = threading.Lock()
        self._entries: dict[str, str] = {}
        self._version: FileVersion | None = None
        self._dummies: dict[tuple[object, ...], str] = {}
        self._own_parameters: argon2.Parameters | None = None
        self._key = secrets.token_bytes(32)
        self._remembered: collections.OrderedDict[str, _Remembered] = collections.OrderedDict()

    # --- reading ------------------------------------------------------------------------

    def _stat(self) -> FileVersion | None:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino, info.st_dev)

    @staticmethod
    def _parse(text: str, where: Path) -> dict[str, str]:
        entries: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, hashed = line.partition(":")
            if not sep or not hashed.startswith("$argon2"):
                raise PasswordFileError(f"{where}:{number}: expected user:argon2-hash")
            try:
                check_user_name(user)
                argon2.extract_parameters(hashed)
            except (PasswordFileError, InvalidHashError) as exc:
                raise PasswordFileError(f"{where}:{number}: {exc}") from None
            if user in entries:
                raise PasswordFileError(f"{where}:{number}: user {user!r} appears twice")
            entries[user] = hashed
        return entries

    def load(self) -> list[str]:
        """Read the file now (a missing file has no users) and return the user names.

        Raises:
            PasswordFileError: unreadable or malformed.
        """
        with self._lock:
            self._reload(self._stat(), strict=True)
            return sorted(self._entries)

    def _reload(self, version: FileVersion | None, *, strict: bool) -> None:
        """Re-read the file (lock held). Non-strict: keep the old contents on error."""
        try:
            if version is None:
                entries: dict[str, str] = {}
            else:
                mode = self.path.stat().st_mode
                if mode & (stat.S_IRWXG | stat.S_IRWXO):
                    logger.warning(
                        "password file %s is readable by others (mode %o); chmod 600 it",
                        self.path,
                        stat.S_IMODE(mode),
                    )
                entries = self._parse(self.path.read_text(encoding="utf-8"), self.path)
        except (OSError, UnicodeDecodeError, PasswordFileError) as exc:
            if strict:
                if isinstance(exc, PasswordFileError):
                    raise
                raise PasswordFileError(f"cannot read password file {self.path}: {exc}") from exc
            logger.error("password file %s not reloaded, keeping the old one: %s", self.path, exc)
            self._version = version
            return
        self._entries = entries
        self._version = version

    def _current(self) -> tuple[dict[str, str], FileVersion | None]:
        version = self._stat()
        with self._lock:
            if version != self._version:
                self._reload(version, strict=False)
            return self._entries, self._version

    def users(self) -> list[str]:
        """The user names in the file, sorted."""
        return sorted(self._current()[0])

    # --- checking -----------------------------------------------------------------------

    def _dummy_hash(self, entries: dict[str, str]) -> str:
        """A hash nobody knows the password of, with the parameters the users' hashes have."""
        reference = next(iter(entries.values()), None)
        if reference is not None:
            parameters = argon2.extract_parameters(reference)
        else:
            if self._own_parameters is None:
                self._own_parameters = argon2.extract_parameters(self.hasher.hash(b"-"))
            parameters = self._own_parameters
        key = (
            parameters.type,
            parameters.version,
            parameters.salt_len,
            parameters.hash_len,
            parameters.time_cost,
            parameters.memory_cost,
            parameters.parallelism,
        )
        with self._lock:
            dummy = self._dummies.get(key)
        if dummy is None:
            dummy = argon2.PasswordHasher.from_parameters(parameters).hash(secrets.token_bytes(32))
            with self._lock:
                self._dummies[key] = dummy
        return dummy

    def _mac(self, user: str, password: str) -> bytes:
        message = _secret(user) + b"\0" + _secret(password)
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def authenticate(self, user: str, password: str) -> bool:
        """True when ``user`` is in the file and ``password`` matches its hash.

        Slow by design (one Argon2 check, also for unknown users); call it from a worker
        thread in async code. Never raises for bad credentials.
        """
        entries, version = self._current()
        stored = entries.get(user)
        try:
            self.hasher.verify(
                stored if stored is not None else self._dummy_hash(entries), _secret(password)
            )
            matched = stored is not None
        except (VerificationError, InvalidHashError):
            matched = False
        if matched and version is not None and self.cache_ttl_s > 0:
            with self._lock:
                self._remembered[user] = _Remembered(
                    self._mac(user, password), version, time.monotonic() + self.cache_ttl_s
                )
                self._remembered.move_to_end(user)
                while len(self._remembered) > self.cache_size:
                    self._remembered.popitem(last=False)
        return matched

    def authenticate_cached(self, user: str, password: str) -> bool | None:
        """Fast path: True when these exact credentials passed :meth:`authenticate` within
        ``cache_ttl_s`` and the file has not changed since; None otherwise (then call
        :meth:`authenticate`). Compares in constant time; never returns False."""
        version = self._stat()
        with self._lock:
            remembered = self._remembered.get(user)
        if (
            remembered is None
            or remembered.version != version
            or remembered.expires < time.monotonic()
        ):
            return None
        return True if hmac.compare_digest(remembered.mac, self._mac(user, password)) else None

    # --- writing ------------------------------------------------------------------------

    def set_password(self, user: str, password: str) -> None:
        """Add ``user`` or change its password; the file is rewritten atomically, mode 0600.

        Other lines (users, comments) are kept in place. The folder is created (mode 0700)
        if missing.

        Raises:
            PasswordFileError: bad user name, empty password, or the file is malformed.
            OSError: the file cannot be written.
        """
        check_user_name(user)
        if not password:
            raise PasswordFileError("the password must not be empty")
        hashed = self.hasher.hash(_secret(password))
        with self._lock:
            text = self.path.read_text(encoding="utf-8") if self.path.exists() else ""
            self._parse(text, self.path)  # refuse to rewrite a file we cannot read
            lines = text.splitlines()
            for index, line in enumerate(lines):
                if line.strip().partition(":")[0] == user and not line.lstrip().startswith("#"):
                    lines[index] = f"{user}:{hashed}"
                    break
            else:
                lines.append(f"{user}:{hashed}")
            self._write("".join(f"{line}\n" for line in lines))
            self._remembered.pop(user, None)
            self._version = None  # force a reload at the next check

    def _write(self, text: str) -> None:
        folder = self.path.parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(self.path, text, 0o600)
