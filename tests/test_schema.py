"""The JSON Schema, the pydantic models and the parser cannot drift apart.

- `schemas/toolfsm.schema.json` is exactly what `engine.language.spec` generates;
- the keys the schema accepts for each rule kind (and for files and tools) are the models'
  fields, and the kind keys the parser dispatches on are the schema's required keys;
- every reusable rule file under `rules/` is valid for both the schema and the parser, and
  files the parser rejects for their shape are rejected by the schema too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from engine import read_rule_file
from engine.language import spec
from engine.language.loader import _RULE_MODELS
from engine.language.yamltree import parse_yaml

ROOT = Path(__file__).parent.parent
SCHEMA_FILE = ROOT / "schemas" / "toolfsm.schema.json"
RULE_FILES = sorted((ROOT / "rules").glob("*.yaml"))
SCHEMA: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

RULE_CLASSES: dict[str, type[spec.BaseModel]] = {
    "InitRule": spec.InitRule,
    "ChildRule": spec.ChildRule,
    "ConditionalRule": spec.ConditionalRule,
    "ParentRule": spec.ParentRule,
    "TerminalRule": spec.TerminalRule,
    "ContinueRule": spec.ContinueRule,
    "MaxCallsRule": spec.MaxCallsRule,
    "RequiredBeforeExitRule": spec.RequiredBeforeExitRule,
    "RequiresApprovalRule": spec.RequiresApprovalRule,
}


def _fields(model: type[spec.BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def _as_json(text: str) -> Any:
    """The document as an editor's YAML language server sees it (keys become strings)."""
    data, _, diagnostics = parse_yaml(text, "doc.yaml")
    assert not diagnostics
    return json.loads(json.dumps(data))


def test_checked_in_schema_is_generated_from_the_models() -> None:
    assert SCHEMA_FILE.read_text() == spec.json_schema_text(), (
        "stale schema: run `python -m engine.language.spec > schemas/toolfsm.schema.json`"
    )
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$id"] == spec.SCHEMA_ID


def test_schema_keys_equal_model_fields_for_every_rule_kind() -> None:
    defs = SCHEMA["$defs"]
    assert set(RULE_CLASSES) | {"ToolDecl"} <= set(defs)
    # Every rule kind the loader knows is in the schema's `rules` union, and nothing else.
    refs = {
        item["$ref"].rsplit("/", 1)[1] for item in SCHEMA["properties"]["rules"]["items"]["oneOf"]
    }
    assert refs == set(RULE_CLASSES)
    assert {cls.__name__ for cls in _RULE_MODELS.values()} == set(RULE_CLASSES)
    assert set(spec.RULE_KINDS_BY_CLASS) == set(RULE_CLASSES.values())
    for name, model in RULE_CLASSES.items():
        definition = defs[name]
        assert definition["additionalProperties"] is False, name
        assert set(definition["properties"]) == _fields(model), name
        kind_keys = set(definition["required"]) & set(spec.KIND_KEYS)
        assert len(kind_keys) == 1, f"{name} must require exactly one kind key"
        # The parser dispatches on that key to this model.
        kind = spec.KIND_KEYS[kind_keys.pop()]
        if name == "ConditionalRule":
            assert kind == "child" and "on_output" in definition["required"]
            kind = "conditional"
        assert _RULE_MODELS[kind] is model
    assert set(defs["ToolDecl"]["properties"]) == _fields(spec.ToolDecl)
    assert set(SCHEMA["properties"]) == _fields(spec.AgentSpec)
    assert SCHEMA["additionalProperties"] is False


def test_there_are_reusable_rule_files() -> None:
    names = {p.stem for p in RULE_FILES}
    assert {"research", "support", "screening"} <= names


@pytest.mark.parametrize("path", RULE_FILES, ids=[p.stem for p in RULE_FILES])
def test_rule_library_file_is_valid_for_schema_and_parser(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("# yaml-language-server: $schema=../schemas/toolfsm.schema.json\n")
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in VALIDATOR.iter_errors(_as_json(text))
    ]
    assert errors == []
    rule_file = read_rule_file(path)
    assert rule_file.ok
    assert rule_file.diagnostics == ()  # clean: no warnings either


SHAPE_ERRORS = {"E010", "E011", "E012", "E013", "E014", "E015"}


