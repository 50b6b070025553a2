"""What runs inside the child process of one sync procedure call, and helpers both sides share.

The agent (:mod:`runwire.reference_server.jobs.execution`) starts one child per call of a plain
(not async) procedure with :func:`run_in_child` as its target. The child leaves the agent's
process group (so the agent can kill it together with anything it started), imports the
procedure's module again, calls the procedure and writes one line per event to a pipe:

- ``["item", <value>]``: one stream value;
- ``["result", <value>]``: the return value (end result of a streaming procedure);
- ``["exception", {"type", "message", "data"}]``: the procedure raised;
- ``["error", {"type", "message"}]``: an operational error (``invalid_message`` for a value
  that is not JSON or too large, ``system_error`` when the procedure cannot be loaded).

A result, exception or error line is the last. The child then exits. The pipe gives
back-pressure: a child streaming faster than the caller reads blocks on its write.

Keep this module's imports light: every child imports it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import IO, Any, Final

from .procedures import ModuleSource, Result, resolve

__all__ = ["MAX_EXCEPTION_MESSAGE_CHARS", "NotJson", "encode_value", "exception_info"]

MAX_EXCEPTION_MESSAGE_CHARS: Final = 16384
"""Exception messages longer than this (in characters) are cut, with a marker."""


class NotJson(ValueError):
    """A value a procedure produced cannot be sent: not strict JSON, or too large."""


def encode_value(value: Any, max_bytes: int) -> str:
    """The compact JSON text of ``value``, checked against the size limit.

    Args:
        value: a stream value or result.
        max_bytes: largest allowed encoding, in bytes (UTF-8).

    Raises:
        NotJson: ``value`` is not strict JSON (NaN, infinities, sets, objects, circular or
            too deep structures, non-string keys other than int/float/bool/None), or its
            encoding is longer than ``max_bytes``.
    """
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise NotJson(f"value is not JSON-serialisable: {exc}") from None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise NotJson("value holds a lone surrogate, which is not valid UTF-8") from None
    if size > max_bytes:
        raise NotJson(f"value is {size} bytes of JSON, more than the limit of {max_bytes}")
    return text


def exception_info(exc: BaseException) -> dict[str, Any]:
    """The wire form of a procedure's exception (harpd's shape, reference/jobs.md 2.2).

    Returns:
        ``{"type": class name, "message": str(exc), "data": {"class": class name,
        "module": class module}}``; the message is cut at :data:`MAX_EXCEPTION_MESSAGE_CHARS`.
    """
    cls = type(exc)
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not lose the exception
        message = f"<unprintable {cls.__name__}>"
    if len(message) > MAX_EXCEPTION_MESSAGE_CHARS:
        message = message[:MAX_EXCEPTION_MESSAGE_CHARS] + " [cut]"
    message = message.encode("utf-8", "replace").decode("utf-8")
    return {
        "type": cls.__name__,
        "message": message,
        "data": {"class": cls.__qualname__, "module": cls.__module__},
    }


class _Pipe:
    """Writes event lines to the parent; stops after the final one."""

    def __init__(self, out: IO[bytes], max_bytes: int) -> None:
        self._out = out
        self._max_bytes = max_bytes
        self.finished = False

    def _write(self, kind: str, payload_json: str) -> None:
        try:
            self._out.write(f'["{kind}",{payload_json}]\n'.encode())
            self._out.flush()
        except OSError:  # the agent stopped listening (call cancelled): nothing left to do
            os._exit(1)

    def item(self, value: Any) -> bool:
        """Send one stream value; False (after sending the error) if it cannot be sent."""
        try:
            text = encode_value(value, self._max_bytes)
        except NotJson as exc:
            self.error("invalid_message", f"stream value not sent: {exc}")
            return False
        self._write("item", text)
        return True

    def result(self, value: Any) -> None:
        try:
            text = encode_value(value, self._max_bytes)
        except NotJson as exc:
            self.error("invalid_message", f"result not sent: {exc}")
            return
        self._write("result", text)
        self.finished = True

    def exception(self, exc: BaseException) -> None:
        self._write("exception", json.dumps(exception_info(exc)))
        self.finished = True

    def error(self, error_type: str, message: str) -> None:
        self._write("error", json.dumps({"type": error_type, "message": message}))
        self.finished = True


def _stream(pipe: _Pipe, values: Iterator[Any]) -> None:
    result: Any = None
    try:
        while True:
            try:
                value = next(values)
            except StopIteration as stop:
                result = stop.value
                break
            if isinstance(value, Result):
                result = value.value
                break
            if not pipe.item(value):
                return
    finally:
        close = getattr(values, "close", None)
        if close is not None:
            close()
    pipe.result(result)


def run_in_child(
    source: ModuleSource,
    qualname: str,
    streaming: bool,
    args: list[Any],
    kwargs: dict[str, Any],
    channel: Any,
    max_message_bytes: int,
) -> None:
    """Child-process entry point: call one procedure and report on ``channel``.

    Args:
        source, qualname: where the procedure is (see :class:`~.procedures.Procedure`).
        streaming: iterate the call's return value and send each value.
        args, kwargs: the call's arguments (from the request's list or object).
        channel: the write end of a ``multiprocessing.Pipe(duplex=False)``.
        max_message_bytes: largest JSON encoding of one value, in bytes.
    """
    if hasattr(os, "setpgid"):
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)  # own process group: the agent kills it and its children at once
    out = os.fdopen(os.dup(channel.fileno()), "wb")
    channel.close()
    pipe = _Pipe(out, max_message_bytes)
    with out:
        try:
            function = resolve(source, qualname)
        except BaseException as exc:
            pipe.error(
                "system_error", f"cannot load procedure {qualname} from {source}: {exc!r}"[:4096]
            )
            return
        try:
            returned = function(*args, **kwargs)
            if streaming:
                _stream(pipe, iter(returned))
            else:
                pipe.result(returned)
        except BaseException as exc:
            if not pipe.finished:
                pipe.exception(exc)
