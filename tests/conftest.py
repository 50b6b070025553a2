"""Fixtures shared across the test suite.

``jobs_agent``: a real reference jobs agent (:mod:`runwire.reference_server.jobs.agent`) in a
background thread with its own event loop, on 127.0.0.1 and a free port, with a development
certificate and a password file with one known user in ``tmp_path``, serving the conformance
procedures. It yields a :class:`RunningJobsAgent` (``host``, ``port``, ``cafile``, ``user``,
``password``, ``stop()``, and helpers to build clients and requests). Stopped at teardown.

``jobs_agent_factory``: the same with options, for agents with more procedure modules, other
limits, or several agents::

    def test_x(jobs_agent_factory):
        agent = jobs_agent_factory(modules=["examples/jobs/procedures.py"],
                                   default_time_limit_s=2.0)

``agent_client``: ``agent_client(agent, timeout_s=5.0)`` makes an
:class:`~runwire.generated.jobs.client.AgentClient` that trusts the agent's certificate.

Password hashes here use cheap Argon2 parameters (about a millisecond per check) so tests
stay fast; the agent behaves the same with any parameters.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import secrets
import ssl
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import argon2
import pytest

from runwire.generated.jobs import models
from runwire.generated.jobs.client import AgentClient, AgentSyncClient
from runwire.reference_server.jobs.agent import AgentConfig, BackgroundAgent
from runwire.reference_server.jobs.dispatcher import Dispatcher, DispatcherConfig, HostEntry
from runwire.reference_server.jobs.passwords import PasswordFile
from runwire.reference_server.jobs.tls import client_context

T = TypeVar("T")

JOBS_AGENT_USER = "tester"
"""The user the ``jobs_agent`` fixtures create."""

TEST_HASHER_PARAMETERS = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}
"""Cheap Argon2 parameters for test password files."""


def cheap_hasher() -> argon2.PasswordHasher:
    """An Argon2 hasher with cheap parameters, for test password files."""
    return argon2.PasswordHasher(**TEST_HASHER_PARAMETERS)


@dataclass
class RunningJobsAgent:
    """A jobs agent running in a background thread (see the module docstring).

    Attributes:
        host, port: where it listens (TLS).
        cafile: its self-signed development certificate: the CA file callers trust.
        user, password: credentials the agent accepts.
        background: the :class:`BackgroundAgent` (``.running``, ``.endpoint``).
        password_file: the agent's password file.
        procedures: the procedure names it serves.
    """

    host: str
    port: int
    cafile: str
    user: str
    password: str
    background: BackgroundAgent
    password_file: Path
    procedures: tuple[str, ...] = field(default=())

    def stop(self) -> None:
        """Shut the agent down (calls in flight get ``shutdown``) and wait. Idempotent."""
        self.background.stop()

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context trusting the agent's certificate, host name checked."""
        return client_context(self.cafile)

    def client(self, timeout_s: float = 5.0, **options: Any) -> AgentClient:
        """An async client for this agent."""
        return AgentClient(
            self.host, self.port, ssl=self.ssl_context(), timeout_s=timeout_s, **options
        )

    def sync_client(self, timeout_s: float = 5.0, **options: Any) -> AgentSyncClient:
        """A blocking client for this agent (close it, or use ``with``)."""
        return AgentSyncClient(
            self.host, self.port, ssl=self.ssl_context(), timeout_s=timeout_s, **options
        )

    def request(
        self,
        procedure: str,
        arguments: list[Any] | dict[str, Any] | None = None,
        *,
        user: str | None = None,
        password: str | None = None,
    ) -> models.AgentRequest:
        """A call request with this agent's credentials (or the ones given)."""
        return models.AgentRequest(
            harp=1,
            procedure=procedure,
            arguments=[] if arguments is None else arguments,
            auth={
                "user": self.user if user is None else user,
                "password": self.password if password is None else password,
            },
        )


