"""Tests for runtime/codec/command.py: the command envelope, decoded and encoded without sockets."""

from __future__ import annotations

import json

import pytest

from runwire.runtime.codec.command import (
    EnvelopeError,
    decode_request,
    encode_error,
    encode_reply,
    json_type_name,
)

LIMIT = 1024


def test_a_good_request_decodes_with_its_id() -> None:
    request = decode_request(
        b'{"command": "hold", "args": {"tasks": ["1/*"]}, "id": "r1"}', max_message_bytes=LIMIT
    )
    assert request.command == "hold"
    assert request.request_id == "r1"
    assert request.message["args"] == {"tasks": ["1/*"]}


def test_a_non_string_id_is_not_echoed() -> None:
    request = decode_request(b'{"command": "x", "args": {}, "id": 7}', max_message_bytes=LIMIT)
    assert request.request_id is None


@pytest.mark.parametrize(
    ("frame", "code", "text"),
    [
        (b"x" * (LIMIT + 1), "too_large", "over the limit of 1024 bytes"),
        (b"\xff\xfe", "parse_error", "not UTF-8"),
        (b"{", "parse_error", "Expecting property name enclosed in double quotes"),
        (b"", "parse_error", "Expecting value"),
        (b"[1, 2]", "invalid_request", "must be a JSON object, not array"),
        (b"[]", "invalid_request", "not array"),
        (b'"api"', "invalid_request", "not string"),
        (b"null", "invalid_request", "not null"),
        (b'{"args": {}}', "invalid_request", "Request missing field 'command'"),
        (b'{"command": 1, "args": {}}', "invalid_request", "must be a string, not number"),
        (b'{"command": "api"}', "invalid_request", "Request missing field 'args'"),
        (b'{"command": "api", "args": {"x": NaN}}', "parse_error", "NaN is not valid JSON"),
        (b'{"command": "api", "args": {"x": -Infinity}}', "parse_error", "-Infinity"),
        (b'{"command": "api", "args": {"x": 1e999}}', "parse_error", "out of the range"),
    ],
)
def test_every_bad_frame_names_its_code(frame: bytes, code: str, text: str) -> None:
    with pytest.raises(EnvelopeError) as caught:
        decode_request(frame, max_message_bytes=LIMIT)
    assert caught.value.code == code == caught.value.error_type
    assert text in caught.value.message


def test_the_id_is_kept_for_errors_after_the_object_is_read() -> None:
    with pytest.raises(EnvelopeError) as caught:
        decode_request(b'{"command": "api", "id": "r9"}', max_message_bytes=LIMIT)
    assert caught.value.request_id == "r9"


def test_a_deeply_nested_frame_is_a_parse_error_not_a_crash() -> None:
    frame = b"[" * 100000 + b"]" * 100000
    with pytest.raises(EnvelopeError) as caught:
        decode_request(frame, max_message_bytes=1 << 20)
    assert caught.value.code == "parse_error"


def test_replies_are_the_original_shapes_plus_id() -> None:
    assert json.loads(encode_reply(True)) == {"data": True}
    assert json.loads(encode_reply([1], "r1")) == {"data": [1], "id": "r1"}
    assert json.loads(encode_error("boom")) == {"error": {"message": "boom"}}
    assert json.loads(encode_error("boom", "internal_error", "r2")) == {
        "error": {"message": "boom", "code": "internal_error"},
        "id": "r2",
    }


def test_unserialisable_data_raises_for_the_caller_to_answer() -> None:
    with pytest.raises(ValueError):
        encode_reply(float("nan"))
    with pytest.raises(TypeError):
        encode_reply({1, 2})


def test_json_type_names() -> None:
    assert [json_type_name(v) for v in (True, None, 1, 1.5, "a", [], {})] == [
        "boolean",
        "null",
        "number",
        "number",
        "string",
        "array",
        "object",
    ]
