"""Conformance cases of the workflow family (a Cylc 8-style scheduler over ZeroMQ).

This package declares the family (:data:`FAMILY`: its options and how the suite finds its
CurveZMQ keys) and ships the conformance workflow definition a server under test runs
(:func:`definition_path`, ``conformance.yaml`` here). The cases live in
:mod:`runwire.conformance.workflow.cases` (``CASES = CaseSet("workflow")``), imported only
when the family is run.

Targets: ``runtime=tcp://HOST:PORT`` (the request socket, ROUTER) and
``publish=tcp://HOST:PORT`` (the PUB socket). Keys: ``--workflow-keys DIR`` names the
server's service directory (``<run dir>/.service``: ``client.key_secret`` and ``server.key``),
or ``--client-key FILE`` and ``--server-key FILE`` name the files; ``--insecure`` talks plain
TCP to a server run without CurveZMQ (``runwire serve workflow --insecure-loopback``).

What a server under test must offer is in ``conformance/README.md``, section "What a server
under test must offer (workflow)".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from importlib.resources import as_file, files
from pathlib import Path
from typing import Final

from runwire.conformance.case import CaseFailure, CaseSkip, FailureKind
from runwire.conformance.family import FamilySpec, Option, OptionValue
from runwire.runtime.transport.zmq_security import (
    CurveClientSecurity,
    CurveKeyError,
)

__all__ = [
    "CLIENT_SECRET_FILE",
    "DEFINITION_RESOURCE",
    "FAMILY",
    "KEYS_NEEDED",
    "SERVER_PUBLIC_FILE",
    "definition_path",
    "workflow_security",
]

DEFINITION_RESOURCE: Final = "conformance.yaml"
"""The conformance workflow definition, package data of this package."""

CLIENT_SECRET_FILE: Final = "client.key_secret"
"""The local client's keypair in a service directory."""

SERVER_PUBLIC_FILE: Final = "server.key"
"""The server's public key in a service directory."""

KEYS_NEEDED: Final = (
    # the SKIP reason of every case when the options give no keys
    "needs CurveZMQ keys: --workflow-keys DIR (the server's .service directory), or "
    "--client-key FILE and --server-key FILE; or --insecure for a server on plain TCP"
)


@contextlib.contextmanager
def definition_path() -> Iterator[Path]:
    """The conformance workflow definition as a file path (``with definition_path() as p``),
    for ``runwire serve workflow PATH`` or any server under test."""
    with as_file(files(__name__).joinpath(DEFINITION_RESOURCE)) as path:
        yield path


def workflow_security(
    target: str, options: Mapping[str, OptionValue]
) -> CurveClientSecurity | None:
    """The CurveZMQ client keys for a workflow target from the family options: None with
    ``--insecure``; else ``--client-key``/``--server-key``, each defaulting to its file in
    ``--workflow-keys``.

    Raises:
        CaseSkip: neither keys nor ``--insecure`` were given.
        CaseFailure: a key file is missing or unusable (kind transport).
    """
    if options.get("insecure"):
        return None
    folder = options.get("workflow_keys")
    client = options.get("client_key")
    server = options.get("server_key")
    if isinstance(folder, str) and folder:
        client = client or str(Path(folder) / CLIENT_SECRET_FILE)
        server = server or str(Path(folder) / SERVER_PUBLIC_FILE)
    if not (isinstance(client, str) and client and isinstance(server, str) and server):
        raise CaseSkip(KEYS_NEEDED)
    try:
        return CurveClientSecurity.from_files(client, server)
    except CurveKeyError as exc:
        raise CaseFailure(
            f"cannot load the CurveZMQ keys for {target}: {exc}", kind=FailureKind.TRANSPORT
        ) from exc


FAMILY = FamilySpec(
    name="workflow",
    title="workflow scheduler runtime interface (Cylc 8 style) over ZeroMQ with CurveZMQ",
    case_modules=("runwire.conformance.workflow.cases",),
    options=(
        Option(
            "workflow_keys",
            "the server's service directory (<run dir>/.service), holding client.key_secret "
            "and server.key",
            metavar="DIR",
        ),
        Option(
            "client_key",
            "the client keypair file (*.key_secret) authorised by the server (default: "
            "client.key_secret in --workflow-keys)",
            metavar="FILE",
        ),
        Option(
            "server_key",
            "the server's public key file (default: server.key in --workflow-keys)",
            metavar="FILE",
        ),
        Option(
            "insecure",
            "plain TCP: the server runs without CurveZMQ (loopback only); the security cases "
            "are skipped",
            flag=True,
        ),
    ),
    zmq_security=workflow_security,
    target_help=(
        "targets: runtime=tcp://HOST:PORT (requests) and publish=tcp://HOST:PORT (the PUB "
        "socket), a fresh server running the conformance workflow "
        "(runwire.conformance.workflow.definition_path()); keys: --workflow-keys DIR"
    ),
)
