"""Procedures of the jobs agent: the decorators, the end-result wrapper and the registry.

A procedures module is plain Python. Mark a function with :func:`procedure` (it returns one
value) or :func:`streaming_procedure` (it yields values; each becomes a ``stream`` line), then
name the module in the agent's configuration or with ``--procedures``::

    from runwire.reference_server.jobs.procedures import Result, procedure, streaming_procedure

    @procedure
    def hostname() -> str:
        return socket.gethostname()

    @procedure("restart", timeout_s=30)
    def restart_service(name: str) -> int:
        return subprocess.run(["systemctl", "restart", name]).returncode

    @streaming_procedure(timeout_s=600)
    def tail(path: str, lines: int = 10):
        for line in open(path).readlines()[-lines:]:
            yield line.rstrip("\\n")
        yield Result(lines)           # the end result (default: null)

Modelled on harpd's two decorators (reference/jobs.md, section 2.5), with these differences:

- the procedure name is the name given to the decorator (default: the function's name); the
  agent looks names up in its registry only, never as attributes of a module;
- the time limit holds for streaming procedures too (harpd drops it for them);
- a generator may also ``return value`` to set the end result;
- ``async def`` functions and async generators are accepted: they run in the agent's event
  loop and are cancelled when the call ends. Plain functions and generators run in a child
  process each call, which is killed when the caller disconnects or the time limit passes.

Arguments come from the request's ``arguments`` only through Python's call semantics: a list
becomes ``*args``, an object ``**kwargs``; a wrong count raises ``TypeError`` in the procedure,
which the caller receives as an exception (after the acknowledgement), as harpd does.

This module imports nothing heavy: a child process imports it before each sync call.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final, Literal, TypeVar, overload

__all__ = [
    "MAX_NAME_LENGTH",
    "ModuleSource",
    "Procedure",
    "ProcedureInfo",
    "ProcedureRegistry",
    "Result",
    "procedure",
    "procedure_info",
    "streaming_procedure",
]

F = TypeVar("F", bound=Callable[..., Any])

MARKER: Final = "__runwire_procedure__"
"""Attribute the decorators set on a function: its :class:`ProcedureInfo`."""

MAX_NAME_LENGTH: Final = 255
"""Longest procedure name, in characters (the schema's ProcedureName)."""

FILE_MODULE_PREFIX: Final = "runwire_procedures_"
"""Module name prefix of procedures modules loaded from a file path."""


@dataclass(frozen=True)
class ProcedureInfo:
    """What a decorator recorded on a function.

    Attributes:
        name: the registered name (what callers send as ``procedure``).
        streaming: True for :func:`streaming_procedure`.
        timeout_s: the procedure's time limit in seconds, or None for the agent's default.
    """

    name: str
    streaming: bool
    timeout_s: float | None


@dataclass(frozen=True)
class Result:
    """Wrapper a streaming procedure yields to set its end result and end the stream.

    ``yield Result(value)`` sends no stream line; the call ends with ``{"result": value}``
    and the generator is closed. Without it the end result is the generator's return value,
    or null (as in harpd).
    """

    value: Any


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise ValueError(
            f"a procedure name must be a string of 1 to {MAX_NAME_LENGTH} characters, not {name!r}"
        )
    return name


def _check_timeout(timeout_s: object) -> float | None:
    if timeout_s is None:
        return None
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0:
        raise ValueError(f"timeout_s must be a positive number of seconds, not {timeout_s!r}")
    return float(timeout_s)


def _decorate(
    name: str | Callable[..., Any] | None, timeout_s: float | None, *, streaming: bool
) -> Any:
    limit = _check_timeout(timeout_s)

    def mark(function: F) -> F:
        if not callable(function):
            raise TypeError(f"only functions can be procedures, not {function!r}")
        generator = inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function)
        if generator and not streaming:
            raise TypeError(
                f"{function.__qualname__} is a generator: decorate it with @streaming_procedure"
            )
        if not generator and streaming and inspect.iscoroutinefunction(function):
            raise TypeError(
                f"{function.__qualname__} is a coroutine function; a streaming procedure is a "
                "generator or an async generator"
            )
        registered = _check_name(name if isinstance(name, str) else function.__name__)
        setattr(function, MARKER, ProcedureInfo(registered, streaming, limit))
        return function

    if callable(name):  # used bare: @procedure
        return mark(name)
    if name is not None:
        _check_name(name)
    return mark


