"""Fixture-corpus engine: valid and invalid instances derived from schema ``examples``.

Pure module (no I/O). :func:`make_fixtures` takes a ``referencing.Registry`` holding every
schema document (draft 2020-12) and a list of absolute definition URIs
(``https://runwire.dev/schemas/jobs/dispatcher.json#/$defs/CallRequest``) and returns
:class:`Fixture` records:

* one *valid* fixture per entry of the definition's ``examples`` (in order);
* *invalid* fixtures made by mutating each example at one place so that exactly one schema
  keyword is (meant to be) violated.

How invalid fixtures are made: the schema is walked alongside the example. ``$ref`` is
resolved (the walker tracks the document URI and the JSON pointer inside it, honouring
embedded ``$id``), every ``allOf`` branch is walked, ``anyOf``/``oneOf`` branches only when the
instance is valid against them, ``if``/``then``/``else`` along the branch the instance takes,
``dependentSchemas`` when the trigger key is present. Every schema node reached proposes
mutants for its own keywords (one small function per keyword family below), then the walk
descends into ``properties``, ``patternProperties``, ``additionalProperties`` (as a schema),
``prefixItems`` and ``items`` for the parts the instance actually has.

Every mutant is checked with the oracle, ``jsonschema.Draft202012Validator({"$ref": uri})``:
a mutant that is still valid (for instance because a ``oneOf`` sibling accepts it) is dropped
silently. The oracle's error tree (including ``error.context`` of ``oneOf``/``anyOf``) is
searched for the intended keyword; when it is not there the fixture is kept all the same and
its description says which keywords the validator reported instead.

Fixtures are de-duplicated per definition by canonical JSON (first one wins) and named with
stable slugs (``valid-1``, ``invalid-required-host``, ``invalid-type-queue-concurrency``;
``-2``, ``-3`` appended on collision). The output is deterministic: it depends only on the
input documents (dict insertion order, never on set iteration or hash seeds).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urldefrag, urljoin, urlsplit

import referencing
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from runwire.runtime.validation import escape_token, to_pointer

__all__ = ["Fixture", "make_fixtures"]

Path = tuple[str | int, ...]
"""Location inside an instance, as a sequence of object keys and array indexes."""

#: Candidates for a ``type`` violation, tried in this order (see :func:`_type_mutants`).
#: Non-scalar and string values first: pydantic's lax mode would coerce e.g. ``1`` to ``True``.
_TYPE_CANDIDATES: tuple[Any, ...] = (
    {"unexpected": "type"},
    "wrong-type",
    ["wrong-type"],
    123456,
    True,
    None,
)

#: Growth mutations (``maxLength``, ``maxItems``, ``maxProperties``) needing more than this many
#: added characters / items / keys are skipped to keep fixtures small.
_MAX_PADDING = 1024

#: Characters left unescaped when a JSON pointer is put in a URI fragment.
_FRAGMENT_SAFE = "/$!&'()*+,;=:@"


@dataclass(frozen=True)
class Fixture:
    """One valid or invalid instance of a schema definition.

    ``definition`` is the absolute URI of the definition. ``name`` is a file-name slug,
    unique within the definition. For invalid fixtures ``keyword`` is the JSON Schema keyword
    the mutation violates, ``schema_location`` the absolute URI (``document#pointer``) of the
    schema object holding that keyword, resolved through ``$ref``, ``detail`` the part of the
    keyword involved (required key dropped, extra key added, const/enum value replaced;
    strings verbatim, other values as JSON) or ``None``. ``instance_location`` is the RFC 6901
    pointer of the mutated value (``""`` = root). All three keyword fields are ``None`` for
    valid fixtures.
    """

    definition: str
    name: str
    valid: bool
    keyword: str | None
    schema_location: str | None
    detail: str | None
    instance_location: str
    description: str
    instance: Any


def make_fixtures(registry: referencing.Registry[Any], definitions: Sequence[str]) -> list[Fixture]:
    """Return the fixtures of every definition, definitions in the given order.

    Per definition: the valid fixtures (one per example, in order), then the invalid ones of
    example 1, of example 2, and so on; de-duplicated and uniquely named within the definition.

    Raises:
        ValueError: a definition URI is not absolute, its schema has no non-empty
            ``examples`` list, or an example is invalid against the definition (the message
            names the definition and the example, 1-based and as ``examples[i]``).
        referencing.exceptions.Unresolvable: a definition or a ``$ref`` cannot be resolved.
    """
    walker = _Walker(registry)
    fixtures: list[Fixture] = []
    for definition in definitions:
        fixtures.extend(_definition_fixtures(walker, definition))
    return fixtures


# --------------------------------------------------------------------------------------------
# Per-definition assembly
# --------------------------------------------------------------------------------------------


def _definition_fixtures(walker: _Walker, definition: str) -> list[Fixture]:
    """Valid then invalid fixtures of one definition, de-duplicated and named."""
    if not urlsplit(definition).scheme:
        raise ValueError(f"definition {definition!r} is not an absolute URI")
    root = walker.resolve(definition, base="")
    examples = root.schema.get("examples") if isinstance(root.schema, dict) else None
    if not isinstance(examples, list) or not examples:
        raise ValueError(f"definition {definition}: no non-empty 'examples' list")
    oracle = walker.validator(definition)
    title = _definition_title(definition)

    candidates: list[Fixture] = []
    for index, example in enumerate(examples):
        if not oracle.is_valid(example):
            reason = _best_message(oracle, example)
            raise ValueError(
                f"definition {definition}: example #{index + 1} (examples[{index}]) is invalid:"
                f" {reason}"
            )
        candidates.append(
            Fixture(
                definition=definition,
                name=f"valid-{index + 1}",
                valid=True,
                keyword=None,
                schema_location=None,
                detail=None,
                instance_location="",
                description=f"Example {index + 1} of {title}, valid as given in the schema",
                instance=example,
            )
        )
    for example in examples:
        for mutant in walker.mutants(root, example):
            instance = _replace_at(example, mutant.path, mutant.value)
            reported = _error_keywords(oracle, instance)
            if not reported:
                continue  # still valid: another branch accepts it
            candidates.append(_invalid_fixture(definition, title, mutant, instance, reported))
    return _dedupe_and_name(candidates)


def _invalid_fixture(
    definition: str, title: str, mutant: _Mutant, instance: Any, reported: list[str]
) -> Fixture:
    """Turn a checked mutant into a :class:`Fixture` (name not yet de-duplicated)."""
    description = f"{title} {mutant.summary}"
    if mutant.keyword not in reported:
        description += f" (the validator reports: {', '.join(reported)})"
    tokens = [*mutant.path, *mutant.name_suffix]
    return Fixture(
        definition=definition,
        name=f"invalid-{mutant.keyword}-{_slug(tokens)}",
        valid=False,
        keyword=mutant.keyword,
        schema_location=mutant.node.location,
        detail=mutant.detail,
        instance_location=_pointer(mutant.path),
        description=description,
        instance=instance,
    )


def _dedupe_and_name(candidates: Sequence[Fixture]) -> list[Fixture]:
    """Drop fixtures whose canonical JSON was seen before; make names unique (-2, -3...)."""
    seen_instances: set[str] = set()
    used_names: set[str] = set()
    result: list[Fixture] = []
    for fixture in candidates:
        canonical = _canonical(fixture.instance)
        if canonical in seen_instances:
            continue
        seen_instances.add(canonical)
        name, counter = fixture.name, 1
        while name in used_names:
            counter += 1
            name = f"{fixture.name}-{counter}"
        used_names.add(name)
        result.append(
            dataclasses.replace(fixture, name=name, instance=copy.deepcopy(fixture.instance))
        )
    return result


def _error_keywords(validator: Draft202012Validator, instance: Any) -> list[str]:
    """Sorted keywords of every error in the oracle's error tree ([] when valid)."""
    found: set[str] = set()
    pending: list[ValidationError] = list(validator.iter_errors(instance))
    while pending:
        error = pending.pop()
        found.add(str(error.validator))
        pending.extend(error.context or ())
    return sorted(found)


def _best_message(validator: Draft202012Validator, instance: Any) -> str:
    """The first error message of the oracle for an instance (for exception texts)."""
    for error in validator.iter_errors(instance):
        return f"{error.message} at {_pointer(tuple(error.absolute_path)) or '/'}"
    return "valid"


# --------------------------------------------------------------------------------------------
# Schema walk
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    """A schema object plus where it lives: resource URI ``base`` and JSON ``pointer`` in it."""

    schema: Any
    base: str
    pointer: str

    @property
    def location(self) -> str:
        """Absolute URI of this schema object (``base#pointer``, pointer percent-encoded)."""
        return f"{self.base}#{quote(self.pointer, safe=_FRAGMENT_SAFE)}"

    def child(self, *tokens: str | int) -> _Node:
        """The sub-schema at ``tokens``; entering an object with ``$id`` starts a new resource."""
        schema, base, pointer = self.schema, self.base, self.pointer
        for token in tokens:
            schema = schema[token]
            pointer = f"{pointer}/{escape_token(token)}"
            if isinstance(schema, dict) and isinstance(schema.get("$id"), str):
                base, pointer = urldefrag(urljoin(base, schema["$id"]))[0], ""
        return _Node(schema, base, pointer)


@dataclass(frozen=True)
class _Mutant:
    """A proposed violation: replace the instance value at ``path`` with ``value``.

    ``summary`` completes the sentence "<Definition> ..."; ``name_suffix`` holds extra
    name tokens after the path (the dropped key for ``required``).
    """

    keyword: str
    node: _Node
    detail: str | None
    path: Path
    value: Any
    summary: str
    name_suffix: tuple[str, ...] = ()


class _Walker:
    """Resolves references and walks schemas alongside instances; caches validators."""

    def __init__(self, registry: referencing.Registry[Any]) -> None:
        self._registry = registry
        self._resolver = registry.resolver()
        self._validators: dict[str, Draft202012Validator] = {}

    def validator(self, uri: str) -> Draft202012Validator:
        """The oracle for the schema object at absolute ``uri`` (cached)."""
        if uri not in self._validators:
            self._validators[uri] = Draft202012Validator({"$ref": uri}, registry=self._registry)
        return self._validators[uri]

    def is_valid(self, node: _Node, instance: Any) -> bool:
        """Whether ``instance`` is valid against the schema object ``node``."""
        if isinstance(node.schema, bool):
            return node.schema
        return bool(self.validator(node.location).is_valid(instance))

    def resolve(self, ref: str, base: str) -> _Node:
        """The schema object a ``$ref`` (relative to ``base``) points to, with its location.

        Raises ``referencing.exceptions.Unresolvable`` for unknown documents or pointers.
        """
        document_uri, fragment = urldefrag(urljoin(base, ref))
        document = _Node(self._resolver.lookup(document_uri).contents, document_uri, "")
        fragment = unquote(fragment)
        if not fragment:
            return document
        if fragment.startswith("/"):
            tokens = [_unescape(token) for token in fragment[1:].split("/")]
        else:  # plain-name anchor: let referencing find it, then locate it by identity
            target = self._resolver.lookup(f"{document_uri}#{fragment}").contents
            found = _find_path(document.schema, target)
            if found is None:
                raise ValueError(f"anchor {ref!r} resolved outside of {document_uri}")
            tokens = [str(token) for token in found]
        return _descend(document, tokens)

    def mutants(self, node: _Node, instance: Any) -> Iterator[_Mutant]:
        """Every mutant proposed along the walk of ``instance`` through ``node``."""
        yield from self._walk(node, instance, (), set())

    def _walk(self, node: _Node, instance: Any, path: Path, seen: set[str]) -> Iterator[_Mutant]:
        if not isinstance(node.schema, dict):
            return
        visit = f"{node.location} {_pointer(path)}"
        if visit in seen:  # shared or cyclic references: each (schema, place) once
            return
        seen.add(visit)
        for family in _KEYWORD_FAMILIES:
            yield from family(node, instance, path)
        for sub_node, sub_instance, sub_path in self._subschemas(node, instance, path):
            yield from self._walk(sub_node, sub_instance, sub_path, seen)

    def _subschemas(
        self, node: _Node, instance: Any, path: Path
    ) -> Iterator[tuple[_Node, Any, Path]]:
        """Sub-schemas that apply to (parts of) ``instance``: applicators, then children."""
        yield from self._in_place(node, instance, path)
        yield from _object_children(node, instance, path)
        yield from _array_children(node, instance, path)

    def _in_place(
        self, node: _Node, instance: Any, path: Path
    ) -> Iterator[tuple[_Node, Any, Path]]:
        """``$ref``, ``allOf``, matching ``anyOf``/``oneOf`` branches, ``if``/``then``/``else``,
        triggered ``dependentSchemas``: sub-schemas applying to the same instance."""
        schema = node.schema
        if isinstance(schema.get("$ref"), str):
            yield self.resolve(schema["$ref"], node.base), instance, path
        for index in range(len(schema.get("allOf", ()))):
            yield node.child("allOf", index), instance, path
        for keyword in ("anyOf", "oneOf"):
            for index in range(len(schema.get(keyword, ()))):
                branch = node.child(keyword, index)
                if self.is_valid(branch, instance):
                    yield branch, instance, path
        if "if" in schema:
            taken = "then" if self.is_valid(node.child("if"), instance) else "else"
            if taken in schema:
                yield node.child(taken), instance, path
        if isinstance(instance, dict):
            for key in schema.get("dependentSchemas", {}):
                if key in instance:
                    yield node.child("dependentSchemas", key), instance, path


def _object_children(node: _Node, instance: Any, path: Path) -> Iterator[tuple[_Node, Any, Path]]:
    """Present properties, with the schema that applies to each of them."""
    if not isinstance(instance, dict):
        return
    schema = node.schema
    properties = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    for key in properties:
        if key in instance:
            yield node.child("properties", key), instance[key], (*path, key)
    for pattern in patterns:
        for key in instance:
            if _search(pattern, key):
                yield node.child("patternProperties", pattern), instance[key], (*path, key)
    if isinstance(schema.get("additionalProperties"), dict):
        for key in instance:
            if key not in properties and not any(_search(p, key) for p in patterns):
                yield node.child("additionalProperties"), instance[key], (*path, key)


def _array_children(node: _Node, instance: Any, path: Path) -> Iterator[tuple[_Node, Any, Path]]:
    """Present array items, with the ``prefixItems`` / ``items`` schema of each."""
    if not isinstance(instance, list):
        return
    prefix = node.schema.get("prefixItems", [])
    for index in range(min(len(prefix), len(instance))):
        yield node.child("prefixItems", index), instance[index], (*path, index)
    if isinstance(node.schema.get("items"), dict):
        for index in range(len(prefix), len(instance)):
            yield node.child("items"), instance[index], (*path, index)


def _descend(node: _Node, tokens: Sequence[str]) -> _Node:
    """Follow unescaped JSON-pointer ``tokens`` from ``node`` (list indexes given as text)."""
    for token in tokens:
        node = node.child(int(token) if isinstance(node.schema, list) else token)
    return node


def _find_path(container: Any, target: Any) -> Path | None:
    """Path of the object ``target`` (by identity) inside ``container``, or None."""
    if container is target:
        return ()
    items: Iterator[tuple[str | int, Any]]
    if isinstance(container, dict):
        items = iter(container.items())
    elif isinstance(container, list):
        items = iter(enumerate(container))
    else:
        return None
    for key, value in items:
        found = _find_path(value, target)
        if found is not None:
            return (key, *found)
    return None


# --------------------------------------------------------------------------------------------
# Keyword families: each takes (node, instance, path) and yields mutants for that node
# --------------------------------------------------------------------------------------------


def _type_mutants(node: _Node, instance: Any, path: Path) -> Iterator[_Mutant]:
    """``type``: the first of ``_TYPE_CANDIDATES`` whose JSON type the node does not allow."""
    declared = node.schema.get("type")
    if declared is None:
        return
    allowed = [declared] if isinstance(declared, str) else list(declared)
    for candidate in _TYPE_CANDIDATES:
        json_type = _json_type(candidate)
        if json_type in allowed or (json_type == "integer" and "number" in allowed):
            continue
        expected = " or ".join(allowed)
        summary = f"with {_where(path)} replaced by {_a(json_type)} ({expected} expected)"
        yield _Mutant("type", node, None, path, candidate, summary)
        return


def _const_mutants(node: _Node, instance: Any, path: Path) -> Iterator[_Mutant]:
    """``const``: a different value of the same JSON type when possible."""
    if "const" not in node.schema:
        return
    constant = node.schema["const"]
    replacement = _different_value(constant)
    summary = (
        f"with {_where(path)} set to {_show(replacement)} instead of the constant {_show(constant)}"
    )
    yield _Mutant("const", node, _detail(constant), path, replacement, summary)


def _enum_mutants(node: _Node, instance: Any, path: Path) -> Iterator[_Mutant]:
    """``enum``: a value outside the enumeration, of the current value's type if possible."""
    options = node.schema.get("enum")
    if not isinstance(options, list):
        return
    replacement = _value_outside(options, instance)
    summary = f"with {_where(path)} set to {_show(replacement)}, which is not an allowed value"
    yield _Mutant("enum", node, _detail(instance), path, replacement, summary)


def _required_mutants(node: _Node, instance: Any, path: Path) -> Iterator[_Mutant]:
    """``required`` and ``dependentRequired``: drop each present required key."""
    if not isinstance(instance, dict):
        return
    inside = "" if not path else f" in {_pointer(path)}"
    for key in node.schema.get("required", []):
        if key in instance:
            summary = f"without its required key '{key}'{inside}"
            yield _Mutant("required", node, key, path, _without(instance, key), summary, (key,))
    for trigger, needed in node.schema.get("dependentRequired", {}).items():
        if trigger not in instance:
            continue
        for key in needed:
            if key in instance and key != trigger:
                summary = f"with '{trigger}' but without '{key}', which it requires{inside}"
                yield _Mutant(
                    "dependentRequired", node, key, path, _without(instance, key), summary, (key,)
                )


def _not_required_mutants(node: _Node, instance: Any, path: Path) -> Iterator[_Mutant]:
    """``not: {"required": [...]}`` (keys that exclude each other): add the missing keys.

    A missing key's value is its property's ``default``, ``const`` or first ``examples``
    entry; without one, no mutant is made.
    """
    forbidden = node.schema.get("not")
    if not isinstance(instance, dict) or not isinstance(forbidden, dict):
        return
    keys = forbidden.get("required")
    if set(forbidden) != {"required"} or not isinstance(keys, list):
        return
    properties = node.schema.get("properties", {})
    value = dict(instance)
    for key in keys:
        if key in value:
            continue
        sample = _sample(properties.get(key))
        if sample is _NO_SAMPLE:
            return
        value[key] = sample
    together = ", ".join(f"'{k}'" for k in keys)
    summary = f"with {together} together{' in ' + _pointer(path) if path else ''}, which exclude each other"
    yield _Mutant("not", node.child("not"), ",".join(keys), path, value, summary)


_NO_SAMPLE = object()


def _sample(schema: Any) -> Any:
    """A value a property schema documents itself: default, const or first example."""
    if not isinstance(schema, dict):
        return _NO_SAMPLE
    for keyword in ("default", "const"):
        if keyword in schema:
            return copy.deepcopy(schema[keyword])
    examples = schema.get("examples")
    if isinstance(examples, list) and examples:
        return copy.deepcopy(examples[0])
    return _NO_SAMPLE


def _closed_object_mutants(node: _Node, instance: Any, path: Path) -> Iterator[_Mutant]:
    """``additionalProperties: false`` / ``unevaluatedProperties: false``: add a new key."""
    if not isinstance(instance, dict):
        return
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        if node.schema.get(keyword) is not False:
            continue
        key = _unused_key(node.schema, instance, "unexpected_key")
        summary = f"with the undeclared key '{key}' added {_at(path)}"
        yield _Mutant(keyword, node, key, path, {**instance, key: 1}, summary)


def _numeric_mutants(node: _Node, instance: Any, path: Path) -> Iterator[_Mutant]:
    """``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``, ``multipleOf``."""
    if not _is_number(instance):
        return
    integral, where = isinstance(instance, int), _where(path)
    for keyword, (past_bound, phrase) in _NUMERIC_BOUNDS.items():
        bound = node.schema.get(keyword)
        if _is_number(bound):
            value = past_bound(bound, integral)
            summary = f"with {where} = {_show(value)}, {phrase} {_show(bound)}"
            yield _Mutant(keyword, node, None, path, value, summary)
    step = node.schema.get("multipleOf")
    if _is_number(step) and step > 0:
        if integral and isinstance(step, int):
            value = instance + (0.5 if step == 1 else 1)
        else:
            value = instance + step / 2
        summary = f"with {where} = {_show(value)}, not a multiple of {_show(step)}"
        yield _Mutant("multipleOf", node, None, path, value, summary)


def _below_minimum(bound: Any, integral: bool) -> Any:
    return math.ceil(bound) - 1 if integral else bound - 0.5


def _above_maximum(bound: Any, integral: bool) -> Any:
    return math.floor(bound) + 1 if integral else bound + 0.5


def _at_exclusive_minimum(bound: Any, integral: bool) -> Any:
    """The bound itself; for integer instances the nearest integer not above it."""
    return math.floor(bound) if integral else bound


def _at_exclusive_maximum(bound: Any, integral: bool) -> Any:
    """The bound itself; for integer instances the nearest integer not below it."""
    return math.ceil(bound) if integral else bound


#: keyword -> (value violating the bound, given (bound, instance is an int); phrase)
_NUMERIC_BOUNDS: dict[str, tuple[Callable[[Any, bool], Any], str]] = {
    "minimum": (_below_minimum, "below the minimum"),
    "maximum": (_above_maximum, "above the maximum"),
    "exclusiveMinimum": (_at_exclusive_minimum, "not above the exclusive minimum"),
    "exclusiveMaximum": (_at_exclusive_maximum, "not below the exclusive maximum"),
}


def _string_mutants(node: _Node, instance: Any, path: Path) -> Iterator[_Mutant]:
    """``minLength`` (shorten), ``maxLength`` (lengthen), ``pattern`` (a non-matching string)."""
    if not isinstance(instance, str):
        return
    schema, where = node.schema, _where(path)
    shortest = schema.get("minLength")
    if isinstance(shortest, int) and shortest >= 1:
        value = instance[: shortest - 1]
        summary = (
            f"with {where} shortened to {_count(len(value), 'character')} (minLength {shortest})"
        )
        yield _Mutant("minLength", node, None, path, value, summary)
    longest = schema.get("maxLength")
    if isinstance(longest, int) and 0 < longest + 1 - len(instance) <= _MAX_PADDING:
        value = instance + "x" * (longest + 1 - len(instance))
        summary = (
            f"with {where} lengthened to {_count(len(value), 'character')} (maxLength {longest})"
        )
        yield _Mutant("maxLength", node, None, path, value, summary)
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        mismatch = _non_matching(pattern, instance)
        if mismatch is not None:
            summary = f"with {where} set to {_show(mismatch)}, which does not match '{pattern}'"
            yield _Mutant("pattern", node, None, path, mismatch, summary)


def _array_mutants(node: _Node, instance: Any, path: Path) -> Iterator[_Mutant]:
    """``minItems`` (truncate), ``maxItems`` (repeat the last item), ``uniqueItems``
    (duplicate the first item at the end), ``items: false`` (append an item)."""
    if not isinstance(instance, list):
        return
    schema, where = node.schema, _where(path)
    fewest = schema.get("minItems")
    if isinstance(fewest, int) and fewest >= 1:
        summary = f"with {where} cut to {_count(fewest - 1, 'item')} (minItems {fewest})"
        yield _Mutant("minItems", node, None, path, instance[: fewest - 1], summary)
    most = schema.get("maxItems")
    if isinstance(most, int) and 0 < most + 1 - len(instance) <= _MAX_PADDING:
        filler = instance[-1] if instance else None
        value = instance + [filler] * (most + 1 - len(instance))
        summary = f"with {where} grown to {_count(len(value), 'item')} (maxItems {most})"
        yield _Mutant("maxItems", node, None, path, value, summary)
    if schema.get("uniqueItems") is True and instance:
        summary = f"with the first item of {where} repeated at its end"
        yield _Mutant("uniqueItems", node, None, path, [*instance, instance[0]], summary)
    if schema.get("items") is False:
        summary = f"with an item appended to {where}, beyond its prefixItems"
        yield _Mutant("items", node, None, path, [*instance, "unexpected-item"], summary)


def _object_size_mutants(node: _Node, instance: Any, path: Path) -> Iterator[_Mutant]:
    """``minProperties`` (drop keys, optional ones first) and ``maxProperties`` (add keys)."""
    if not isinstance(instance, dict):
        return
    schema, where = node.schema, _where(path)
    fewest = schema.get("minProperties")
    if isinstance(fewest, int) and fewest >= 1:
        required = schema.get("required", [])
        order = [k for k in instance if k not in required] + [k for k in instance if k in required]
        drop = order[::-1][: max(0, len(instance) - (fewest - 1))]
        value = {k: v for k, v in instance.items() if k not in drop}
        summary = f"with {where} cut to {_count(len(value), 'key')} (minProperties {fewest})"
        yield _Mutant("minProperties", node, None, path, value, summary)
    most = schema.get("maxProperties")
    if isinstance(most, int) and 0 < most + 1 - len(instance) <= _MAX_PADDING:
        value = dict(instance)
        while len(value) <= most:
            value[_unused_key(schema, value, "extra_key")] = 1
        summary = f"with {where} grown to {_count(len(value), 'key')} (maxProperties {most})"
        yield _Mutant("maxProperties", node, None, path, value, summary)


_KEYWORD_FAMILIES: tuple[Callable[[_Node, Any, Path], Iterator[_Mutant]], ...] = (
    _type_mutants,
    _const_mutants,
    _enum_mutants,
    _required_mutants,
    _not_required_mutants,
    _closed_object_mutants,
    _numeric_mutants,
    _string_mutants,
    _array_mutants,
    _object_size_mutants,
)


# --------------------------------------------------------------------------------------------
# Value helpers
# --------------------------------------------------------------------------------------------


def _json_type(value: Any) -> str:
    """JSON Schema type name of a Python JSON value (``integer`` for ints, never for bools)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_equal(left: Any, right: Any) -> bool:
    """JSON Schema equality: ``1 == 1.0`` but ``1 != true``; containers compared deeply."""
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(_json_equal(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(map(_json_equal, left, right))
    return bool(left == right)


def _different_value(value: Any) -> Any:
    """A value different from ``value``, of the same JSON type when simple to make."""
    if isinstance(value, bool):
        return not value
    if _is_number(value):
        return value + 1
    if isinstance(value, str):
        return f"{value}-mutated"
    return "mutated-value"


def _value_outside(options: Sequence[Any], current: Any) -> Any:
    """A value equal to none of ``options``, preferring the JSON type of ``current``."""
    candidates: list[Any] = []
    if isinstance(current, bool):
        candidates.append(not current)
    elif _is_number(current):
        numbers = [o for o in options if _is_number(o)]
        candidates.append(math.floor(max(numbers, default=current)) + 1)
    elif isinstance(current, str):
        candidates += [f"{current}-mutated"] + [f"{current}-mutated-{n}" for n in range(2, 100)]
    candidates += ["not-in-enum"] + [f"not-in-enum-{n}" for n in range(2, len(options) + 3)]
    for candidate in candidates:
        if not any(_json_equal(candidate, option) for option in options):
            return candidate
    raise AssertionError("unreachable: more candidates than enum options")


def _non_matching(pattern: str, current: str) -> str | None:
    """A string ``re.search`` does not match against ``pattern`` (None if none found or the
    pattern is not a Python regex)."""
    candidates = ["!" + current, "", "NOT-MATCHING", current.upper(), current.lower()]
    candidates += [" " + current, current + " ", "\n", "0"]
    for candidate in candidates:
        if candidate != current and _search(pattern, candidate) is False:
            return candidate
    return None


def _search(pattern: str, text: str) -> bool | None:
    """``re.search`` as a bool; None when ``pattern`` is not valid Python regex syntax."""
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return None


def _unused_key(schema: Mapping[str, Any], instance: Mapping[str, Any], stem: str) -> str:
    """``stem``, ``stem_2``...: the first not declared, not matched by patternProperties and
    not present in ``instance``."""
    declared = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    counter = 1
    while True:
        key = stem if counter == 1 else f"{stem}_{counter}"
        clash = key in declared or key in instance or any(_search(p, key) for p in patterns)
        if not clash:
            return key
        counter += 1


def _without(instance: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in instance.items() if k != key}


def _replace_at(document: Any, path: Path, value: Any) -> Any:
    """A copy of ``document`` with the value at ``path`` replaced (input left untouched)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(document, list):
        assert isinstance(head, int)
        return [
            _replace_at(item, rest, value) if i == head else item for i, item in enumerate(document)
        ]
    return {k: (_replace_at(v, rest, value) if k == head else v) for k, v in document.items()}


# --------------------------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------------------------


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _pointer(path: Path) -> str:
    """RFC 6901 pointer of ``path`` (``""`` for the root)."""
    return to_pointer(path)


def _where(path: Path) -> str:
    return _pointer(path) or "the root value"


def _at(path: Path) -> str:
    return f"in {_pointer(path)}" if path else "at the root"


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _detail(value: Any) -> str:
    """``detail`` text for a value: strings verbatim, anything else as canonical JSON."""
    return value if isinstance(value, str) else _show(value)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _slug(tokens: Sequence[str | int]) -> str:
    """File-name-safe slug of path tokens (``queue-concurrency``; ``root`` when empty)."""
    parts = [re.sub(r"[^A-Za-z0-9_]+", "-", str(token)).strip("-") or "_" for token in tokens]
    return "-".join(parts) or "root"


def _definition_title(definition: str) -> str:
    """Short human name: last pointer token (``CallRequest``) or the document's file stem."""
    document, fragment = urldefrag(definition)
    if fragment.strip("/"):
        return _unescape(unquote(fragment).rstrip("/").rsplit("/", 1)[-1])
    stem = document.rstrip("/").rsplit("/", 1)[-1]
    return stem.removesuffix(".json") or document
