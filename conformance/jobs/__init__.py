"""Conformance cases of the jobs family (dispatcher and agent).

This package declares the family (:data:`FAMILY`: its options and the agent's TLS context);
the cases live in :mod:`runwire.conformance.jobs.dispatcher_cases` and
:mod:`runwire.conformance.jobs.agent_cases` (each ``CASES = CaseSet("jobs")``), which the
runner imports only when the family is run.

What a server under test must offer is in ``conformance/README.md``, section "What a server
under test must offer (jobs)".
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

from runwire.conformance.family import FamilySpec, Option, OptionValue

__all__ = ["FAMILY"]


def agent_tls_context(interface: str, options: Mapping[str, OptionValue]) -> ssl.SSLContext:
    """Client TLS context for a ``tls://`` agent target: TLS 1.2 or newer (as harpd), the
    system trust store or ``--agent-ca-file``, no verification with ``--agent-insecure``."""
    ca_file = options.get("agent_ca_file")
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if options.get("agent_insecure"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


FAMILY = FamilySpec(
    name="jobs",
    title="job dispatch: HarpCaller-style dispatcher (TCP) and harpd-style agent (TLS)",
    case_modules=(
        "runwire.conformance.jobs.dispatcher_cases",
        "runwire.conformance.jobs.agent_cases",
    ),
    options=(
        Option(
            "jobs_host",
            "host name the dispatcher routes to an agent offering the conformance procedures",
            metavar="NAME",
        ),
        Option("agent_user", "user name for direct calls to the agent", metavar="USER"),
        Option(
            "agent_password",
            "password for direct calls to the agent (prefer the environment variable: a command line is visible to other local users)",
            metavar="PASSWORD",
            env="RUNWIRE_AGENT_PASSWORD",
            secret=True,
        ),
        Option(
            "agent_ca_file",
            "PEM file of the CA that signed the agent's certificate",
            metavar="FILE",
        ),
        Option(
            "agent_insecure",
            "do not verify the agent's certificate (self-signed test agents only)",
            flag=True,
        ),
    ),
    tls_context=agent_tls_context,
    target_help=(
        "targets: dispatcher=tcp://HOST:3502 and/or agent=tls://HOST:4306; the dispatcher "
        "must route --jobs-host to an agent offering the conformance procedures"
    ),
)
