"""Tests for runtime/codec/strict_json.py: RFC 8259 numbers only, nothing Python adds."""

from __future__ import annotations

import sys

import pytest

from runwire.runtime.codec.strict_json import loads


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("NaN", "NaN is not valid JSON"),
        ("[Infinity]", "Infinity is not valid JSON"),
        ('{"a": -Infinity}', "-Infinity is not valid JSON"),
        ("1e999", "out of the range of a double"),
        ("[-1.5e400]", "out of the range of a double"),
        ("{", "Expecting property name"),
    ],
)
def test_what_is_not_strict_json_is_a_value_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        loads(text)


def test_every_number_a_double_or_an_int_holds_decodes_exactly() -> None:
    assert loads("[1e308, -2.5e-300, 0.1, -0]") == [1e308, -2.5e-300, 0.1, 0]
    assert loads(str(10**40)) == 10**40  # integers are exact, never floats
    assert loads(repr(sys.float_info.max)) == sys.float_info.max


def test_bytes_must_be_utf8() -> None:
    assert loads('{"k": "é"}'.encode()) == {"k": "é"}
    with pytest.raises(UnicodeDecodeError):
        loads(b'"\xff"')
