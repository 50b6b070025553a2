"""What a running case gets: :class:`CaseContext`, and the frames it records.

Every case receives one ``ctx``. Through it the case finds its targets and options, opens
recording connections (``await ctx.open_jsonlines("dispatcher")``), checks what it received
(``ctx.check``, ``ctx.should``), bounds its steps (``async with ctx.step("...")``), and ends
early (``ctx.fail``, ``ctx.skip``). Every frame sent or received through the context is
recorded with its direction, time offset, content and the schema it was validated against;
a received frame that breaks its schema ends the case with a FAIL showing the frame, the
JSON pointer and the rule.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn, TypeVar

from runwire.runtime.validation import SchemaRegistry, SchemaViolation

from .case import Case, CaseFailure, CaseSkip, FailureKind
from .family import Family, OptionValue, Target
from .manifest import InterfaceInfo, Manifest, OperationInfo

if TYPE_CHECKING:
    from .jsonlines import JsonLinesProbe
    from .zmq import ZmqProbe, ZmqSubscription

__all__ = [
    "MAX_FRAMES_PER_CASE",
    "CaseContext",
    "CaseWarning",
    "Frame",
    "LogEntry",
    "SchemaRefs",
    "render_violation",
]

T = TypeVar("T")

MAX_FRAMES_PER_CASE: Final = 1000
"""Frames kept per case; later ones are counted (``frames_omitted``) but not stored."""

RENDER_LIMIT: Final = 600
"""Characters of a frame shown in a failure message."""

SchemaRefs = str | Sequence[str]
"""One schema reference, or alternatives (valid when any one matches). References are
absolute URIs or relative to ``https://runwire.dev/schemas/``."""


def render_violation(violation: SchemaViolation) -> str:
    """``at /pointer: message (rule: keyword, schema: location)``."""
    where = violation.instance_pointer or "(root)"
    return (
        f"at {where}: {violation.message} "
        f"(rule: {violation.keyword}, schema: {violation.schema_location})"
    )


@dataclass(frozen=True)
class Frame:
    """One message sent or received by a case.

    Attributes:
        index: position among the case's frames, from 0.
        direction: ``"sent"`` (by the suite) or ``"received"`` (from the server under test).
        offset_s: seconds since the case started.
        interface: the interface it went over.
        connection: the connection number within the case, from 1.
        value: the decoded JSON value when `is_json`, with the values of secret family
            options (passwords) replaced by ``***``, as in `raw`.
        is_json: True when the frame is one JSON value.
        raw: the bytes, when the frame is not JSON (or was sent raw).
        schemas: absolute URIs of the schemas it was validated against (alternatives); empty
            when not validated.
        matched: the schema it matched, if any.
        violations: how it breaks the schemas (empty when valid or not validated).
        note: what the frame is for, in a few words (optional).
        wire_bytes: the frame's length on the wire, without the line end, when known.
    """

    index: int
    direction: Literal["sent", "received"]
    offset_s: float
    interface: str
    connection: int
    value: Any = None
    is_json: bool = True
    raw: bytes | None = None
    schemas: tuple[str, ...] = ()
    matched: str | None = None
    violations: tuple[SchemaViolation, ...] = ()
    note: str | None = None
    wire_bytes: int | None = None

    @property
    def valid(self) -> bool | None:
        """True/False once validated; None when no schema was given."""
        if not self.schemas:
            return None
        return not self.violations

    @property
    def size_bytes(self) -> int:
        """Length of the frame on the wire (compact JSON when not known)."""
        if self.wire_bytes is not None:
            return self.wire_bytes
        if self.raw is not None:
            return len(self.raw)
        return len(_compact(self.value).encode())

    def text(self) -> str:
        """The frame as text: compact JSON, or the bytes decoded with escapes."""
        if self.is_json and self.raw is None:
            return _compact(self.value)
        assert self.raw is not None
        return self.raw.decode("utf-8", errors="backslashreplace")

    def render(self, limit: int = RENDER_LIMIT) -> str:
        """One line for a failure message, cut to `limit` characters."""
        text = self.text() if self.is_json else repr(self.raw)
        if len(text) > limit:
            text = text[: limit - 3] + "..."
        return text

    def title(self) -> str:
        """``received frame #3 (dispatcher, connection 1)``."""
        return (
            f"{self.direction} frame #{self.index} ({self.interface}, connection {self.connection})"
        )

    def to_json(self) -> dict[str, Any]:
        """The frame as in ``results.json`` (``#/$defs/Frame``)."""
        data: dict[str, Any] = {
            "index": self.index,
            "direction": self.direction,
            "offset_s": round(self.offset_s, 6),
            "interface": self.interface,
            "connection": self.connection,
            "size_bytes": self.size_bytes,
        }
        if self.size_bytes > REPORT_FRAME_LIMIT:
            data["text"] = self.text()[:REPORT_FRAME_LIMIT]
            data["truncated"] = True
        elif self.is_json and self.raw is None:
            data["json"] = self.value
        else:
            assert self.raw is not None
            data["text"] = self.text()
            data["base64"] = base64.b64encode(self.raw).decode("ascii")
        data["schemas"] = list(self.schemas)
        data["valid"] = self.valid
        data["violations"] = [_violation_json(v) for v in self.violations]
        if self.note:
            data["note"] = self.note
        return data


