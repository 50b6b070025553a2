"""Sans-I/O JSON-lines framing: one JSON value per ``\\n``-terminated UTF-8 line.

Feed bytes with :meth:`JsonLinesDecoder.receive_data` / :meth:`JsonLinesDecoder.receive_eof`,
then call :meth:`JsonLinesDecoder.next_event` until it returns :data:`NEED_DATA` (read more)
or :data:`EOF` (the peer finished cleanly at a line boundary). Outgoing values go through
:func:`encode_line`; write the returned bytes as they are.

Wire rules: a line ends at ``\\n``; one trailing ``\\r`` is stripped (``\\r\\n`` accepted); a
line must be strict JSON (RFC 8259: valid UTF-8, no ``NaN``/``Infinity``); an empty line is a
parse error. Error types follow the jobs protocol: ``"parse_error"`` for a line that is not
JSON, ``"invalid_request"`` for a stream ending in the middle of a line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, NoReturn, TypeAlias

from ..errors import InvalidState, LimitExceeded, LocalProtocolError, RemoteProtocolError
from .strict_json import STRICT_DECODER

__all__ = [
    "EOF",
    "NEED_DATA",
    "Event",
    "JsonLinesDecoder",
    "Line",
    "Sentinel",
    "encode_line",
]


class Sentinel:
    """A named marker returned by `next_event`; compare with ``is``."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA: Final = Sentinel("NEED_DATA")
"""No complete line is buffered: call `receive_data` (or `receive_eof`) before asking again."""

EOF: Final = Sentinel("EOF")
"""The peer ended the stream at a line boundary; every later `next_event` returns EOF too."""


@dataclass(frozen=True)
class Line:
    """One decoded line.

    Attributes:
        value: the decoded JSON value (dict, list, str, int, float, bool or None).
        raw: the line's bytes, without the ``\\n`` (and without a stripped ``\\r``).
    """

    value: Any
    raw: bytes


Event: TypeAlias = Line | Sentinel
"""What `JsonLinesDecoder.next_event` returns: a `Line`, `NEED_DATA` or `EOF`."""


# One decoder (strict_json's) and two encoders for every line: ``json.loads`` / ``json.dumps``
# with options build a new decoder or encoder on each call, which costs more than the work
# itself on a short line. Both are stateless between calls.
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_SORTED_ENCODER: Final = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, sort_keys=True
)


class JsonLinesDecoder:
    """Incremental JSON-lines decoder holding at most `max_line_bytes` of an incomplete line.

    A line that is not JSON raises but is consumed, so decoding may go on with the next line.
    A line over the limit and a stream ending mid-line are fatal: every later `next_event`
    raises the same error and further data is dropped.
    """

    def __init__(self, max_line_bytes: int = 1 << 20) -> None:
        """Args:
        max_line_bytes: largest accepted line in bytes, excluding the ``\\n``.
        """
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be at least 1")
        self.max_line_bytes: Final = max_line_bytes
        self._buffer = bytearray()
        self._scanned = 0  # bytes at the buffer's start already known to hold no b"\n"
        self._tail = 0  # bytes after the buffer's last b"\n" (the incomplete line)
        self._overflow: LimitExceeded | None = None
        self._eof = False
        self._error: LimitExceeded | RemoteProtocolError | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and held but not yet returned as a `Line` (0 after a fatal error)."""
        return len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the peer; then call `next_event` until NEED_DATA.

        Raises:
            InvalidState: called after `receive_eof`.
        """
        if self._eof:
            raise InvalidState("receive_data() after receive_eof()")
        if self._error is not None or self._overflow is not None:
            return
        self._buffer += data
        newline = data.rfind(b"\n")
        self._tail = len(data) - newline - 1 if newline >= 0 else self._tail + len(data)
        if self._tail > self.max_line_bytes:
            # Keep the complete lines before the oversize tail; fail once they are consumed.
            self._overflow = LimitExceeded(
                "max_line_bytes", self.max_line_bytes, "bytes", actual=self._tail
            )
            del self._buffer[len(self._buffer) - self._tail :]
            self._tail = 0

    def receive_eof(self) -> None:
        """Record that the peer will send nothing more; then call `next_event`."""
        self._eof = True

    def next_event(self) -> Event:
        """The next complete line, NEED_DATA, or EOF.

        Returns:
            `Line` (call again: more lines may be buffered), `NEED_DATA` (read more bytes
            first), or `EOF` (clean end of stream at a line boundary).

        Raises:
            RemoteProtocolError: error_type ``"parse_error"``: the line is not JSON (the line
                is consumed; decoding may continue); error_type ``"invalid_request"``: the
                stream ended inside a line (fatal).
            LimitExceeded: a line is longer than `max_line_bytes` (fatal).
        """
        if self._error is not None:
            raise self._error
        newline = self._buffer.find(b"\n", self._scanned)
        if newline < 0:
            self._scanned = len(self._buffer)
            if self._overflow is not None:
                self._fail(self._overflow)
            if not self._eof:
                return NEED_DATA
            if self._buffer:
                self._fail(
                    RemoteProtocolError(
                        f"stream ended inside a line after {len(self._buffer)} bytes: "
                        f"request incomplete or too long",
                        error_type="invalid_request",
                    )
                )
            return EOF
        raw = bytes(self._buffer[:newline])
        del self._buffer[: newline + 1]
        self._scanned = 0
        if len(raw) > self.max_line_bytes:
            self._fail(
                LimitExceeded("max_line_bytes", self.max_line_bytes, "bytes", actual=len(raw))
            )
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        return Line(_decode(raw), raw)

    def _fail(self, error: LimitExceeded | RemoteProtocolError) -> NoReturn:
        self._error = error
        self._buffer.clear()
        self._scanned = self._tail = 0
        raise error


def _decode(raw: bytes) -> Any:
    """Strict JSON value of one line; raises RemoteProtocolError (parse_error)."""
    if not raw:
        raise RemoteProtocolError("empty line", error_type="parse_error")
    try:
        return STRICT_DECODER.decode(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"line is not UTF-8: {exc}", error_type="parse_error") from exc
    except (ValueError, RecursionError) as exc:
        raise RemoteProtocolError(f"line is not JSON: {exc}", error_type="parse_error") from exc


def encode_line(value: Any, *, sort_keys: bool = False) -> bytes:
    """One JSON line for `value`: compact, UTF-8 (non-ASCII kept as is), ``\\n``-terminated.

    Args:
        value: a JSON-serialisable value (dict, list, str, int, float, bool, None).
        sort_keys: sort object keys (for byte-stable output).

    Returns:
        The bytes to write, ending with ``b"\\n"``.

    Raises:
        LocalProtocolError: error_type ``"encode_error"``: `value` is not serialisable as
            strict JSON (NaN/Infinity, unknown types, circular references, lone surrogates).
    """
    try:
        text = (_SORTED_ENCODER if sort_keys else _ENCODER).encode(value)
        return text.encode("utf-8") + b"\n"
    except (TypeError, ValueError, RecursionError) as exc:
        raise LocalProtocolError(
            f"value cannot be encoded as JSON: {exc}", error_type="encode_error"
        ) from exc
