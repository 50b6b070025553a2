"""The ``--log-level`` option and the log format shared by every ``runwire serve`` server."""

from __future__ import annotations

import argparse
import logging
from typing import Final

__all__ = ["LOG_FORMAT", "LOG_LEVELS", "add_log_level_argument", "configure_logging"]

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
"""The levels ``--log-level`` accepts (in any case)."""

LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The format of log lines on stderr."""


def add_log_level_argument(parser: argparse.ArgumentParser, *, default: str = "INFO") -> None:
    """Add ``--log-level LEVEL``: one of :data:`LOG_LEVELS`, any case (an unknown level is a
    usage error), stored upper-case in ``args.log_level``; ``default`` when not given."""
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=default,
        metavar="LEVEL",
        help=f"log level on stderr: {', '.join(LOG_LEVELS)}, any case (default: %(default)s)",
    )


def configure_logging(level: str) -> None:
    """Log to stderr at ``level`` (one of :data:`LOG_LEVELS`) in :data:`LOG_FORMAT`."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