def _shape_broken() -> list[Path]:
    """Broken files whose problem is their shape (what a JSON Schema can see)."""
    found = []
    for path in sorted((ROOT / "tests" / "broken").glob("*.yaml")):
        rule_file = read_rule_file(path)
        messages = " ".join(d.message for d in rule_file.diagnostics)
        # A null output-case key is the string "null" once in JSON: only the parser sees it.
        if {d.code for d in rule_file.diagnostics} & SHAPE_ERRORS and "output case" not in messages:
            found.append(path)
    return found


@pytest.mark.parametrize("path", _shape_broken(), ids=lambda p: p.stem)
def test_schema_rejects_what_the_parser_rejects_for_its_shape(path: Path) -> None:
    data, _, _ = parse_yaml(path.read_text(), str(path))
    assert list(VALIDATOR.iter_errors(json.loads(json.dumps(data)))) != []


# -- what editors show: descriptions, snippet values, the schema line -----------------------------


def _object_schemas() -> list[tuple[str, dict[str, Any]]]:
    """Every object of the language (the file and each definition), by name."""
    return [("rule file", SCHEMA), *SCHEMA["$defs"].items()]


def test_every_key_in_the_schema_has_a_description() -> None:
    bare = [
        f"{owner}.{key}"
        for owner, schema in _object_schemas()
        for key, prop in schema.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert bare == [], "keys an editor would hover with a bare title"
    undocumented = [
        name for name, schema in SCHEMA["$defs"].items() if not schema.get("description")
    ]
    assert undocumented == []


def test_every_rule_kind_key_is_described_by_its_semantics() -> None:
    defs = SCHEMA["$defs"]
    for name, model in RULE_CLASSES.items():
        kind = spec.RULE_KINDS_BY_CLASS[model]
        (key,) = set(defs[name]["required"]) & set(spec.KIND_KEYS)
        assert defs[name]["properties"][key]["description"] == spec.RULE_SEMANTICS[kind]
        assert defs[name]["properties"][key]["title"] == f"{kind} rule"


def test_readme_rule_kind_table_is_the_spec_semantics() -> None:
    """README's table of the nine kinds says what the kind keys' descriptions say (one source)."""
    readme = (ROOT / "README.md").read_text().splitlines()
    start = readme.index("| kind | YAML | semantics |") + 2
    rows = {}
    for line in readme[start:]:
        if not line.startswith("| "):
            break
        kind, _yaml, semantics = (cell.strip() for cell in line.strip("|").split(" | "))
        rows[kind.replace(" ", "_")] = semantics
    assert rows == spec.RULE_SEMANTICS


def _property_schemas() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{owner}.{key}", prop)
        for owner, schema in _object_schemas()
        for key, prop in schema.get("properties", {}).items()
    ]


def test_snippet_values_are_valid_values() -> None:
    """What an editor inserts when it completes a key (the default, else the first example)
    is a value the key accepts; a number with neither would be completed as 0."""
    for where, prop in _property_schemas():
        resolved = {"$defs": SCHEMA["$defs"], **prop}
        validator = jsonschema.Draft202012Validator(resolved)
        for value in [prop["default"]] if "default" in prop else []:
            assert validator.is_valid(value), f"{where}: default {value!r}"
        for value in prop.get("examples", []):
            assert validator.is_valid(value), f"{where}: example {value!r}"
        if prop.get("type") in ("integer", "number") and not {"default", "const"} & set(prop):
            assert prop.get("examples"), f"{where}: an editor would insert 0"
        assert prop.get("default", ...) is not None, f"{where}: an editor would insert null"


def _shipped_rule_files() -> list[Path]:
    from engine.cli.common import collect_rule_files

    return collect_rule_files([ROOT / "rules", ROOT / "examples"])


def test_every_shipped_rule_file_points_editors_at_the_schema() -> None:
    files = _shipped_rule_files()
    assert {p.parent.name for p in files} >= {"rules", "screening", "support", "research"}
    for path in files:
        first = path.read_text().splitlines()[0]
        prefix = "# yaml-language-server: $schema="
        assert first.startswith(prefix), f"{path.relative_to(ROOT)} has no schema line"
        target = (path.parent / first[len(prefix) :]).resolve()
        assert target == SCHEMA_FILE.resolve(), f"{path.relative_to(ROOT)}: {first}"
