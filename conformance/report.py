"""Reports of a run: ``results.json``, JUnit XML, and the console display.

``results.json`` follows ``schemas/conformance/results.json``; :func:`write_reports` checks
every report against that schema before it returns (a report that breaks it is a bug in the
suite: :class:`ReportError`). The JUnit file has one ``<testcase>`` per case (classname
``family.interface.operation``, name the last id segment, property ``case_id`` the full
id): FAIL is a ``<failure>`` whose type is the failure kind, SKIP and expected failures are
``<skipped>``, a stale baseline entry is a ``<failure type="stale-baseline">``. The console
shows the running case (on a terminal), one line per finished case, then the closing line
``N passed, N failed`` (``, N skipped`` and ``, N warned`` follow when nonzero).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal, TextIO

from runwire import __version__
from runwire.runtime.errors import ProtocolError, RunwireError
from runwire.runtime.validation import SchemaRegistry, SchemaViolation

from .baseline import BaselineStatus
from .case import Case, Verdict
from .context import render_violation
from .family import Family, describe_option_values
from .runner import CaseResult, RunResult

__all__ = [
    "JUNIT_NAME",
    "RESULTS_NAME",
    "RESULTS_SCHEMA",
    "ConsoleReporter",
    "ReportError",
    "junit_tree",
    "render_result",
    "results_document",
    "validate_results",
    "write_reports",
]

RESULTS_NAME: Final = "results.json"
JUNIT_NAME: Final = "junit.xml"
RESULTS_SCHEMA: Final = "https://runwire.dev/schemas/conformance/results.json"


class ReportError(RunwireError):
    """A report could not be written, or does not match its own schema (a suite bug)."""


def _violations(violations: Sequence[SchemaViolation]) -> list[dict[str, str]]:
    return [
        {
            "pointer": v.instance_pointer,
            "keyword": v.keyword,
            "schema_location": v.schema_location,
            "message": v.message,
        }
        for v in violations
    ]


def case_document(run: RunResult, result: CaseResult) -> dict[str, Any]:
    """One case as in ``results.json`` (``#/$defs/CaseResult``)."""
    case = result.case
    failure = result.failure
    return {
        "id": case.id,
        "summary": case.summary,
        "level": case.level,
        "interfaces": list(case.interfaces),
        "operations": list(case.operations),
        "references": list(case.references),
        "verdict": result.verdict.value,
        "baseline": run.status(result).value,
        "fails_run": run.fails_run(result),
        "duration_s": round(result.duration_s, 6),
        "message": result.message,
        "failure": None
        if failure is None
        else {
            "kind": failure.kind.value,
            "message": failure.message,
            "frame": failure.frame,
            "violations": _violations(failure.violations),
            "traceback": failure.traceback,
        },
        "skip_reason": result.skip_reason,
        "warnings": [{"message": w.message, "frame": w.frame} for w in result.warnings],
        "frames": [frame.to_json() for frame in result.frames],
        "frames_omitted": result.frames_omitted,
        "log": [{"offset_s": round(e.offset_s, 6), "message": e.message} for e in result.log],
    }


def results_document(run: RunResult, runner: Literal["cli", "pytest"] = "cli") -> dict[str, Any]:
    """The ``results.json`` document of `run`."""
    config = run.config
    summary = run.summary
    baseline: dict[str, Any] | None = None
    if config.baseline is not None:
        ran = {r.case.id: run.status(r) for r in run.results}
        baseline = {
            "file": config.baseline.path,
            "entries": list(config.baseline.entries),
            "expected_failures": [
                i for i, s in ran.items() if s is BaselineStatus.EXPECTED_FAILURE
            ],
            "stale": [i for i, s in ran.items() if s is BaselineStatus.STALE],
            "unknown": run.unknown_baseline_entries(),
            "not_evaluated": [
                e
                for e in config.baseline.entries
                if ran.get(e, BaselineStatus.NOT_EVALUATED) is BaselineStatus.NOT_EVALUATED
                and e not in run.unknown_baseline_entries()
            ],
        }
    return {
        "$schema": RESULTS_SCHEMA,
        "format_version": 1,
        "tool": {"name": "runwire", "version": __version__},
        "runner": runner,
        "family": run.family.name,
        "started_at": run.started_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "duration_s": round(run.duration_s, 6),
        "targets": [
            {"interface": name, "address": target.address}
            for name, target in sorted(config.targets.items())
        ],
        "options": [
            {"name": name, "value": value, "secret": secret}
            for name, value, secret in describe_option_values(run.family.spec, config.options)
        ],
        "selection": {
            "select": list(config.select),
            "exclude": list(config.exclude),
            "available": run.available,
            "selected": len(run.results),
        },
        "timeouts": {"step_s": config.step_timeout_s, "case_s": config.case_timeout_s},
        "strict": config.strict,
        "baseline": baseline,
        "summary": {
            "total": summary.total,
            "passed": summary.passed,
            "failed": summary.failed,
            "warned": summary.warned,
            "skipped": summary.skipped,
            "expected_failures": summary.expected_failures,
            "unexpected_failures": summary.unexpected_failures,
            "stale_baseline_entries": summary.stale_baseline_entries,
        },
        "outcome": "fail" if run.reasons else "pass",
        "exit_status": run.exit_status,
        "reasons": run.reasons,
        "cases": [case_document(run, r) for r in run.results],
    }


def validate_results(document: Any, registry: SchemaRegistry | None = None) -> None:
    """Check a ``results.json`` document against its schema.

    Raises:
        ReportError: it does not match (the message names the pointer and the rule).
    """
    registry = registry or SchemaRegistry.from_package()
    try:
        registry.validator(RESULTS_SCHEMA).check(document, outbound=True)
    except ProtocolError as exc:
        raise ReportError(f"results.json does not match its own schema: {exc.message}") from exc


def _junit_text(result: CaseResult) -> str:
    return render_result(result, with_frames=True)


def junit_tree(run: RunResult) -> ET.ElementTree[ET.Element]:
    """The JUnit XML of `run`: one ``<testsuite>`` for the family, one ``<testcase>`` per case."""
    root = ET.Element("testsuites", {"name": "runwire conformance"})
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": f"runwire.conformance.{run.family.name}",
            "timestamp": run.started_at.isoformat(timespec="seconds").replace("+00:00", ""),
            "hostname": socket.gethostname(),
        },
    )
    properties = ET.SubElement(suite, "properties")
    for name, target in sorted(run.config.targets.items()):
        ET.SubElement(properties, "property", {"name": f"target.{name}", "value": target.address})
    ET.SubElement(properties, "property", {"name": "runwire.version", "value": __version__})
    for result in run.results:
        case = result.case
        testcase = ET.SubElement(
            suite,
            "testcase",
            {
                "classname": case.parent.replace("/", "."),
                "name": case.name,
                "time": f"{result.duration_s:.3f}",
            },
        )
        case_properties = ET.SubElement(testcase, "properties")
        ET.SubElement(case_properties, "property", {"name": "case_id", "value": case.id})
        ET.SubElement(
            case_properties, "property", {"name": "verdict", "value": result.verdict.value}
        )
        status = run.status(result)
        if status is not BaselineStatus.NOT_LISTED:
            ET.SubElement(case_properties, "property", {"name": "baseline", "value": status.value})
        message = result.message or ""
        first_line = message.splitlines()[0] if message else ""
        if status is BaselineStatus.STALE:
            where = run.config.baseline.path if run.config.baseline else "the baseline"
            element = ET.SubElement(
                testcase,
                "failure",
                {
                    "type": "stale-baseline",
                    "message": f"listed as an expected failure in {where}, but it passed: "
                    f"delete the entry",
                },
            )
            element.text = _junit_text(result)
        elif _expected(run, result):
            element = ET.SubElement(
                testcase,
                "skipped",
                {
                    "type": "expected-failure",
                    "message": f"expected failure (baseline): {first_line}",
                },
            )
            element.text = _junit_text(result)
        elif result.verdict is Verdict.FAIL:
            kind = result.failure.kind.value if result.failure else "assertion"
            element = ET.SubElement(testcase, "failure", {"type": kind, "message": first_line})
            element.text = _junit_text(result)
        elif result.verdict is Verdict.WARN and run.config.strict:
            element = ET.SubElement(testcase, "failure", {"type": "warning", "message": first_line})
            element.text = _junit_text(result)
        elif result.verdict is Verdict.SKIP:
            ET.SubElement(testcase, "skipped", {"message": first_line})
        if result.verdict is Verdict.WARN or result.frames:
            out = ET.SubElement(testcase, "system-out")
            out.text = render_result(result, with_frames=True)
    counts = {
        "tests": str(len(run.results)),
        "failures": str(len(suite.findall("testcase/failure"))),
        "errors": "0",
        "skipped": str(len(suite.findall("testcase/skipped"))),
        "time": f"{run.duration_s:.3f}",
    }
    for element in (root, suite):
        element.attrib.update(counts)
    ET.indent(root)
    return ET.ElementTree(root)


