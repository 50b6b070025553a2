"""client.py, server.py, __init__.py and reference.md, rendered from Jinja2 templates.

The templates read a plain context built here from the typed model (:mod:`.model`) and the
schemas; they never see raw manifest JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jinja2

from runwire.codegen.model import Family, Interface, Operation, SchemaRef, SchemaTree
from runwire.runtime.errors import SchemaError

#: Transport kinds the templates implement, and the patterns each supports; others are
#: refused at codegen time.
SUPPORTED_PATTERNS: Mapping[str, tuple[str, ...]] = {
    "jsonlines": ("request-reply", "request-stream"),
    "zmq": ("request-reply", "publish"),
}
SUPPORTED_TRANSPORTS = tuple(SUPPORTED_PATTERNS)

#: Template file prefix per transport kind: ``client.py.j2`` for jsonlines,
#: ``zmq_client.py.j2`` for zmq. A family's interfaces must share one kind.
TEMPLATE_PREFIX: Mapping[str, str] = {"jsonlines": "", "zmq": "zmq_"}

#: Conventional topics of the publish pattern that the zmq runtime treats specially: the
#: liveness heartbeat (published periodically) and the stop notice (published by ``stop``).
HEARTBEAT_TOPIC = "heartbeat"
SHUTDOWN_TOPIC = "shutdown"

#: Keys of the const-tagged command envelope (zmq transport): the request's arguments and
#: the success reply's data. Each must be a ``$ref`` to a named definition, so handlers and
#: client methods get a typed model.
#: Attributes of the zmq client bases and sync facade that a command's method must not
#: shadow (server handlers are ``handle_<name>`` and cannot collide with the server base).
ZMQ_RESERVED_NAMES = frozenset(
    {
        "address", "build_request", "client", "close", "COMMANDS", "context", "ERROR_REPLY_URI",
        "exchange", "header", "host", "port", "registry", "request", "resets", "security",
        "send_request_ids", "timeout_s", "max_reply_bytes",
    }
)  # fmt: skip

ENVELOPE_ARGS = "args"
ENVELOPE_DATA = "data"


def environment() -> jinja2.Environment:
    """The Jinja2 environment: templates from the package, strict undefined, no autoescape."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("runwire.codegen", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["pyrepr"] = _pyrepr
    return env


