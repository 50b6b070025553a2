"""``runwire serve jobs-agent``: run the reference jobs agent (harpd's role).

With no options it listens on 127.0.0.1:4306 with a self-signed development certificate and
a development password file, both in ``STATE_DIR/jobs-agent`` (``--state-dir``, default
``$XDG_STATE_HOME/runwire`` or ``~/.local/state/runwire``, the folder
``runwire serve jobs-dispatcher`` uses too), and serves the conformance procedures. On the
first start it creates the password file with the user ``runwire`` and a random password and
prints both once. Callers trust the development certificate by using it as their CA file.

A development agent (one with the development certificate) also writes
``STATE_DIR/jobs-agent/dev-agent.json`` (mode 0600): where it listens, its certificate, and
the credentials it knows (the generated ones, or those given with ``--user``). The
dispatcher's default configuration reads it with :func:`read_dev_agent`, so the two commands
work together with no configuration at all.

Credentials:
    ``--user NAME --password-env VAR`` sets NAME's password to the value of the environment
    variable VAR in the password file in use (created if missing) before starting: what a
    demo or a test needs to know the password in advance. ``--user NAME`` alone sets a new
    random password and prints it. For regular use, manage users with
    ``runwire jobs agent-passwd``.

Options on the command line override the configuration file (``--config``, TOML, keys as in
:class:`~runwire.reference_server.jobs.agent.AgentConfig`; see examples/jobs/agent.toml);
``--procedures`` adds to the file's ``modules``.

Stops on SIGTERM or SIGINT: calls in flight end with the error ``shutdown``; then it prints
``runwire jobs agent stopped`` (as the dispatcher prints ``runwire jobs dispatcher stopped``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runwire.runtime.files import write_atomically

from ..logging_options import add_log_level_argument, configure_logging
from .agent import (
    AGENT_DIR_NAME,
    AgentConfig,
    AgentEndpoint,
    ConfigError,
    default_state_dir,
    run_agent,
)
from .passwords import PasswordFile, PasswordFileError

if TYPE_CHECKING:
    from .dispatcher import HostEntry

__all__ = [
    "DESCRIPTION",
    "DEV_AGENT_FILE",
    "DEV_USER",
    "add_arguments",
    "read_dev_agent",
    "run",
    "write_dev_agent",
]

DESCRIPTION = "Run the jobs agent (harpd): procedures over TLS with password authentication."

DEV_USER = "runwire"
"""User created in a new development password file."""

DEV_AGENT_FILE = "dev-agent.json"
"""File in the agent's folder telling where a development agent listens and how to log in."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the agent's options to ``parser``."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML configuration file (paths in it are relative to its folder; see "
        "examples/jobs/agent.toml)",
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default 4306; 0: any free port)")
    parser.add_argument("--certfile", type=Path, metavar="FILE", help="PEM certificate (chain)")
    parser.add_argument("--keyfile", type=Path, metavar="FILE", help="PEM private key")
    parser.add_argument(
        "--password-file",
        type=Path,
        metavar="FILE",
        help="user:argon2-hash file (default: STATE_DIR/jobs-agent/passwd)",
    )
    parser.add_argument(
        "--procedures",
        action="append",
        default=[],
        metavar="MODULE",
        help="procedures module: dotted name or .py path (repeatable)",
    )
    parser.add_argument(
        "--no-conformance-procedures",
        action="store_true",
        help="do not serve the conformance procedures (echo, add, stream, ...)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help=(
            "runwire state folder; the development certificate and default password file go "
            f"in its jobs-agent folder (default {default_state_dir()})"
        ),
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        metavar="SECONDS",
        help="time limit of procedures that set none (default: none)",
    )
    parser.add_argument("--user", help="set this user's password before starting")
    parser.add_argument(
        "--password-env",
        metavar="VAR",
        help="environment variable holding --user's password (default: a random one, printed)",
    )
    add_log_level_argument(parser)


def _config(args: argparse.Namespace) -> AgentConfig:
    config = AgentConfig.from_toml(args.config) if args.config else AgentConfig()
    overrides = {
        "host": args.host,
        "port": args.port,
        "certfile": args.certfile,
        "keyfile": args.keyfile,
        "password_file": args.password_file,
        "state_dir": args.state_dir,
        "default_time_limit_s": args.time_limit,
    }
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    config.modules = [*config.modules, *args.procedures]
    if args.no_conformance_procedures:
        config.conformance_procedures = False
    config.check()
    return config


