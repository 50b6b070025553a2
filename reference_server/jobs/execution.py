"""Running one procedure call, in the event loop or in a child process, and stopping it.

An :class:`Execution` turns one call into events: :class:`Item` (a stream value) any number
of times, then one terminal event: :class:`Returned`, :class:`Raised` (the procedure's
exception) or :class:`Failed` (an operational error in the agent's vocabulary).
:meth:`Execution.interrupt` ends a call early with a given :class:`Failed` (the time limit,
the agent shutting down) and stops the work at once; closing an execution that has not ended
(the caller disconnected) stops it too.

- :class:`AsyncExecution` runs ``async def`` procedures and async generators as asyncio
  tasks in the agent's loop; stopping cancels the task.
- :class:`ProcessExecution` runs plain functions and generators in a child process
  (:mod:`.worker`), one per call, started by a :class:`ProcessLauncher`; stopping kills the
  child's whole process group with SIGKILL.

harpd forked one child per connection and noticed a cancelled call only when its next write
failed, so a non-streaming procedure ran to the end (reference/jobs.md, section 2.5); here
the work stops when the call is cancelled.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import signal
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from . import worker
from .procedures import ModuleSource, Procedure, Result
from .worker import NotJson, encode_value, exception_info

__all__ = [
    "SHUTDOWN",
    "TIMEOUT",
    "AsyncExecution",
    "Event",
    "Execution",
    "Failed",
    "Item",
    "ProcessExecution",
    "ProcessLauncher",
    "Raised",
    "Returned",
]

logger = logging.getLogger(__name__)

CLOSE_WAIT_S: Final = 5.0
"""Bound, in seconds, on waiting for a finished child to exit or a cancelled task to end."""

PIPE_SLACK_BYTES: Final = 1024
"""Room for the event wrapper around a value on the child's pipe, in bytes."""


@dataclass(frozen=True)
class Item:
    """A stream value (already checked to be JSON)."""

    value: Any


@dataclass(frozen=True)
class Returned:
    """The procedure returned (or a streaming procedure ended) with ``value``."""

    value: Any


@dataclass(frozen=True)
class Raised:
    """The procedure raised; ``info`` is ``{"type", "message", "data"}``."""

    info: dict[str, Any]


@dataclass(frozen=True)
class Failed:
    """An operational error: ``type`` is one of the agent protocol's error types."""

    type: str
    message: str
    data: Any = None


Event = Item | Returned | Raised | Failed

TIMEOUT: Final = Failed("timeout", "maximum execution time exceeded")
"""The time limit passed (harpd's text)."""

SHUTDOWN: Final = Failed("shutdown", "service is shutting down")
"""The agent is stopping (harpd's text)."""


def _checked(value: Any, max_bytes: int) -> Any:
    """``value`` as the JSON the caller will receive; raises NotJson."""
    return json.loads(encode_value(value, max_bytes))


class Execution(abc.ABC):
    """One call of one procedure.

    Use: ``await start()``, then ``await next_event()`` until a terminal event, then
    ``await aclose()`` (always, also after an error or cancellation).

    Args:
        procedure: what to call.
        args, kwargs: the call's arguments (a list request gives args, an object kwargs).
        max_message_bytes: largest JSON encoding of one value, in bytes; a larger value ends
            the call with ``invalid_message``.
    """

    def __init__(
        self,
        procedure: Procedure,
        args: list[Any],
        kwargs: dict[str, Any],
        *,
        max_message_bytes: int,
    ) -> None:
        self.procedure = procedure
        self.args = args
        self.kwargs = kwargs
        self.max_message_bytes = max_message_bytes
        self.interrupted: Failed | None = None
        self.ended = False

    async def start(self) -> None:  # noqa: B027 - optional step
        """Start the work (a child process); a failure shows as the first event."""

    @abc.abstractmethod
    async def next_event(self) -> Event:
        """The next event; after a terminal event (or an interrupt) do not call again."""

    @abc.abstractmethod
    def interrupt(self, failure: Failed) -> None:
        """End the call with ``failure`` as its terminal event and stop the work now.

        Does nothing once a terminal event was returned. Safe to call from a loop callback.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release everything; stops the work first if the call has not ended."""

    def _end(self, event: Event) -> Event:
        if not isinstance(event, Item):
            self.ended = True
        return event


