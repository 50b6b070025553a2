"""models.py: pydantic v2 models made by datamodel-code-generator, used as a library.

The family's schema files (and the ``common/`` definitions they reach) are bundled into one
document whose ``$defs`` hold every definition under its own name (the linter keeps names
unique per family), so each definition becomes exactly one class of the same name. Every
option that changes the output is passed explicitly in :data:`DCG_OPTIONS`; the generator
version is pinned in ``pyproject.toml``. The few post-fixes are small named functions that
assert what they change, so a generator upgrade that moves the text fails loudly.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from runwire.codegen.model import Family, SchemaTree
from runwire.runtime.errors import SchemaError

BUNDLE_CLASS = "FamilyBundle"

#: Dropped before generation: annotations only (examples, our x- keywords) that would add noise.
_STRIPPED_KEYWORDS = ("examples", "$comment")


def dcg_options() -> dict[str, Any]:
    """Every behaviour-affecting datamodel-code-generator option, explicitly."""
    from datamodel_code_generator.enums import DataModelType, InputFileType
    from datamodel_code_generator.format import PythonVersion

    return {
        "input_file_type": InputFileType.JsonSchema,
        "output_model_type": DataModelType.PydanticV2BaseModel,
        "target_python_version": PythonVersion.PY_311,
        "base_class": "runwire.runtime.model.WireModel",
        "class_name": BUNDLE_CLASS,
        "strict_nullable": True,
        "allow_remote_refs": False,
        "use_annotated": True,
        "field_constraints": True,
        "enum_field_as_literal": "all",
        "use_standard_collections": True,
        "use_union_operator": True,
        "use_schema_description": True,
        "use_field_description": True,
        "use_title_as_name": False,
        "collapse_root_models": False,
        "reuse_model": False,
        "snake_case_field": False,
        "capitalise_enum_members": False,
        "use_double_quotes": True,
        "disable_timestamp": True,
        "enable_version_header": False,
        "keep_model_order": True,
        "formatters": [],
    }


def family_definitions(tree: SchemaTree, family: Family) -> list[tuple[str, str]]:
    """(file, definition name) for every definition the family's models contain, in order.

    The family's own files first (sorted by path, definitions in file order), then the
    ``common/`` definitions they reach through ``$ref``, transitively.
    """
    own = [
        (rel, name) for rel in family.schema_files for name in tree.documents[rel].get("$defs", {})
    ]
    seen = set(own)
    extra: list[tuple[str, str]] = []
    queue = list(own)
    while queue:
        rel, name = queue.pop(0)
        for target in _refs(tree.documents[rel]["$defs"][name], rel):
            if target not in seen:
                seen.add(target)
                extra.append(target)
                queue.append(target)
    common = sorted(t for t in extra if not t[0].startswith(family.name + "/"))
    return own + common


def _refs(schema: Any, rel: str) -> Iterator[tuple[str, str]]:
    if isinstance(schema, Mapping):
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str):
                yield _target(value, rel)
            else:
                yield from _refs(value, rel)
    elif isinstance(schema, list):
        for item in schema:
            yield from _refs(item, rel)


def _target(ref: str, rel: str) -> tuple[str, str]:
    """Resolve a relative ``$ref`` written in ``rel`` to (file, definition name)."""
    path, _, fragment = ref.partition("#")
    if not fragment.startswith("/$defs/") or fragment.count("/") != 2:
        raise SchemaError(f"{rel}: $ref {ref!r}: codegen supports references to definitions only")
    if path:
        parts = rel.split("/")[:-1]
        for segment in path.split("/"):
            if segment == "..":
                parts.pop()
            elif segment != ".":
                parts.append(segment)
        file = "/".join(parts)
    else:
        file = rel
    return file, fragment.rsplit("/", 1)[1]


def bundle(tree: SchemaTree, family: Family) -> dict[str, Any]:
    """One schema whose ``$defs`` hold every definition of the family, references made local."""

    def rewrite(value: Any, rel: str) -> Any:
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for key, sub in value.items():
                if key in _STRIPPED_KEYWORDS or key.startswith("x-"):
                    continue
                if key == "$ref":
                    out[key] = "#/$defs/" + _target(sub, rel)[1]
                else:
                    out[key] = rewrite(sub, rel)
            return out
        if isinstance(value, list):
            return [rewrite(item, rel) for item in value]
        return value

    defs = {
        name: rewrite(tree.documents[rel]["$defs"][name], rel)
        for rel, name in family_definitions(tree, family)
    }
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$defs": defs}


def _drop_dcg_header(text: str) -> str:
    header = "# generated by datamodel-codegen:\n#   filename:  <dict>\n"
    assert text.startswith(header), "datamodel-code-generator header changed"
    return text[len(header) :].lstrip("\n")


def _drop_bundle_class(text: str) -> str:
    """The bundle root has no meaning of its own: remove its class."""
    pattern = re.compile(rf"\n\nclass {BUNDLE_CLASS}\(RootModel\[Any\]\):\n    root: Any\n")
    text, count = pattern.subn("\n", text)
    assert count == 1, "bundle root class not found exactly once"
    return text


def _strict_root_models(text: str) -> str:
    """Root models subclass WireRootModel, so they are frozen and strict like WireModel."""
    text, count = re.subn(r"^(class \w+\()RootModel\[", r"\1WireRootModel[", text, flags=re.M)
    assert "RootModel[" not in text.replace("WireRootModel[", ""), "a RootModel was left"
    if count:
        text = text.replace(
            "from runwire.runtime.model import WireModel",
            "from runwire.runtime.model import WireModel, WireRootModel",
        )
    text = re.sub(r"from pydantic import ([^\n]*)", _drop_root_import, text, count=1)
    return text


def _drop_root_import(match: re.Match[str]) -> str:
    names = [n.strip() for n in match.group(1).split(",") if n.strip() != "RootModel"]
    return "from pydantic import " + ", ".join(names) if names else ""


def _annotated_constr(text: str) -> str:
    """``constr(...)`` (which datamodel-code-generator writes for a constrained string inside
    a union, e.g. ``additionalProperties: {"oneOf": [{"type": "string", "maxLength": 9}, ...]}``)
    is a call mypy refuses in annotations: write ``Annotated[str, StringConstraints(...)]``."""
    text, count = re.subn(r"\bconstr\(([^()]*)\)", r"Annotated[str, StringConstraints(\1)]", text)
    if count:
        assert "StringConstraints" in text.split("\n\n", 1)[0] or "from pydantic import" in text
        text = re.sub(r"from pydantic import ([^\n]*)", _fix_constr_import, text, count=1)
    assert "constr(" not in text, "a constr( call was left"
    return text


def _fix_constr_import(match: re.Match[str]) -> str:
    names = [n.strip() for n in match.group(1).split(",") if n.strip() != "constr"]
    if "StringConstraints" not in names:
        names.append("StringConstraints")
    return "from pydantic import " + ", ".join(sorted(names))


def _definitions_table(family: Family, definitions: list[tuple[str, str]]) -> str:
    lines = [
        "",
        "",
        "#: Every definition's absolute schema URI → its model class.",
        "DEFINITIONS: dict[str, type[WireModel] | type[WireRootModel[Any]]] = {",
    ]
    for rel, name in definitions:
        lines.append(f'    "https://runwire.dev/schemas/{rel}#/$defs/{name}": {name},')
    lines.append("}")
    return "\n".join(lines) + "\n"


def emit_models(tree: SchemaTree, family: Family, header: str) -> str:
    """The text of ``generated/<family>/models.py`` (not yet formatted)."""
    from datamodel_code_generator import generate

    definitions = family_definitions(tree, family)
    output = generate(bundle(tree, family), **dcg_options())
    if not isinstance(output, str):
        raise SchemaError(f"{family.name}: datamodel-code-generator returned no single module")
    text = _annotated_constr(_strict_root_models(_drop_bundle_class(_drop_dcg_header(output))))
    return header + text.rstrip("\n") + "\n" + _definitions_table(family, definitions)
