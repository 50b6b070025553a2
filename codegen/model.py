"""The typed intermediate model the emitters read: families, interfaces, operations.

A :class:`SchemaTree` is every JSON document under a ``schemas/`` folder, keyed by its path
relative to that folder. :func:`load_families` reads each family's manifest
(``<family>/protocol.json``), checks it against ``meta/protocol.schema.json`` and turns it into
:class:`Family` objects. Emitters never read raw manifest JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from runwire.runtime.errors import SchemaError
from runwire.runtime.validation import SCHEMA_BASE_URI

META_SCHEMA_PATH = "meta/protocol.schema.json"
MANIFEST_NAME = "protocol.json"


@dataclass(frozen=True)
class SchemaTree:
    """Every JSON document of a schemas folder.

    Attributes:
        root: the folder.
        documents: relative POSIX path (``"jobs/dispatcher.json"``) → parsed JSON.
        raw: relative path → the file's bytes, for hashing.
    """

    root: Path
    documents: Mapping[str, Any]
    raw: Mapping[str, bytes]

    @classmethod
    def load(cls, root: Path) -> SchemaTree:
        """Read every ``*.json`` file below ``root``.

        Raises:
            SchemaError: a file is not valid JSON (names the file, line and column).
        """
        documents: dict[str, Any] = {}
        raw: dict[str, bytes] = {}
        for path in sorted(root.rglob("*.json")):
            rel = path.relative_to(root).as_posix()
            data = path.read_bytes()
            try:
                documents[rel] = json.loads(data)
            except json.JSONDecodeError as exc:
                raise SchemaError(
                    f"{rel}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}"
                ) from exc
            raw[rel] = data
        return cls(root=root, documents=documents, raw=raw)

    def is_manifest(self, rel: str) -> bool:
        """True for a family manifest (``<family>/protocol.json``)."""
        return rel.count("/") == 1 and rel.endswith("/" + MANIFEST_NAME)

    def schema_paths(self) -> list[str]:
        """Relative paths of the schema documents (everything but manifests), sorted."""
        return [rel for rel in sorted(self.documents) if not self.is_manifest(rel)]

    def uri(self, rel: str) -> str:
        """The ``$id`` a document at ``rel`` must have."""
        return SCHEMA_BASE_URI + rel


@dataclass(frozen=True)
class SchemaRef:
    """A reference to one definition: ``file`` (relative to schemas/) and definition ``name``."""

    file: str
    name: str

    @property
    def uri(self) -> str:
        """Absolute URI of the definition."""
        return f"{SCHEMA_BASE_URI}{self.file}#/$defs/{self.name}"


_REF_RE = re.compile(r"^(?P<file>[a-z][a-z0-9_]*\.json)#/\$defs/(?P<name>[A-Z][A-Za-z0-9]*)$")


@dataclass(frozen=True)
class Operation:
    """One operation of an interface, as its manifest entry says.

    ``recognised_by`` is the manifest's recognition object (``{"key": ...}``,
    ``{"property": ..., "const": ...}``, ``{"frame": ..., "const": ...}`` or ``{"topic": ...}``).
    Message fields not used by the pattern are None.
    """

    name: str
    summary: str
    pattern: str
    extension: bool
    recognised_by: Mapping[str, Any]
    errors: tuple[str, ...]
    conformance_id: str
    request: SchemaRef | None = None
    reply: SchemaRef | None = None
    ack: SchemaRef | None = None
    item: SchemaRef | None = None
    terminator: SchemaRef | None = None
    message: SchemaRef | None = None
    direction: str | None = None
    topic: str | None = None

    @property
    def recognition_key(self) -> str | None:
        """The key whose presence names this operation, for key-recognised requests."""
        value = self.recognised_by.get("key")
        return value if isinstance(value, str) else None

    def refs(self) -> Iterator[tuple[str, SchemaRef]]:
        """(role, reference) for every message of the operation."""
        for role in ("request", "reply", "ack", "item", "terminator", "message"):
            ref = getattr(self, role)
            if ref is not None:
                yield role, ref


@dataclass(frozen=True)
class Interface:
    """One server role of a family (``jobs/dispatcher``)."""

    family: str
    name: str
    title: str
    description: str
    schema: str
    class_name: str
    transport: Mapping[str, Any]
    operations: tuple[Operation, ...]
    request: SchemaRef | None = None
    malformed_reply: SchemaRef | None = None
    error_reply: SchemaRef | None = None


@dataclass(frozen=True)
class Family:
    """A protocol family: its manifest, interfaces and the schema files it uses."""

    name: str
    title: str
    description: str
    version: int
    modelled_on: Mapping[str, str]
    interfaces: tuple[Interface, ...]
    schema_files: tuple[str, ...] = field(default=())

    def operations(self) -> Iterator[tuple[Interface, Operation]]:
        """Every (interface, operation) pair, in manifest order."""
        for interface in self.interfaces:
            for operation in interface.operations:
                yield interface, operation


def _ref(family: str, value: str | None, where: str) -> SchemaRef | None:
    if value is None:
        return None
    match = _REF_RE.match(value)
    if match is None:
        raise SchemaError(f"{where}: not a schema reference: {value!r}")
    return SchemaRef(file=f"{family}/{match['file']}", name=match["name"])


def load_families(tree: SchemaTree) -> list[Family]:
    """Read and check every family manifest of ``tree``.

    Raises:
        SchemaError: a manifest does not match the meta-schema, names a schema file or
            definition that does not exist, or repeats an operation or conformance id. The
            message names the manifest file and the JSON pointer.
    """
    meta = tree.documents.get(META_SCHEMA_PATH)
    if meta is None:
        raise SchemaError(f"{META_SCHEMA_PATH}: the manifest meta-schema is missing")
    validator = jsonschema.Draft202012Validator(meta)
    families = []
    for rel in sorted(tree.documents):
        if not tree.is_manifest(rel):
            continue
        manifest = tree.documents[rel]
        errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
        if errors:
            error = jsonschema.exceptions.best_match(errors)
            pointer = "/" + "/".join(str(p) for p in error.absolute_path)
            raise SchemaError(f"{rel}: {pointer}: {error.validator}: {error.message}")
        families.append(_family(tree, rel, manifest))
    return families


def _family(tree: SchemaTree, rel: str, manifest: Mapping[str, Any]) -> Family:
    name = manifest["family"]
    folder = rel.rsplit("/", 1)[0]
    if folder != name:
        raise SchemaError(f"{rel}: /family: {name!r} must match its folder {folder!r}")
    interfaces = []
    seen_ids: set[str] = set()
    for i, entry in enumerate(manifest["interfaces"]):
        where = f"{rel}: /interfaces/{i}"
        operations = []
        for j, op in enumerate(entry["operations"]):
            op_where = f"{where}/operations/{j}"
            expected = f"{name}/{entry['name']}/{op['name']}"
            if op["conformance_id"] != expected:
                raise SchemaError(f"{op_where}/conformance_id: expected {expected!r}")
            if expected in seen_ids:
                raise SchemaError(f"{op_where}: operation {expected!r} appears twice")
            seen_ids.add(expected)
            operations.append(
                Operation(
                    name=op["name"],
                    summary=op["summary"],
                    pattern=op["pattern"],
                    extension=bool(op.get("extension", False)),
                    recognised_by=op["recognised_by"],
                    errors=tuple(op["errors"]),
                    conformance_id=op["conformance_id"],
                    direction=op.get("direction"),
                    topic=op.get("topic"),
                    **{
                        role: _ref(name, op.get(role), f"{op_where}/{role}")
                        for role in ("request", "reply", "ack", "item", "terminator", "message")
                    },
                )
            )
        interfaces.append(
            Interface(
                family=name,
                name=entry["name"],
                title=entry["title"],
                description=entry["description"],
                schema=f"{name}/{entry['schema']}",
                class_name=entry["class_name"],
                transport=entry["transport"],
                operations=tuple(operations),
                request=_ref(name, entry.get("request"), f"{where}/request"),
                malformed_reply=_ref(
                    name, entry.get("malformed_reply"), f"{where}/malformed_reply"
                ),
                error_reply=_ref(name, entry.get("error_reply"), f"{where}/error_reply"),
            )
        )
    family = Family(
        name=name,
        title=manifest["title"],
        description=manifest["description"],
        version=manifest["version"],
        modelled_on=manifest["modelled_on"],
        interfaces=tuple(interfaces),
        schema_files=tuple(p for p in tree.schema_paths() if p.startswith(name + "/")),
    )
    _check_refs(tree, rel, family)
    return family


def _check_refs(tree: SchemaTree, rel: str, family: Family) -> None:
    for interface in family.interfaces:
        if interface.schema not in tree.documents:
            raise SchemaError(f"{rel}: interface {interface.name!r}: no file {interface.schema}")
        refs = [
            ("request", interface.request),
            ("malformed_reply", interface.malformed_reply),
            ("error_reply", interface.error_reply),
        ]
        refs += [
            (f"{op.name}.{role}", ref) for op in interface.operations for role, ref in op.refs()
        ]
        for role, ref in refs:
            if ref is None:
                continue
            document = tree.documents.get(ref.file)
            if document is None or ref.name not in document.get("$defs", {}):
                raise SchemaError(
                    f"{rel}: {interface.name}.{role}: no definition {ref.file}#/$defs/{ref.name}"
                )
