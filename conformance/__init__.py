"""The runwire conformance suite: run a family's cases against a server and judge it.

Run it with ``runwire conformance FAMILY --target INTERFACE=URL ...`` or, inside an
implementer's own test suite, with the pytest plugin :mod:`runwire.conformance.pytest_plugin`
(see ``conformance/README.md``, also printed by ``runwire conformance --help``).

Writing cases (one module per family, or several)::

    from runwire.conformance import CaseContext, CaseSet

    CASES = CaseSet("jobs")

    @CASES.case("jobs/dispatcher/call/returns-job-id", "a call is answered with a job id")
    async def returns_job_id(ctx: CaseContext) -> None:
        async with await ctx.open_jsonlines("dispatcher") as conn:
            reply = await conn.request_reply("call", {"harpcaller": 1, ...})
        ctx.check("job_id" in reply, "the reply carries job_id")

Modules: :mod:`.case` (cases, ids, verdicts), :mod:`.context` (what a case gets; frames),
:mod:`.jsonlines` (recording JSON-lines connections), :mod:`.zmq` (recording ZeroMQ
REQ and SUB connections), :mod:`.family` (family declarations,
targets, options, loading), :mod:`.runner` (selection, isolation, judgement),
:mod:`.baseline` (expected failures), :mod:`.report` (results.json, JUnit XML, console),
:mod:`.coverage` (operations without a case), :mod:`.pytest_plugin`.
"""

from .baseline import Baseline, BaselineStatus
from .case import (
    Case,
    CaseFailure,
    CaseGroup,
    CaseSet,
    CaseSkip,
    FailureKind,
    Level,
    Verdict,
)
from .context import CaseContext, CaseWarning, Frame
from .family import (
    FAMILIES,
    ConformanceConfigError,
    Family,
    FamilySpec,
    Option,
    Target,
    family_spec,
    load_family,
    parse_targets,
    resolve_options,
)
from .jsonlines import JsonLinesProbe, StreamReply
from .manifest import InterfaceInfo, Manifest, OperationInfo
from .runner import (
    DEFAULT_STEP_TIMEOUT_S,
    CaseResult,
    RunConfig,
    RunResult,
    run,
    run_case,
    select_cases,
)
from .zmq import PLAIN, Published, ZmqProbe, ZmqSubscription

__all__ = [
    "DEFAULT_STEP_TIMEOUT_S",
    "FAMILIES",
    "PLAIN",
    "Baseline",
    "BaselineStatus",
    "Case",
    "CaseContext",
    "CaseFailure",
    "CaseGroup",
    "CaseResult",
    "CaseSet",
    "CaseSkip",
    "CaseWarning",
    "ConformanceConfigError",
    "FailureKind",
    "Family",
    "FamilySpec",
    "Frame",
    "InterfaceInfo",
    "JsonLinesProbe",
    "Level",
    "Manifest",
    "OperationInfo",
    "Option",
    "Published",
    "RunConfig",
    "RunResult",
    "StreamReply",
    "Target",
    "Verdict",
    "ZmqProbe",
    "ZmqSubscription",
    "family_spec",
    "load_family",
    "parse_targets",
    "resolve_options",
    "run",
    "run_case",
    "select_cases",
]
