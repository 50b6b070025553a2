"""The ``runwire`` command line.

Subcommands (one module each under ``runwire.commands``):
    codegen      regenerate ``generated/`` from ``schemas/`` (``--check``: fail on drift)
    serve        run a reference server (``runwire serve jobs-dispatcher``, ``jobs-agent``, ``workflow``)
    jobs         talk to a jobs dispatcher (submit, result, status, follow, cancel, list)
    workflow     talk to a running workflow (client, pause, resume, stop, hold, status...)
    conformance  run the conformance suite against a server

Every subcommand shares two exits, handled here once: Ctrl-C (KeyboardInterrupt) prints one
line ``runwire SUBCOMMAND: interrupted`` on stderr and exits :data:`EXIT_INTERRUPTED` (130,
the shell's status for SIGINT); standard output closed by its reader (``runwire ... | head``)
exits :data:`EXIT_BROKEN_PIPE` (141, the shell's status for SIGPIPE) with no traceback, as the
Python documentation recommends (https://docs.python.org/3/library/signal.html#note-on-sigpipe).
"""

from __future__ import annotations

import argparse
import importlib
import os
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


EXIT_INTERRUPTED: Final = 130
"""Exit status after Ctrl-C (128 + SIGINT)."""
EXIT_BROKEN_PIPE: Final = 141
"""Exit status when standard output was closed by its reader (128 + SIGPIPE)."""


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
    """Run the ``runwire`` command; returns the exit status.

    Argparse usage errors and ``--help`` exit with SystemExit (status 2 and 0). Ctrl-C and a
    closed standard output are handled here for every subcommand: see the module docstring.
    """
    parser = build_parser()
    name = parser.prog
    try:
        try:
            args = parser.parse_args(argv)
            name = chosen_prog(parser, args)
            status: int = args.func(args)
        finally:
            if sys.stdout is not None:
                sys.stdout.flush()  # a closed pipe fails here, inside the try, not at exit
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    return status


def chosen_prog(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The ``prog`` of the innermost subcommand parser ``args`` chose (``runwire jobs
    follow``), ``parser.prog`` if none."""
    while True:
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subparsers:
            return parser.prog
        value = getattr(args, subparsers[0].dest, None)
        chosen = subparsers[0].choices.get(value) if isinstance(value, str) else None
        if chosen is None:
            return parser.prog
        parser = chosen


def _discard_stdout() -> None:
    """Point file descriptor 1 at the null device, so that what is still buffered for a
    closed pipe does not fail again (with a traceback) when Python flushes it at exit."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (captured, closed)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
