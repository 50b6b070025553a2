"""Run directories, contact files and discovery of running workflows (both sides).

Modelled on Cylc 8's ``workflow_files`` (reference/workflow.md sections 3.2 and 3.3). A
workflow with id ``ID`` runs in ``<run root>/ID/``; the run root is ``--run-root``, else
``$RUNWIRE_RUN_ROOT``, else ``~/runwire-run``. While it runs, its service directory
``<run dir>/.service/`` (mode 0700) holds:

- ``contact``: ``KEY=VALUE`` lines, sorted (``schemas/workflow/contact.json``, ``ContactFile``),
  mode 0600, written atomically (temporary file, fsync, rename, fsync of the directory) right
  after the sockets bind;
- the CurveZMQ key files of :func:`~runwire.runtime.transport.zmq_security.create_service_keys`
  (``server.key``, ``server.key_secret``, ``client.key``, ``client.key_secret``,
  ``client_public_keys/``), mode 0600.

A clean shutdown removes all of them (:func:`remove_service_files`). Clients find a workflow
with :func:`discover`, which tells three cases apart (the original reports the first two
alike, cylc-flow#4798):

- no run directory: :class:`WorkflowNotFound` ("no such workflow");
- a run directory without a contact file, or a **stale** contact file (its process is gone,
  or the pid now runs another command): :class:`WorkflowNotRunning` ("stopped");
- a live contact file: a :class:`Contact`.

The process check (:func:`process_matches`) reads ``/proc/<pid>/cmdline`` (or ``ps``) and
compares it with ``CYLC_WORKFLOW_COMMAND``; it is only made for a workflow on this host.

Generated clients for a workflow found by id (host, port and CURVE keys from its run
directory): :func:`connect` (the asyncio :class:`~runwire.generated.workflow.WorkflowClient`),
:func:`connect_sync` (the blocking :class:`~runwire.generated.workflow.WorkflowSyncClient`)
and :func:`subscribe` (the :class:`~runwire.generated.workflow.WorkflowSubscriber` of its
publish port).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from runwire import __version__
from runwire.generated.workflow import WorkflowClient, WorkflowSubscriber, WorkflowSyncClient
from runwire.runtime.errors import RunwireError
from runwire.runtime.files import fsync_directory, write_atomically
from runwire.runtime.transport.zmq_security import (
    CurveClientSecurity,
    CurveKeyError,
    is_loopback,
    load_keypair,
    load_public_key,
)
from runwire.runtime.validation import SchemaRegistry

__all__ = [
    "API_VERSION",
    "CONTACT_FILE",
    "CONTACT_SCHEMA",
    "RUN_ROOT_ENV",
    "SERVICE_DIR",
    "Contact",
    "ContactFileError",
    "WorkflowNotFound",
    "WorkflowNotRunning",
    "check_workflow_id",
    "client_security",
    "connect",
    "connect_sync",
    "contact_path",
    "current_command",
    "default_run_root",
    "discover",
    "is_local_host",
    "process_command",
    "process_matches",
    "read_contact_file",
    "remove_service_files",
    "service_dir",
    "subscribe",
    "workflow_run_dir",
    "write_contact_file",
]

RUN_ROOT_ENV: Final = "RUNWIRE_RUN_ROOT"
"""Environment variable naming the run root (default ``~/runwire-run``)."""

SERVICE_DIR: Final = ".service"
CONTACT_FILE: Final = "contact"
CONTACT_SCHEMA: Final = "https://runwire.dev/schemas/workflow/contact.json#/$defs/ContactFile"
API_VERSION: Final = "1"
"""``CYLC_API``: the workflow protocol manifest's ``version``."""

MAX_CONTACT_BYTES: Final = 64 << 10
MAX_SHOWN_COMMAND: Final = 200
"""Characters of another process's command line shown in a stale-contact message."""
MAX_WORKFLOW_ID_CHARS: Final = 255
_ID_PART: Final = r"[A-Za-z0-9_][A-Za-z0-9_.+-]*"
_ID_RE: Final = re.compile(rf"^{_ID_PART}(/{_ID_PART})*$")
_KEY_FILES: Final = ("server.key", "server.key_secret", "client.key", "client.key_secret")
_AUTHORIZED_DIR: Final = "client_public_keys"


class ContactFileError(RunwireError):
    """A contact file exists but cannot be read or breaks ``ContactFile``."""


