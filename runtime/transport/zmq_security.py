"""CurveZMQ keys and the loopback rule, a thin layer over pyzmq's ``zmq.auth``.

Keys are ZeroMQ certificate files as ``zmq.auth.create_certificates`` writes them:
``<name>.key`` (public key only, safe to share) and ``<name>.key_secret`` (the keypair).
A server holds its keypair and a directory of authorised client public keys (every
``*.key`` file there); a client holds its keypair and the server's public key. As in the
original (Cylc 8, ``reference/workflow.md`` section 3.2) the server key comes from the
filesystem only, and an unauthorised client gets no reply at all: CURVE drops it, so the
client sees a timeout.

Unlike ``zmq.auth``'s ``configure_curve``, which logs and carries on when certificates fail to
load, everything here fails loudly with :class:`CurveKeyError`.

Plain TCP is for loopback only: :func:`require_loopback` is the check behind a server's
``insecure_loopback`` option (the CLI's ``--insecure-loopback``).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from runwire.runtime.errors import AuthenticationError

__all__ = [
    "CurveClientSecurity",
    "CurveKeyError",
    "CurveKeyPair",
    "CurveServerSecurity",
    "ServiceKeys",
    "authorize_client_key",
    "create_keypair",
    "create_service_keys",
    "is_loopback",
    "load_keypair",
    "load_public_key",
    "require_loopback",
]

FILE_MODE = 0o600
DIR_MODE = 0o700


class CurveKeyError(AuthenticationError):
    """A CurveZMQ key file is missing, unreadable or lacks the secret key it must hold."""


@dataclass(frozen=True)
class CurveKeyPair:
    """A CurveZMQ keypair, each key as 40 Z85 bytes."""

    public: bytes
    secret: bytes


def _require_curve() -> None:
    if not zmq.has("curve"):
        raise CurveKeyError("this libzmq has no CURVE support")


def create_keypair(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Write a new keypair as ``<name>.key`` and ``<name>.key_secret`` in ``directory``.

    The directory is created (mode 0700) if needed; both files get mode 0600.

    Returns:
        (public key file, secret key file).
    """
    _require_curve()
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    public, secret = zmq.auth.create_certificates(str(folder), name)
    for path in (public, secret):
        os.chmod(path, FILE_MODE)
    return Path(public), Path(secret)


def load_keypair(path: str | os.PathLike[str]) -> CurveKeyPair:
    """Read a keypair from a ``*.key_secret`` file.

    Raises:
        CurveKeyError: the file is missing, unreadable, or holds no secret key.
    """
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise CurveKeyError(f"cannot load the CURVE keypair from {path}: {exc}") from exc
    if secret is None:
        raise CurveKeyError(f"{path} holds no secret key (use the .key_secret file)")
    return CurveKeyPair(public=public, secret=secret)


def load_public_key(path: str | os.PathLike[str]) -> bytes:
    """Read a public key from a ``*.key`` (or ``*.key_secret``) file.

    Raises:
        CurveKeyError: the file is missing or unreadable.
    """
    try:
        public, _ = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise CurveKeyError(f"cannot load a CURVE public key from {path}: {exc}") from exc
    return public