@overload
def procedure(name: F, /) -> F: ...
@overload
def procedure(
    name: str | None = None, /, *, timeout_s: float | None = None
) -> Callable[[F], F]: ...
def procedure(
    name: str | Callable[..., Any] | None = None, /, *, timeout_s: float | None = None
) -> Any:
    """Mark a function as a procedure returning one value (harpd: single-result procedure).

    Use bare (``@procedure``) or called (``@procedure("name", timeout_s=5)``). The function
    is returned unchanged, with its :class:`ProcedureInfo` attached.

    Args:
        name: registered name, 1 to 255 characters (default: the function's ``__name__``).
        timeout_s: time limit in seconds from the start of the call; when it passes the
            caller gets ``timeout`` "maximum execution time exceeded" and the work is stopped.
            None: the agent's ``default_time_limit_s`` (itself None = no limit).

    Raises:
        ValueError: bad name or time limit.
        TypeError: the function is a generator (use :func:`streaming_procedure`).
    """
    return _decorate(name, timeout_s, streaming=False)


@overload
def streaming_procedure(name: F, /) -> F: ...
@overload
def streaming_procedure(
    name: str | None = None, /, *, timeout_s: float | None = None
) -> Callable[[F], F]: ...
def streaming_procedure(
    name: str | Callable[..., Any] | None = None, /, *, timeout_s: float | None = None
) -> Any:
    """Mark a generator (or async generator) as a streaming procedure.

    Every yielded value becomes a ``{"stream": value}`` line; ``yield Result(v)`` (or
    ``return v``) sets the end result, null by default. The time limit covers the whole
    stream (harpd ignored it for streaming procedures).

    Args and Raises: as :func:`procedure`; TypeError for a coroutine function.
    """
    return _decorate(name, timeout_s, streaming=True)


def procedure_info(function: object) -> ProcedureInfo | None:
    """The :class:`ProcedureInfo` a decorator attached to ``function``, or None."""
    info = getattr(function, MARKER, None)
    return info if isinstance(info, ProcedureInfo) else None


@dataclass(frozen=True)
class ModuleSource:
    """Where a procedures module comes from, so a child process can import it again.

    Attributes:
        kind: ``"module"`` (an importable dotted name) or ``"file"`` (a ``.py`` path).
        location: the dotted name, or the absolute file path.
    """

    kind: Literal["module", "file"]
    location: str

    @classmethod
    def parse(cls, spec: str) -> ModuleSource:
        """A dotted module name, or a path to a ``.py`` file (anything ending in ``.py`` or
        containing a path separator)."""
        if spec.endswith(".py") or "/" in spec or "\\" in spec:
            return cls("file", str(Path(spec).expanduser().resolve()))
        return cls("module", spec)

    @property
    def module_name(self) -> str:
        """The name the module has in ``sys.modules``."""
        if self.kind == "module":
            return self.location
        digest = hashlib.sha256(self.location.encode()).hexdigest()[:16]
        return f"{FILE_MODULE_PREFIX}{Path(self.location).stem}_{digest}"

    def load(self) -> ModuleType:
        """Import the module (once per process; later calls return the loaded module).

        Raises:
            ImportError: the module or file cannot be found or imported (the module's own
                exception is chained).
        """
        if self.kind == "module":
            return importlib.import_module(self.location)
        name = self.module_name
        loaded = sys.modules.get(name)
        if loaded is not None:
            return loaded
        path = Path(self.location)
        if not path.is_file():
            raise ImportError(f"procedures file {path} does not exist")
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module

    def __str__(self) -> str:
        return self.location


@dataclass(frozen=True)
class Procedure:
    """One registered procedure.

    Attributes:
        name: registered name.
        function: the callable.
        streaming: True when it yields stream values.
        timeout_s: its own time limit in seconds, or None.
        is_async: True for ``async def`` functions and async generators (run in the event
            loop); False for plain ones (run in a child process).
        source: the module a child process imports to find ``function`` again.
        qualname: the function's attribute path inside that module.
    """

    name: str
    function: Callable[..., Any]
    streaming: bool
    timeout_s: float | None
    is_async: bool
    source: ModuleSource
    qualname: str

    def resolve(self) -> Callable[..., Any]:
        """Find the function again by (source, qualname): what a child process does."""
        return resolve(self.source, self.qualname)