class WorkflowNotFound(RunwireError, LookupError):
    """No such workflow: its run directory does not exist.

    Attributes:
        workflow_id: the id asked for; run_dir: where it was looked for; detail: the
            missing folder, in words.
    """

    def __init__(self, workflow_id: str, run_dir: Path) -> None:
        self.detail = f"no run directory {run_dir}"
        super().__init__(f"no such workflow: {workflow_id} ({self.detail})")
        self.workflow_id = workflow_id
        self.run_dir = run_dir


class WorkflowNotRunning(RunwireError):
    """The workflow exists but is not running: no contact file, or a stale one.

    Attributes:
        workflow_id, run_dir: as for :class:`WorkflowNotFound`.
        detail: how it was found out (``no contact file``, ``stale contact file ...``).
        stale: a contact file whose process is gone or whose pid now runs another command
            (``contact`` holds it; ``detail`` says which), rather than no contact file at all.
        contact: the stale contact, or None.
    """

    def __init__(
        self, workflow_id: str, run_dir: Path, *, contact: Contact | None = None, detail: str = ""
    ) -> None:
        text = f"{workflow_id} is not running (stopped)"
        super().__init__(f"{text}: {detail}" if detail else text)
        self.detail = detail
        self.workflow_id = workflow_id
        self.run_dir = run_dir
        self.contact = contact
        self.stale = contact is not None


# --- paths --------------------------------------------------------------------------------


def default_run_root() -> Path:
    """``$RUNWIRE_RUN_ROOT``, else ``~/runwire-run``."""
    configured = os.environ.get(RUN_ROOT_ENV)
    return Path(configured).expanduser() if configured else Path.home() / "runwire-run"


def check_workflow_id(workflow_id: str) -> str:
    """Return ``workflow_id`` if it is a valid id, else raise ValueError.

    An id is one or more ``/``-separated parts of letters, digits, ``_ . + -`` (not starting
    with ``.``, ``+`` or ``-``), at most 255 characters: it names a folder under the run root,
    so ``..`` and absolute paths are impossible.
    """
    if len(workflow_id) > MAX_WORKFLOW_ID_CHARS or not _ID_RE.match(workflow_id):
        raise ValueError(
            f"invalid workflow id {workflow_id!r}: use letters, digits, '_', '.', '+', '-' in "
            "parts separated by '/', each part starting with a letter, digit or '_'"
        )
    return workflow_id


def workflow_run_dir(workflow_id: str, run_root: str | os.PathLike[str] | None = None) -> Path:
    """``<run root>/<workflow_id>`` (absolute). Raises ValueError for an invalid id."""
    root = Path(run_root).expanduser() if run_root is not None else default_run_root()
    return (root / check_workflow_id(workflow_id)).absolute()


def service_dir(run_dir: str | os.PathLike[str]) -> Path:
    """``<run dir>/.service``."""
    return Path(run_dir) / SERVICE_DIR


def contact_path(run_dir: str | os.PathLike[str]) -> Path:
    """``<run dir>/.service/contact``."""
    return service_dir(run_dir) / CONTACT_FILE


# --- processes ----------------------------------------------------------------------------


def _clean(text: str) -> str:
    return " ".join(text.replace("\x00", " ").split())