def _credentials(
    args: argparse.Namespace, config: AgentConfig
) -> tuple[str | None, tuple[str, str] | None]:
    """Set up the password file as the options ask.

    Returns:
        (the line to print or None, the (user, password) set now or None).
    """
    path = config.effective_password_file
    if args.password_env and not args.user:
        raise ConfigError("--password-env needs --user")
    if args.user:
        if args.password_env:
            password = os.environ.get(args.password_env, "")
            if not password:
                raise ConfigError(f"environment variable {args.password_env} is unset or empty")
            told = f"password from ${args.password_env}"
        else:
            password = secrets.token_urlsafe(18)
            told = f"password {password}"
        PasswordFile(path).set_password(args.user, password)
        return f"password file {path}: user {args.user}, {told}", (args.user, password)
    if config.password_file is None and not path.exists():
        password = secrets.token_urlsafe(18)
        PasswordFile(path).set_password(DEV_USER, password)
        told = (
            f"created development password file {path}: user {DEV_USER}, password {password} "
            "(shown once; change it with `runwire jobs agent-passwd`)"
        )
        return told, (DEV_USER, password)
    return None, None


def _connect_address(host: str) -> str:
    """The address a local caller uses to reach an agent listening on ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def write_dev_agent(
    agent_dir: Path, endpoint: AgentEndpoint, credentials: tuple[str, str] | None
) -> Path:
    """Record where a development agent listens, for :func:`read_dev_agent`.

    Credentials not given now are kept from the previous file, if its user is still in
    the password file. Written atomically with mode 0600 (it may hold a password).

    Returns:
        The file written.
    """
    path = agent_dir / DEV_AGENT_FILE
    previous = _load_json(path)
    if credentials is None and previous.get("user"):
        users = PasswordFile(endpoint.password_file).users()
        if previous["user"] in users and isinstance(previous.get("password"), str):
            credentials = (previous["user"], previous["password"])
    record: dict[str, Any] = {
        "address": _connect_address(endpoint.host),
        "port": endpoint.port,
        "ca_file": str(endpoint.certfile),
    }
    if credentials is not None:
        record["user"], record["password"] = credentials
    agent_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return write_atomically(path, json.dumps(record, indent=2), 0o600)


def _load_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_dev_agent(state_dir: Path) -> HostEntry | None:
    """The dispatcher's host entry for the development agent of ``state_dir`` (the runwire
    state folder), or None when no development agent with known credentials wrote its
    ``jobs-agent/dev-agent.json`` there."""
    from .dispatcher import HostEntry

    record = _load_json(Path(state_dir) / AGENT_DIR_NAME / DEV_AGENT_FILE)
    fields = ("address", "port", "ca_file", "user", "password")
    if not all(record.get(key) for key in fields) or not isinstance(record["port"], int):
        return None
    return HostEntry(
        address=str(record["address"]),
        port=record["port"],
        user=str(record["user"]),
        password=str(record["password"]),
        ca_file=str(record["ca_file"]),
    )


def _announce(endpoint: AgentEndpoint) -> None:
    where = f"{endpoint.host}:{endpoint.port}"
    if endpoint.dev_certificate:
        tls = f"self-signed development certificate {endpoint.certfile} (callers' CA file)"
    else:
        tls = f"certificate {endpoint.certfile}"
    print(
        f"runwire jobs agent listening on {where} (TLS), {tls}; "
        f"password file {endpoint.password_file}; "
        f"{len(endpoint.procedures)} procedures: {', '.join(endpoint.procedures)}",
        flush=True,
    )


def run(args: argparse.Namespace) -> int:
    """Run the agent until SIGTERM/SIGINT. Returns 0, or 2 for a configuration error, 1 when
    the address cannot be used."""
    configure_logging(args.log_level)
    started = False
    try:
        config = _config(args)
        told, credentials = _credentials(args, config)
        if told:
            print(told, flush=True)

        def ready(endpoint: AgentEndpoint) -> None:
            nonlocal started
            if endpoint.dev_certificate:
                write_dev_agent(config.agent_dir, endpoint, credentials)
            _announce(endpoint)
            started = True

        try:
            asyncio.run(run_agent(config, ready=ready))
        finally:
            if started:
                print("runwire jobs agent stopped", flush=True)
    except (ConfigError, PasswordFileError) as exc:
        print(f"runwire serve jobs-agent: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"runwire serve jobs-agent: error: {exc}", file=sys.stderr)
        return 1
    return 0
