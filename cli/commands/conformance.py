"""``runwire conformance FAMILY``: run a family's conformance cases against a server.

``runwire conformance --help`` prints ``conformance/README.md`` (packaged with the suite), so
the command's help and the README are one text. Each family in
:data:`runwire.conformance.family.FAMILIES` is a sub-command with the common options and the
family's own (``--jobs-host`` ...). Exit status: 0 the run passed; 1 it failed (a case
failed unexpectedly, a stale or unknown baseline entry, nothing selected or nothing ran, an
operation without a case for ``--coverage``); 2 usage error; 3 a report could not be written
or broke its own schema.
"""

from __future__ import annotations

import argparse
import sys
from importlib.resources import files
from typing import Any

#: Exit statuses (also in the README).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


def readme_text() -> str:
    """The packaged ``conformance/README.md``: the text of ``runwire conformance --help``."""
    return files("runwire.conformance").joinpath("README.md").read_text(encoding="utf-8")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """The options every family takes."""
    from runwire.conformance.runner import DEFAULT_STEP_TIMEOUT_S

    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="[INTERFACE=]URL",
        help="where an interface listens, e.g. dispatcher=tcp://127.0.0.1:3502 (repeatable); "
        "cases of an interface without a target are skipped",
    )
    parser.add_argument(
        "--select",
        action="append",
        default=[],
        metavar="GLOB",
        help="run only cases whose id matches (repeatable; * spans /; a plain prefix "
        "such as jobs/dispatcher selects everything under it)",
    )
    parser.add_argument(
        "--exclude", action="append", default=[], metavar="GLOB", help="leave out matching cases"
    )
    parser.add_argument(
        "--list", action="store_true", help="list the selected cases, one line each, and exit"
    )
    parser.add_argument(
        "--coverage",
        action="store_true",
        help="list every manifest operation with the cases exercising it; exit 1 if one has none",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_STEP_TIMEOUT_S,
        metavar="S",
        help="per-step limit in seconds: each connect, send, receive (default: %(default)g)",
    )
    parser.add_argument(
        "--case-timeout",
        type=_positive_seconds,
        default=None,
        metavar="S",
        help="bound on each whole case in seconds (default: the case's step budget, "
        "6 steps unless it says otherwise, times --timeout)",
    )
    parser.add_argument(
        "--baseline",
        metavar="FILE",
        help="YAML or JSON list of case ids expected to fail (a listed case that passes "
        "fails the run)",
    )
    parser.add_argument(
        "--report-dir", metavar="DIR", help="write results.json and junit.xml into DIR"
    )
    parser.add_argument(
        "--strict", action="store_true", help="count WARN (SHOULD-level rules) as failures"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print only cases that did not pass"
    )


def register(sub: Any) -> None:
    """Add the ``conformance`` subcommand to ``sub`` (an argparse subparsers action)."""
    from runwire.conformance.family import FAMILIES, ConformanceConfigError, family_spec

    parser = sub.add_parser(
        "conformance",
        help="run the conformance suite against a server",
        description=readme_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    families = parser.add_subparsers(dest="family", required=True, metavar="FAMILY")
    for name in sorted(FAMILIES):
        try:
            spec = family_spec(name)
        except (ImportError, ConformanceConfigError) as exc:
            family_parser = families.add_parser(name, help=f"(unavailable: {exc})")
            family_parser.set_defaults(func=_unavailable, error=str(exc))
            continue
        family_parser = families.add_parser(
            name,
            help=spec.title,
            description=f"{spec.title}.\n\n{spec.target_help}".strip(),
            epilog="See `runwire conformance --help` for targets, verdicts, baseline and reports.",
        )
        add_common_options(family_parser)
        if spec.options:
            group = family_parser.add_argument_group(f"{name} options")
            for option in spec.options:
                help_text = option.help + (f" (env {option.env})" if option.env else "")
                if option.flag:
                    group.add_argument(
                        option.cli_flag,
                        dest=f"opt_{option.name}",
                        action="store_true",
                        default=None,
                        help=help_text,
                    )
                else:
                    group.add_argument(
                        option.cli_flag,
                        dest=f"opt_{option.name}",
                        metavar=option.metavar,
                        default=None,
                        help=help_text,
                    )
        family_parser.set_defaults(func=_run, family_spec=spec)


def _unavailable(args: argparse.Namespace) -> int:
    print(f"runwire conformance {args.family}: {args.error}", file=sys.stderr)
    return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    from runwire.conformance.baseline import Baseline
    from runwire.conformance.coverage import coverage, render_coverage
    from runwire.conformance.family import (
        ConformanceConfigError,
        load_family,
        parse_targets,
        resolve_options,
    )
    from runwire.conformance.report import ConsoleReporter, ReportError, write_reports
    from runwire.conformance.runner import RunConfig, run, select_cases

    spec = args.family_spec
    try:
        family = load_family(spec)
    except ConformanceConfigError as exc:
        print(f"runwire conformance: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.coverage:
        rows = coverage(family)
        print(render_coverage(family, rows))
        return EXIT_OK if all(row.covered for row in rows) else EXIT_FAILED
    if args.list:
        cases = select_cases(family.cases, args.select, args.exclude)
        width = max((len(c.id) for c in cases), default=0)
        for case in cases:
            level = " [SHOULD]" if case.level == "SHOULD" else ""
            ends = " [ends the service: runs last, one per server]" if case.ends_service else ""
            print(f"{case.id:<{width}}  {case.summary}{level}{ends}")
        if not cases:
            print(
                f"no case selected ({len(family.cases)} available; check --select and --exclude)",
                file=sys.stderr,
            )
            return EXIT_FAILED
        return EXIT_OK
    try:
        targets = parse_targets(args.target, family.manifest)
        given = {
            option.name: getattr(args, f"opt_{option.name}")
            for option in spec.options
            if getattr(args, f"opt_{option.name}", None) is not None
        }
        options = resolve_options(spec, given)
        baseline = Baseline.load(args.baseline) if args.baseline else None
    except ConformanceConfigError as exc:
        print(f"runwire conformance: {exc}", file=sys.stderr)
        return EXIT_USAGE
    config = RunConfig(
        targets=targets,
        options=options,
        select=tuple(args.select),
        exclude=tuple(args.exclude),
        step_timeout_s=args.timeout,
        case_timeout_s=args.case_timeout,
        strict=args.strict,
        baseline=baseline,
    )
    console = ConsoleReporter(sys.stdout, quiet=args.quiet)
    result = run(family, config, console)
    status = result.exit_status
    if args.report_dir:
        try:
            paths = write_reports(result, args.report_dir)
        except ReportError as exc:
            print(f"runwire conformance: {exc}", file=sys.stderr)
            status = EXIT_INTERNAL
        else:
            print("reports: " + ", ".join(str(p) for p in paths))
    console.run_finished(result)
    return status
