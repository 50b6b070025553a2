"""``cylc``-compatible client API: Cylc 8's documented ``WorkflowRuntimeClient`` on runwire.

What it is
----------
A drop-in for ``cylc.flow.network.client.WorkflowRuntimeClient`` as the "Workflow Runtime
Interface" page documents it (``shared/seeds/000``; ``reference/workflow.md`` sections 3.4,
3.5 and 3.7), talking to runwire's reference scheduler (``runwire serve workflow``) or any
server of the workflow family::

    from runwire.compat.cylc import WorkflowRuntimeClient

    client = WorkflowRuntimeClient("pipeline")
    client("ping_workflow")                      # True
    client("hold", {"tasks": ["2/*"]})           # {"accepted": True, "command_id": ...}
    client.serial_request("entire_workflow", timeout=10)

- ``WorkflowRuntimeClient(workflow, host=None, port=None, timeout=None, context=None,
  srv_public_key_loc=None)``: host and port come from the workflow's contact file unless
  both are given; the CurveZMQ keys always come from its service directory
  (``srv_public_key_loc``: another file holding the server's public key).
- ``client(command, args=None, timeout=None, req_meta=None)`` is
  :meth:`~WorkflowRuntimeClient.serial_request`; :meth:`~WorkflowRuntimeClient.async_request`
  is the coroutine form. Both return "the data exactly as returned from the endpoint".
- Attributes ``host``, ``port``, ``timeout`` (seconds), ``timeout_handler`` (called before
  :class:`ClientTimeout` is raised; the default checks the contact file and raises
  :class:`WorkflowStopped` for a workflow that has gone) and ``header`` (the ``meta`` sent with
  every request: ``prog``, ``host``, ``comms_method``; ``req_meta`` is merged into it).
- Exceptions as in ``cylc.flow.exceptions``: :class:`CylcError` ⊃ :class:`ClientError` ⊃
  (:class:`RequestError`, :class:`WorkflowStopped`), and :class:`ClientTimeout` (a
  ``CylcError``, **not** a ``ClientError``, as in the original).

How it maps to the wire
-----------------------
Requests go through the generated clients (:class:`~runwire.generated.workflow.WorkflowClient`
for ``async_request``, :class:`~runwire.generated.workflow.WorkflowSyncClient` for
``serial_request``): ``{"command", "args", "meta", "id"}`` on a REQ socket, CURVE keys from
``.service/``, replies validated. An error envelope raises :class:`RequestError` with the server's
message (and our ``code``); no reply within the timeout raises :class:`ClientTimeout`.

Differences from the original client
------------------------------------
- **Never bricked after a timeout** (the original's defect 3): the generated client uses the
  Lazy Pirate pattern, so after a :class:`ClientTimeout` the next call works.
- **"No such workflow" is told apart from "stopped"** (cylc-flow#4798):
  :class:`WorkflowNotFound` (no run directory) is a subclass of :class:`WorkflowStopped`, so
  code catching ``WorkflowStopped`` still works; a run directory without a contact file, or
  with a stale one (its process gone or running another command), gives a plain
  :class:`WorkflowStopped` (``reason == "stopped"``). A stale contact file is detected when
  the client is made, not only after a timeout; it is left in place (the next scheduler start
  cleans it up) where the original deletes it.
- Args that break a command's schema raise :class:`RequestError` (``code ==
  "invalid_args"``) **before** anything is sent; the original sends them and the server
  answers with the error.
- The endpoints are runwire's (``api``, ``ping_workflow``, the control commands,
  ``entire_workflow``, ``data_elements``), not the original's ``graphql`` and ``pb_*``
  (calling those gives the server's ``unknown_command`` :class:`RequestError`).
- ``serial_request`` blocks on its own REQ socket (the generated
  :class:`~runwire.generated.workflow.WorkflowSyncClient`) instead of running an event loop,
  so it also works where an event loop runs (blocking that loop for the call).
- Additions (keyword-only): ``run_root`` (default ``$RUNWIRE_RUN_ROOT`` or ``~/runwire-run``);
  the ``publish_port`` attribute; :meth:`~WorkflowRuntimeClient.stop` / ``with`` to close.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import zmq
import zmq.asyncio

from runwire.generated.workflow import WorkflowClient, WorkflowSyncClient
from runwire.reference_server.workflow import contact as contact_files
from runwire.runtime.errors import (
    LocalProtocolError,
    RemoteProtocolError,
    RunwireError,
    Timeout,
)
from runwire.runtime.transport.zmq_endpoint import RequestError as WireRequestError
from runwire.runtime.transport.zmq_security import CurveKeyError

__all__ = [
    "DEFAULT_TIMEOUT",
    "ClientError",
    "ClientTimeout",
    "CylcError",
    "RequestError",
    "WorkflowNotFound",
    "WorkflowRuntimeClient",
    "WorkflowStopped",
]

DEFAULT_TIMEOUT: Final = 5.0
"""Seconds a request waits for its reply unless told otherwise (the original's default)."""

TIMEOUT_MESSAGE: Final = (
    "Timeout waiting for server response. This could be due to network or server issues.\n"
    "* You might want to increase the timeout using the --comms-timeout option;\n"
    "* or check the workflow log."
)


# --- exceptions (cylc.flow.exceptions) ------------------------------------------------------


class CylcError(Exception):
    """Base of the errors this client raises (Cylc's ``CylcError``)."""


class ClientError(CylcError):
    """A request could not be made or failed (Cylc's ``ClientError``).

    Attributes:
        message: what went wrong; traceback: the server's traceback (never sent by runwire,
            always None); workflow: the workflow id, when known.
    """

    def __init__(
        self, message: str, traceback: str | None = None, workflow: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.traceback = traceback
        self.workflow = workflow

    def __str__(self) -> str:
        text = self.message
        if self.traceback:
            text += f"\n{self.traceback}"
        return text


class RequestError(ClientError):
    """The server answered with the error envelope (Cylc's ``RequestError``).

    Attributes:
        code: runwire's machine-readable error code (``unknown_command``, ``invalid_args``...),
            None from a server that sends none.
        command: the command that failed.
    """

    def __init__(
        self,
        message: str,
        workflow: str | None = None,
        *,
        code: str | None = None,
        command: str | None = None,
    ) -> None:
        super().__init__(message, workflow=workflow)
        self.code = code
        self.command = command


class WorkflowStopped(ClientError):
    """The workflow is not running: ``"<workflow> is not running"`` (Cylc's
    ``WorkflowStopped``).

    Attributes:
        workflow: the workflow id.
        reason: ``"stopped"`` (no contact file, or a stale one) or ``"no such workflow"``
            (:class:`WorkflowNotFound`).
        detail: how it was found out (e.g. the stale contact file and its pid).
    """

    reason: str = "stopped"

    def __init__(self, workflow: str, detail: str | None = None) -> None:
        super().__init__(f"{workflow} is not running", workflow=workflow)
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.message} ({self.detail})" if self.detail else self.message


class WorkflowNotFound(WorkflowStopped):
    """No such workflow: it has no run directory. A :class:`WorkflowStopped` (the original
    raises that for both cases), with ``reason == "no such workflow"``."""

    reason = "no such workflow"

    def __init__(self, workflow: str, detail: str | None = None) -> None:
        super().__init__(workflow, detail)
        self.message = f"no such workflow: {workflow}"


class ClientTimeout(CylcError):
    """No reply in time (Cylc's ``ClientTimeout``; not a ``ClientError``). A CurveZMQ
    authentication failure looks like this too: the server drops the client silently.

    Attributes:
        workflow: the workflow id; timeout: the seconds waited.
    """

    def __init__(self, message: str, workflow: str | None = None, timeout: float = 0.0) -> None:
        super().__init__(message)
        self.message = message
        self.workflow = workflow
        self.timeout = timeout


# --- the client -----------------------------------------------------------------------------


def _seconds(value: float | str | None, default: float) -> float:
    if value is None:
        return default
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"timeout must be a number of seconds, not {value!r}") from None
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"timeout must be a positive number of seconds, not {value!r}")
    return seconds


