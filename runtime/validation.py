"""Validator registry: schema `$id` (plus JSON pointer) → compiled validator.

Schemas are JSON Schema 2020-12 files, each with an absolute `$id` under
:data:`SCHEMA_BASE_URI`, referring to each other by relative `$ref`. Nothing is ever fetched
from the network: a `$ref` outside the loaded documents is a :class:`SchemaError`.

Two validators judge every message and must agree (DESIGN.md, "Schema conventions"):
`jsonschema_rs` on the hot path (:meth:`MessageValidator.is_valid`) and `jsonschema` as the
reference oracle and for readable errors (:meth:`MessageValidator.violations`). Neither asserts
`format` (annotation only, as 2020-12 specifies by default).

Typical use::

    validator = SchemaRegistry.from_package().validator("jobs/dispatcher.json#/$defs/CallRequest")
    validator.check(message)                  # inbound: raises RemoteProtocolError
    validator.check(reply, outbound=True)     # outbound: raises LocalProtocolError
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import quote, unquote, urldefrag, urljoin

import jsonschema
import jsonschema_rs
import referencing
import referencing.exceptions
from jsonschema.exceptions import (
    ValidationError,
    best_match,
)
from referencing.jsonschema import DRAFT202012

from .errors import LocalProtocolError, RemoteProtocolError, SchemaError

__all__ = [
    "SCHEMA_BASE_URI",
    "MessageValidator",
    "SchemaRegistry",
    "SchemaViolation",
]

SCHEMA_BASE_URI: Final = "https://runwire.dev/schemas/"
"""Base of every schema `$id`; relative refs given to :meth:`SchemaRegistry.validator` resolve
against it."""

_SCHEMA_PACKAGE: Final = "runwire.schemas"
_FRAGMENT_SAFE: Final = "/~!$&'()*+,;=:@"


def escape_token(token: object) -> str:
    """One RFC 6901 reference token: ``~`` → ``~0``, ``/`` → ``~1``."""
    return str(token).replace("~", "~0").replace("/", "~1")


def to_pointer(tokens: Iterable[object]) -> str:
    """RFC 6901 JSON pointer for `tokens` ("" for the root)."""
    return "".join("/" + escape_token(token) for token in tokens)


def _parse_fragment_pointer(fragment: str) -> list[str]:
    """Tokens of a URI-fragment JSON pointer such as ``/$defs/A~1B`` (percent-decoded)."""
    pointer = unquote(fragment)
    if pointer == "":
        return []
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _step(node: Any, token: str | int) -> Any:
    """Child of a schema node by object key or array index; raises LookupError if absent."""
    if isinstance(node, Mapping):
        return node[str(token)]
    if isinstance(node, Sequence) and not isinstance(node, str):
        index = int(token)
        if index < 0 or str(index) != str(token):
            raise LookupError(token)
        return node[index]
    raise LookupError(token)


def _find_anchor(node: Any, name: str, path: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """Pointer tokens of the subschema declaring `$anchor`/`$dynamicAnchor` `name`, if any."""
    if isinstance(node, Mapping):
        if name in (node.get("$anchor"), node.get("$dynamicAnchor")):
            return path
        children: Iterable[tuple[str, Any]] = ((str(k), v) for k, v in sorted(node.items()))
    elif isinstance(node, list):
        children = ((str(i), v) for i, v in enumerate(node))
    else:
        return None
    for key, child in children:
        found = _find_anchor(child, name, (*path, key))
        if found is not None:
            return found
    return None


@dataclass(frozen=True)
class SchemaViolation:
    """One way an instance fails a schema, as judged by the reference validator.

    Attributes:
        instance_pointer: RFC 6901 JSON pointer into the instance ("" for the root).
        keyword: the failed keyword ("required", "additionalProperties", "const"...).
        schema_location: absolute URI of the schema object holding `keyword`: document `$id`
            + "#" + JSON pointer, followed through `$ref`.
        message: the validator's message.
    """

    instance_pointer: str
    keyword: str
    schema_location: str
    message: str

    def __str__(self) -> str:
        where = self.instance_pointer or "(root)"
        return f"at {where}: {self.message} (keyword {self.keyword}, schema {self.schema_location})"


#: The ``$schema`` of family manifests; such files are skipped by the registry.
MANIFEST_META_URI = "https://runwire.dev/schemas/meta/protocol.schema.json"


def _load_tree(root: Traversable, label: str) -> dict[str, Mapping[str, Any]]:
    """Read every ``*.json`` below `root` (recursively) into {$id: document}.

    Family manifests (``$schema`` = :data:`MANIFEST_META_URI`) are skipped.

    Raises:
        SchemaError: a file is not JSON, not an object, lacks `$id`, or repeats an `$id`.
    """
    documents: dict[str, Mapping[str, Any]] = {}
    origin: dict[str, str] = {}
    pending: list[tuple[Traversable, str]] = [(root, "")]
    while pending:
        folder, prefix = pending.pop()
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            relative = prefix + entry.name
            if entry.is_dir():
                pending.append((entry, relative + "/"))
                continue
            if not entry.name.endswith(".json"):
                continue
            where = f"{label}/{relative}"
            try:
                document = json.loads(entry.read_bytes())
            except (OSError, ValueError) as exc:
                raise SchemaError(f"schema file {where} is not readable JSON: {exc}") from exc
            if isinstance(document, dict) and document.get("$schema") == MANIFEST_META_URI:
                continue  # a family manifest (protocol.json) is an instance, not a schema
            if not isinstance(document, dict) or not isinstance(document.get("$id"), str):
                raise SchemaError(f"schema file {where} has no top-level string $id")
            uri = document["$id"]
            if uri in documents:
                raise SchemaError(f"schema files {origin[uri]} and {where} both have $id {uri!r}")
            documents[uri] = document
            origin[uri] = where
    return documents


class SchemaRegistry:
    """All loaded schema documents, and validators for references into them.

    Build one with :meth:`from_package`, :meth:`from_directory` or :meth:`from_documents`.
    Validators are compiled on first request and cached per reference.
    """

    def __init__(self, documents: Mapping[str, Mapping[str, Any]]) -> None:
        """Index `documents` ({absolute $id without fragment: schema document}).

        Raises:
            SchemaError: a key is not an absolute URI without fragment, disagrees with the
                document's own `$id`, or the documents cannot be indexed.
        """
        checked: dict[str, Mapping[str, Any]] = {}
        for uri, document in documents.items():
            base, fragment = urldefrag(uri)
            if fragment or "://" not in base:
                raise SchemaError(f"schema URI {uri!r} must be absolute and have no fragment")
            if not isinstance(document, Mapping):
                raise SchemaError(f"schema {uri} is not a JSON object")
            own_id = document.get("$id")
            if own_id is not None and urldefrag(str(own_id))[0] != base:
                raise SchemaError(f"schema registered as {uri} declares $id {own_id!r}")
            checked[base] = document
        self._documents: Mapping[str, Mapping[str, Any]] = MappingProxyType(checked)
        try:
            resources = [
                (uri, referencing.Resource.from_contents(doc, default_specification=DRAFT202012))
                for uri, doc in sorted(checked.items())
            ]
            self._referencing: referencing.Registry[Any] = (
                referencing.Registry().with_resources(resources).crawl()
            )
            self._rs_registry = jsonschema_rs.Registry(
                [(uri, dict(doc)) for uri, doc in sorted(checked.items())],
                draft=jsonschema_rs.Draft202012,
            )
        except (
            ValueError,
            referencing.exceptions.Unresolvable,
            jsonschema_rs.ReferencingError,
        ) as exc:
            raise SchemaError(f"cannot index schema documents: {exc}") from exc
        self._validators: dict[str, MessageValidator] = {}

    @classmethod
    def from_package(cls) -> SchemaRegistry:
        """The shared registry of the schemas packaged in ``runwire.schemas`` (loaded once).

        Raises:
            SchemaError: a packaged schema file is unusable (see :meth:`from_directory`).
        """
        return _package_registry()

    @classmethod
    def from_directory(cls, path: str | os.PathLike[str]) -> SchemaRegistry:
        """Load every ``*.json`` file below `path`, recursively; each must have an `$id`.

        Raises:
            SchemaError: a file is not JSON, not an object, has no `$id`, or repeats one.
        """
        root = Path(path)
        return cls(_load_tree(root, str(root)))

    @classmethod
    def from_documents(cls, documents: Mapping[str, Mapping[str, Any]]) -> SchemaRegistry:
        """Use already-parsed documents, {absolute URI: schema}. See :meth:`__init__`."""
        return cls(documents)

    @property
    def documents(self) -> Mapping[str, Mapping[str, Any]]:
        """Read-only {`$id`: schema document}."""
        return self._documents

    @property
    def referencing_registry(self) -> referencing.Registry[Any]:
        """The documents as a `referencing.Registry`, for `jsonschema` validators."""
        return self._referencing

    @property
    def rs_registry(self) -> jsonschema_rs.Registry:
        """The documents as a `jsonschema_rs.Registry` (Draft 2020-12)."""
        return self._rs_registry

    def resolve_uri(self, ref: str) -> str:
        """Absolute form of `ref`: absolute refs unchanged, others joined to SCHEMA_BASE_URI."""
        return urljoin(SCHEMA_BASE_URI, ref)

    def validator(self, ref: str) -> MessageValidator:
        """The (cached) validator for the schema at `ref`.

        Args:
            ref: absolute (``https://runwire.dev/schemas/jobs/dispatcher.json#/$defs/X``) or
                relative to SCHEMA_BASE_URI (``jobs/dispatcher.json#/$defs/X``); the fragment
                is a JSON pointer, an anchor name, or empty for the whole document.

        Raises:
            SchemaError: unknown document, nothing at the pointer, or a `$ref` reachable from
                it that does not resolve within the loaded documents.
        """
        cached = self._validators.get(ref)
        if cached is not None:
            return cached
        uri = self.resolve_uri(ref)
        document_uri, fragment = urldefrag(uri)
        document = self._documents.get(document_uri)
        if document is None:
            raise SchemaError(
                f"unknown schema document {document_uri!r} (from ref {ref!r}); "
                f"{len(self._documents)} documents are loaded"
            )
        if fragment.startswith("/") or fragment == "":
            node: Any = document
            for token in _parse_fragment_pointer(fragment):
                try:
                    node = _step(node, token)
                except (LookupError, ValueError):
                    raise SchemaError(
                        f"no schema at pointer {fragment!r} in {document_uri} (ref {ref!r})"
                    ) from None
        elif _find_anchor(document, fragment) is None:
            raise SchemaError(f"no anchor {fragment!r} in {document_uri} (ref {ref!r})")
        validator = MessageValidator(uri, self)
        self._validators[ref] = validator
        return validator


@functools.cache
def _package_registry() -> SchemaRegistry:
    return SchemaRegistry(_load_tree(files(_SCHEMA_PACKAGE), _SCHEMA_PACKAGE))


class MessageValidator:
    """Validates instances against one schema, by absolute URI. Get one from
    :meth:`SchemaRegistry.validator`.

    Instances are decoded JSON values (dict, list, str, int, float, bool, None); other Python
    types are not valid instances.
    """

    def __init__(self, uri: str, registry: SchemaRegistry) -> None:
        """Compile the fast validator for `uri` (absolute, with fragment if any).

        Raises:
            SchemaError: the schema or a `$ref` reachable from it cannot be compiled/resolved.
        """
        self.uri: Final = uri
        self._registry = registry
        wrapper = {"$ref": uri}
        try:
            self._fast = jsonschema_rs.Draft202012Validator(
                wrapper, registry=registry.rs_registry, offline=True, validate_formats=False
            )
        except (ValueError, jsonschema_rs.ReferencingError) as exc:
            raise SchemaError(f"cannot compile schema {uri}: {exc}") from exc
        self._oracle = jsonschema.Draft202012Validator(
            wrapper, registry=registry.referencing_registry
        )

    def __repr__(self) -> str:
        return f"MessageValidator({self.uri!r})"

    def is_valid(self, instance: Any) -> bool:
        """Fast check (jsonschema_rs). False also for values that are not JSON."""
        try:
            return self._fast.is_valid(instance)
        except ValueError:
            return False

    def oracle_is_valid(self, instance: Any) -> bool:
        """Reference check (jsonschema). Raises SchemaError if a `$ref` does not resolve."""
        return not self._oracle_errors(instance)

    def violations(self, instance: Any) -> list[SchemaViolation]:
        """Every top-level violation found by the reference validator, sorted by instance
        pointer, keyword, schema location and message; empty when valid.

        Raises:
            SchemaError: a `$ref` does not resolve.
        """
        found = [self._violation(error) for error in self._oracle_errors(instance)]
        return sorted(
            found,
            key=lambda v: (v.instance_pointer, v.keyword, v.schema_location, v.message),
        )

    def check(
        self, instance: Any, *, outbound: bool = False, error_type: str = "invalid_request"
    ) -> None:
        """Return if `instance` is valid, raise a direction-specific protocol error if not.

        Args:
            instance: decoded JSON value.
            outbound: True when we are about to send `instance`, False when we received it.
            error_type: the protocol's error type to put on the raised error.

        Raises:
            RemoteProtocolError: inbound and invalid; `.violation` is the most relevant
                violation (jsonschema's `best_match`), `__cause__` the jsonschema error.
            LocalProtocolError: the same, outbound.
        """
        if self.is_valid(instance):
            return
        error_class = LocalProtocolError if outbound else RemoteProtocolError
        direction = "outbound" if outbound else "inbound"
        best = best_match(self._oracle_errors(instance))
        if best is None:
            raise error_class(
                f"{direction} message rejected by {self.uri}: not a JSON value, or the fast "
                f"validator disagrees with the reference validator",
                error_type=error_type,
            )
        violation = self._violation(best)
        raise error_class(
            f"{direction} message does not match {self.uri}: {violation}",
            error_type=error_type,
            violation=violation,
        ) from best

    def _oracle_errors(self, instance: Any) -> list[ValidationError]:
        try:
            return list(self._oracle.iter_errors(instance))
        except referencing.exceptions.Unresolvable as exc:
            raise SchemaError(f"unresolvable $ref below {self.uri}: {exc}") from exc

    def _violation(self, error: ValidationError) -> SchemaViolation:
        return SchemaViolation(
            instance_pointer=to_pointer(error.absolute_path),
            keyword=str(error.validator),
            schema_location=self._locate(error),
            message=error.message,
        )

    def _locate(self, error: ValidationError) -> str:
        """Absolute URI of the schema object holding `error`'s keyword.

        jsonschema's `absolute_schema_path` omits the `$ref` hops, so search (depth-first,
        direct keys before references, each (node, step) visited once) for the route from the
        referenced schema along that path to the very object `error.schema`. If no route is
        found (a `$dynamicRef` resolved dynamically), walk the path statically instead.
        """
        steps = list(error.absolute_schema_path)[:-1]
        start = self._follow(urldefrag(self.uri)[0], self.uri)
        if start is None:
            return self.uri
        stack = [(start, 0)]
        seen: set[tuple[int, int]] = set()
        while stack:
            position, index = stack.pop()
            if (id(position.node), index) in seen:
                continue
            seen.add((id(position.node), index))
            if index == len(steps) and position.node is error.schema:
                return position.uri()
            node = position.node
            if isinstance(node, Mapping):
                for keyword in ("$dynamicRef", "$ref"):
                    reference = node.get(keyword)
                    target = self._follow(position.base, reference)
                    if target is not None:
                        stack.append((target, index))
            if index < len(steps):
                child = position.child(steps[index])
                if child is not None:
                    stack.append((child, index + 1))
        fallback = start
        for step in steps:
            fallback = fallback.child(step) or _Position(
                None, fallback.base, fallback.document, (*fallback.tokens, str(step))
            )
        return fallback.uri()

    def _follow(self, base: str, reference: object) -> _Position | None:
        """Position of the schema `reference` (a `$ref` value) points to from `base`; None if
        `reference` is not a string or does not resolve."""
        if not isinstance(reference, str):
            return None
        document_uri, fragment = urldefrag(urljoin(base, reference))
        document: Any = self._registry.documents.get(document_uri)
        if document is None:
            try:  # an embedded resource (nested $id)
                resolver = self._registry.referencing_registry.resolver(document_uri)
                document = resolver.lookup(document_uri).contents
            except referencing.exceptions.Unresolvable:
                return None
        if fragment.startswith("/") or fragment == "":
            tokens: tuple[str, ...] | None = tuple(_parse_fragment_pointer(fragment))
        else:
            tokens = _find_anchor(document, fragment)
        if tokens is None:
            return None
        node = document
        try:
            for token in tokens:
                node = _step(node, token)
        except (LookupError, ValueError):
            return None
        return _Position(node, document_uri, document_uri, tokens)


@dataclass(frozen=True)
class _Position:
    """A schema node while locating a violation: the node, the base URI for its `$ref`s, and
    where it sits (document URI + pointer tokens)."""

    node: Any
    base: str
    document: str
    tokens: tuple[str, ...]

    def child(self, step: str | int) -> _Position | None:
        try:
            node = _step(self.node, step)
        except (LookupError, ValueError):
            return None
        base = self.base
        if isinstance(node, Mapping) and isinstance(node.get("$id"), str):
            base = urljoin(base, node["$id"])
        return _Position(node, base, self.document, (*self.tokens, str(step)))

    def uri(self) -> str:
        return f"{self.document}#{quote(to_pointer(self.tokens), safe=_FRAGMENT_SAFE)}"
