"""``runwire serve SERVER``: run one of the reference servers.

Each server lives in its own module, which exposes ``DESCRIPTION`` (one line),
``add_arguments(parser)`` and ``run(args) -> int`` (blocks until the server stops). Only the
module of the server named on the command line is imported (they pull in the generated
models, pyzmq...), so ``runwire serve --help`` lists the servers from :data:`SERVERS`.
"""

from __future__ import annotations

import importlib
from typing import Any, Final

from runwire.lazy_subparsers import Loader, add_lazy_subparsers

#: Server name -> (the module that runs it, its ``DESCRIPTION``: the line of
#: ``runwire serve --help``; tests/cli/test_main.py checks that the two match).
SERVERS: Final[dict[str, tuple[str, str]]] = {
    "jobs-dispatcher": (
        "runwire.reference_server.jobs.dispatcher_main",
        "run the reference jobs dispatcher (HarpCaller's client protocol, port 3502)",
    ),
    "jobs-agent": (
        "runwire.reference_server.jobs.agent_main",
        "Run the jobs agent (harpd): procedures over TLS with password authentication.",
    ),
    "workflow": (
        "runwire.reference_server.workflow.serve_main",
        "run the reference workflow scheduler (Cylc 8's runtime interface over ZeroMQ)",
    ),
}


def _server_loader(name: str, module_name: str) -> Loader:
    """The loader that imports the server's module and adds its parser."""

    def load(servers: Any) -> None:
        module = importlib.import_module(module_name)
        parser = servers.add_parser(name, help=module.DESCRIPTION, description=module.DESCRIPTION)
        module.add_arguments(parser)
        parser.set_defaults(func=module.run)

    return load


def register(sub: Any) -> None:
    """Add the ``serve`` subcommand to ``sub`` (an argparse subparsers action)."""
    serve = sub.add_parser(
        "serve",
        help="run a reference server",
        description="Run a reference server on loopback with an embedded default configuration; it prints where it listens.",
    )
    servers = add_lazy_subparsers(serve, dest="server", required=True, metavar="SERVER")
    for name, (module_name, help_text) in SERVERS.items():
        servers.add_lazy_parser(name, help_text, _server_loader(name, module_name))
