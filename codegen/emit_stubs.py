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

#: Transport kinds and patterns the templates implement; others are refused at codegen time.
SUPPORTED_TRANSPORTS = ("jsonlines",)
SUPPORTED_PATTERNS = ("request-reply", "request-stream")


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


def _operation(tree: SchemaTree, op: Operation) -> dict[str, Any]:
    if op.pattern not in SUPPORTED_PATTERNS:
        raise SchemaError(f"{op.conformance_id}: pattern {op.pattern!r} has no template yet")
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
        "operations": [_operation(tree, op) for op in iface.operations],
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
    context = {"family": family, "interfaces": interfaces}
    return {
        "client.py": env.get_template("client.py.j2").render(header=header_py, **context),
        "server.py": env.get_template("server.py.j2").render(header=header_py, **context),
        "__init__.py": env.get_template("init.py.j2").render(header=header_py, **context),
        "reference.md": env.get_template("reference.md.j2").render(
            header=header_md,
            definitions=[_definition_doc(tree, rel, name) for rel, name in definitions],
            **context,
        ),
    }