class AsyncExecution(Execution):
    """A call of an ``async def`` procedure or async generator, as asyncio tasks.

    Each step (the call, or the next stream value) runs in its own task, so an interrupt can
    cancel it without cancelling the caller.
    """

    def __init__(
        self, procedure: Procedure, args: list[Any], kwargs: dict[str, Any], **options: Any
    ) -> None:
        super().__init__(procedure, args, kwargs, **options)
        self._iterator: AsyncIterator[Any] | None = None
        self._task: asyncio.Future[Any] | None = None
        self._woken: asyncio.Future[None] | None = None  # done once interrupted

    async def _call(self) -> Any:
        return await self.procedure.function(*self.args, **self.kwargs)

    async def _next_value(self) -> Any:
        if self._iterator is None:
            self._iterator = aiter(self.procedure.function(*self.args, **self.kwargs))
        try:
            return await anext(self._iterator)
        except StopAsyncIteration:
            return _END

    async def next_event(self) -> Event:
        if self.interrupted is not None:
            return self._end(self.interrupted)
        step = self._next_value() if self.procedure.streaming else self._call()
        task = asyncio.ensure_future(step)
        self._task = task
        if self._woken is None:
            self._woken = asyncio.get_running_loop().create_future()
        try:
            # Also wake on an interrupt: a procedure that ignores cancellation must not keep
            # the call open past its time limit.
            await asyncio.wait((task, self._woken), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            raise
        error = task.exception() if task.done() and not task.cancelled() else None
        if self.interrupted is not None:
            return self._end(self.interrupted)
        if task.cancelled():
            return self._end(Raised(exception_info(asyncio.CancelledError())))
        if error is not None:
            return self._end(Raised(exception_info(error)))
        value = task.result()
        if value is _END:
            return self._end(Returned(None))
        kind: type[Item] | type[Returned] = Returned
        if isinstance(value, Result):
            value = value.value
        elif self.procedure.streaming:
            kind = Item
        try:
            return self._end(kind(_checked(value, self.max_message_bytes)))
        except NotJson as exc:
            what = "stream value" if kind is Item else "result"
            return self._end(Failed("invalid_message", f"{what} not sent: {exc}"))

    def interrupt(self, failure: Failed) -> None:
        if self.ended or self.interrupted is not None:
            return
        self.interrupted = failure
        if self._woken is not None and not self._woken.done():
            self._woken.set_result(None)
        if self._task is not None:
            self._task.cancel()

    async def aclose(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait((task,), timeout=CLOSE_WAIT_S)
            if not task.done():
                logger.error("procedure %s ignores cancellation; left running", self.procedure.name)
                return
            if not task.cancelled():
                task.exception()  # retrieved: nothing more to report
        aclose = getattr(self._iterator, "aclose", None)
        self._iterator = None
        if aclose is not None:
            try:
                async with asyncio.timeout(CLOSE_WAIT_S):
                    await aclose()
            except Exception:
                logger.warning("procedure %s: closing its generator failed", self.procedure.name)


_END: Final = object()


class ProcessLauncher:
    """Starts the child processes of plain (sync) procedures.

    Uses the ``forkserver`` start method where the platform has it (a clean, single-threaded
    server process forks each child in milliseconds), else ``spawn``; never plain ``fork``
    from the agent, whose threads (TLS, password hashing) could leave locks held in a child.

    With forkserver, :meth:`warm_up` starts the fork server with the procedure modules
    already imported (see :mod:`._forkserver_preload`), so a child only forks and calls.
    The fork server is process-wide: if something else started it first, children still
    work, importing the procedure module on each call.

    Plain procedures must live in an importable module or a ``.py`` file, never in the main
    script (children do not import it).

    Args:
        start_method: ``"forkserver"`` or ``"spawn"`` (default: the first available).
        preload: procedure modules to import once in the fork server.
    """

    def __init__(
        self, start_method: str | None = None, preload: Sequence[ModuleSource] = ()
    ) -> None:
        methods = multiprocessing.get_all_start_methods()
        if start_method is None:
            start_method = "forkserver" if "forkserver" in methods else "spawn"
        if start_method not in ("forkserver", "spawn") or start_method not in methods:
            raise ValueError(f"unsupported start method {start_method!r}")
        self.start_method = start_method
        self.context: Any = multiprocessing.get_context(start_method)
        self.preload = tuple(preload)

    def warm_up(self) -> None:
        """Start the fork server now (blocking, up to about a second) instead of on the
        first sync call. Call it from a worker thread in async code."""
        if self.start_method != "forkserver":
            return
        from multiprocessing import forkserver, spawn

        from . import _forkserver_preload

        main_path = spawn.get_preparation_data("runwire").get("init_main_from_path")
        variables = {
            _forkserver_preload.MAIN_VARIABLE: main_path or "",
            _forkserver_preload.PRELOAD_VARIABLE: json.dumps(
                [[source.kind, source.location] for source in self.preload]
            ),
        }
        saved = {name: os.environ.get(name) for name in variables}
        self.context.set_forkserver_preload([_forkserver_preload.__name__, worker.__name__])
        os.environ.update(variables)
        try:
            forkserver.ensure_running()
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


class ProcessExecution(Execution):
    """A call of a plain function or generator, in a child process of its own.

    The child runs :func:`.worker.run_in_child` and reports events as JSON lines on a pipe;
    killing it (SIGKILL to its process group, so commands it started die too) ends the work
    at once.
    """

    def __init__(
        self,
        procedure: Procedure,
        args: list[Any],
        kwargs: dict[str, Any],
        *,
        launcher: ProcessLauncher,
        **options: Any,
    ) -> None:
        super().__init__(procedure, args, kwargs, **options)
        self._launcher = launcher
        self._process: Any = None
        self._reader: asyncio.StreamReader | None = None
        self._transport: asyncio.ReadTransport | None = None
        self._start_failure: Failed | None = None
        self._killed = False

    @property
    def pid(self) -> int | None:
        """The child's process id, once started."""
        return None if self._process is None else int(self._process.pid)

    async def start(self) -> None:
        context = self._launcher.context
        receive, send = context.Pipe(duplex=False)
        process = context.Process(
            target=worker.run_in_child,
            args=(
                self.procedure.source,
                self.procedure.qualname,
                self.procedure.streaming,
                self.args,
                self.kwargs,
                send,
                self.max_message_bytes,
            ),
            name=f"runwire-procedure-{self.procedure.name}",
        )
        try:
            try:
                process.start()  # a few milliseconds with the fork server
            finally:
                send.close()
        except Exception as exc:
            receive.close()
            logger.exception("procedure %s: cannot start a process", self.procedure.name)
            self._start_failure = Failed("system_error", f"cannot start procedure process: {exc}")
            return
        self._process = process
        loop = asyncio.get_running_loop()
        self._reader = asyncio.StreamReader(limit=self.max_message_bytes + PIPE_SLACK_BYTES)
        protocol = asyncio.StreamReaderProtocol(self._reader)
        pipe = open(os.dup(receive.fileno()), "rb", buffering=0)  # noqa: SIM115 - the transport owns it
        receive.close()
        try:
            self._transport, _ = await loop.connect_read_pipe(lambda: protocol, pipe)
        except BaseException:
            pipe.close()
            self._kill()
            raise
        if self.interrupted is not None:
            self._kill()

    async def next_event(self) -> Event:
        if self.interrupted is not None:
            return self._end(self.interrupted)
        if self._start_failure is not None:
            return self._end(self._start_failure)
        assert self._reader is not None, "start() first"
        try:
            line = await self._reader.readline()
        except ValueError:  # longer than the reader's limit
            self._kill()
            limit = self.max_message_bytes
            return self._end(
                Failed("invalid_message", f"value is more than the limit of {limit} bytes")
            )
        if self.interrupted is not None:
            return self._end(self.interrupted)
        if not line.endswith(b"\n"):
            code = await self._wait_exit(CLOSE_WAIT_S)
            return self._end(
                Failed(
                    "system_error",
                    f"procedure process ended without a result (exit code {code})",
                )
            )
        try:
            kind, payload = json.loads(line)
        except ValueError:
            self._kill()
            return self._end(Failed("system_error", "procedure process sent garbage"))
        if kind == "item":
            return Item(payload)
        if kind == "result":
            return self._end(Returned(payload))
        if kind == "exception":
            return self._end(Raised(payload))
        return self._end(Failed(str(payload["type"]), str(payload["message"])))

    def interrupt(self, failure: Failed) -> None:
        if self.ended or self.interrupted is not None:
            return
        self.interrupted = failure
        self._kill()
        if self._transport is not None:
            self._transport.close()  # wakes a pending readline with end of file

    def _kill(self) -> None:
        """SIGKILL the child's process group (or the child alone if it has none yet)."""
        process = self._process
        if process is None or self._killed:
            return
        # Only while the child has not been reaped: after that its pid may be reused.
        if process.exitcode is not None:
            return
        self._killed = True
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(process.pid, signal.SIGKILL)

    async def _wait_exit(self, timeout_s: float) -> int | None:
        """The child's exit code once it has exited, or None after ``timeout_s`` seconds."""
        process = self._process
        if process is None:
            return None
        if process.exitcode is not None:
            return int(process.exitcode)
        loop = asyncio.get_running_loop()
        exited = loop.create_future()

        def on_ready() -> None:
            if not exited.done():
                exited.set_result(None)

        sentinel = process.sentinel
        loop.add_reader(sentinel, on_ready)
        try:
            async with asyncio.timeout(timeout_s):
                await exited
        except TimeoutError:
            pass
        finally:
            loop.remove_reader(sentinel)
        code = process.exitcode
        return None if code is None else int(code)

    async def aclose(self) -> None:
        if self._transport is not None:
            self._transport.close()
        process = self._process
        if process is None:
            return
        if not self.ended or self.interrupted is not None:
            self._kill()
        code = await self._wait_exit(CLOSE_WAIT_S)
        if code is None:  # a finished child that does not exit: stop it
            self._kill()
            code = await self._wait_exit(CLOSE_WAIT_S)
        if code is not None:
            process.close()
        else:
            logger.error("procedure %s: child %s does not exit", self.procedure.name, process.pid)