def _pyrepr(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(_pyrepr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def _definition(tree: SchemaTree, ref: SchemaRef) -> Mapping[str, Any]:
    definition: Mapping[str, Any] = tree.documents[ref.file]["$defs"][ref.name]
    return definition


def union_members(tree: SchemaTree, ref: SchemaRef) -> list[str]:
    """Names of the definitions a ``oneOf`` definition unites (empty if it is no union)."""
    branches = _definition(tree, ref).get("oneOf", [])
    return [b["$ref"].rsplit("/", 1)[1] for b in branches if isinstance(b, Mapping) and "$ref" in b]


def transport_summary(transport: Mapping[str, Any]) -> str:
    """One line describing a transport, for docstrings and the reference."""
    kind = transport["kind"]
    if kind == "zmq":
        security = "CurveZMQ" if transport["security"] == "curve" else "no security"
        parts = []
        for socket in transport["sockets"]:
            frames = {
                "json": "one JSON frame each way",
                "topic-json": "a topic frame then a JSON frame",
                "multipart-command": "command, JSON and optional time frames",
            }[socket["framing"]]
            parts.append(f"{socket['client']} → {socket['server']} `{socket['name']}` ({frames})")
        return f"ZeroMQ over TCP: {'; '.join(parts)}; {security}"
    if kind == "jsonlines":
        layer = "TLS (1.2 or newer)" if transport["security"] == "tls" else "plain TCP"
        if transport["security"] == "tls" and transport.get("min_tls_version") == "1.3":
            layer = "TLS 1.3"
        per = (
            "one request per connection"
            if transport["requests_per_connection"] == "one"
            else "many requests per connection"
        )
        auth = (
            ", password authentication in band"
            if transport["authentication"] == "password-in-band"
            else ""
        )
        return f"JSON lines over {layer}, {per}{auth}"
    return str(kind)


def _envelope_part(tree: SchemaTree, ref: SchemaRef, key: str, where: str) -> str:
    """The definition name a command envelope's ``key`` property refers to."""
    prop = _definition(tree, ref).get("properties", {}).get(key)
    target = prop.get("$ref") if isinstance(prop, Mapping) else None
    if not isinstance(target, str) or "#/$defs/" not in target:
        raise SchemaError(
            f"{where}: {ref.name} must have a property {key!r} that is a $ref to a named "
            "definition (the zmq templates type handlers and client methods with it)"
        )
    return target.rsplit("/", 1)[1]


def _zmq_operation(tree: SchemaTree, op: Operation) -> dict[str, Any]:
    """Extra context of an operation of a zmq interface."""
    if op.pattern == "publish":
        assert op.message is not None and op.topic is not None
        return {"message": op.message.name, "message_uri": op.message.uri, "topic": op.topic}
    if "property" not in op.recognised_by:
        raise SchemaError(f"{op.conformance_id}: zmq requests must be const-tagged (property)")
    assert op.request is not None and op.reply is not None
    args = _envelope_part(tree, op.request, ENVELOPE_ARGS, op.conformance_id)
    data = _envelope_part(tree, op.reply, ENVELOPE_DATA, op.conformance_id)
    args_def = tree.documents[op.request.file]["$defs"].get(args)
    if args_def is None:
        raise SchemaError(f"{op.conformance_id}: {args} must be defined in {op.request.file}")
    if op.name in ZMQ_RESERVED_NAMES:
        raise SchemaError(
            f"{op.conformance_id}: operation name {op.name!r} would shadow a client attribute "
            f"(reserved: {', '.join(sorted(ZMQ_RESERVED_NAMES))})"
        )
    return {
        "handler": f"handle_{op.name}",
        "command": op.recognised_by["const"],
        "args": args,
        "data": data,
        "args_required": bool(args_def.get("required")),
    }


def _operation(tree: SchemaTree, op: Operation, kind: str) -> dict[str, Any]:
    if op.pattern not in SUPPORTED_PATTERNS[kind]:
        raise SchemaError(
            f"{op.conformance_id}: pattern {op.pattern!r} has no template yet for {kind!r}"
        )
    context: dict[str, Any] = {
        "name": op.name,
        "summary": op.summary,
        "pattern": op.pattern,
        "extension": op.extension,
        "errors": list(op.errors),
        "conformance_id": op.conformance_id,
        "key": op.recognition_key,
        "tag": (op.recognised_by["property"], op.recognised_by["const"])
        if "property" in op.recognised_by
        else None,
        "recognition": _recognition(op.recognised_by),
        "messages": [(role, ref.name) for role, ref in op.refs()],
    }
    for role in ("request", "reply", "ack", "item", "terminator"):
        ref = getattr(op, role)
        context[role] = ref.name if ref else None
        context[role + "_uri"] = ref.uri if ref else None
    if op.reply is not None:
        members = union_members(tree, op.reply)
        context["reply_members"] = members
        context["reply_return"] = " | ".join(f"models.{n}" for n in [op.reply.name, *members])
    if op.pattern == "request-stream":
        assert op.item is not None and op.terminator is not None
        parts = ([op.ack.name] if op.ack else []) + [op.item.name, op.terminator.name]
        context["yield_type"] = " | ".join(f"models.{n}" for n in parts)
        returns = parts + union_members(tree, op.terminator)
        context["yield_return"] = " | ".join(f"models.{n}" for n in returns)
    if kind == "zmq":
        context.update(_zmq_operation(tree, op))
    return context


def _recognition(recognised_by: Mapping[str, Any]) -> str:
    if "key" in recognised_by:
        return f"key `{recognised_by['key']}`"
    if "property" in recognised_by:
        return f"`{recognised_by['property']}` = `{json.dumps(recognised_by['const'])}`"
    if "frame" in recognised_by:
        return f"frame {recognised_by['frame']} = `{recognised_by['const']}`"
    return f"topic `{recognised_by['topic']}`"


def _interface(tree: SchemaTree, iface: Interface) -> dict[str, Any]:
    kind = iface.transport["kind"]
    if kind not in SUPPORTED_TRANSPORTS:
        raise SchemaError(f"{iface.family}/{iface.name}: transport {kind!r} has no template yet")
    operations = [_operation(tree, op, kind) for op in iface.operations]
    topics = [op["topic"] for op in operations if op["pattern"] == "publish"]
    return {
        "name": iface.name,
        "title": iface.title,
        "description": iface.description,
        "class_name": iface.class_name,
        "transport": dict(iface.transport),
        "transport_summary": transport_summary(iface.transport),
        "request_uri": iface.request.uri if iface.request else None,
        "request_name": iface.request.name if iface.request else None,
        "malformed_uri": iface.malformed_reply.uri if iface.malformed_reply else None,
        "malformed_name": iface.malformed_reply.name if iface.malformed_reply else None,
        "error_uri": iface.error_reply.uri if iface.error_reply else None,
        "error_name": iface.error_reply.name if iface.error_reply else None,
        "operations": operations,
        "commands": [op for op in operations if op["pattern"] == "request-reply"],
        "topics": [op for op in operations if op["pattern"] == "publish"],
        "heartbeat_topic": HEARTBEAT_TOPIC if HEARTBEAT_TOPIC in topics else None,
        "shutdown_topic": SHUTDOWN_TOPIC if SHUTDOWN_TOPIC in topics else None,
        "port_range": tuple(iface.transport["port_range"])
        if "port_range" in iface.transport
        else None,
    }


def _type_text(schema: Mapping[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return f"[`{name}`](#{name.lower()})"
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    if "oneOf" in schema:
        return " or ".join(_type_text(s) for s in schema["oneOf"])
    types = schema.get("type")
    if types is None:
        return "any"
    text = " or ".join(types) if isinstance(types, list) else str(types)
    if text == "array" and isinstance(schema.get("items"), Mapping):
        text = "array of " + _type_text(schema["items"])
    bounds = [
        f"{label} {schema[key]}"
        for key, label in (
            ("minimum", "≥"),
            ("maximum", "≤"),
            ("minLength", "length ≥"),
            ("maxLength", "length ≤"),
        )
        if key in schema
    ]
    if "pattern" in schema:
        bounds.append(f"matches `{schema['pattern']}`")
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def _definition_doc(tree: SchemaTree, rel: str, name: str) -> dict[str, Any]:
    definition = tree.documents[rel]["$defs"][name]
    properties = definition.get("properties", {})
    required = set(definition.get("required", []))
    rows = [
        {
            "name": key,
            "type": _type_text(sub),
            "required": key in required,
            "default": f"`{json.dumps(sub['default'])}`" if "default" in sub else "—",
            "description": sub.get("description", "").replace("|", "\\|").replace("\n", " "),
        }
        for key, sub in properties.items()
    ]
    is_object = "properties" in definition or definition.get("type") == "object"
    return {
        "name": name,
        "uri": SchemaRef(rel, name).uri,
        "description": definition["description"],
        "shape": None if rows else _type_text(definition),
        "properties": rows,
        "closed": (definition.get("additionalProperties") is False) if is_object else None,
        "open_reason": definition.get("x-open-reason", ""),
        "examples": [json.dumps(e, ensure_ascii=False) for e in definition["examples"]],
    }


def emit_stubs(
    tree: SchemaTree,
    family: Family,
    definitions: list[tuple[str, str]],
    header_py: str,
    header_md: str,
) -> dict[str, str]:
    """Render the family's stub files: relative path → text (Python not yet formatted)."""
    env = environment()
    interfaces = [_interface(tree, iface) for iface in family.interfaces]
    kinds = sorted({iface.transport["kind"] for iface in family.interfaces})
    if len(kinds) != 1:
        raise SchemaError(
            f"{family.name}: interfaces of several transports ({', '.join(kinds)}) in one family "
            "have no template yet"
        )
    prefix = TEMPLATE_PREFIX[kinds[0]]
    context = {"family": family, "interfaces": interfaces}
    return {
        "client.py": env.get_template(f"{prefix}client.py.j2").render(header=header_py, **context),
        "server.py": env.get_template(f"{prefix}server.py.j2").render(header=header_py, **context),
        "__init__.py": env.get_template(f"{prefix}init.py.j2").render(header=header_py, **context),
        "reference.md": env.get_template("reference.md.j2").render(
            header=header_md,
            definitions=[_definition_doc(tree, rel, name) for rel, name in definitions],
            **context,
        ),
    }
