"""The ``runwire`` command line.

Subcommands (one module each under ``runwire.commands``):
    codegen      regenerate ``generated/`` from ``schemas/`` (``--check``: fail on drift)
    serve        run a reference server (``runwire serve jobs-dispatcher``, ``jobs-agent``, ``workflow``)
    jobs         talk to a jobs dispatcher (submit, result, status, follow, cancel, list)
    workflow     talk to a running workflow (client, pause, resume, stop, hold, status...)
    conformance  run the conformance suite against a server
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from runwire import __version__

#: Modules under ``runwire.commands`` that add a subcommand, in help order.
SUBCOMMANDS = ("codegen", "serve", "jobs", "workflow", "conformance")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``runwire`` command."""
    parser = argparse.ArgumentParser(
        prog="runwire", description="Spec-first wire protocols for steering long-running work."
    )
    parser.add_argument("--version", action="version", version=f"runwire {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"runwire.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"runwire.commands.{name}":
                raise
            continue  # not built yet
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``runwire`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