def _expected(run: RunResult, result: CaseResult) -> bool:
    return run.status(result) is BaselineStatus.EXPECTED_FAILURE


def write_reports(
    run: RunResult, folder: str | os.PathLike[str], runner: Literal["cli", "pytest"] = "cli"
) -> tuple[Path, Path]:
    """Write ``results.json`` and ``junit.xml`` into `folder` (created if needed), after
    checking the results against their schema.

    Returns:
        (path of results.json, path of junit.xml).

    Raises:
        ReportError: the folder cannot be written, or the results break their schema.
    """
    document = results_document(run, runner)
    validate_results(document, run.family.registry)
    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
        results_path = out / RESULTS_NAME
        results_path.write_text(
            json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        junit_path = out / JUNIT_NAME
        junit_tree(run).write(junit_path, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        raise ReportError(f"cannot write reports to {out}: {exc}") from exc
    return results_path, junit_path


def render_result(result: CaseResult, *, with_frames: bool = False, indent: str = "") -> str:
    """The details of a result as text: failure (with the frame, pointer and rule), skip
    reason, warnings, and optionally every frame."""
    lines: list[str] = []
    if result.failure is not None:
        lines.append(f"{result.failure.kind.value}: {result.failure.message}")
        frame_index = result.failure.frame
        if frame_index is not None:
            frame = next((f for f in result.frames if f.index == frame_index), None)
            if frame is not None and frame.render() not in result.failure.message:
                lines.append(f"  {frame.title()}: {frame.render()}")
                lines += [f"  {render_violation(v)}" for v in frame.violations]
    if result.skip_reason is not None:
        lines.append(f"skipped: {result.skip_reason}")
    for warning in result.warnings:
        lines.append(f"warning (SHOULD): {warning.message}")
    if with_frames and result.frames:
        lines.append("frames:")
        for frame in result.frames:
            arrow = "->" if frame.direction == "sent" else "<-"
            lines.append(
                f"  #{frame.index} {frame.offset_s:8.3f}s {arrow} {frame.interface}"
                f"[{frame.connection}] {frame.render(200)}"
            )
        if result.frames_omitted:
            lines.append(f"  ... {result.frames_omitted} more frames not kept")
    return "\n".join(indent + line for text in lines for line in text.splitlines())


class ConsoleReporter:
    """The console display: the running case on a terminal, a line per finished case,
    failure details, and the closing line.

    Args:
        stream: where to write (default stdout).
        quiet: print only cases that did not pass, and the closing lines.
        progress: show the running case (default: when `stream` is a terminal).
    """

    def __init__(
        self, stream: TextIO | None = None, *, quiet: bool = False, progress: bool | None = None
    ) -> None:
        self.stream = stream or sys.stdout
        self.quiet = quiet
        isatty = getattr(self.stream, "isatty", None)
        self.progress = progress if progress is not None else bool(isatty and isatty())
        self._status_shown = False
        self._run: RunResult | None = None

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _clear_status(self) -> None:
        if self._status_shown:
            self._write("\r\x1b[2K")
            self._status_shown = False

    def run_started(self, family: Family, cases: Sequence[Case]) -> None:
        self._write(
            f"runwire conformance {family.name}: {len(cases)} of {len(family.cases)} cases\n"
        )

    def case_started(self, index: int, total: int, case: Case) -> None:
        if self.progress:
            self._clear_status()
            self._write(f"[{index}/{total}] running {case.id} ...")
            self._status_shown = True

    def case_finished(self, index: int, total: int, result: CaseResult) -> None:
        self._clear_status()
        if self.quiet and result.verdict is Verdict.PASS:
            return
        self._write(f"{result.verdict.value:<4}  {result.case.id}  ({result.duration_s:.2f} s)\n")
        details = render_result(result, indent="      ")
        if details:
            self._write(details + "\n")

    def run_finished(self, run: RunResult) -> None:
        self._clear_status()
        summary = run.summary
        if summary.expected_failures:
            count = summary.expected_failures
            where = run.config.baseline.path if run.config.baseline else "the baseline"
            self._write(
                f"baseline: {count} expected failure{'s' if count != 1 else ''} ({where})\n"
            )
        for reason in run.reasons:
            self._write(f"run fails: {reason}\n")
        self._write(summary.closing_line() + "\n")