REPORT_FRAME_LIMIT: Final = 64 * 1024
"""Frames longer than this many bytes are cut in ``results.json`` (an oversize-request case
would otherwise put megabytes into the report): the report keeps the first
``REPORT_FRAME_LIMIT`` bytes as ``text``, sets ``truncated`` and keeps ``size_bytes`` exact."""

REDACTED: Final = "***"
"""What a secret option's value is replaced with in recorded frames."""


def redact(value: Any, secrets: Sequence[str]) -> Any:
    """`value` with every secret replaced by ``***``: JSON strings equal to a secret, and
    secrets of 4 characters or more inside longer strings."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            if value == secret:
                return REDACTED
            if len(secret) >= 4 and secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, list):
        return [redact(item, secrets) for item in value]
    if isinstance(value, dict):
        return {key: redact(item, secrets) for key, item in value.items()}
    return value


def redact_bytes(raw: bytes, secrets: Sequence[str]) -> bytes:
    """`raw` with every secret of 4 characters or more (UTF-8) replaced by ``***``."""
    for secret in secrets:
        if len(secret) >= 4:
            raw = raw.replace(secret.encode(), REDACTED.encode())
    return raw


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=repr)


def _violation_json(violation: SchemaViolation) -> dict[str, str]:
    return {
        "pointer": violation.instance_pointer,
        "keyword": violation.keyword,
        "schema_location": violation.schema_location,
        "message": violation.message,
    }


@dataclass(frozen=True)
class CaseWarning:
    """A SHOULD-level rule the server did not meet: `message`, and the frame it is about."""

    message: str
    frame: int | None = None


@dataclass(frozen=True)
class LogEntry:
    """A line of the case's log (steps, notes), `offset_s` seconds after the case started."""

    offset_s: float
    message: str


