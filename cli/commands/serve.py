"""``runwire serve SERVER``: run one of the reference servers.

Each server lives in its own module, which exposes ``DESCRIPTION`` (one line),
``add_arguments(parser)`` and ``run(args) -> int`` (blocks until the server stops).
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

#: Server name -> the module that runs it.
SERVERS = {
    "jobs-dispatcher": "runwire.reference_server.jobs.dispatcher_main",
    "jobs-agent": "runwire.reference_server.jobs.agent_main",
    "workflow": "runwire.reference_server.workflow.serve_main",
}


def register(sub: Any) -> None:
    """Add the ``serve`` subcommand to ``sub`` (an argparse subparsers action)."""
    serve = sub.add_parser(
        "serve",
        help="run a reference server",
        description="Run a reference server on loopback with an embedded default configuration; it prints where it listens.",
    )
    servers = serve.add_subparsers(dest="server", required=True, metavar="SERVER")
    for name, module_name in SERVERS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # not built yet
        parser: argparse.ArgumentParser = servers.add_parser(
            name, help=module.DESCRIPTION, description=module.DESCRIPTION
        )
        module.add_arguments(parser)
        parser.set_defaults(func=module.run)
