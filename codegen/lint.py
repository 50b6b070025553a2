"""The schema linter: runwire's schema-subset rules, checked before anything is generated.

Every rule has a stable id (the keys of :data:`RULES`). :func:`lint_tree` returns one
:class:`LintIssue` per violation, naming the file, the JSON pointer inside it and the rule;
``codegen`` refuses to generate while any issue remains. Manifests (``<family>/protocol.json``)
are checked by :func:`runwire.codegen.model.load_families` instead.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jsonschema
import referencing
import referencing.jsonschema
from referencing.exceptions import Unresolvable

from runwire.codegen.model import SchemaTree
from runwire.runtime.validation import escape_token, to_pointer

if TYPE_CHECKING:
    from referencing._core import Resolver

DIALECT = "https://json-schema.org/draft/2020-12/schema"

RULES: Mapping[str, str] = {
    "dialect": 'every schema file declares "$schema": the JSON Schema 2020-12 dialect',
    "schema-id": 'every schema file has "$id" = https://runwire.dev/schemas/<path>',
    "metaschema": "every schema file is valid against the 2020-12 metaschema",
    "closed-object": (
        'every object schema sets "additionalProperties": false, or says why it is open in '
        '"x-open-reason"'
    ),
    "discriminator": (
        'a oneOf whose branches share a const-tagged required property carries "discriminator": '
        '{"propertyName": <that property>}, and a discriminator names such a property'
    ),
    "definition-docs": 'every definition has a "title", a "description" and at least one "examples" entry',
    "examples-valid": "every example is valid against its own definition",
    "no-remote-ref": '"$ref" is relative (no scheme, no host) and resolves inside schemas/',
    "unique-definition-names": "definition names are unique across a family and common/",
}

_SCHEMA_MAP_KEYWORDS = ("properties", "patternProperties", "$defs", "dependentSchemas")
_SCHEMA_LIST_KEYWORDS = ("oneOf", "anyOf", "allOf", "prefixItems")
_SCHEMA_KEYWORDS = (
    "items",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
)


@dataclass(frozen=True)
class LintIssue:
    """One rule violation: ``file`` (relative to schemas/), JSON ``pointer``, ``rule`` id."""

    file: str
    pointer: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.pointer or '/'}: [{self.rule}] {self.message}"


def walk(schema: Any, pointer: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Yield (JSON pointer, subschema) for ``schema`` and every schema nested in it."""
    if not isinstance(schema, Mapping):
        return
    yield pointer, schema
    for keyword in _SCHEMA_MAP_KEYWORDS:
        children = schema.get(keyword)
        if isinstance(children, Mapping):
            for name in sorted(children):
                yield from walk(children[name], f"{pointer}/{keyword}/{escape_token(name)}")
    for keyword in _SCHEMA_LIST_KEYWORDS:
        children = schema.get(keyword)
        if isinstance(children, list):
            for i, child in enumerate(children):
                yield from walk(child, f"{pointer}/{keyword}/{i}")
    for keyword in _SCHEMA_KEYWORDS:
        yield from walk(schema.get(keyword), f"{pointer}/{keyword}")


def build_registry(tree: SchemaTree) -> referencing.Registry[Any]:
    """A :mod:`referencing` registry of every schema document of ``tree``, keyed by ``$id``."""
    resources = [
        (
            tree.uri(rel),
            referencing.Resource.from_contents(
                tree.documents[rel], default_specification=referencing.jsonschema.DRAFT202012
            ),
        )
        for rel in tree.schema_paths()
        if isinstance(tree.documents[rel], Mapping)
    ]
    registry: referencing.Registry[Any] = referencing.Registry().with_resources(resources)
    return registry.crawl()


def lint_tree(tree: SchemaTree) -> list[LintIssue]:
    """Check every schema document of ``tree`` against :data:`RULES`; issues in file order."""
    registry = build_registry(tree)
    issues: list[LintIssue] = []
    for rel in tree.schema_paths():
        issues.extend(_lint_document(tree, rel, registry))
    issues.extend(_unique_names(tree))
    return issues


def _lint_document(
    tree: SchemaTree, rel: str, registry: referencing.Registry[Any]
) -> Iterator[LintIssue]:
    document = tree.documents[rel]
    if not isinstance(document, Mapping):
        yield LintIssue(rel, "", "metaschema", "a schema file must hold a JSON object")
        return
    if document.get("$schema") != DIALECT:
        yield LintIssue(rel, "/$schema", "dialect", f"must be {DIALECT!r}")
    if document.get("$id") != tree.uri(rel):
        yield LintIssue(rel, "/$id", "schema-id", f"must be {tree.uri(rel)!r}")
    meta_errors = list(
        jsonschema.Draft202012Validator(jsonschema.Draft202012Validator.META_SCHEMA).iter_errors(
            document
        )
    )
    for error in sorted(meta_errors, key=lambda e: [str(p) for p in e.absolute_path]):
        pointer = to_pointer(error.absolute_path)
        yield LintIssue(rel, pointer, "metaschema", error.message)
    if meta_errors:
        return
    for key in ("title", "description"):
        if not _nonempty_string(document.get(key)):
            yield LintIssue(rel, "", "definition-docs", f'the document needs a "{key}"')
    resolver = registry.resolver(base_uri=tree.uri(rel))
    for pointer, schema in walk(document):
        yield from _closed_object(rel, pointer, schema)
        yield from _refs(rel, pointer, schema, resolver)
        yield from _discriminator(rel, pointer, schema, resolver)
    for name, definition in sorted(document.get("$defs", {}).items()):
        yield from _definition(rel, name, definition, registry, tree.uri(rel))