class CaseContext:
    """The suite's side of one running case.

    Attributes:
        case: the case being run.
        family: the loaded family (its manifest, schema registry, spec).
        manifest: the family manifest.
        registry: the schema registry frames are validated with.
        targets: {interface: Target} as given to the run.
        options: {option name: value} of the family's extra options.
        timeout_s: the per-step limit, in seconds (``--timeout``): every connect, send and
            receive of a recording connection, and every ``ctx.step``, is bounded by it.
    """

    def __init__(
        self,
        case: Case,
        family: Family,
        targets: Mapping[str, Target],
        options: Mapping[str, OptionValue],
        timeout_s: float,
    ) -> None:
        self.case = case
        self.family = family
        self.manifest: Manifest = family.manifest
        self.registry: SchemaRegistry = family.registry
        self.targets = targets
        self.options = options
        self.timeout_s = timeout_s
        self._start = time.monotonic()
        self._lock = threading.Lock()
        self._frames: list[Frame] = []
        self._frame_count = 0
        self._warnings: list[CaseWarning] = []
        self._log: list[LogEntry] = []
        self._connections = 0
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self.current_step: str | None = None
        self._secrets = tuple(
            str(options[o.name])
            for o in family.spec.options
            if o.secret and isinstance(options.get(o.name), str) and options[o.name]
        )

    # -- time, log ---------------------------------------------------------------------

    def now(self) -> float:
        """Seconds since the case started (monotonic)."""
        return time.monotonic() - self._start

    def log(self, message: str) -> None:
        """Add a line to the case's log (kept in ``results.json``)."""
        with self._lock:
            self._log.append(LogEntry(self.now(), message))

    # -- where and what ------------------------------------------------------------------

    def target(self, interface: str | None = None) -> Target:
        """The target of `interface` (default: the case's own), or of an interface's extra
        socket by its name (``publish``).

        Raises:
            CaseSkip: no target was given for it.
        """
        name = interface or self.case.interface
        target = self.targets.get(name)
        if target is None:
            raise CaseSkip(missing_target_reason_for(self.manifest, name))
        return target

    def interface(self, name: str | None = None) -> InterfaceInfo:
        """The manifest entry of interface `name` (default: the case's own)."""
        return self.manifest.interface(name or self.case.interface)

    def operation(self, ref: str | None = None) -> OperationInfo:
        """A manifest operation: its schema URIs, pattern and errors.

        Args:
            ref: a conformance id (``jobs/dispatcher/call``), an operation name of the case's
                interface (``call``), or None for the operation the case is filed under.

        Raises:
            KeyError: no such operation (a bug in the case).
        """
        if ref is None:
            found = self.manifest.operation_of(self.case.id)
            if found is None:
                raise KeyError(f"case {self.case.id} is not filed under an operation")
            return found
        if "/" in ref:
            return self.manifest.operation(ref)
        return self.manifest.operation(f"{self.case.family}/{self.case.interface}/{ref}")

    @property
    def op(self) -> OperationInfo:
        """The operation the case is filed under (``ctx.operation()``)."""
        return self.operation()

    def option(self, name: str) -> OptionValue:
        """The value of family option `name` (None or False when not given)."""
        if name not in self.options:
            raise KeyError(f"family {self.family.name} has no option {name!r}")
        return self.options[name]

    def require_option(self, name: str) -> str:
        """The value of family option `name`; SKIP the case when it was not given."""
        value = self.option(name)
        if value in (None, "", False):
            option = self.family.spec.option(name)
            raise CaseSkip(f"needs option {name} ({option.cli_flag}): {option.help}")
        return str(value)

    def tls_context(self, interface: str | None = None) -> ssl.SSLContext:
        """The client TLS context for a ``tls://`` target, from the family's options."""
        factory = self.family.spec.tls_context
        if factory is None:
            return ssl.create_default_context()
        return factory(interface or self.case.interface, self.options)

    # -- verdicts ------------------------------------------------------------------------

    def fail(
        self,
        message: str,
        *,
        frame: Frame | int | None = None,
        kind: FailureKind = FailureKind.ASSERTION,
    ) -> NoReturn:
        """End the case: FAIL (WARN in a SHOULD-level case, for assertions)."""
        raise CaseFailure(message, kind=kind, frame=_index(frame))

    def check(self, condition: object, message: str, *, frame: Frame | int | None = None) -> None:
        """A MUST-level rule: FAIL with `message` unless `condition` is true."""
        if not condition:
            self.fail(message, frame=frame)

    def warn(self, message: str, *, frame: Frame | int | None = None) -> None:
        """Record that a SHOULD-level rule was not met; the case goes on (verdict WARN if
        nothing fails)."""
        with self._lock:
            self._warnings.append(CaseWarning(message, _index(frame)))
        self.log(f"warning: {message}")

    def should(self, condition: object, message: str, *, frame: Frame | int | None = None) -> bool:
        """A SHOULD-level rule: WARN with `message` unless `condition` is true. Returns
        whether it held."""
        if not condition:
            self.warn(message, frame=frame)
            return False
        return True

    def skip(self, reason: str) -> NoReturn:
        """End the case: SKIP, with `reason`."""
        raise CaseSkip(reason)

    # -- steps ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def step(self, description: str, timeout_s: float | None = None) -> AsyncIterator[None]:
        """Bound a block by the step limit (or `timeout_s`); logged as ``step: description``.

        Raises:
            CaseFailure: kind TIMEOUT, when the block does not finish in time.
        """
        limit = self.timeout_s if timeout_s is None else timeout_s
        previous, self.current_step = self.current_step, description
        self.log(f"step: {description}")
        bound = asyncio.timeout(limit)
        try:
            async with bound:
                yield
        except TimeoutError:
            if bound.expired():
                raise CaseFailure(
                    f"step {description!r} did not finish within {limit:g} s",
                    kind=FailureKind.TIMEOUT,
                ) from None
            raise
        finally:
            self.current_step = previous

    async def within(
        self, awaitable: Awaitable[T], description: str, timeout_s: float | None = None
    ) -> T:
        """Await `awaitable` as one step (see :meth:`step`) and return its result."""
        async with self.step(description, timeout_s):
            return await awaitable

    async def poll(
        self,
        attempt: Callable[[], Awaitable[T]],
        until: Callable[[T], object],
        description: str,
        *,
        interval_s: float = 0.05,
        timeout_s: float | None = None,
    ) -> T:
        """Await `attempt()` again and again until `until(result)` holds; return that result.

        For servers whose state changes on their own (a job that finishes): each attempt is a
        fresh request, `interval_s` apart, all within one step of `timeout_s` (default: the
        step limit).

        Raises:
            CaseFailure: kind TIMEOUT, naming `description` and the last result, when the
                condition does not hold in time.
        """
        limit = self.timeout_s if timeout_s is None else timeout_s
        last: list[T] = []
        try:
            async with self.step(f"wait until {description}", limit):
                while True:
                    result = await attempt()
                    last[:] = [result]
                    if until(result):
                        return result
                    await asyncio.sleep(interval_s)
        except CaseFailure as failure:
            if failure.kind is not FailureKind.TIMEOUT or not last:
                raise
            raise CaseFailure(
                f"{description}: still not so after {limit:g} s; last: {last[0]!r}",
                kind=FailureKind.TIMEOUT,
            ) from None

    # -- frames --------------------------------------------------------------------------

    def validate(self, value: Any, schemas: SchemaRefs) -> tuple[str | None, list[SchemaViolation]]:
        """Validate `value` against `schemas` (alternatives: valid if any matches).

        Returns:
            (URI of the matching schema, []) when valid; (None, violations of every
            alternative) when not.

        Raises:
            SchemaError: a reference does not resolve (a bug in the case).
        """
        validators = [self.registry.validator(ref) for ref in _refs(schemas)]
        for validator in validators:
            if validator.is_valid(value):
                return validator.uri, []
        violations: list[SchemaViolation] = []
        for validator in validators:
            found = validator.violations(value)
            if not found:  # the fast validator and the oracle disagree: still a failure
                found = [
                    SchemaViolation(
                        "", "(validators disagree)", validator.uri, "rejected by jsonschema-rs"
                    )
                ]
            violations.extend(found)
        return None, violations

    def new_connection(self, close: Callable[[], Awaitable[None]] | None = None) -> int:
        """A fresh connection number for recording; `close` runs when the case ends."""
        with self._lock:
            self._connections += 1
            if close is not None:
                self._closers.append(close)
            return self._connections

    def record_sent(
        self,
        value: Any = None,
        *,
        interface: str,
        connection: int,
        raw: bytes | None = None,
        schemas: SchemaRefs = (),
        note: str | None = None,
        wire_bytes: int | None = None,
    ) -> Frame:
        """Record a frame the suite sent: a JSON `value`, or `raw` bytes.

        Sent frames are validated against `schemas` when given, but never judged: a case may
        send invalid requests on purpose. Their violations are kept in the report. The
        values of secret family options (passwords) are masked as ``***`` in the recorded
        frame, after validation.
        """
        return self._record(
            "sent", value, interface, connection, raw, schemas, note, False, wire_bytes
        )

    def record_received(
        self,
        value: Any = None,
        *,
        interface: str,
        connection: int,
        raw: bytes | None = None,
        schemas: SchemaRefs = (),
        note: str | None = None,
        enforce: bool = True,
        wire_bytes: int | None = None,
    ) -> Frame:
        """Record a frame received from the server: a JSON `value`, or `raw` bytes that are
        not JSON. Secret option values are masked in the record, as for sent frames.

        Raises:
            CaseFailure: kind SCHEMA, when `schemas` is given, `enforce` is true and the
                frame matches none of them. The message shows the frame, each violation's
                JSON pointer and the rule (keyword and schema location).
        """
        frame = self._record(
            "received", value, interface, connection, raw, schemas, note, True, wire_bytes
        )
        if enforce and frame.violations:
            raise schema_failure(frame)
        return frame

    def _record(
        self,
        direction: Literal["sent", "received"],
        value: Any,
        interface: str,
        connection: int,
        raw: bytes | None,
        schemas: SchemaRefs,
        note: str | None,
        validate: bool,
        wire_bytes: int | None = None,
    ) -> Frame:
        is_json = raw is None
        uris: tuple[str, ...] = ()
        matched: str | None = None
        violations: list[SchemaViolation] = []
        refs = _refs(schemas)
        if refs:
            uris = tuple(self.registry.validator(ref).uri for ref in refs)
            if is_json:
                matched, violations = self.validate(value, refs)
            elif validate:
                violations = [
                    SchemaViolation("", "(not JSON)", uri, "the frame is not a JSON value")
                    for uri in uris
                ]
        if self._secrets:  # validated as sent or received; kept with credentials masked
            value = redact(value, self._secrets)
            raw = redact_bytes(raw, self._secrets) if raw is not None else None
        with self._lock:
            frame = Frame(
                index=self._frame_count,
                direction=direction,
                offset_s=self.now(),
                interface=interface,
                connection=connection,
                value=value if is_json else None,
                is_json=is_json,
                raw=raw,
                schemas=uris,
                matched=matched,
                violations=tuple(violations),
                note=note,
                wire_bytes=wire_bytes,
            )
            self._frame_count += 1
            if len(self._frames) < MAX_FRAMES_PER_CASE:
                self._frames.append(frame)
        return frame

    def frame(self, index: int) -> Frame | None:
        """The recorded frame with this index (None if it was not kept)."""
        with self._lock:
            return self._frames[index] if 0 <= index < len(self._frames) else None

    # -- connections ---------------------------------------------------------------------

    async def open_jsonlines(
        self, interface: str | None = None, *, ssl: ssl.SSLContext | None = None
    ) -> JsonLinesProbe:
        """Open a recording JSON-lines connection to the target of `interface` (default:
        the case's own), TLS for a ``tls://`` target. Closed when the case ends, if the
        case does not close it first; usable as ``async with``.

        Raises:
            CaseSkip: no target for the interface.
            CaseFailure: kind TRANSPORT when the connection is refused or TLS fails, kind
                TIMEOUT when connecting takes longer than the step limit.
        """
        from .jsonlines import JsonLinesProbe

        return await JsonLinesProbe.open(self, interface or self.case.interface, ssl=ssl)

    async def open_zmq(self, target: str | None = None, *, security: Any = None) -> ZmqProbe:
        """Open a recording ZeroMQ REQ connection to `target` (default: the case's
        interface): CurveZMQ with the family's keys (:attr:`FamilySpec.zmq_security`) unless
        `security` gives other keys or :data:`runwire.conformance.zmq.PLAIN`. Closed when
        the case ends, if the case does not close it first; usable as ``async with``.

        Raises:
            CaseSkip: no target, or the family's options give no keys (nor plain TCP).
        """
        from .zmq import ZmqProbe

        if security is None:
            return await ZmqProbe.open(self, target)
        return await ZmqProbe.open(self, target, security=security)

    async def subscribe_zmq(
        self, target: str | None = None, *, security: Any = None
    ) -> ZmqSubscription:
        """Open a recording ZeroMQ SUB connection to `target` (default ``publish`` when the
        family has such a target), subscribed to every topic; security as for
        :meth:`open_zmq`. Closed when the case ends; usable as ``async with``.

        Raises:
            CaseSkip: no target, or the family's options give no keys (nor plain TCP).
        """
        from .zmq import ZmqSubscription

        if security is None:
            return await ZmqSubscription.open(self, target)
        return await ZmqSubscription.open(self, target, security=security)

    async def aclose(self) -> None:
        """Close every connection still open (each bounded by the step limit)."""
        with self._lock:
            closers, self._closers = self._closers, []
        for close in reversed(closers):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.timeout_s):
                    await close()

    # -- results -------------------------------------------------------------------------

    def redact_text(self, text: str) -> str:
        """`text` with the values of secret family options masked as ``***``."""
        return str(redact(text, self._secrets))

    def snapshot(self) -> tuple[list[Frame], int, list[CaseWarning], list[LogEntry]]:
        """(frames kept, frames omitted, warnings, log), copied, secrets masked in warnings
        and log; safe from another thread."""
        with self._lock:
            return (
                list(self._frames),
                self._frame_count - len(self._frames),
                [CaseWarning(self.redact_text(w.message), w.frame) for w in self._warnings],
                [LogEntry(e.offset_s, self.redact_text(e.message)) for e in self._log],
            )


