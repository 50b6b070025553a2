"""The jobs cases through the pytest plugin, from a test file in a separate project.

This is how an implementer runs the suite inside their own CI: a one-line test file, the
plugin enabled with ``-p``, targets and family options on the command line (or as ini
keys). Here the servers under test are the reference agent and dispatcher, on loopback
ports chosen at run time; the project is a pytester temporary folder, outside runwire.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

pytest_plugins = ["pytester"]

TEST_FILE = "from runwire.conformance.pytest_plugin import test_conformance  # noqa: F401\n"
SELECTED = (
    "jobs/dispatcher/read_stream/*",
    "jobs/dispatcher/get_status/unknown-job",
    "jobs/agent/call/echo-*",
    "jobs/agent/call/auth-wrong-password",
)


def test_jobs_cases_run_as_pytest_items_with_the_case_ids(
    pytester: pytest.Pytester,
    jobs_agent: Any,
    jobs_dispatcher_factory: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dispatcher = jobs_dispatcher_factory(agents={"localhost": jobs_agent})
    pytester.makepyfile(test_conformance=TEST_FILE)
    monkeypatch.setenv("RUNWIRE_AGENT_PASSWORD", jobs_agent.password)
    reports = pytester.path / "reports"
    select = [arg for pattern in SELECTED for arg in ("--runwire-select", pattern)]
    result = pytester.runpytest(
        "-p",
        "runwire.conformance.pytest_plugin",
        "-v",
        "--runwire-family=jobs",
        f"--runwire-target=dispatcher=tcp://127.0.0.1:{dispatcher.port}",
        f"--runwire-target=agent=tls://{jobs_agent.host}:{jobs_agent.port}",
        "--runwire-jobs-host=localhost",
        f"--runwire-agent-user={jobs_agent.user}",
        f"--runwire-agent-ca-file={jobs_agent.cafile}",
        f"--runwire-report-dir={reports}",
        *select,
    )
    results = json.loads((reports / "results.json").read_text())
    case_ids = sorted(case["id"] for case in results["cases"])
    assert len(case_ids) >= 8
    assert all(case["verdict"] == "PASS" for case in results["cases"]), results["cases"]
    # one pytest item per case, named by the case id
    for case_id in case_ids:
        result.stdout.fnmatch_lines([f"*test_conformance[[]{case_id}] PASSED*"])
    result.assert_outcomes(passed=len(case_ids))
    result.stdout.fnmatch_lines([f"{len(case_ids)} passed, 0 failed"])
    assert jobs_agent.password not in (reports / "results.json").read_text()
