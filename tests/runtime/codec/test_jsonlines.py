"""Tests for runtime/codec/jsonlines.py: feed bytes, assert events and outgoing bytes."""

from __future__ import annotations

import math
from typing import Any

import pytest

from runwire.runtime.codec.jsonlines import (
    EOF,
    NEED_DATA,
    Event,
    JsonLinesDecoder,
    Line,
    encode_line,
)
from runwire.runtime.errors import (
    InvalidState,
    LimitExceeded,
    LocalProtocolError,
    RemoteProtocolError,
)


def drain(decoder: JsonLinesDecoder, limit: int = 100) -> list[Event]:
    """Events up to and including the first NEED_DATA or EOF."""
    events: list[Event] = []
    for _ in range(limit):
        events.append(decoder.next_event())
        if events[-1] is NEED_DATA or events[-1] is EOF:
            return events
    raise AssertionError("decoder never asked for data")


def test_sentinel_reprs() -> None:
    assert repr(NEED_DATA) == "NEED_DATA"
    assert repr(EOF) == "EOF"


def test_empty_decoder_needs_data_then_eof() -> None:
    decoder = JsonLinesDecoder()
    assert decoder.next_event() is NEED_DATA
    decoder.receive_eof()
    assert decoder.next_event() is EOF
    assert decoder.next_event() is EOF


def test_line_split_across_chunks() -> None:
    decoder = JsonLinesDecoder()
    decoder.receive_data(b'{"op":')
    assert decoder.next_event() is NEED_DATA
    assert decoder.buffered_bytes == 6
    decoder.receive_data(b'"call"}\n')
    assert drain(decoder) == [Line({"op": "call"}, b'{"op":"call"}'), NEED_DATA]
    assert decoder.buffered_bytes == 0


def test_two_lines_in_one_write_are_visible_in_buffered_bytes() -> None:
    decoder = JsonLinesDecoder()
    decoder.receive_data(b"1\n[2]\n")
    assert decoder.next_event() == Line(1, b"1")
    assert decoder.buffered_bytes == 4
    assert decoder.next_event() == Line([2], b"[2]")
    assert decoder.buffered_bytes == 0


def test_crlf_is_accepted() -> None:
    decoder = JsonLinesDecoder()
    decoder.receive_data(b'"a"\r\n')
    assert decoder.next_event() == Line("a", b'"a"')


def test_utf8_value() -> None:
    decoder = JsonLinesDecoder()
    decoder.receive_data('"h\u00e9"\n'.encode())
    event = decoder.next_event()
    assert isinstance(event, Line)
    assert event.value == "h\u00e9"


@pytest.mark.parametrize(
    "raw",
    [
        *(b"\n", b"\r\n", b"{\n", b"NaN\n", b"[Infinity]\n", b"-Infinity\n", b'"\xff"\n'),
        *(b"1 2\n", b"[1e999]\n", b'{"n": -2E400}\n'),
    ],
)
def test_parse_error_consumes_the_line_only(raw: bytes) -> None:
    decoder = JsonLinesDecoder()
    decoder.receive_data(raw + b"true\n")
    with pytest.raises(RemoteProtocolError) as caught:
        decoder.next_event()
    assert caught.value.error_type == "parse_error"
    assert decoder.next_event() == Line(True, b"true")


def test_deep_nesting_is_a_parse_error() -> None:
    decoder = JsonLinesDecoder()
    decoder.receive_data(b"[" * 100_000 + b"\n")
    with pytest.raises(RemoteProtocolError) as caught:
        decoder.next_event()
    assert caught.value.error_type == "parse_error"


def test_eof_inside_a_line_is_invalid_request() -> None:
    decoder = JsonLinesDecoder()
    decoder.receive_data(b'1\n{"op":')
    decoder.receive_eof()
    assert decoder.next_event() == Line(1, b"1")
    with pytest.raises(RemoteProtocolError) as caught:
        decoder.next_event()
    assert caught.value.error_type == "invalid_request"
    assert "incomplete or too long" in str(caught.value)
    with pytest.raises(RemoteProtocolError):  # fatal: stays failed
        decoder.next_event()


def test_data_after_eof_is_invalid_state() -> None:
    decoder = JsonLinesDecoder()
    decoder.receive_eof()
    with pytest.raises(InvalidState):
        decoder.receive_data(b"1\n")


def test_oversize_partial_line_fails_without_buffering_it() -> None:
    decoder = JsonLinesDecoder(max_line_bytes=8)
    decoder.receive_data(b"1\n12345")
    decoder.receive_data(b"6789")  # 9 bytes without a newline
    assert decoder.buffered_bytes == 2  # only the complete line is kept
    assert decoder.next_event() == Line(1, b"1")
    with pytest.raises(LimitExceeded) as caught:
        decoder.next_event()
    error = caught.value
    assert (error.limit_name, error.limit, error.unit, error.actual) == (
        "max_line_bytes",
        8,
        "bytes",
        9,
    )
    decoder.receive_data(b"0" * 100)  # dropped
    assert decoder.buffered_bytes == 0
    with pytest.raises(LimitExceeded):
        decoder.next_event()


def test_oversize_complete_line_fails() -> None:
    decoder = JsonLinesDecoder(max_line_bytes=8)
    decoder.receive_data(b'"1234567890"\n')
    with pytest.raises(LimitExceeded):
        decoder.next_event()


def test_line_at_the_limit_is_accepted() -> None:
    decoder = JsonLinesDecoder(max_line_bytes=8)
    decoder.receive_data(b'"123456"')
    decoder.receive_data(b"\n")
    assert decoder.next_event() == Line("123456", b'"123456"')


def test_byte_by_byte_feeding() -> None:
    decoder = JsonLinesDecoder()
    events: list[Event] = []
    for byte in b'{"a":[1,2]}\n"x"\n':
        decoder.receive_data(bytes([byte]))
        events.extend(e for e in drain(decoder) if e is not NEED_DATA)
    assert [e.value for e in events if isinstance(e, Line)] == [{"a": [1, 2]}, "x"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"op": "call", "args": [1, 2.5, None]}, b'{"op":"call","args":[1,2.5,null]}\n'),
        ("h\u00e9\n", '"h\u00e9\\n"\n'.encode()),
        ([], b"[]\n"),
    ],
)
def test_encode_line(value: Any, expected: bytes) -> None:
    assert encode_line(value) == expected


def test_encode_line_sort_keys() -> None:
    assert encode_line({"b": 1, "a": 2}, sort_keys=True) == b'{"a":2,"b":1}\n'
    assert encode_line({"b": 1, "a": 2}) == b'{"b":1,"a":2}\n'


@pytest.mark.parametrize("value", [math.nan, {"x": math.inf}, {1, 2}, object(), "\ud800"])
def test_encode_line_rejects_non_json(value: Any) -> None:
    with pytest.raises(LocalProtocolError) as caught:
        encode_line(value)
    assert caught.value.error_type == "encode_error"


def test_encode_then_decode_round_trips() -> None:
    value = {"job": "j-1", "result": {"ok": True, "data": ["\u2028", -0.5, 10**20]}}
    decoder = JsonLinesDecoder()
    decoder.receive_data(encode_line(value))
    event = decoder.next_event()
    assert isinstance(event, Line)
    assert event.value == value
