"""The reply side of a request-stream operation: optional ack, items, exactly one terminator.

:class:`ReplyStream` is fed the messages a peer sends after a request (already decoded) and
says what each one is, enforcing the order the manifest's ``request-stream`` pattern gives:
an acknowledgement first when the operation has one (a terminator may come in its place, as
harpd sends an error instead of its ack), then any number of items, then exactly one
terminator and nothing after it. Used by generated clients (inbound) and servers (outbound).
"""

from __future__ import annotations

import enum
from typing import Any

from runwire.runtime.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from runwire.runtime.validation import MessageValidator

__all__ = ["Part", "ReplyStream"]


class Part(enum.Enum):
    """What one message of a reply stream is."""

    ACK = "ack"
    ITEM = "item"
    TERMINATOR = "terminator"


class ReplyStream:
    """Classifies and orders the messages of one request-stream reply.

    Args:
        item: validator of an item message.
        terminator: validator of the terminator message.
        ack: validator of the acknowledgement, or None when the operation has none.
        outbound: True when we are the sender (violations raise LocalProtocolError),
            False when the peer is (RemoteProtocolError).
    """

    def __init__(
        self,
        *,
        item: MessageValidator,
        terminator: MessageValidator,
        ack: MessageValidator | None = None,
        outbound: bool = False,
    ) -> None:
        self._item = item
        self._terminator = terminator
        self._ack = ack
        self._outbound = outbound
        self._count = 0
        self.done = False

    @property
    def messages(self) -> int:
        """How many messages were received so far."""
        return self._count

    def _error(self, message: str, error_type: str = "bad_protocol") -> ProtocolError:
        cls = LocalProtocolError if self._outbound else RemoteProtocolError
        return cls(message, error_type=error_type)

    def receive(self, message: Any) -> Part:
        """Classify the next message.

        Returns:
            :attr:`Part.ACK`, :attr:`Part.ITEM` or :attr:`Part.TERMINATOR`. After a
            terminator, :attr:`done` is True.

        Raises:
            RemoteProtocolError (LocalProtocolError when outbound): a message after the
                terminator, or a message that is none of what may come at this point; the
                error shows the schema violation against the expected terminator.
        """
        if self.done:
            raise self._error("message after the stream's terminator")
        expect_ack = self._count == 0 and self._ack is not None
        self._count += 1
        first_kind, first = (Part.ACK, self._ack) if expect_ack else (Part.ITEM, self._item)
        assert first is not None
        if first.is_valid(message):
            return first_kind
        if self._terminator.is_valid(message):
            self.done = True
            return Part.TERMINATOR
        reasons = []
        for validator in (first, self._terminator):
            try:
                validator.check(message, outbound=self._outbound)
            except ProtocolError as exc:
                reasons.append(f"not {validator.uri}: {exc.message}")
        raise self._error(
            f"message {self._count} is neither {first_kind.value} nor terminator ("
            + "; ".join(reasons)
            + ")"
        )

    def receive_eof(self) -> None:
        """The peer closed (or we stopped sending).

        Raises:
            RemoteProtocolError (LocalProtocolError when outbound): no terminator was sent.
        """
        if not self.done:
            raise self._error(f"stream ended after {self._count} message(s) without a terminator")
