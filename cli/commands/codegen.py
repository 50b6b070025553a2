"""``runwire codegen``: regenerate ``generated/`` from ``schemas/``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _codegen(args: argparse.Namespace) -> int:
    try:
        from runwire.codegen import generate
    except ImportError as exc:  # the codegen extra is not installed
        print(
            f"runwire codegen needs the codegen extra (pip install 'runwire[codegen]'): {exc}",
            file=sys.stderr,
        )
        return 2
    from runwire.runtime.errors import SchemaError

    schemas, out = Path(args.schemas), Path(args.out)
    if not (schemas / "meta" / "protocol.schema.json").is_file():
        print(
            f"{schemas}: not a runwire schemas folder; run from the project root or pass --schemas",
            file=sys.stderr,
        )
        return 2
    try:
        if args.check:
            diff = generate.check(schemas, out)
            if diff:
                sys.stdout.writelines(diff)
                print(
                    f"\n{out} is out of date with {schemas}: run `{generate.REGENERATE}`.",
                    file=sys.stderr,
                )
                return 1
            print(f"{out} is up to date with {schemas}.")
            return 0
        count = generate.regenerate(schemas, out)
    except SchemaError as exc:
        print(f"runwire codegen: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {count} files to {out}")
    return 0


def register(sub: Any) -> None:
    """Add the ``codegen`` subcommand to ``sub`` (an argparse subparsers action)."""
    codegen = sub.add_parser(
        "codegen",
        help="regenerate generated/ from schemas/",
        description="Lint the schemas and manifests, then regenerate models, clients, server stubs, fixtures and reference docs.",
    )
    codegen.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temporary folder and fail with a diff on any difference",
    )
    codegen.add_argument(
        "--schemas", default="schemas", help="the schemas folder (default: %(default)s)"
    )
    codegen.add_argument(
        "--out", default="generated", help="the generated folder (default: %(default)s)"
    )
    codegen.set_defaults(func=_codegen)
