"""Tests for runtime/errors.py: the exception tree and its messages."""

from __future__ import annotations

import pytest

from runwire.runtime.errors import (
    AuthenticationError,
    ConnectionClosed,
    InvalidState,
    LimitExceeded,
    LocalProtocolError,
    ProtocolError,
    RemoteError,
    RemoteProtocolError,
    RunwireError,
    SchemaError,
    Timeout,
    TransportError,
)


@pytest.mark.parametrize(
    ("cls", "parent"),
    [
        (SchemaError, RunwireError),
        (ProtocolError, RunwireError),
        (LocalProtocolError, ProtocolError),
        (RemoteProtocolError, ProtocolError),
        (InvalidState, RunwireError),
        (LimitExceeded, RunwireError),
        (TransportError, RunwireError),
        (ConnectionClosed, TransportError),
        (Timeout, TransportError),
        (AuthenticationError, RunwireError),
        (RemoteError, RunwireError),
    ],
)
def test_tree(cls: type[Exception], parent: type[Exception]) -> None:
    assert issubclass(cls, parent)


def test_limit_exceeded_is_not_a_protocol_error() -> None:
    assert not issubclass(LimitExceeded, ProtocolError)


def test_protocol_error_carries_type_and_violation() -> None:
    error = RemoteProtocolError("line is not JSON", error_type="parse_error")
    assert error.error_type == "parse_error"
    assert error.violation is None
    assert str(error) == "parse_error: line is not JSON"


def test_limit_exceeded_str() -> None:
    error = LimitExceeded("max_line_bytes", 64, "bytes", actual=100)
    assert (error.limit_name, error.limit, error.unit) == ("max_line_bytes", 64, "bytes")
    assert error.error_type == "limit_exceeded"
    assert str(error) == "max_line_bytes exceeded: limit 64 bytes, got 100 bytes"
    assert str(LimitExceeded("max_wait_s", 1.5, "seconds")) == (
        "max_wait_s exceeded: limit 1.5 seconds"
    )


def test_connection_closed_data() -> None:
    error = ConnectionClosed("peer", "end of stream")
    assert error.by == "peer"
    assert error.reason == "end of stream"
    assert str(error) == "connection closed by peer: end of stream"
    assert str(ConnectionClosed("local")) == "connection closed by local"


def test_timeout_data() -> None:
    error = Timeout(0.25, "receive")
    assert (error.timeout_s, error.operation) == (0.25, "receive")
    assert str(error) == "receive timed out after 0.25 s"


def test_remote_error_keeps_object_intact() -> None:
    payload = {"code": "no_such_job", "message": "job 7 not found", "extra": [1]}
    error = RemoteError(payload)
    assert error.error is payload
    assert str(error) == "remote error no_such_job: job 7 not found"
    assert str(RemoteError({"message": "boom"})) == "remote error: boom"
    assert str(RemoteError({"b": 1, "a": 2})) == 'remote error: {"a": 2, "b": 1}'
    assert len(str(RemoteError({"x": "y" * 1000}))) < 250