def authorize_client_key(
    authorized_keys_dir: str | os.PathLike[str], public_key_file: str | os.PathLike[str], name: str
) -> Path:
    """Copy a client's public key file into the authorised-keys directory as ``<name>.key``.

    A running server sees it after :meth:`ZmqServerBase.reload_authorized_keys`.
    """
    load_public_key(public_key_file)  # fail loudly on a bad file
    folder = Path(authorized_keys_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    target = folder / f"{name}.key"
    shutil.copyfile(public_key_file, target)
    os.chmod(target, FILE_MODE)
    return target


@dataclass(frozen=True)
class CurveServerSecurity:
    """What a CURVE server needs: its keypair and the directory of authorised client keys.

    Attributes:
        keypair: the server's keypair.
        authorized_keys_dir: folder whose ``*.key`` files are the authorised client public
            keys (read again by ``reload_authorized_keys``).
    """

    keypair: CurveKeyPair
    authorized_keys_dir: Path

    @classmethod
    def from_files(
        cls, secret_key_file: str | os.PathLike[str], authorized_keys_dir: str | os.PathLike[str]
    ) -> CurveServerSecurity:
        """Load the server keypair and check the authorised-keys directory.

        Raises:
            CurveKeyError: the keypair cannot be loaded, or the directory is missing or holds
                no ``*.key`` file (a server nobody may talk to is a configuration error).
        """
        _require_curve()
        folder = Path(authorized_keys_dir)
        check_authorized_keys_dir(folder)
        return cls(keypair=load_keypair(secret_key_file), authorized_keys_dir=folder)


def check_authorized_keys_dir(folder: Path) -> None:
    """Raise :class:`CurveKeyError` unless ``folder`` holds at least one loadable ``*.key``."""
    if not folder.is_dir():
        raise CurveKeyError(f"authorised client keys directory {folder} does not exist")
    keys = sorted(folder.glob("*.key"))
    if not keys:
        raise CurveKeyError(f"authorised client keys directory {folder} holds no *.key file")
    for key in keys:
        load_public_key(key)


@dataclass(frozen=True)
class CurveClientSecurity:
    """What a CURVE client needs: its keypair and the server's public key."""

    keypair: CurveKeyPair
    server_public_key: bytes

    @classmethod
    def from_files(
        cls, secret_key_file: str | os.PathLike[str], server_public_key_file: str | os.PathLike[str]
    ) -> CurveClientSecurity:
        """Load the client keypair and the server public key.

        Raises:
            CurveKeyError: a file is missing or unusable (as the original's "Failed to find
                user's private key, so cannot connect." / "Failed to load the workflow's
                public key, so cannot connect.").
        """
        _require_curve()
        return cls(
            keypair=load_keypair(secret_key_file),
            server_public_key=load_public_key(server_public_key_file),
        )


@dataclass(frozen=True)
class ServiceKeys:
    """The key files of one server, laid out as the original's ``.service`` directory.

    Attributes:
        directory: the service directory.
        server_public: ``server.key``; server_secret: ``server.key_secret``.
        client_secret: ``client.key_secret`` (the local clients' keypair; its public half is
            authorised); client_public: ``client.key``.
        authorized_keys_dir: ``client_public_keys/`` (holds ``client_localhost.key``).
    """

    directory: Path
    server_public: Path
    server_secret: Path
    client_public: Path
    client_secret: Path
    authorized_keys_dir: Path

    def server_security(self) -> CurveServerSecurity:
        """The server's side, loaded from these files."""
        return CurveServerSecurity.from_files(self.server_secret, self.authorized_keys_dir)

    def client_security(self) -> CurveClientSecurity:
        """A local client's side, loaded from these files."""
        return CurveClientSecurity.from_files(self.client_secret, self.server_public)


def create_service_keys(directory: str | os.PathLike[str]) -> ServiceKeys:
    """Create a server keypair, a local client keypair, and authorise the client.

    Files are mode 0600 and folders 0700. Unlike the original, the client keypair is not a
    copy of the server's.
    """
    folder = Path(directory)
    server_public, server_secret = create_keypair(folder, "server")
    client_public, client_secret = create_keypair(folder, "client")
    authorized = folder / "client_public_keys"
    authorize_client_key(authorized, client_public, "client_localhost")
    return ServiceKeys(
        directory=folder,
        server_public=server_public,
        server_secret=server_secret,
        client_public=client_public,
        client_secret=client_secret,
        authorized_keys_dir=authorized,
    )


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ``::1``).

    Wildcards (``*``, ``0.0.0.0``, ``::``) and other names are not loopback.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_loopback(host: str) -> None:
    """The check behind ``--insecure-loopback``: plain TCP only on a loopback address.

    Raises:
        ValueError: ``host`` is not a loopback address (the message says what to do).
    """
    if not is_loopback(host):
        raise ValueError(
            f"refusing to serve without CurveZMQ on {host!r}: insecure mode binds only to a "
            "loopback address (127.0.0.1, ::1 or localhost); use CURVE keys for other addresses"
        )
