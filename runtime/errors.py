"""The one exception tree of runwire.

Every error the runtime raises on purpose is a :class:`RunwireError`::

    RunwireError
      SchemaError            a schema or manifest is unusable (codegen, validator registry)
      ProtocolError          a message breaks the spec; carries `error_type` and `violation`
        LocalProtocolError     we were about to send what the spec forbids
        RemoteProtocolError    the peer sent what the spec forbids
      InvalidState           operation not allowed in the current state
      LimitExceeded          message bytes, queue length or wait seconds over a bound
      TransportError         the connection could not be used
        ConnectionClosed       who closed (`by`: "peer" or "local"), and why
        Timeout                the limit that ran out (`timeout_s`) and the operation
      AuthenticationError    CurveZMQ, TLS or password rejected
      RemoteError            the peer replied with the protocol's error object, kept intact

`error_type` is the protocol's own name for the failure (for example ``"parse_error"``,
``"invalid_request"``, ``"bad_request"``), so a server can answer in the family's error shape
without re-classifying the exception.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .validation import SchemaViolation

__all__ = [
    "AuthenticationError",
    "ConnectionClosed",
    "InvalidState",
    "LimitExceeded",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteError",
    "RemoteProtocolError",
    "RunwireError",
    "SchemaError",
    "Timeout",
    "TransportError",
]


class RunwireError(Exception):
    """Base class of every error runwire raises on purpose."""


class SchemaError(RunwireError):
    """A schema or manifest is unusable: unreadable, missing `$id`, or a `$ref` that does not
    resolve (raised by the validator registry and the code generator)."""


class ProtocolError(RunwireError):
    """A message breaks the protocol spec. Raise one of the two direction subclasses.

    Attributes:
        message: human-readable description.
        error_type: the protocol's own error type (``"parse_error"``, ``"invalid_request"``...).
        violation: the schema violation behind the error, when a schema check failed.
    """

    def __init__(
        self,
        message: str,
        *,
        error_type: str = "protocol_error",
        violation: SchemaViolation | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.violation = violation

    def __str__(self) -> str:
        return f"{self.error_type}: {self.message}"


class LocalProtocolError(ProtocolError):
    """We were about to send what the spec forbids (a bug on our side; nothing was sent)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent what the spec forbids."""


class InvalidState(RunwireError):
    """The operation is not allowed in the current state (for example data after EOF)."""


class LimitExceeded(RunwireError):
    """A size, length or wait bound was exceeded.

    Attributes:
        limit_name: name of the bound, as in the constructor argument (``"max_line_bytes"``).
        limit: the bound, in `unit`.
        unit: ``"bytes"``, ``"messages"``, ``"seconds"``...
        actual: the observed amount in `unit`, when known (may be a lower bound).
        error_type: the protocol's error type to answer with.
    """

    def __init__(
        self,
        limit_name: str,
        limit: float,
        unit: str,
        *,
        actual: float | None = None,
        error_type: str = "limit_exceeded",
    ) -> None:
        super().__init__(limit_name, limit, unit)
        self.limit_name = limit_name
        self.limit = limit
        self.unit = unit
        self.actual = actual
        self.error_type = error_type

    def __str__(self) -> str:
        text = f"{self.limit_name} exceeded: limit {self.limit} {self.unit}"
        if self.actual is not None:
            text += f", got {self.actual} {self.unit}"
        return text


class TransportError(RunwireError):
    """The connection could not be opened or used (refused, reset, TLS failure...)."""


class ConnectionClosed(TransportError):
    """The connection is closed.

    Attributes:
        by: ``"peer"`` when the other side closed or reset it, ``"local"`` when we did.
        reason: why, in words (may be empty).
    """

    def __init__(self, by: Literal["peer", "local"], reason: str = "") -> None:
        super().__init__(by, reason)
        self.by: Literal["peer", "local"] = by
        self.reason = reason

    def __str__(self) -> str:
        text = f"connection closed by {self.by}"
        return f"{text}: {self.reason}" if self.reason else text


class Timeout(TransportError):
    """An operation did not finish within its time bound.

    Attributes:
        timeout_s: the bound that ran out, in seconds.
        operation: what was being waited for (``"receive"``, ``"connect to host:port"``...).
    """

    def __init__(self, timeout_s: float, operation: str) -> None:
        super().__init__(timeout_s, operation)
        self.timeout_s = timeout_s
        self.operation = operation

    def __str__(self) -> str:
        return f"{self.operation} timed out after {self.timeout_s:g} s"


class AuthenticationError(RunwireError):
    """Authentication failed: CurveZMQ keys, TLS certificate or password rejected."""


class RemoteError(RunwireError):
    """The peer answered with the protocol's error object.

    Attributes:
        error: the error object exactly as received (never re-shaped).
    """

    def __init__(self, error: Mapping[str, Any]) -> None:
        super().__init__(error)
        self.error = error

    def __str__(self) -> str:
        kind = next(
            (self.error[k] for k in ("code", "type", "error_type", "name") if k in self.error),
            None,
        )
        message = self.error.get("message")
        if kind is not None and isinstance(message, str):
            return f"remote error {kind}: {message}"
        if isinstance(message, str):
            return f"remote error: {message}"
        text = json.dumps(self.error, sort_keys=True, default=repr)
        if len(text) > 200:
            text = text[:197] + "..."
        return f"remote error: {text}"