def start_jobs_agent(
    directory: Path,
    *,
    modules: Sequence[str] = (),
    conformance_procedures: bool = True,
    user: str = JOBS_AGENT_USER,
    password: str | None = None,
    **config: Any,
) -> RunningJobsAgent:
    """Start an agent whose state (certificate, password file) lives in ``directory``.

    Args:
        modules: extra procedure modules (dotted names or .py paths).
        conformance_procedures: serve the conformance procedures.
        user, password: the one user of its password file (password default: random).
        config: more :class:`AgentConfig` attributes (``default_time_limit_s``,
            ``request_timeout_s``, ``max_message_bytes``...).
    """
    directory.mkdir(parents=True, exist_ok=True)
    password = password or secrets.token_urlsafe(12)
    password_file = directory / "passwd"
    PasswordFile(password_file, hasher=cheap_hasher()).set_password(user, password)
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "state_dir": directory,
        "password_file": password_file,
        "modules": list(modules),
        "conformance_procedures": conformance_procedures,
        **config,
    }
    background = BackgroundAgent(AgentConfig(**settings))
    endpoint = background.endpoint
    assert endpoint.cafile is not None
    return RunningJobsAgent(
        host=endpoint.host,
        port=endpoint.port,
        cafile=str(endpoint.cafile),
        user=user,
        password=password,
        background=background,
        password_file=password_file,
        procedures=endpoint.procedures,
    )


@pytest.fixture
def jobs_agent_factory(tmp_path: Path) -> Iterator[Callable[..., RunningJobsAgent]]:
    """Start agents with options (see :func:`start_jobs_agent`); all stop at teardown."""
    started: list[RunningJobsAgent] = []

    def start(**options: Any) -> RunningJobsAgent:
        agent = start_jobs_agent(tmp_path / f"jobs-agent-{len(started)}", **options)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


@pytest.fixture
def jobs_agent(jobs_agent_factory: Callable[..., RunningJobsAgent]) -> RunningJobsAgent:
    """A running jobs agent with the conformance procedures and one known user."""
    return jobs_agent_factory()


@pytest.fixture
def agent_client() -> Callable[..., AgentClient]:
    """``agent_client(agent, timeout_s=5.0, **options)``: an AgentClient for a running agent."""

    def make(agent: RunningJobsAgent, timeout_s: float = 5.0, **options: Any) -> AgentClient:
        return agent.client(timeout_s, **options)

    return make


# --- a background event loop and jobs dispatchers (compat.harp and ``runwire jobs`` tests) ---


class BackgroundLoop:
    """An asyncio event loop running in a daemon thread.

    For sync code under test (sync clients, ``runwire.compat.harp``, the CLI) that talks to
    async servers in the same process: start the servers with :meth:`run`, then call the sync
    code from the test's own thread.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="runwire-test-loop", daemon=True
        )
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        """Run ``coroutine`` on the loop and return its result (bounded by ``timeout_s``).

        Raises:
            TimeoutError: it did not finish in time (it is cancelled).
            whatever the coroutine raised.
        """
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def close(self, timeout_s: float = 10.0) -> None:
        """Cancel what still runs, stop the loop and its thread, close the loop."""
        if self.loop.is_closed():
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        with contextlib.suppress(Exception):
            self.run(cancel_all(), timeout_s)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self.loop.close()


@pytest.fixture
def background_loop() -> Iterator[BackgroundLoop]:
    """An event loop in a background thread (see :class:`BackgroundLoop`); closed at teardown."""
    loop = BackgroundLoop()
    yield loop
    loop.close()


@pytest.fixture
def jobs_dispatcher_factory(
    background_loop: BackgroundLoop,
) -> Iterator[Callable[..., Dispatcher]]:
    """``start(agents={"localhost": agent}, hosts=None, **config)``: a started reference
    dispatcher on ``background_loop`` (127.0.0.1, a free port, in-memory database).

    ``agents`` maps host names to :class:`RunningJobsAgent` instances (their credentials,
    and their certificate checked against the name ``localhost``); ``hosts`` adds raw
    :class:`HostEntry` values; ``config`` sets more :class:`DispatcherConfig` attributes.
    Read the port from ``dispatcher.port``. Every dispatcher started is closed at teardown.
    """
    started: list[Dispatcher] = []

    def start(
        agents: Mapping[str, RunningJobsAgent] | None = None,
        hosts: Mapping[str, HostEntry] | None = None,
        **config: Any,
    ) -> Dispatcher:
        registry = {
            name: HostEntry(
                agent.host,
                agent.port,
                agent.user,
                agent.password,
                ca_file=agent.cafile,
                server_name="localhost",
            )
            for name, agent in (agents or {}).items()
        }
        registry.update(hosts or {})
        settings: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "database": ":memory:"}
        settings.update(config)
        dispatcher = Dispatcher(DispatcherConfig(hosts=registry, **settings))
        background_loop.run(dispatcher.start())
        started.append(dispatcher)
        return dispatcher

    yield start
    for dispatcher in started:
        with contextlib.suppress(Exception):
            background_loop.run(dispatcher.aclose())
