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
from typing import Final

from runwire import __version__

from .lazy_subparsers import LazySubParsersAction, Loader, add_lazy_subparsers

#: Subcommand -> (the module under ``runwire.commands`` whose ``register(subparsers)`` adds
#: its parser, the one line of ``runwire --help``), in help order. Only the module of the
#: subcommand on the command line is imported (tests/cli/test_main.py checks that each line
#: matches what the module registers).
SUBCOMMANDS: Final[dict[str, tuple[str, str]]] = {
    "codegen": ("runwire.commands.codegen", "regenerate generated/ from schemas/"),
    "serve": ("runwire.commands.serve", "run a reference server"),
    "jobs": (
        "runwire.commands.jobs",
        "jobs family commands (dispatcher client, agent passwords)",
    ),
    "workflow": (
        "runwire.commands.workflow",
        "talk to a running workflow (client, pause, stop, hold, status...)",
    ),
    "conformance": ("runwire.commands.conformance", "run the conformance suite against a server"),
}


def _register_from(module_name: str) -> Loader:
    """The loader that imports `module_name` and calls its ``register``."""

    def load(sub: LazySubParsersAction) -> None:
        importlib.import_module(module_name).register(sub)

    return load


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``runwire`` command.

    Cheap: it imports no subcommand module; the chosen subcommand's parser is built when
    parsing reaches it (:mod:`runwire.lazy_subparsers`).
    """
    parser = argparse.ArgumentParser(
        prog="runwire", description="Spec-first wire protocols for steering long-running work."
    )
    parser.add_argument("--version", action="version", version=f"runwire {__version__}")
    sub = add_lazy_subparsers(parser, dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub.add_lazy_parser(name, help_text, _register_from(module_name))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``runwire`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
