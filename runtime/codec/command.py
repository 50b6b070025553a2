"""Sans-I/O codec of the command envelope: one frame of UTF-8 JSON each way.

The workflow family (modelled on Cylc 8's WorkflowRuntimeServer, ``reference/workflow.md``
section 1) frames a request as ``{"command": str, "args": {...}, "meta"?: {...}}`` and a
reply as ``{"data": ...}`` or ``{"error": {"message": str}}``. runwire adds, additively, an
optional request ``id`` echoed in the reply and an error ``code``.

:func:`decode_request` turns one received frame into a :class:`CommandRequest` or raises
:class:`EnvelopeError` naming the error ``code`` and a cylc-like ``message``; the caller
answers with :func:`encode_error` and keeps serving (the original's defect 1: a non-object
request killed its server thread). :func:`encode_reply` and :func:`encode_error` build the
reply frame, :func:`encode_request` a client's request frame. No sockets, no asyncio.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from runwire.runtime.codec import strict_json
from runwire.runtime.errors import RemoteProtocolError

__all__ = [
    "CommandRequest",
    "EnvelopeError",
    "decode_request",
    "encode_error",
    "encode_reply",
    "encode_request",
    "json_type_name",
]


class EnvelopeError(RemoteProtocolError):
    """A request frame that is not a usable command envelope.

    Attributes:
        code: the error code to answer with (``parse_error``, ``invalid_request``,
            ``too_large``); also :attr:`error_type`.
        request_id: the request's ``id`` when it could be read (echoed in the error reply).
    """

    def __init__(self, message: str, code: str, request_id: str | None = None) -> None:
        super().__init__(message, error_type=code)
        self.code = code
        self.request_id = request_id


@dataclass(frozen=True)
class CommandRequest:
    """A decoded request envelope whose shape is usable: an object with a string ``command``.

    ``args`` is not checked here beyond its presence (the command's schema judges it).

    Attributes:
        command: the command name, exactly as sent.
        message: the whole decoded envelope.
        request_id: the ``id`` extension when it is a string, else None.
    """

    command: str
    message: Mapping[str, Any]
    request_id: str | None


_JSON_TYPES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "boolean"),
    (type(None), "null"),
    ((int, float), "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
)


def json_type_name(value: Any) -> str:
    """The JSON type name of a decoded value (``array``, ``string``, ...)."""
    for kinds, name in _JSON_TYPES:
        if isinstance(value, kinds):
            return name
    return type(value).__name__


def decode_request(frame: bytes, *, max_message_bytes: int) -> CommandRequest:
    """Decode one request frame.

    Checks, in this order: size, UTF-8 and JSON, object, ``command`` present and a string,
    ``args`` present (its content is the command schema's business).

    Args:
        frame: the request frame's bytes.
        max_message_bytes: largest frame accepted, in bytes.

    Raises:
        EnvelopeError: with code ``too_large`` (over the bound), ``parse_error`` (not UTF-8
            JSON; the message is the decoder's, as the original answers) or
            ``invalid_request`` (not an object, ``command`` missing or not a string, ``args``
            missing: "Request missing field 'args'" as in the original).
    """
    if len(frame) > max_message_bytes:
        raise EnvelopeError(
            f"Request of {len(frame)} bytes is over the limit of {max_message_bytes} bytes",
            "too_large",
        )
    try:
        message = strict_json.loads(frame)
    except UnicodeDecodeError as exc:
        raise EnvelopeError(f"Request is not UTF-8: {exc}", "parse_error") from exc
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise EnvelopeError(str(exc), "parse_error") from exc
    if not isinstance(message, dict):
        raise EnvelopeError(
            f"Request must be a JSON object, not {json_type_name(message)}", "invalid_request"
        )
    raw_id = message.get("id")
    request_id = raw_id if isinstance(raw_id, str) else None
    if "command" not in message:
        raise EnvelopeError("Request missing field 'command'", "invalid_request", request_id)
    command = message["command"]
    if not isinstance(command, str):
        raise EnvelopeError(
            f"Request field 'command' must be a string, not {json_type_name(command)}",
            "invalid_request",
            request_id,
        )
    if "args" not in message:
        raise EnvelopeError("Request missing field 'args'", "invalid_request", request_id)
    if not isinstance(message["args"], dict):
        raise EnvelopeError(
            f"Request field 'args' must be an object, not {json_type_name(message['args'])}",
            "invalid_request",
            request_id,
        )
    return CommandRequest(command=command, message=message, request_id=request_id)


_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
"""One encoder for every frame (``json.dumps`` with options builds a new one per call)."""


def _dumps(value: Any) -> bytes:
    return _ENCODER.encode(value).encode()


def encode_request(message: Mapping[str, Any]) -> bytes:
    """The frame of a request envelope (compact UTF-8 JSON).

    Raises:
        TypeError, ValueError: ``message`` is not JSON-serialisable (NaN and infinities
            included).
    """
    return _dumps(message)


def encode_reply(data: Any, request_id: str | None = None) -> bytes:
    """The frame ``{"data": data}`` (with ``"id"`` when the request had one).

    Raises:
        TypeError, ValueError: ``data`` is not JSON-serialisable (NaN and infinities included).
    """
    reply: dict[str, Any] = {"data": data}
    if request_id is not None:
        reply["id"] = request_id
    return _dumps(reply)


def encode_error(message: str, code: str | None = None, request_id: str | None = None) -> bytes:
    """The frame ``{"error": {"message": message, "code": code}}`` (``id`` when known)."""
    error: dict[str, Any] = {"message": message}
    if code is not None:
        error["code"] = code
    reply: dict[str, Any] = {"error": error}
    if request_id is not None:
        reply["id"] = request_id
    return _dumps(reply)