def process_command(pid: int) -> str | None:
    """The command line of process ``pid`` (arguments joined by single spaces), or None if
    there is no such process (or it cannot be read)."""
    if pid <= 0:
        return None
    proc = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self").exists():
        try:
            return _clean(proc.read_bytes().decode(errors="replace")) or None
        except OSError:
            return None
    try:
        result = subprocess.run(
            ["ps", "-o", "args=", "-p", str(pid)],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return _clean(result.stdout) or None if result.returncode == 0 else None


def current_command() -> str:
    """This process's command line, as :func:`process_command` gives it."""
    return process_command(os.getpid()) or _clean(" ".join(sys.orig_argv))


def process_matches(pid: int, command: str | None) -> bool:
    """True if process ``pid`` exists and (when ``command`` is given) runs that command."""
    actual = process_command(pid)
    if actual is None:
        return False
    return command is None or _clean(command) == actual


def is_local_host(host: str) -> bool:
    """True for loopback addresses and this machine's own names."""
    if is_loopback(host) or host in ("0.0.0.0", "::", "*"):
        return True
    names = {socket.gethostname(), socket.getfqdn()}
    return host in names


# --- the contact file ---------------------------------------------------------------------


@dataclass(frozen=True)
class Contact:
    """What a contact file says (``ContactFile`` in ``schemas/workflow/contact.json``).

    Attributes:
        workflow_id: ``CYLC_WORKFLOW_ID``; host: ``CYLC_WORKFLOW_HOST`` (where clients
            connect); port: ``CYLC_WORKFLOW_PORT`` (requests); publish_port:
            ``CYLC_WORKFLOW_PUBLISH_PORT``; pid: ``CYLC_WORKFLOW_PID``; command:
            ``CYLC_WORKFLOW_COMMAND``; security: ``RUNWIRE_SECURITY`` (``curve``/``none``);
            run_dir: ``CYLC_WORKFLOW_RUN_DIR_ON_WORKFLOW_HOST``; owner, run_uuid, api,
            version, heartbeat_interval_s (seconds): the other fields.
    """

    workflow_id: str
    host: str
    port: int
    publish_port: int
    pid: int
    security: str
    command: str | None = None
    run_dir: str | None = None
    owner: str | None = None
    run_uuid: str | None = None
    api: str = API_VERSION
    version: str | None = __version__
    heartbeat_interval_s: float | None = None

    @classmethod
    def for_this_process(
        cls,
        workflow_id: str,
        *,
        host: str,
        port: int,
        publish_port: int,
        security: str,
        run_dir: str | os.PathLike[str],
        heartbeat_interval_s: float | None = None,
    ) -> Contact:
        """The contact of a scheduler running in this process (pid, command, owner, uuid)."""
        try:
            owner: str | None = getpass.getuser()
        except (KeyError, OSError):
            owner = None
        return cls(
            workflow_id=workflow_id,
            host=host,
            port=port,
            publish_port=publish_port,
            pid=os.getpid(),
            security=security,
            command=current_command(),
            run_dir=str(run_dir),
            owner=owner,
            run_uuid=str(uuid.uuid4()),
            heartbeat_interval_s=heartbeat_interval_s,
        )

    def to_fields(self) -> dict[str, str]:
        """The ``KEY=VALUE`` fields (values as text; absent ones left out)."""
        fields = {
            "CYLC_API": self.api,
            "CYLC_WORKFLOW_ID": self.workflow_id,
            "CYLC_WORKFLOW_HOST": self.host,
            "CYLC_WORKFLOW_PORT": str(self.port),
            "CYLC_WORKFLOW_PUBLISH_PORT": str(self.publish_port),
            "CYLC_WORKFLOW_PID": str(self.pid),
            "RUNWIRE_SECURITY": self.security,
        }
        optional = {
            "CYLC_WORKFLOW_COMMAND": self.command,
            "CYLC_WORKFLOW_RUN_DIR_ON_WORKFLOW_HOST": self.run_dir,
            "CYLC_WORKFLOW_OWNER": self.owner,
            "CYLC_WORKFLOW_UUID": self.run_uuid,
            "RUNWIRE_VERSION": self.version,
            "RUNWIRE_HEARTBEAT_INTERVAL_S": (
                None
                if self.heartbeat_interval_s is None
                else repr(float(self.heartbeat_interval_s))
            ),
        }
        fields.update({k: v for k, v in optional.items() if v is not None})
        return {k: _clean(v) for k, v in fields.items()}

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Contact:
        """Build from parsed fields (already checked against the schema)."""
        interval = fields.get("RUNWIRE_HEARTBEAT_INTERVAL_S")
        return cls(
            workflow_id=fields["CYLC_WORKFLOW_ID"],
            host=fields["CYLC_WORKFLOW_HOST"],
            port=int(fields["CYLC_WORKFLOW_PORT"]),
            publish_port=int(fields["CYLC_WORKFLOW_PUBLISH_PORT"]),
            pid=int(fields["CYLC_WORKFLOW_PID"]),
            security=fields["RUNWIRE_SECURITY"],
            command=fields.get("CYLC_WORKFLOW_COMMAND"),
            run_dir=fields.get("CYLC_WORKFLOW_RUN_DIR_ON_WORKFLOW_HOST"),
            owner=fields.get("CYLC_WORKFLOW_OWNER"),
            run_uuid=fields.get("CYLC_WORKFLOW_UUID"),
            api=fields["CYLC_API"],
            version=fields.get("RUNWIRE_VERSION"),
            heartbeat_interval_s=None if interval is None else float(interval),
        )


def write_contact_file(
    run_dir: str | os.PathLike[str], contact: Contact, *, registry: SchemaRegistry | None = None
) -> Path:
    """Write ``<run dir>/.service/contact`` atomically with mode 0600; returns its path.

    The fields are checked against ``ContactFile`` first (``LocalProtocolError``: nothing
    written). The file is written to a temporary file in the same folder, fsynced, renamed
    over the old one, and the folder is fsynced, as the original does.
    """
    fields = contact.to_fields()
    (registry or SchemaRegistry.from_package()).validator(CONTACT_SCHEMA).check(
        fields, outbound=True
    )
    folder = service_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    text = "".join(f"{key}={fields[key]}\n" for key in sorted(fields))
    return write_atomically(folder / CONTACT_FILE, text, 0o600)


def read_contact_file(
    run_dir: str | os.PathLike[str], *, registry: SchemaRegistry | None = None
) -> Contact:
    """Read and check ``<run dir>/.service/contact``.

    Raises:
        FileNotFoundError: there is no contact file.
        ContactFileError: it is unreadable, too large, has a line without ``=`` or breaks
            ``ContactFile`` (unknown keys are ignored, as the original's reader does).
    """
    path = contact_path(run_dir)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONTACT_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ContactFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_CONTACT_BYTES:
        raise ContactFileError(f"{path} is larger than {MAX_CONTACT_BYTES} bytes")
    fields: dict[str, str] = {}
    for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ContactFileError(f"{path} line {number}: expected KEY=VALUE")
        fields[key.strip()] = value.strip()
    registry = registry or SchemaRegistry.from_package()
    known = _known_contact_keys(registry)
    checked = {k: v for k, v in fields.items() if k in known}
    try:
        registry.validator(CONTACT_SCHEMA).check(checked)
    except RunwireError as exc:
        raise ContactFileError(f"{path}: {exc}") from exc
    return Contact.from_fields(checked)


def _known_contact_keys(registry: SchemaRegistry) -> frozenset[str]:
    """The ``ContactFile`` property names (a reader ignores other keys)."""
    document = registry.documents[CONTACT_SCHEMA.split("#", 1)[0]]
    properties: Mapping[str, Any] = document["$defs"]["ContactFile"]["properties"]
    return frozenset(properties)


def remove_service_files(run_dir: str | os.PathLike[str]) -> None:
    """Remove the contact file and the key files of a run directory (clean shutdown).

    The contact file goes first, so a client never finds a contact without keys.
    """
    folder = service_dir(run_dir)
    for name in (CONTACT_FILE, *_KEY_FILES):
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    shutil.rmtree(folder / _AUTHORIZED_DIR, ignore_errors=True)
    for leftover in folder.glob(".contact.*.tmp"):
        with contextlib.suppress(OSError):
            leftover.unlink()
    fsync_directory(folder)


# --- discovery ----------------------------------------------------------------------------


def discover(
    workflow_id: str,
    run_root: str | os.PathLike[str] | None = None,
    *,
    check_process: bool = True,
    registry: SchemaRegistry | None = None,
) -> Contact:
    """Find a running workflow from its id.

    Args:
        workflow_id: the workflow id.
        run_root: the run root (default :func:`default_run_root`).
        check_process: for a workflow on this host, check that the contact file's process
            still runs its command (else it is stale).

    Returns:
        the live :class:`Contact`.

    Raises:
        ValueError: an invalid workflow id.
        WorkflowNotFound: no run directory ("no such workflow").
        WorkflowNotRunning: no contact file, or a stale one ("stopped").
        ContactFileError: a contact file that cannot be used.
    """
    run_dir = workflow_run_dir(workflow_id, run_root)
    if not run_dir.is_dir():
        raise WorkflowNotFound(workflow_id, run_dir)
    try:
        contact = read_contact_file(run_dir, registry=registry)
    except FileNotFoundError:
        raise WorkflowNotRunning(workflow_id, run_dir, detail="no contact file") from None
    if check_process and is_local_host(contact.host):
        why = _not_the_scheduler(contact)
        if why is not None:
            raise WorkflowNotRunning(
                workflow_id,
                run_dir,
                contact=contact,
                detail=f"stale contact file {contact_path(run_dir)} ({why})",
            )
    return contact


def _not_the_scheduler(contact: Contact) -> str | None:
    """Why the contact file's process is not its scheduler, in words (None if it is): the
    process is gone, or its pid now runs another command."""
    actual = process_command(contact.pid)
    if actual is None:
        return f"process {contact.pid} is gone"
    if contact.command is not None and _clean(contact.command) != actual:
        shown = actual if len(actual) <= MAX_SHOWN_COMMAND else actual[:MAX_SHOWN_COMMAND] + "..."
        return f"process {contact.pid} is not this workflow's scheduler (it runs: {shown})"
    return None


def client_security(
    run_dir: str | os.PathLike[str],
    contact: Contact | None = None,
    *,
    server_public_key_file: str | os.PathLike[str] | None = None,
) -> CurveClientSecurity | None:
    """The CURVE keys a local client uses, from the run directory's service folder.

    Returns None for a workflow served without CURVE (``RUNWIRE_SECURITY=none``, or no
    contact and no key files).

    Raises:
        CurveKeyError: a key file is missing or unusable, with the original's messages
            ("Failed to find user's private key, so cannot connect." / "Failed to load the
            workflow's public key, so cannot connect.").
    """
    folder = service_dir(run_dir)
    client_secret = folder / "client.key_secret"
    server_public = Path(server_public_key_file) if server_public_key_file else None
    server_public = server_public or folder / "server.key"
    if contact is not None and contact.security == "none":
        return None
    if contact is None and not client_secret.exists():
        return None
    try:
        keypair = load_keypair(client_secret)
    except CurveKeyError as exc:
        raise CurveKeyError(
            f"Failed to find user's private key, so cannot connect. ({exc})"
        ) from exc
    try:
        server_key = load_public_key(server_public)
    except CurveKeyError as exc:
        raise CurveKeyError(
            f"Failed to load the workflow's public key, so cannot connect. ({exc})"
        ) from exc
    return CurveClientSecurity(keypair=keypair, server_public_key=server_key)


def _locate(
    workflow_id: str, run_root: str | os.PathLike[str] | None
) -> tuple[Contact, CurveClientSecurity | None]:
    """The live contact of a workflow and the client keys to reach it (see :func:`connect`)."""
    contact = discover(workflow_id, run_root)
    run_dir = workflow_run_dir(workflow_id, run_root)
    return contact, client_security(run_dir, contact)


def connect(
    workflow_id: str,
    run_root: str | os.PathLike[str] | None = None,
    **options: Any,
) -> tuple[WorkflowClient, Contact]:
    """A generated :class:`~runwire.generated.workflow.WorkflowClient` (asyncio) for a
    running workflow, found by id (host, port and keys from its run directory).

    Args:
        workflow_id, run_root: as for :func:`discover`.
        **options: more :class:`WorkflowClient` options (``timeout_s``, ``header``...).

    Returns:
        (client, contact). Close the client when done.

    Raises:
        WorkflowNotFound, WorkflowNotRunning, ContactFileError, ValueError: see
            :func:`discover`.
        CurveKeyError: the key files cannot be loaded.
    """
    contact, security = _locate(workflow_id, run_root)
    return WorkflowClient(contact.host, contact.port, security=security, **options), contact


def connect_sync(
    workflow_id: str,
    run_root: str | os.PathLike[str] | None = None,
    **options: Any,
) -> tuple[WorkflowSyncClient, Contact]:
    """The blocking counterpart of :func:`connect`: a generated
    :class:`~runwire.generated.workflow.WorkflowSyncClient` for a running workflow, found by
    id, with the same arguments and errors.

    Each call of the client blocks until the reply comes or ``timeout_s`` passes (no event
    loop needed; called from a running event loop it blocks that loop, so never call it on
    the loop that serves the workflow). A ZeroMQ socket belongs to one thread: use the
    client from one thread, and close it (or use ``with``) when done::

        client, contact = connect_sync("pipeline", timeout_s=5)
        with client:
            client.ping_workflow()                       # PingData(True)
            client.hold({"tasks": ["2/*"]})              # ControlResult(accepted=True, ...)

    Args:
        workflow_id, run_root: as for :func:`discover`.
        **options: more :class:`WorkflowSyncClient` options (``timeout_s``, ``header``,
            ``context``...).

    Returns:
        (client, contact).

    Raises:
        WorkflowNotFound, WorkflowNotRunning, ContactFileError, ValueError: see
            :func:`discover`.
        CurveKeyError: the key files cannot be loaded.
    """
    contact, security = _locate(workflow_id, run_root)
    return WorkflowSyncClient(contact.host, contact.port, security=security, **options), contact


def subscribe(
    workflow_id: str,
    run_root: str | os.PathLike[str] | None = None,
    **options: Any,
) -> tuple[WorkflowSubscriber, Contact]:
    """A generated :class:`~runwire.generated.workflow.WorkflowSubscriber` connected to a
    running workflow's publish port, found by id (the heartbeat interval from the contact
    file unless given). Raises as :func:`connect`."""
    contact, security = _locate(workflow_id, run_root)
    options.setdefault("heartbeat_interval_s", contact.heartbeat_interval_s)
    subscriber = WorkflowSubscriber(
        contact.host, contact.publish_port, security=security, **options
    )
    return subscriber, contact
