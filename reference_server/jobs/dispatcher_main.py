"""``runwire serve jobs-dispatcher``: run the reference dispatcher until SIGTERM or SIGINT.

With no ``--config`` the dispatcher listens on 127.0.0.1:3502, keeps its database in the
state folder, and its hosts registry names one host, ``localhost``: the development agent
that ``runwire serve jobs-agent`` started from the same state folder (its certificate and
credentials are read from there). SIGHUP reloads the hosts registry from the config file.

Stops on SIGTERM or SIGINT and prints ``runwire jobs dispatcher stopped`` (as the agent prints
``runwire jobs agent stopped``). Exit status: 0 stopped; 1 it could not listen; 2 a usage or
configuration error (a config error names the file and key, e.g.
``dispatcher.toml: hosts.web01.password_file: web01.password: no such file``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

from ..logging_options import add_log_level_argument, configure_logging
from .agent_main import read_dev_agent
from .dispatcher import Dispatcher, DispatcherConfig, HostEntry, load_config

DESCRIPTION = "run the reference jobs dispatcher (HarpCaller's client protocol, port 3502)"


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/runwire`` (default ``~/.local/state/runwire``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "runwire"


def development_agent(state_dir: Path) -> HostEntry | None:
    """The host entry of the development agent started with the same state folder, or
    None if it has not written its certificate and credentials there yet."""
    return read_dev_agent(state_dir)  # the agent owns the format of its record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``runwire serve jobs-dispatcher``."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML configuration file ([dispatcher], [hosts.NAME]; paths in it are relative "
        "to its folder; see examples/jobs/dispatcher.toml)",
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 3502; 0 picks one)")
    parser.add_argument(
        "--database", help="SQLite file (default STATE_DIR/jobs-dispatcher/jobs.sqlite3)"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=default_state_dir(),
        help="folder for the default database and the development agent's files (default: %(default)s)",
    )
    add_log_level_argument(parser)


def build_config(args: argparse.Namespace) -> DispatcherConfig:
    """The configuration the command line asks for.

    Raises:
        OSError, ValueError: the config file cannot be read or is invalid.
    """
    config = load_config(args.config) if args.config else DispatcherConfig()
    if args.config is None:
        config.database = str(args.state_dir / "jobs-dispatcher" / "jobs.sqlite3")
        agent = development_agent(args.state_dir)
        if agent is not None:
            config.hosts["localhost"] = agent
    if args.host is not None:
        config.host = args.host
    if args.port is not None:
        config.port = args.port
    if args.database is not None:
        config.database = args.database
    return config


async def serve(config: DispatcherConfig) -> None:
    """Run a dispatcher with ``config`` until SIGTERM or SIGINT; SIGHUP reloads hosts."""
    dispatcher = Dispatcher(config)
    await dispatcher.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, dispatcher.reload_hosts)
    hosts = ", ".join(sorted(dispatcher.hosts)) or "none (add [hosts.NAME] to a --config file)"
    print(
        f"runwire jobs dispatcher listening on {config.host}:{dispatcher.port}; "
        f"database {config.database}; hosts: {hosts}",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await dispatcher.aclose()
        print("runwire jobs dispatcher stopped", flush=True)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``runwire serve jobs-dispatcher``; returns the exit status."""
    configure_logging(args.log_level)
    try:
        config = build_config(args)
    except (OSError, ValueError) as exc:
        print(f"runwire serve jobs-dispatcher: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(config))
    except sqlite3.Error as exc:
        print(f"runwire serve jobs-dispatcher: database {config.database}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"runwire serve jobs-dispatcher: {exc}", file=sys.stderr)
        return 1
    return 0
