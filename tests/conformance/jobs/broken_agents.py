"""Deliberately broken variants of the reference jobs agent, one fault each (not a test module).

Each :class:`Variant` names the fault and the agent conformance cases that must catch it;
``test_broken_agents.py`` runs the agent cases against each (``start_variant``) and checks
that exactly those cases FAIL. The variants subclass the real
:class:`~runwire.reference_server.jobs.agent.Agent` and change one thing, so everything else
behaves as the reference does.

``test_broken_agents.py`` imports this file as module ``runwire_test_broken_agents``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import ssl
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import argon2

from runwire.generated.jobs import models
from runwire.reference_server.jobs.agent import CONFORMANCE_MODULE, Agent
from runwire.reference_server.jobs.execution import Execution
from runwire.reference_server.jobs.passwords import PasswordFile
from runwire.reference_server.jobs.procedures import ProcedureRegistry
from runwire.reference_server.jobs.tls import ensure_dev_certificate, server_context

CALL = "jobs/agent/call/"


class ExtraKeyOnAck(Agent):
    """Adds ``"pid"`` to the acknowledgement (after the base validated it), as a helpful
    re-implementation might; the original dispatcher then fails every call."""

    async def handle(self, message: Any) -> AsyncGenerator[Any, None]:
        async with contextlib.aclosing(super().handle(message)) as replies:
            async for reply in replies:
                if isinstance(reply, dict) and "stream_result" in reply:
                    reply = {**reply, "pid": os.getpid()}
                yield reply


class AcceptsWrongPassword(Agent):
    """Checks only that the user exists, not the password."""

    async def _authenticate(self, user: str, password: str) -> bool:
        assert isinstance(self.passwords, PasswordFile)
        return user in self.passwords.users()


class IgnoresStreamingTimeLimit(Agent):
    """Drops the time limit of streaming procedures, as harpd did (its defect 8)."""

    def _execution(self, request: models.AgentRequest) -> Execution | None:
        execution = super()._execution(request)
        if execution is not None and execution.procedure.streaming:
            execution.procedure = dataclasses.replace(execution.procedure, timeout_s=None)
        return execution


class WrongErrorForUnknownProcedure(Agent):
    """Answers an unknown procedure with ``invalid_request`` instead of
    ``no_such_procedure`` (after authenticating, as the reference does)."""

    async def call(self, request: models.AgentRequest) -> AsyncIterator[Any]:
        name = request.procedure.root
        if name not in self.procedures and await self._authenticate(
            request.auth.user, request.auth.password
        ):
            yield models.AgentError.model_validate(
                {
                    "harp": 1,
                    "error": {
                        "type": "invalid_request",
                        "message": "no such procedure",
                        "data": {"procedure": name},
                    },
                }
            )
            return
        async with contextlib.aclosing(super().call(request)) as replies:  # type: ignore[type-var]
            async for reply in replies:
                yield reply


def old_tls_context(certfile: Path, keyfile: Path) -> ssl.SSLContext:
    """A server context that also accepts TLS 1.0 and 1.1, as harpd did (its defect 10)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(certfile, keyfile)
    return context


@dataclass(frozen=True)
class Variant:
    """A broken agent: its fault, how to build it, and the cases that must FAIL on it.

    Attributes:
        name: a short id (pytest parameter).
        fault: the one thing it does wrong.
        agent_class: the Agent subclass.
        expected_failures: full ids of the agent cases that FAIL on it (and no other).
        tls_context: builds its server TLS context (default: the reference's).
        message: a text the failure message of the first expected case contains.
    """

    name: str
    fault: str
    agent_class: type[Agent]
    expected_failures: frozenset[str]
    tls_context: Callable[[Path, Path], ssl.SSLContext] = server_context
    message: str = ""


AGENT_CASES_CALLING_ECHO_OR_MORE = frozenset(
    CALL + name
    for name in (
        "ack-exact",
        "arguments-not-list-or-object",
        "auth-unknown-user",
        "auth-wrong-password",
        "echo-named",
        "echo-positional",
        "eof-before-newline",
        "exception",
        "malformed-auth",
        "not-json",
        "reply-keys-exact",
        "result-not-json",
        "serves-after-bad-input",
        "stream",
        "stream-time-limit",
        "tls-below-1-2-refused",
        "two-requests-one-write",
        "unknown-procedure",
        "version-not-1",
        "wrong-argument-count",
    )
)
"""The cases that receive at least one acknowledgement (every case but
auth-indistinguishable, which sees only auth errors)."""

VARIANTS: tuple[Variant, ...] = (
    Variant(
        "extra-key-on-ack",
        'the acknowledgement carries an extra key ("pid")',
        ExtraKeyOnAck,
        AGENT_CASES_CALLING_ECHO_OR_MORE,
        message='"pid"',
    ),
    Variant(
        "accepts-wrong-password",
        "a known user with a wrong password is let in",
        AcceptsWrongPassword,
        frozenset({CALL + "auth-wrong-password", CALL + "auth-indistinguishable"}),
        message="expected the error auth_error instead of the acknowledgement",
    ),
    Variant(
        "ignores-streaming-time-limit",
        "a streaming procedure runs past its time limit (harpd's defect 8)",
        IgnoresStreamingTimeLimit,
        frozenset({CALL + "stream-time-limit"}),
        message="no timeout error within",
    ),
    Variant(
        "wrong-error-for-unknown-procedure",
        "an unknown procedure gets invalid_request instead of no_such_procedure",
        WrongErrorForUnknownProcedure,
        frozenset({CALL + "unknown-procedure"}),
        message="expected error type no_such_procedure, got",
    ),
    Variant(
        "accepts-tls-1-1",
        "the agent completes a TLS 1.1 handshake (harpd's defect 10)",
        Agent,
        frozenset({CALL + "tls-below-1-2-refused"}),
        tls_context=old_tls_context,
        message="completed a handshake with TLSv1.1",
    ),
)


@dataclass
class StartedAgent:
    """An agent serving on an event loop the caller runs (see :func:`start_variant`)."""

    agent: Agent
    server: Any
    port: int
    cafile: Path
    user: str
    password: str

    async def aclose(self) -> None:
        """Stop listening, end calls in flight, wait (bounded) for connections to close."""
        self.server.close()
        self.agent.begin_shutdown()
        await self.agent.wait_idle(5.0)
        await self.server.wait_closed()


async def start_variant(
    agent_class: type[Agent],
    directory: Path,
    *,
    tls_context: Callable[[Path, Path], ssl.SSLContext] | None = server_context,
    user: str = "conformance",
    password: str = "conformance password",
) -> StartedAgent:
    """Start `agent_class` on 127.0.0.1 and a free port, serving the conformance procedures,
    with a development certificate and a cheap password file in `directory`. Run it on the
    loop that will serve it. ``tls_context=None`` serves plain TCP."""
    directory.mkdir(parents=True, exist_ok=True)
    passwords = PasswordFile(
        directory / "passwd",
        hasher=argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1),
    )
    passwords.set_password(user, password)
    certfile, keyfile = ensure_dev_certificate(directory)
    procedures = ProcedureRegistry()
    procedures.load_module(CONFORMANCE_MODULE)
    agent = agent_class(procedures, passwords, request_timeout_s=5.0)
    context = tls_context(certfile, keyfile) if tls_context is not None else None
    server = await agent.serve("127.0.0.1", 0, ssl=context)
    port = int(server.sockets[0].getsockname()[1])
    return StartedAgent(agent, server, port, certfile, user, password)
