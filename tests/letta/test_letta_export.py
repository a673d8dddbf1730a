"""Export: Letta `tool_rules` JSON from a rule file, lossy output keys, and the round trips."""

from __future__ import annotations

import json
from pathlib import Path

from engine.language.loader import parse_rules
from engine.letta import import_letta, import_letta_file, spec_to_letta, spec_to_letta_agent

FIXTURES = Path(__file__).parent / "fixtures"

NATIVE = """\
version: 1
agent: native
tools: [a, b, c, d]
rules:
  - init: [a, b]
  - after: a
    allow: [b, c]
    args: {b: {k: 1}}
    note: why
  - after: b
    on_output: {true: c, 2: a, "x": b}
    default: a
    strict: true
  - only_after: c
    tools: d
  - max_calls: 2
    tools: [a, c]
  - terminal: d
  - continue: c
  - required_before_exit: [a]
  - requires_approval: b
"""


def _canon(rules: list[dict]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in rules)


def test_export_writes_one_letta_object_per_tool_per_rule() -> None:
    spec = parse_rules(NATIVE).require()
    exported = spec_to_letta(spec)
    by_type: dict[str, list[dict]] = {}
    for rule in exported.tool_rules:
        assert rule["prompt_template"] is None and list(rule)[:2] == ["tool_name", "type"]
        by_type.setdefault(rule["type"], []).append(rule)
    assert [r["tool_name"] for r in by_type["run_first"]] == ["a", "b"]
    assert by_type["constrain_child_tools"] == [
        {
            "tool_name": "a",
            "type": "constrain_child_tools",
            "children": ["b", "c"],
            "child_arg_nodes": [{"name": "b", "args": {"k": 1}}],
            "prompt_template": None,
        }
    ]
    (conditional,) = by_type["conditional"]
    assert conditional["child_output_mapping"] == {"true": "c", "2": "a", "x": "b"}
    assert conditional["default_child"] == "a"
    # toolfsm's `strict` has no effect beside a default; Letta's flag would override it.
    assert conditional["require_output_mapping"] is False
    assert by_type["parent_last_tool"][0]["children"] == ["d"]
    assert [(r["tool_name"], r["max_count_limit"]) for r in by_type["max_count_per_step"]] == [
        ("a", 2),
        ("c", 2),
    ]
    for kind, tool in [
        ("exit_loop", "d"),
        ("continue_loop", "c"),
        ("required_before_exit", "a"),
        ("requires_approval", "b"),
    ]:
        assert [r["tool_name"] for r in by_type[kind]] == [tool]
    assert exported.notes == ("rule #2 (child): `note` dropped (Letta rules have no such field)",)


def test_bool_and_number_keys_make_the_export_lossy() -> None:
    exported = spec_to_letta(parse_rules(NATIVE).require())
    assert exported.lossy
    assert len(exported.problems) == 2
    assert "boolean case True becomes the string key 'true'" in exported.problems[0]
    assert "number case 2" in exported.problems[1]


def test_string_keys_export_without_loss_and_colliding_keys_are_lossy() -> None:
    strings = NATIVE.replace('{true: c, 2: a, "x": b}', '{"true": c, "2": a}')
    assert not spec_to_letta(parse_rules(strings).require()).lossy
    colliding = NATIVE.replace('{true: c, 2: a, "x": b}', '{true: c, "true": a}')
    problems = spec_to_letta(parse_rules(colliding).require()).problems
    assert any("collide" in p for p in problems)


def test_import_then_export_gives_back_the_same_rules() -> None:
    for imported in import_letta_file(FIXTURES / "support.af"):
        exported = spec_to_letta(imported.translation.spec)
        assert not exported.lossy
        original = [
            {k: v for k, v in r.items() if v is not None}
            for r in imported.translation.agent.tool_rules
        ]
        again = [{k: v for k, v in r.items() if v is not None} for r in exported.tool_rules]
        for rule in original:
            rule.pop("prompt_template", None)
        for rule in again:
            rule.pop("prompt_template", None)
        assert _canon(again) == _canon(original)


def test_export_as_agent_object_then_import_gives_back_the_same_spec() -> None:
    spec = parse_rules(NATIVE.replace('{true: c, 2: a, "x": b}', '{"x": b}')).require()
    document, exported = spec_to_letta_agent(spec)
    assert [t["name"] for t in document["tools"]] == ["a", "b", "c", "d"]
    (imported,) = import_letta(json.dumps(document), "native.json")
    assert imported.translation.spec.tool_names() == spec.tool_names()
    again = spec_to_letta(imported.translation.spec)
    assert _canon(again.tool_rules) == _canon(exported.tool_rules)