def _prog() -> str:
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "python"
    return os.path.basename(argv0)


class WorkflowRuntimeClient:
    """Initiate a client to the scheduler API: the REQ side of the workflow's REQ/ROUTER pair.

    Args:
        workflow: the workflow id (``pipeline``, ``project/run1``).
        host, port: where the scheduler listens; when both are given the contact file is not
            needed (its keys still are, for a CURVE workflow).
        timeout: default seconds to wait for a reply (a number or a numeric string; default
            :data:`DEFAULT_TIMEOUT`, 5).
        context: a ``zmq.asyncio.Context`` (default: the process-wide one).
        srv_public_key_loc: a file holding the server's public key (default
            ``<run dir>/.service/server.key``).
        run_root: the run root (keyword only; default ``$RUNWIRE_RUN_ROOT`` or
            ``~/runwire-run``).

    Raises:
        WorkflowNotFound: no such workflow (no run directory).
        WorkflowStopped: the workflow is not running (no contact file, or a stale one).
        ClientError: an invalid workflow id, an unusable contact file, or key files that
            cannot be loaded ("Failed to find user's private key, so cannot connect." /
            "Failed to load the workflow's public key, so cannot connect.").
        ValueError: a timeout that is not a positive number of seconds.
    """

    DEFAULT_TIMEOUT: Final = DEFAULT_TIMEOUT

    def __init__(
        self,
        workflow: str,
        host: str | None = None,
        port: int | str | None = None,
        timeout: float | str | None = None,
        context: zmq.asyncio.Context | None = None,
        srv_public_key_loc: str | os.PathLike[str] | None = None,
        *,
        run_root: str | os.PathLike[str] | None = None,
    ) -> None:
        self.workflow = workflow
        self.timeout = _seconds(timeout, DEFAULT_TIMEOUT)
        self.run_root = run_root
        try:
            self.run_dir = contact_files.workflow_run_dir(workflow, run_root)
        except ValueError as exc:
            raise ClientError(str(exc), workflow=workflow) from None
        contact: contact_files.Contact | None = None
        if host is None or port is None:
            contact = self._discover()
            host, port = contact.host, contact.port
        else:
            contact = self._read_contact_quietly()
        self.host: str = host
        self.port: int = int(port)
        self.publish_port: int | None = contact.publish_port if contact is not None else None
        self._contact = contact
        try:
            self.security = contact_files.client_security(
                self.run_dir, contact, server_public_key_file=srv_public_key_loc
            )
        except CurveKeyError as exc:
            raise ClientError(str(exc), workflow=workflow) from None
        self.header: dict[str, Any] = {
            "prog": _prog(),
            "host": socket.gethostname(),
            "comms_method": os.environ.get("CLIENT_COMMS_METH", "zmq"),
        }
        self.timeout_handler: Callable[[], None] | None = self._timeout_handler
        self._client = WorkflowClient(
            self.host, self.port, security=self.security, timeout_s=self.timeout, context=context
        )
        self._sync_client = WorkflowSyncClient(
            self.host, self.port, security=self.security, timeout_s=self.timeout, context=context
        )

    # --- discovery -----------------------------------------------------------------------

    def _discover(self) -> contact_files.Contact:
        try:
            return contact_files.discover(self.workflow, self.run_root)
        except contact_files.WorkflowNotFound as exc:
            raise WorkflowNotFound(self.workflow, exc.detail) from None
        except contact_files.WorkflowNotRunning as exc:
            raise WorkflowStopped(self.workflow, exc.detail or None) from None
        except (contact_files.ContactFileError, ValueError) as exc:
            raise ClientError(str(exc), workflow=self.workflow) from None

    def _read_contact_quietly(self) -> contact_files.Contact | None:
        try:
            return contact_files.read_contact_file(self.run_dir)
        except (OSError, RunwireError):
            return None

    def _timeout_handler(self) -> None:
        """After a timeout: is the workflow still there? (the original's default handler)

        Raises:
            WorkflowStopped: the contact file is gone or stale (the workflow stopped or died).
            CylcError: the contact file now names another host or port (the workflow was
                restarted elsewhere).
        """
        if not self.run_dir.is_dir():
            raise WorkflowNotFound(self.workflow, f"no run directory {self.run_dir}")
        contact = self._discover()
        if (contact.host, contact.port) != (self.host, self.port):
            raise CylcError(
                f"The workflow is no longer running at {self.host}:{self.port}\n"
                f"It has moved to {contact.host}:{contact.port}"
            )

    # --- requests ------------------------------------------------------------------------

    def get_header(self) -> dict[str, Any]:
        """The request header (``meta``) sent with every request."""
        return dict(self.header)

    async def async_request(
        self,
        command: str,
        args: Mapping[str, Any] | None = None,
        timeout: float | str | None = None,
        req_meta: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send a request and return the reply's data, exactly as the endpoint returned it.

        Args:
            command: the endpoint (``ping_workflow``, ``hold``...).
            args: its arguments (default ``{}``).
            timeout: seconds to wait for this reply (default: the client's ``timeout``).
            req_meta: merged into ``header`` for this request.

        Raises:
            ClientTimeout: no reply within the timeout (after ``timeout_handler`` ran; it may
                raise :class:`WorkflowStopped` instead).
            RequestError: the server answered with an error (or the args break the command's
                schema: ``code == "invalid_args"``, nothing sent).
            ClientError: anything else (a malformed reply, a socket failure).
        """
        wait_s = _seconds(timeout, self.timeout)
        with self._translated(command, wait_s):
            return await self._client.request(
                command,
                dict(args or {}),
                timeout_s=wait_s,
                meta={**self.header, **(req_meta or {})},
            )

    def serial_request(
        self,
        command: str,
        args: Mapping[str, Any] | None = None,
        timeout: float | str | None = None,
        req_meta: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send a request and wait for its reply; see :meth:`async_request` (same arguments,
        return value and exceptions). For convenience, call the client itself. It blocks in
        the socket (no event loop), so it also works where an event loop runs, blocking
        that loop for the call, as the original's synchronous request does."""
        wait_s = _seconds(timeout, self.timeout)
        with self._translated(command, wait_s):
            return self._sync_client.request(
                command,
                dict(args or {}),
                timeout_s=wait_s,
                meta={**self.header, **(req_meta or {})},
            )

    __call__ = serial_request

    @contextlib.contextmanager
    def _translated(self, command: str, wait_s: float) -> Iterator[None]:
        """Raise the original's exceptions for the wire client's."""
        try:
            yield
        except Timeout:
            if self.timeout_handler is not None:
                self.timeout_handler()
            raise ClientTimeout(TIMEOUT_MESSAGE, self.workflow, wait_s) from None
        except WireRequestError as exc:
            raise RequestError(exc.message, self.workflow, code=exc.code, command=command) from None
        except LocalProtocolError as exc:
            raise RequestError(
                f"invalid request {command!r}: {exc.message}",
                self.workflow,
                code="invalid_args",
                command=command,
            ) from None
        except RemoteProtocolError as exc:
            raise ClientError(
                f"bad reply to {command!r} from {self.host}:{self.port}: {exc.message}",
                workflow=self.workflow,
            ) from None
        except (zmq.ZMQError, RunwireError) as exc:
            raise ClientError(f"{command!r} failed: {exc}", workflow=self.workflow) from None

    # --- lifecycle -----------------------------------------------------------------------

    def stop(self, stop_loop: bool = True) -> None:
        """Close the sockets. The client may be used again afterwards (new sockets are made).
        ``stop_loop`` is accepted for the original's signature; there is no private loop."""
        self._client.close()
        self._sync_client.close()

    close = stop

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"WorkflowRuntimeClient({self.workflow!r}, host={self.host!r}, port={self.port})"


def contact_file(workflow: str, run_root: str | os.PathLike[str] | None = None) -> Path:
    """Where the contact file of ``workflow`` is (whether or not it exists)."""
    return contact_files.contact_path(contact_files.workflow_run_dir(workflow, run_root))
