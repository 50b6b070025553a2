"""``runwire jobs COMMAND``: commands of the jobs family.

The dispatcher client commands (submit, result, status, follow, read, cancel, list; see
:mod:`runwire.commands.jobs_client`) and ``agent-passwd`` (add a user to a jobs agent's
password file, or change its password). Each entry of :data:`COMMANDS` is a function that
adds its parsers to the ``jobs`` subparsers object and sets ``func`` (called with the parsed
namespace, returning the exit status).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .jobs_client import add_client_commands


def _agent_passwd(args: argparse.Namespace) -> int:
    from runwire.reference_server.jobs.agent import AgentConfig
    from runwire.reference_server.jobs.passwords import (
        PasswordFile,
        PasswordFileError,
        check_user_name,
    )

    path: Path = args.password_file or AgentConfig().effective_password_file
    try:
        check_user_name(args.user)
        if args.stdin:
            line = sys.stdin.readline()
            password = line[:-1] if line.endswith("\n") else line
        else:
            password = getpass.getpass(f"new password for {args.user}: ")
            if getpass.getpass("again: ") != password:
                print("runwire jobs agent-passwd: passwords differ", file=sys.stderr)
                return 1
        PasswordFile(path).set_password(args.user, password)
    except PasswordFileError as exc:
        print(f"runwire jobs agent-passwd: {exc}", file=sys.stderr)
        return 2
    except (OSError, EOFError) as exc:
        print(f"runwire jobs agent-passwd: {exc}", file=sys.stderr)
        return 1
    print(f"password of {args.user} set in {path}")
    return 0


def add_agent_passwd(commands: Any) -> None:
    """``agent-passwd [--password-file FILE] [--stdin] USER``."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "agent-passwd",
        help="add a user to a jobs agent's password file, or change its password",
        description=(
            "Add USER to a jobs agent's password file or change its password (salted "
            "Argon2id hash; the file is rewritten atomically with mode 0600). A running agent "
            "picks the change up at its next call."
        ),
    )
    parser.add_argument("user", metavar="USER", help="user name (no whitespace or ':')")
    parser.add_argument(
        "--password-file",
        type=Path,
        metavar="FILE",
        help="the password file (default: the development agent's, in its state folder)",
    )
    parser.add_argument(
        "--stdin",
        action="store_true",
        help="read the password from the first line of standard input instead of a prompt",
    )
    parser.set_defaults(func=_agent_passwd)


#: Functions adding one ``jobs`` subcommand each, in help order.
COMMANDS: list[Callable[[Any], None]] = [add_client_commands, add_agent_passwd]


def register(sub: Any) -> None:
    """Add the ``jobs`` subcommand to ``sub`` (an argparse subparsers action)."""
    jobs = sub.add_parser(
        "jobs",
        help="jobs family commands (dispatcher client, agent passwords)",
        description="Commands of the jobs family (HarpCaller dispatcher and harpd agent).",
    )
    commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(commands)
