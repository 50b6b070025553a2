"""The generated fixture corpora (jobs and workflow), judged by both validators and the models.

- jsonschema (the oracle) and jsonschema-rs (the hot path) agree on every fixture, and both
  agree with the fixture's own ``valid`` label;
- every valid fixture loads into its model; every invalid one is rejected by its model, except
  for the keywords listed in MODEL_BLIND_KEYWORDS (pydantic cannot express them), and each
  listed keyword is really exercised by the corpus;
- the corpus covers, counted from the schemas themselves: a valid instance for every
  definition, and an invalid one for every required key, const, enum and closed object.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema_rs
import pytest
from pydantic import ValidationError

from runwire.codegen.lint import walk
from runwire.generated.jobs import models as jobs_models
from runwire.generated.workflow import models as workflow_models
from runwire.runtime.validation import SchemaRegistry

FAMILIES: dict[str, ModuleType] = {"jobs": jobs_models, "workflow": workflow_models}
GENERATED = Path(str(resources.files("runwire.generated")))
REGISTRY = SchemaRegistry.from_package()
SCHEMAS = {uri: doc for uri, doc in REGISTRY.documents.items()}

#: Per family, (keyword, definition) pairs whose violations the generated models cannot see,
#: and why. The test fails if an invalid fixture of another pair is accepted by its model, or
#: if a pair listed here no longer occurs among the accepted ones (so the list only shrinks).
MODEL_BLIND_KEYWORDS: dict[str, dict[tuple[str, str], str]] = {
    "jobs": {
        ("not", "FollowStreamRequest"): "pydantic has no negation: both since and recent",
        ("not", "ReadStreamRequest"): "pydantic has no negation: both since and recent",
    },
    "workflow": {
        (keyword, name): "TaskMessage's prefixItems [severity, text] become "
        "list[Severity | MessageText]: a bad severity passes as text"
        for keyword in ("enum",)
        for name in ("TaskMessage", "MessageArgs", "MessageRequest")
    },
}


def load_corpus(family: str) -> list[dict[str, Any]]:
    fixtures = GENERATED / family / "fixtures"
    records = []
    for path in sorted(fixtures.rglob("*.json")):
        record = json.loads(path.read_text())
        record["path"] = f"{family}/{path.relative_to(fixtures).as_posix()}"
        record["family"] = family
        records.append(record)
    return records


CORPORA = {family: load_corpus(family) for family in FAMILIES}
CORPUS = [record for family in FAMILIES for record in CORPORA[family]]


@pytest.mark.parametrize("family", FAMILIES)
def test_corpus_is_not_empty(family: str) -> None:
    assert sum(r["valid"] for r in CORPORA[family]) > 50
    assert sum(not r["valid"] for r in CORPORA[family]) > 200


@pytest.mark.parametrize("record", CORPUS, ids=[r["path"] for r in CORPUS])
def test_both_validators_agree_with_the_label(record: dict[str, Any]) -> None:
    validator = REGISTRY.validator(record["definition"])
    assert validator.oracle_is_valid(record["instance"]) is record["valid"]
    assert validator.is_valid(record["instance"]) is record["valid"]


def test_jsonschema_rs_agrees_without_our_wrapper() -> None:
    registry = jsonschema_rs.Registry(list(SCHEMAS.items()))
    for record in CORPUS:
        rs = jsonschema_rs.validator_for({"$ref": record["definition"]}, registry=registry)
        assert rs.is_valid(record["instance"]) is record["valid"], record["path"]


def model_accepts(record: dict[str, Any]) -> bool:
    model = FAMILIES[record["family"]].DEFINITIONS[record["definition"]]
    try:
        model.model_validate(record["instance"])
    except ValidationError:
        return False
    return True


def test_every_valid_fixture_loads_into_its_model() -> None:
    rejected = [r["path"] for r in CORPUS if r["valid"] and not model_accepts(r)]
    assert rejected == []


def blind_key(record: dict[str, Any]) -> tuple[str, str]:
    return (record["keyword"], record["definition"].rsplit("/", 1)[1])


@pytest.mark.parametrize("family", FAMILIES)
def test_models_reject_invalid_fixtures_except_listed_keywords(family: str) -> None:
    blind = MODEL_BLIND_KEYWORDS[family]
    accepted = [r for r in CORPORA[family] if not r["valid"] and model_accepts(r)]
    unexpected = [(r["path"], r["keyword"]) for r in accepted if blind_key(r) not in blind]
    assert unexpected == []
    seen = {blind_key(r) for r in accepted}
    assert set(blind) <= seen, "a listed model gap is no longer exercised"


def family_documents(family: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for uri, document in sorted(SCHEMAS.items()):
        if f"/schemas/{family}/" in uri:
            yield uri, document


def referenced_common(family: str) -> set[str]:
    """Absolute URIs of the definitions outside the family that the family uses."""
    used = set()
    for uri, document in family_documents(family):
        for _, schema in walk(document):
            ref = schema.get("$ref")
            if ref and not ref.startswith("#"):
                used.add(urllib.parse.urljoin(uri, ref))
    return {u for u in used if f"/schemas/{family}/" not in u}


def expected_constraints(family: str) -> set[tuple[str, str, str | None]]:
    """(schema location, keyword, detail) for every required key, const, enum, closed object."""
    wanted: set[tuple[str, str, str | None]] = set()
    for uri, document in family_documents(family):
        for pointer, schema in walk(document):
            if pointer.endswith(("/if", "/not")) or "/not/" in pointer:
                continue
            location = f"{uri}#{pointer}"
            for key in schema.get("required", []):
                wanted.add((location, "required", key))
            if "const" in schema:
                wanted.add((location, "const", None))
            if "enum" in schema:
                wanted.add((location, "enum", None))
            if schema.get("additionalProperties") is False:
                wanted.add((location, "additionalProperties", None))
    return wanted


def covered(family: str) -> set[tuple[str, str, str | None]]:
    found = set()
    for r in CORPORA[family]:
        if r["valid"]:
            continue
        location = urllib.parse.unquote(r["schema_location"])
        detail = r["detail"] if r["keyword"] == "required" else None
        found.add((location, r["keyword"], detail))
    return found


@pytest.mark.parametrize("family", FAMILIES)
def test_every_definition_has_a_valid_fixture(family: str) -> None:
    definitions = {
        f"{uri}#/$defs/{name}"
        for uri, document in family_documents(family)
        for name in document["$defs"]
    } | referenced_common(family)
    with_valid = {r["definition"] for r in CORPORA[family] if r["valid"]}
    assert definitions - with_valid == set()
    assert definitions <= set(FAMILIES[family].DEFINITIONS)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_required_const_enum_and_closed_object_has_an_invalid_fixture(family: str) -> None:
    wanted = expected_constraints(family)
    assert len(wanted) > 100, "the count comes from the schemas; this many are there today"
    missing = sorted(wanted - covered(family), key=str)
    assert missing == []


@pytest.mark.parametrize("family", FAMILIES)
def test_type_and_bound_mutations_are_present(family: str) -> None:
    keywords = {r["keyword"] for r in CORPORA[family] if not r["valid"]}
    assert {"type", "minimum", "maximum", "minLength", "maxLength", "pattern"} <= keywords
