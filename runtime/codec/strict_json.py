"""Strict JSON decoding (RFC 8259), shared by every codec.

Python's ``json`` module accepts ``NaN``, ``Infinity`` and ``-Infinity``, and turns a number
too large for a double (``1e999``) into infinity, which no JSON encoder can send on again
(runwire's encoders refuse it, others write ``null`` or ``Infinity``). :func:`loads` refuses
all of these with ``ValueError``, so a peer's out-of-range number is a parse error at the
edge instead of a value that changes or breaks later.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

__all__ = ["STRICT_DECODER", "loads"]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of the range of a double")
    return value


STRICT_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
"""One decoder for every message (``json.loads`` with options builds one per call)."""


def loads(text: str | bytes) -> Any:
    """Decode one JSON text strictly.

    Raises:
        UnicodeDecodeError: ``text`` is bytes that are not UTF-8.
        ValueError: not JSON (``json.JSONDecodeError``), ``NaN``/``Infinity``, or a number
            out of the range of a double.
        RecursionError: nested too deeply.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return STRICT_DECODER.decode(text)
