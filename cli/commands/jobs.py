"""``runwire jobs COMMAND``: commands of the jobs family.

The dispatcher client commands (submit, result, status, follow, read, cancel, list; see
:mod:`runwire.commands.jobs_client`) and ``agent-passwd`` (add a user to a jobs agent's
password file, or change its password). Each entry of :data:`COMMANDS` is a function that
adds its parsers to the ``jobs`` subparsers object and sets ``func`` (called with the parsed
namespace, returning the exit status).

Ctrl-C (exit 130) and a closed standard output (141) are handled by :func:`runwire.main.main`
for every command.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .jobs_client import EXIT_STATUS_HELP, add_client_commands

AGENT_PASSWD_EXIT_HELP = (
    "Exit status: 0 password set; 1 it could not be set (the password file cannot be read, "
    "written or parsed; the two entries differ; no input); 2 usage error (a bad user name, "
    "an empty password); 130 interrupted (Ctrl-C)."
)


def user_name(text: str) -> str:
    """A user name a password file can hold (argparse type; see ``check_user_name``)."""
    from runwire.reference_server.jobs.passwords import PasswordFileError, check_user_name

    try:
        return check_user_name(text)
    except PasswordFileError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _agent_passwd(args: argparse.Namespace) -> int:
    from runwire.reference_server.jobs.agent import AgentConfig
    from runwire.reference_server.jobs.passwords import PasswordFile, PasswordFileError

    prog = "runwire jobs agent-passwd"
    path: Path = args.password_file or AgentConfig().effective_password_file
    try:
        if args.stdin:
            line = sys.stdin.readline()
            password = line[:-1] if line.endswith("\n") else line
        else:
            try:
                password = getpass.getpass(f"new password for {args.user}: ")
                again = getpass.getpass("again: ")
            except KeyboardInterrupt:  # runwire.main reports it; end the prompt's line first
                print(file=sys.stderr)
                raise
            if again != password:
                print(f"{prog}: passwords differ", file=sys.stderr)
                return 1
        if not password:
            print(f"{prog}: the password must not be empty", file=sys.stderr)
            return 2
        PasswordFile(path).set_password(args.user, password)
    except (PasswordFileError, OSError, EOFError) as exc:
        print(f"{prog}: {str(exc) or 'no input'}", file=sys.stderr)
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
        epilog=AGENT_PASSWD_EXIT_HELP,
    )
    parser.add_argument(
        "user", type=user_name, metavar="USER", help="user name (no whitespace or ':')"
    )
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
        epilog=f"{EXIT_STATUS_HELP} (agent-passwd: see its --help.)",
    )
    commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(commands)