def resolve(source: ModuleSource, qualname: str) -> Callable[..., Any]:
    """The object at ``qualname`` inside the module ``source`` (imported if needed).

    Raises:
        ImportError: the module cannot be imported.
        LookupError: nothing callable at ``qualname``.
    """
    value: Any = source.load()
    for part in qualname.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise LookupError(f"{source} has no {qualname}") from None
    if not callable(value):
        raise LookupError(f"{source}:{qualname} is not callable")
    return value  # type: ignore[no-any-return]


class ProcedureRegistry:
    """The procedures an agent serves, by registered name.

    Not thread-safe for registration; build it before the agent starts.
    """

    def __init__(self) -> None:
        self._procedures: dict[str, Procedure] = {}
        self._sources: dict[str, ModuleSource] = {}  # module name -> how it was loaded
        self.modules: list[ModuleSource] = []
        """The modules loaded with :meth:`load_module`, in order."""

    def load_module(self, spec: str) -> list[str]:
        """Import a procedures module and register every decorated procedure it holds.

        Args:
            spec: a dotted module name (``runwire.reference_server.jobs.conformance_procedures``)
                or a path to a ``.py`` file (``examples/jobs/procedures.py``).

        Returns:
            The names registered from this module.

        Raises:
            ImportError: the module cannot be imported.
            ValueError: it holds no decorated procedure, or a name is already registered.
        """
        source = ModuleSource.parse(spec)
        module = source.load()
        self._sources[module.__name__] = source
        found: dict[int, Callable[..., Any]] = {}
        for value in vars(module).values():
            if procedure_info(value) is not None:
                found[id(value)] = value
        if not found:
            raise ValueError(
                f"{spec}: no procedures found (mark functions with @procedure or "
                "@streaming_procedure from runwire.reference_server.jobs.procedures)"
            )
        names = [self.register(function).name for function in found.values()]
        self.modules.append(source)
        return names

    def register(
        self,
        function: Callable[..., Any],
        name: str | None = None,
        *,
        streaming: bool | None = None,
        timeout_s: float | None = None,
    ) -> Procedure:
        """Register one function.

        Decorated functions keep what the decorator recorded unless an argument overrides
        it. A plain (not async) function must be reachable as a module-level attribute,
        because each call imports it again in a child process.

        Args:
            function: the procedure.
            name: registered name (default: the decorator's, else ``function.__name__``).
            streaming: default: the decorator's, else whether it is a generator function.
            timeout_s: time limit in seconds (default: the decorator's, else None).

        Returns:
            The registered :class:`Procedure`.

        Raises:
            ValueError: the name is taken, or a plain function cannot be imported again.
        """
        info = procedure_info(function)
        registered = _check_name(
            name if name is not None else info.name if info else function.__name__
        )
        if streaming is None:
            streaming = (
                info.streaming
                if info
                else inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function)
            )
        if timeout_s is not None:
            limit = _check_timeout(timeout_s)
        else:
            limit = info.timeout_s if info else None
        is_async = inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)
        module_name = getattr(function, "__module__", None) or ""
        source = self._sources.get(module_name) or ModuleSource("module", module_name)
        qualname = getattr(function, "__qualname__", "")
        if not is_async:
            if module_name == "__main__":
                raise ValueError(
                    f"procedure {registered!r}: a plain function runs in a child process, "
                    "which does not import the main script; make it async or move it to a "
                    "module or a .py file"
                )
            try:
                found = resolve(source, qualname)
            except (ImportError, LookupError) as exc:
                raise ValueError(
                    f"procedure {registered!r}: a plain function runs in a child process, "
                    f"which must find it as a module-level attribute ({exc}); make it async "
                    "or move it to a module"
                ) from exc
            if found is not function:
                raise ValueError(
                    f"procedure {registered!r}: {source}:{qualname} is not the same function"
                )
        if registered in self._procedures:
            other = self._procedures[registered]
            raise ValueError(
                f"procedure {registered!r} is registered twice: {other.source}:"
                f"{other.qualname} and {source}:{qualname}"
            )
        entry = Procedure(
            name=registered,
            function=function,
            streaming=bool(streaming),
            timeout_s=limit,
            is_async=is_async,
            source=source,
            qualname=qualname,
        )
        self._procedures[registered] = entry
        return entry

    def get(self, name: str) -> Procedure | None:
        """The procedure registered as ``name``, or None."""
        return self._procedures.get(name)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._procedures)

    def __len__(self) -> int:
        return len(self._procedures)

    def __iter__(self) -> Iterator[Procedure]:
        return iter(self._procedures.values())

    def __contains__(self, name: object) -> bool:
        return name in self._procedures