def _index(frame: Frame | int | None) -> int | None:
    return frame.index if isinstance(frame, Frame) else frame


def _refs(schemas: SchemaRefs) -> tuple[str, ...]:
    if isinstance(schemas, str):
        return (schemas,)
    return tuple(schemas)


def schema_failure(frame: Frame) -> CaseFailure:
    """The FAIL for a received frame that breaks its schema(s)."""
    expected = " or ".join(frame.schemas)
    lines = [f"{frame.title()} does not match {expected}", f"  frame: {frame.render()}"]
    lines += [f"  {render_violation(v)}" for v in frame.violations]
    return CaseFailure(
        "\n".join(lines),
        kind=FailureKind.SCHEMA,
        frame=frame.index,
        violations=frame.violations,
    )


def missing_target_reason(interface: InterfaceInfo, socket: str | None = None) -> str:
    """The SKIP reason for a case whose interface (or an interface's extra `socket`, such
    as ``publish``) has no target."""
    scheme = "tls" if interface.transport.get("security") == "tls" else "tcp"
    if interface.transport_kind == "websocket":
        scheme = "ws"
    if socket is not None:
        return (
            f"no target for {socket!r}, the {socket} socket of interface {interface.name!r} "
            f"(give one as {socket}={scheme}://HOST:PORT)"
        )
    return (
        f"no target for interface {interface.name!r} "
        f"(give one as {interface.name}={scheme}://HOST:PORT)"
    )


def missing_target_reason_for(manifest: Manifest, name: str) -> str:
    """The SKIP reason for target `name` (an interface, or an extra socket's name)."""
    found = manifest.target_names().get(name)
    if found is None:
        return f"no target {name!r}"
    return missing_target_reason(*found)