def _nonempty_string(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _closed_object(rel: str, pointer: str, schema: Mapping[str, Any]) -> Iterator[LintIssue]:
    if pointer.endswith(("/if", "/not")):
        return  # a condition, not a message shape
    types = schema.get("type")
    is_object = types == "object" or (
        isinstance(types, list) and "object" in types and len(types) == 1
    )
    if not (is_object or "properties" in schema):
        return
    closed = (
        schema.get("additionalProperties") is False or schema.get("unevaluatedProperties") is False
    )
    if closed:
        return
    if _nonempty_string(schema.get("x-open-reason")):
        return
    yield LintIssue(rel, pointer, "closed-object", RULES["closed-object"])


def _refs(
    rel: str, pointer: str, schema: Mapping[str, Any], resolver: Resolver[Any]
) -> Iterator[LintIssue]:
    ref = schema.get("$ref")
    if ref is None:
        return
    parsed = urllib.parse.urlsplit(ref)
    if parsed.scheme or parsed.netloc:
        yield LintIssue(
            rel, f"{pointer}/$ref", "no-remote-ref", f"{ref!r} is not a relative reference"
        )
        return
    try:
        resolver.lookup(ref)
    except Unresolvable:
        yield LintIssue(
            rel, f"{pointer}/$ref", "no-remote-ref", f"{ref!r} does not resolve inside schemas/"
        )


def _resolve(schema: Mapping[str, Any], resolver: Resolver[Any]) -> Mapping[str, Any] | None:
    """Follow ``$ref`` chains (at most 16 hops) to the schema that holds the keywords."""
    for _ in range(16):
        ref = schema.get("$ref")
        if ref is None:
            return schema
        try:
            resolved = resolver.lookup(ref)
        except Unresolvable:
            return None
        resolver = resolved.resolver
        if not isinstance(resolved.contents, Mapping):
            return None
        schema = resolved.contents
    return None


def const_tags(branch: Mapping[str, Any]) -> dict[str, Any]:
    """Properties of ``branch`` that are required and hold a ``const``: name → value."""
    required = set(branch.get("required", []))
    properties = branch.get("properties", {})
    return {
        name: sub["const"]
        for name, sub in properties.items()
        if name in required and isinstance(sub, Mapping) and "const" in sub
    }


def _discriminator(
    rel: str, pointer: str, schema: Mapping[str, Any], resolver: Resolver[Any]
) -> Iterator[LintIssue]:
    branches = schema.get("oneOf")
    if not isinstance(branches, list) or not branches:
        return
    resolved = [_resolve(b, resolver) if isinstance(b, Mapping) else None for b in branches]
    if any(b is None for b in resolved):
        return
    tags = [const_tags(b) for b in resolved if b is not None]
    shared = set(tags[0]).intersection(*tags[1:])
    candidates = sorted(name for name in shared if len({repr(t[name]) for t in tags}) == len(tags))
    declared = schema.get("discriminator")
    if declared is None:
        if candidates:
            yield LintIssue(
                rel,
                pointer,
                "discriminator",
                f'const-tagged oneOf: add "discriminator": {{"propertyName": "{candidates[0]}"}}',
            )
        return
    name = declared.get("propertyName") if isinstance(declared, Mapping) else None
    if name not in candidates:
        yield LintIssue(
            rel,
            f"{pointer}/discriminator",
            "discriminator",
            f"propertyName {name!r} is not a required const property with distinct values in every branch",
        )


def _definition(
    rel: str,
    name: str,
    definition: Any,
    registry: referencing.Registry[Any],
    base_uri: str,
) -> Iterator[LintIssue]:
    pointer = f"/$defs/{escape_token(name)}"
    if not isinstance(definition, Mapping):
        return
    for key in ("title", "description"):
        if not _nonempty_string(definition.get(key)):
            yield LintIssue(rel, pointer, "definition-docs", f'missing "{key}"')
    examples = definition.get("examples")
    if not isinstance(examples, list) or not examples:
        yield LintIssue(rel, pointer, "definition-docs", 'missing "examples" (at least one)')
        return
    validator = jsonschema.Draft202012Validator(
        {"$ref": f"{base_uri}#{pointer}"}, registry=registry
    )
    for i, example in enumerate(examples):
        try:
            error = jsonschema.exceptions.best_match(validator.iter_errors(example))
        except Unresolvable:
            return  # reported by the no-remote-ref rule
        if error is not None:
            at = to_pointer(error.absolute_path)
            yield LintIssue(
                rel, f"{pointer}/examples/{i}", "examples-valid", f"at {at or '/'}: {error.message}"
            )


def _unique_names(tree: SchemaTree) -> Iterator[LintIssue]:
    families = sorted(
        {rel.split("/", 1)[0] for rel in tree.schema_paths()} - {"common", "meta", "conformance"}
    )
    for family in families:
        seen: dict[str, str] = {}
        for rel in tree.schema_paths():
            if not (rel.startswith(family + "/") or rel.startswith("common/")):
                continue
            for name in sorted(tree.documents[rel].get("$defs", {})):
                if name in seen:
                    yield LintIssue(
                        rel,
                        f"/$defs/{escape_token(name)}",
                        "unique-definition-names",
                        f"{name!r} is also defined in {seen[name]} (family {family!r})",
                    )
                else:
                    seen[name] = rel
