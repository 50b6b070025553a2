"""Tests for runtime/state/stream.py: `ReplyStream` with the packaged jobs schemas."""

from __future__ import annotations

from typing import Any

import pytest

from runwire.runtime.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from runwire.runtime.state.stream import Part, ReplyStream
from runwire.runtime.validation import SchemaRegistry

DISPATCHER = "jobs/dispatcher.json#/$defs/"
AGENT = "jobs/agent.json#/$defs/"

PACKETS = [{"packet": 0, "data": {"line": "a"}}, {"packet": 1, "data": None}]
RESULT = {"result": [1, 2]}
ACK = {"harp": 1, "stream_result": True}
AUTH_ERROR = {
    "harp": 1,
    "error": {"type": "auth_error", "message": "unknown user or wrong password"},
}


def follow_stream(*, outbound: bool = False) -> ReplyStream:
    registry = SchemaRegistry.from_package()
    return ReplyStream(
        item=registry.validator(DISPATCHER + "StreamPacket"),
        terminator=registry.validator(DISPATCHER + "FollowStreamTerminator"),
        outbound=outbound,
    )


def agent_call(*, outbound: bool = False) -> ReplyStream:
    registry = SchemaRegistry.from_package()
    return ReplyStream(
        item=registry.validator(AGENT + "AgentStreamItem"),
        terminator=registry.validator(AGENT + "AgentTerminator"),
        ack=registry.validator(AGENT + "AgentAck"),
        outbound=outbound,
    )


def error_class(outbound: bool) -> type[ProtocolError]:
    return LocalProtocolError if outbound else RemoteProtocolError


# --- dispatcher follow_stream: items, then one terminator ----------------------------------


@pytest.mark.parametrize(
    "terminator",
    [
        RESULT,
        {"result": None},
        {"cancelled": True},
        {"exception": {"type": "ValueError", "message": "boom"}},
        {"error": {"type": "invalid_jobid", "message": "no job with this ID"}},
    ],
)
def test_items_then_terminator(terminator: dict[str, Any]) -> None:
    stream = follow_stream()
    assert not stream.done and stream.messages == 0
    assert [stream.receive(p) for p in PACKETS] == [Part.ITEM, Part.ITEM]
    assert not stream.done
    assert stream.receive(terminator) is Part.TERMINATOR
    assert stream.done
    assert stream.messages == 3
    stream.receive_eof()  # a terminated stream may end


def test_terminator_alone() -> None:
    stream = follow_stream()
    assert stream.receive(RESULT) is Part.TERMINATOR
    assert stream.done


@pytest.mark.parametrize("outbound", [False, True])
@pytest.mark.parametrize("late", [PACKETS[0], RESULT])
def test_message_after_terminator(outbound: bool, late: dict[str, Any]) -> None:
    stream = follow_stream(outbound=outbound)
    stream.receive(PACKETS[0])
    stream.receive(RESULT)
    with pytest.raises(error_class(outbound)) as info:
        stream.receive(late)
    assert type(info.value) is error_class(outbound)
    assert "after the stream's terminator" in info.value.message
    assert stream.done


@pytest.mark.parametrize("outbound", [False, True])
@pytest.mark.parametrize("sent", [0, 1, 2])
def test_eof_before_terminator(outbound: bool, sent: int) -> None:
    stream = follow_stream(outbound=outbound)
    for packet in PACKETS[:sent]:
        stream.receive(packet)
    with pytest.raises(error_class(outbound)) as info:
        stream.receive_eof()
    assert type(info.value) is error_class(outbound)
    assert f"after {sent} message(s) without a terminator" in info.value.message


@pytest.mark.parametrize("outbound", [False, True])
def test_invalid_packet_names_the_violation(outbound: bool) -> None:
    stream = follow_stream(outbound=outbound)
    stream.receive(PACKETS[0])
    with pytest.raises(error_class(outbound)) as info:
        stream.receive({"packet": -1, "data": 1})
    error = info.value
    assert type(error) is error_class(outbound)
    assert "message 2 is neither item nor terminator" in error.message
    # the item schema's own complaint: where, what and which keyword
    assert "StreamPacket" in error.message
    assert "at /packet" in error.message
    assert "minimum" in error.message
    assert "FollowStreamTerminator" in error.message
    assert not stream.done


@pytest.mark.parametrize(
    "message",
    [
        {"packet": 0},  # data missing
        {"packet": 0, "data": 1, "extra": 2},
        {"continue": True},  # read_stream's terminator, not follow_stream's
        {"no_result": True},  # never a stream terminator
        {"result": 1, "packet": 1},
        [],
        "packet",
        None,
    ],
)
def test_not_item_nor_terminator(message: Any) -> None:
    with pytest.raises(RemoteProtocolError, match="neither item nor terminator"):
        follow_stream().receive(message)


# --- agent call: ack, items, terminator ----------------------------------------------------


def test_agent_ack_items_result() -> None:
    stream = agent_call()
    assert stream.receive(ACK) is Part.ACK
    assert stream.receive({"stream": {"line": 1}}) is Part.ITEM
    assert stream.receive({"stream": None}) is Part.ITEM
    assert stream.receive({"result": None}) is Part.TERMINATOR
    assert stream.done and stream.messages == 4


def test_agent_ack_then_error_mid_stream() -> None:
    stream = agent_call()
    assert stream.receive({"harp": 1, "stream_result": False}) is Part.ACK
    timeout = {"harp": 1, "error": {"type": "timeout", "message": "maximum execution time"}}
    assert stream.receive(timeout) is Part.TERMINATOR
    assert stream.done


@pytest.mark.parametrize(
    "error",
    [
        AUTH_ERROR,
        {
            "harp": 1,
            "error": {
                "type": "no_such_procedure",
                "message": "no such procedure",
                "data": {"procedure": "nope"},
            },
        },
    ],
)
def test_agent_error_in_place_of_ack(error: dict[str, Any]) -> None:
    stream = agent_call()
    assert stream.receive(error) is Part.TERMINATOR
    assert stream.done
    with pytest.raises(RemoteProtocolError, match="after the stream's terminator"):
        stream.receive(ACK)


def test_agent_result_in_place_of_ack() -> None:
    # the agent terminator may replace the ack, whichever kind it is
    assert agent_call().receive({"result": 1}) is Part.TERMINATOR


@pytest.mark.parametrize("outbound", [False, True])
def test_agent_item_before_ack(outbound: bool) -> None:
    stream = agent_call(outbound=outbound)
    with pytest.raises(error_class(outbound)) as info:
        stream.receive({"stream": 1})
    assert type(info.value) is error_class(outbound)
    assert "message 1 is neither ack nor terminator" in info.value.message
    assert "AgentAck" in info.value.message


def test_agent_second_ack_is_an_error() -> None:
    stream = agent_call()
    stream.receive(ACK)
    with pytest.raises(RemoteProtocolError, match="message 2 is neither item nor terminator"):
        stream.receive(ACK)


def test_agent_ack_with_extra_key_is_an_error() -> None:
    with pytest.raises(RemoteProtocolError, match="neither ack nor terminator"):
        agent_call().receive({"harp": 1, "stream_result": True, "extra": 1})


def test_agent_eof_after_ack() -> None:
    stream = agent_call()
    stream.receive(ACK)
    with pytest.raises(RemoteProtocolError, match="after 1 message"):
        stream.receive_eof()
