"""What the conformance suite reads from a family manifest (``schemas/<family>/protocol.json``).

The manifest names every interface and operation of a family, and every operation's stable
conformance id prefix (``jobs/dispatcher/follow_stream``); case ids extend those prefixes and
the coverage report is counted against them. Message schemas are given here as absolute
URIs, ready for :meth:`runwire.runtime.validation.SchemaRegistry.validator`.

The code generator has its own, richer model of manifests (``runwire.codegen.model``); the
suite does not import the generator at run time, so this module reads the few fields it needs
after checking the whole manifest against ``meta/protocol.schema.json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from runwire.runtime.errors import ProtocolError, SchemaError
from runwire.runtime.validation import SCHEMA_BASE_URI, SchemaRegistry

__all__ = ["InterfaceInfo", "Manifest", "OperationInfo", "load_packaged_manifest"]

MANIFEST_META_SCHEMA = "meta/protocol.schema.json"
MESSAGE_ROLES = ("request", "reply", "ack", "item", "terminator", "message")


@dataclass(frozen=True)
class OperationInfo:
    """One operation of a manifest.

    Attributes:
        conformance_id: ``family/interface/operation``; every case id of the operation starts
            with it.
        interface, name, pattern, summary: as the manifest says (``pattern`` is
            ``request-reply``, ``request-stream``, ``event``, ...).
        errors: the error types the operation may return.
        request, reply, ack, item, terminator, message: absolute schema URIs of the
            operation's messages; None where its pattern has no such message.
        extension: True for an operation the original system lacks.
        topic: the topic of a ``publish`` operation (``workflow``), else None.
    """

    conformance_id: str
    interface: str
    name: str
    pattern: str
    summary: str
    errors: tuple[str, ...] = ()
    request: str | None = None
    reply: str | None = None
    ack: str | None = None
    item: str | None = None
    terminator: str | None = None
    message: str | None = None
    extension: bool = False
    topic: str | None = None


@dataclass(frozen=True)
class InterfaceInfo:
    """One interface (server role) of a manifest.

    Attributes:
        name: the second segment of case ids (``dispatcher`` in ``jobs/dispatcher/...``).
        title: one line.
        transport: the manifest's transport object (``kind``, ``default_port``, ...).
        request: absolute URI of the union of every request, when the manifest gives one.
        malformed_reply: absolute URI of what a malformed request gets, when given.
        operations: the interface's operations, in manifest order.
    """

    name: str
    title: str
    transport: Mapping[str, Any]
    operations: tuple[OperationInfo, ...]
    request: str | None = None
    malformed_reply: str | None = None

    @property
    def transport_kind(self) -> str:
        """``jsonlines``, ``zmq``, ``websocket``, ... (the manifest's ``transport.kind``)."""
        return str(self.transport.get("kind", ""))

    @property
    def default_port(self) -> int | None:
        """The transport's default port, if the manifest gives one."""
        port = self.transport.get("default_port")
        return port if isinstance(port, int) else None

    @property
    def extra_sockets(self) -> tuple[str, ...]:
        """Names of the transport's sockets after the first (``publish`` of a ZeroMQ
        interface whose ``sockets`` are ``requests`` then ``publish``). The first socket is
        the interface's own target; each further one is a target of its own, by name."""
        sockets = self.transport.get("sockets")
        if not isinstance(sockets, list):
            return ()
        return tuple(str(s["name"]) for s in sockets[1:] if isinstance(s, Mapping) and "name" in s)

    def topics(self) -> dict[str, OperationInfo]:
        """{topic: operation} of the interface's ``publish`` operations."""
        return {op.topic: op for op in self.operations if op.topic is not None}

    @property
    def max_message_bytes(self) -> int:
        """Largest message the interface accepts, in bytes (1 MiB when not given)."""
        value = self.transport.get("max_message_bytes")
        return value if isinstance(value, int) else 1 << 20


@dataclass(frozen=True)
class Manifest:
    """A family manifest, reduced to what conformance cases and coverage need."""

    family: str
    title: str
    interfaces: tuple[InterfaceInfo, ...]

    @classmethod
    def from_json(cls, document: Mapping[str, Any], registry: SchemaRegistry) -> Manifest:
        """Check `document` against the manifest meta-schema and read it.

        Raises:
            SchemaError: the manifest does not match ``meta/protocol.schema.json`` (the message
                names the JSON pointer and the rule).
        """
        try:
            registry.validator(MANIFEST_META_SCHEMA).check(document)
        except ProtocolError as exc:
            raise SchemaError(f"family manifest is not valid: {exc.message}") from exc
        family = str(document["family"])
        base = f"{SCHEMA_BASE_URI}{family}/"

        def uri(ref: Any) -> str | None:
            return f"{base}{ref}" if isinstance(ref, str) else None

        interfaces = []
        for entry in document["interfaces"]:
            operations = tuple(
                OperationInfo(
                    conformance_id=op["conformance_id"],
                    interface=entry["name"],
                    name=op["name"],
                    pattern=op["pattern"],
                    summary=op["summary"],
                    errors=tuple(op.get("errors", ())),
                    extension=bool(op.get("extension", False)),
                    topic=op.get("topic") if isinstance(op.get("topic"), str) else None,
                    **{role: uri(op.get(role)) for role in MESSAGE_ROLES},
                )
                for op in entry["operations"]
            )
            interfaces.append(
                InterfaceInfo(
                    name=entry["name"],
                    title=entry["title"],
                    transport=entry["transport"],
                    operations=operations,
                    request=uri(entry.get("request")),
                    malformed_reply=uri(entry.get("malformed_reply")),
                )
            )
        return cls(family=family, title=str(document["title"]), interfaces=tuple(interfaces))

    def interface(self, name: str) -> InterfaceInfo:
        """The interface called `name`. Raises KeyError (naming the known ones) if none."""
        for interface in self.interfaces:
            if interface.name == name:
                return interface
        known = ", ".join(i.name for i in self.interfaces)
        raise KeyError(f"family {self.family!r} has no interface {name!r} (it has: {known})")

    def target_names(self) -> dict[str, tuple[InterfaceInfo, str | None]]:
        """Every name a ``--target`` may use: {name: (interface, socket)}. An interface's
        own name (socket None), and each of its extra sockets (see
        :attr:`InterfaceInfo.extra_sockets`) unless an interface has that name."""
        names: dict[str, tuple[InterfaceInfo, str | None]] = {
            i.name: (i, None) for i in self.interfaces
        }
        for interface in self.interfaces:
            for socket in interface.extra_sockets:
                names.setdefault(socket, (interface, socket))
        return names

    def operations(self) -> Iterator[OperationInfo]:
        """Every operation, in manifest order."""
        for interface in self.interfaces:
            yield from interface.operations

    def operation(self, conformance_id: str) -> OperationInfo:
        """The operation with this conformance id. Raises KeyError if none."""
        for operation in self.operations():
            if operation.conformance_id == conformance_id:
                return operation
        raise KeyError(f"family {self.family!r} has no operation {conformance_id!r}")

    def operation_of(self, case_id: str) -> OperationInfo | None:
        """The operation whose conformance id is the longest prefix (by segments) of
        `case_id`, or None."""
        best: OperationInfo | None = None
        for operation in self.operations():
            prefix = operation.conformance_id
            if case_id.startswith(prefix + "/") and (
                best is None or len(prefix) > len(best.conformance_id)
            ):
                best = operation
        return best


def load_packaged_manifest(family: str, registry: SchemaRegistry) -> Manifest:
    """The manifest shipped in ``runwire.schemas`` for `family`.

    Raises:
        SchemaError: no such manifest, not JSON, or not valid against the meta-schema.
    """
    resource = files("runwire.schemas").joinpath(family, "protocol.json")
    try:
        document = json.loads(resource.read_bytes())
    except FileNotFoundError:
        raise SchemaError(f"no manifest schemas/{family}/protocol.json is packaged") from None
    except (OSError, ValueError) as exc:
        raise SchemaError(f"schemas/{family}/protocol.json is not readable JSON: {exc}") from exc
    if not isinstance(document, Mapping):
        raise SchemaError(f"schemas/{family}/protocol.json is not a JSON object")
    return Manifest.from_json(document, registry)
