"""The JSON Schema, the pydantic models and the parser cannot drift apart.

- `schemas/toolfsm.schema.json` is exactly what `engine.spec` generates;
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

from engine import read_rule_file, spec
from engine.loader import _RULE_MODELS
from engine.yamltree import parse_yaml

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
        "stale schema: run `python -m engine.spec > schemas/toolfsm.schema.json`"
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
