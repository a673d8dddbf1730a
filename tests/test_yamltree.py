"""YAML reading: YAML 1.2 core-schema scalars, positions of values and keys, and refusals."""

from __future__ import annotations

import math
from typing import Any

import pytest

from engine.language.yamltree import parse_yaml


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("False", False),
        ("TRUE", True),
        ("yes", "yes"),  # YAML 1.1 booleans stay strings: a classic trap for output cases
        ("on", "on"),
        ("n", "n"),
        ("~", None),
        ("null", None),
        ("Null", None),
        ("", None),
        ("nil", "nil"),
        ("12", 12),
        ("-3", -3),
        ("+4", 4),
        ("0x1F", 31),
        ("0o17", 15),
        ("017", 17),  # YAML 1.2: no octal without 0o
        ("1_000", "1_000"),  # YAML 1.2: no digit separators
        ("1.5", 1.5),
        ("1e3", 1000.0),
        (".5", 0.5),
        ("-.inf", -math.inf),
        (".Inf", math.inf),
        ("tool_name", "tool_name"),
        ("True story", "True story"),
        ("'true'", "true"),  # quoted scalars are always strings
        ('"12"', "12"),
        ("fetch-page", "fetch-page"),
    ],
)
def test_plain_scalars_follow_the_yaml_12_core_schema(text: str, value: Any) -> None:
    data, _, diagnostics = parse_yaml(f"k: {text}\n", "s.yaml")
    assert diagnostics == []
    assert data["k"] == value and type(data["k"]) is type(value)


def test_nan_is_a_float() -> None:
    data, _, _ = parse_yaml("k: .nan\n", "s.yaml")
    assert math.isnan(data["k"])


def test_positions_of_values_and_keys() -> None:
    text = "agent: a\nrules:\n  - after: x\n    allow: [y, z]\n"
    _, source, _ = parse_yaml(text, "p.yaml")
    assert str(source.span(("rules", 0, "allow", 1))) == "p.yaml:4:16"
    assert str(source.span(("rules", 0, "allow"), key=True)) == "p.yaml:4:5"
    assert str(source.span(("rules", 0))) == "p.yaml:3:5"
    # An absent path falls back to the nearest enclosing node.
    assert str(source.span(("rules", 0, "missing"))) == "p.yaml:3:5"


def test_anchors_and_aliases_within_limits_are_fine() -> None:
    data, _, diagnostics = parse_yaml("a: &x [1, 2]\nb: *x\n", "a.yaml")
    assert diagnostics == [] and data == {"a": [1, 2], "b": [1, 2]}


def test_deep_nesting_is_refused() -> None:
    data, _, diagnostics = parse_yaml("k: " + "[" * 100 + "]" * 100 + "\n", "d.yaml")
    assert data is None and [d.code for d in diagnostics] == ["E003"]


def test_huge_file_is_refused() -> None:
    data, _, diagnostics = parse_yaml("k: " + "x" * 1_000_001, "h.yaml")
    assert data is None and [d.code for d in diagnostics] == ["E003"]
