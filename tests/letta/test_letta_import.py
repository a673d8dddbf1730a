"""Import: the three Letta forms, the written YAML (quoting, comments, re-loading), and notes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.language.loader import parse_rules
from engine.language.yamltree import parse_yaml
from engine.letta import (
    LettaFormatError,
    TranslationError,
    import_letta,
    import_letta_file,
    parse_letta,
)
from engine.letta.writer import scalar
from engine.machine.compiler import compile_rules

FIXTURES = Path(__file__).parent / "fixtures"


def _one(text: str, path: str = "in.json"):
    (imported,) = import_letta(text, path)
    return imported


def test_agent_file_gives_one_rule_file_per_agent_with_its_tools_in_tool_ids_order() -> None:
    imported = import_letta_file(FIXTURES / "support.af")
    assert [i.name for i in imported] == ["support_bot", "triage"]
    bot, triage = (i.translation.spec for i in imported)
    assert bot.tool_names() == (
        "send_message",
        "lookup_order",
        "check_refund_eligible",
        "issue_refund",
        "escalate",
    )
    assert triage.tool_names() == ("send_message", "escalate", "core_memory_append", "classify")
    refund = next(t for t in bot.tool_decls() if t.name == "issue_refund")
    assert refund.description == "Refund an order (needs approval)."
    assert refund.parameters["required"] == ["order_id"]
    for item in imported:
        assert not item.lossy
        rule_file = parse_rules(item.text, "out.yaml")
        assert rule_file.ok and not rule_file.diagnostics
        assert rule_file.spec == item.translation.spec
        compile_rules(rule_file)


def test_double_encoded_agent_file_imports_like_the_plain_one() -> None:
    plain = import_letta_file(FIXTURES / "support.af")
    double = import_letta_file(FIXTURES / "support_double_encoded.af")
    assert [i.translation.spec for i in double] == [i.translation.spec for i in plain]
    assert parse_letta((FIXTURES / "support_double_encoded.af").read_text()).encoding_layers == 2
    assert "JSON-encoded as a string" in double[0].text


def test_agent_object_and_bare_rules_list_translate_the_same_rules() -> None:
    (agent,) = import_letta_file(FIXTURES / "support_agent.json")
    (bare,) = import_letta_file(FIXTURES / "support_tool_rules.json")
    (from_file, _) = import_letta_file(FIXTURES / "support.af")
    assert agent.translation.spec.rules == from_file.translation.spec.rules
    assert bare.translation.spec.rules == from_file.translation.spec.rules
    assert agent.translation.spec.tool_names() == from_file.translation.spec.tool_names()


def test_bare_rules_list_derives_tools_from_the_rules_and_says_so() -> None:
    (bare,) = import_letta_file(FIXTURES / "support_tool_rules.json")
    assert bare.translation.tools_derived
    assert bare.translation.spec.tool_names() == (
        "lookup_order",
        "check_refund_eligible",
        "send_message",
        "issue_refund",
        "escalate",
    )
    assert "`tools` lists the tools the rules name" in bare.text
    assert bare.translation.spec.agent == "support_tool_rules"


def test_grouping_is_readable_and_keeps_the_meaning() -> None:
    (bot, _) = import_letta_file(FIXTURES / "support.af")
    text = bot.text
    assert "  - terminal: [send_message, escalate]\n" in text
    assert "# from Letta tool_rules[4], tool_rules[5]: exit_loop" in text
    assert "  - init: lookup_order\n    args:\n      include_history: true\n" in text
    assert "  - requires_approval: issue_refund\n" in text
    assert "  - max_calls: 1\n    tools: issue_refund\n" in text


def test_output_cases_are_quoted_strings_that_reload_as_strings() -> None:
    (_, triage) = import_letta_file(FIXTURES / "support.af")
    for key in ("billing", "1", "yes", "null", "on"):
        assert f'      "{key}": ' in triage.text
    raw, _source, _diags = parse_yaml(triage.text, "t.yaml")
    cases = next(r for r in raw["rules"] if "on_output" in r)["on_output"]
    assert list(cases) == ["billing", "1", "yes", "null", "on"]
    assert all(isinstance(k, str) for k in cases)
    # PyYAML's own (YAML 1.1) reader agrees: nothing turns into a bool, int or None.
    import yaml

    cases_11 = next(r for r in yaml.safe_load(triage.text)["rules"] if "on_output" in r)
    assert all(isinstance(k, str) for k in cases_11["on_output"])


def test_require_output_mapping_becomes_strict_and_a_dead_default_is_dropped_with_a_note() -> None:
    rules = [
        {
            "tool_name": "a",
            "type": "conditional",
            "child_output_mapping": {"x": "b"},
            "default_child": "c",
            "require_output_mapping": True,
        },
    ]
    imported = _one(json.dumps({"name": "n", "tools": ["a", "b", "c"], "tool_rules": rules}))
    (rule,) = imported.translation.spec.rules
    assert rule.strict and rule.default is None
    assert not imported.lossy
    assert "default_child 'c' dropped" in imported.text


def test_prompt_templates_are_dropped_with_a_note_and_null_ones_silently() -> None:
    rules = [
        {"tool_name": "a", "type": "exit_loop", "prompt_template": "<rule>{{ tool_name }}</rule>"},
        {"tool_name": "b", "type": "exit_loop", "prompt_template": None},
    ]
    imported = _one(json.dumps(rules))
    assert imported.text.count("`prompt_template` dropped") == 1
    assert "tool_rules[0] (exit_loop on a)" in imported.text


def test_duplicates_fold_and_terminal_beats_continue_without_loss() -> None:
    child = {"tool_name": "a", "type": "constrain_child_tools", "children": ["b"]}
    rules = [
        child,
        dict(child),
        {"tool_name": "b", "type": "exit_loop"},
        {"tool_name": "b", "type": "exit_loop"},
        {"tool_name": "b", "type": "continue_loop"},
        {"tool_name": "a", "type": "max_count_per_step", "max_count_limit": 3},
        {"tool_name": "a", "type": "max_count_per_step", "max_count_limit": 2},
        {"tool_name": "a", "type": "run_first", "args": {"x": 1, "y": 1}},
        {"tool_name": "a", "type": "run_first", "args": {"y": 2}},
    ]
    imported = _one(json.dumps(rules))
    assert not imported.lossy
    kinds = [type(r).__name__ for r in imported.translation.spec.rules]
    assert kinds == ["InitRule", "ChildRule", "MaxCallsRule", "TerminalRule"]
    init, _child, limit, _terminal = imported.translation.spec.rules
    assert init.args == {"x": 1, "y": 2}  # later wins key by key, as in Letta
    assert limit.max_calls == 2  # the smaller limit binds
    assert "continue_loop on b dropped" in imported.text
    assert imported.translation.origins[1] == (0, 1)


def test_child_rules_whose_merged_args_are_equal_fold_whatever_the_node_order() -> None:
    # Found by the import -> export -> import property: arg nodes for one child merge key by
    # key, so these two rules prefill the same values and are one rule.
    rules = [
        {
            "tool_name": "a",
            "type": "constrain_child_tools",
            "children": ["b"],
            "child_arg_nodes": [{"name": "b", "args": {"p": 0, "q": 1}}],
        },
        {
            "tool_name": "a",
            "type": "constrain_child_tools",
            "children": ["b"],
            "child_arg_nodes": [{"name": "b", "args": {"q": 1}}, {"name": "b", "args": {"p": 0}}],
        },
    ]
    imported = _one(json.dumps(rules))
    assert not imported.lossy
    (child,) = imported.translation.spec.rules
    assert child.args == {"b": {"p": 0, "q": 1}}
    assert imported.translation.origins[0] == (0, 1)


def test_deprecated_type_names_are_read() -> None:
    rules = [
        {"tool_name": "a", "type": "InitToolRule"},
        {"tool_name": "a", "type": "ToolRule", "children": ["b"]},
        {"tool_name": "b", "type": "TerminalToolRule"},
    ]
    spec = _one(json.dumps(rules)).translation.spec
    assert [type(r).__name__ for r in spec.rules] == ["InitRule", "ChildRule", "TerminalRule"]


def test_lossy_file_keeps_what_it_can_and_quotes_the_rest() -> None:
    (messy,) = import_letta_file(FIXTURES / "lossy.af")
    assert messy.lossy
    assert [s.index for s in messy.translation.skipped] == [1, 2, 3]
    assert messy.text.count("# NOT TRANSLATED tool_rules[") == 3
    assert '# Letta: {"tool_name": "web_search", "type": "exit_loop"' in messy.text
    assert parse_rules(messy.text, "m.yaml").ok


def test_invalid_tool_parameters_are_dropped_with_a_note() -> None:
    doc = {
        "name": "n",
        "tools": [{"name": "a", "json_schema": {"parameters": {"type": 5}}}],
        "tool_rules": [],
    }
    imported = _one(json.dumps(doc))
    assert imported.translation.spec.tool_decls()[0].parameters is None
    assert "parameters of 'a' dropped" in imported.text


def test_prefilled_args_that_do_not_fit_the_schema_are_lossy() -> None:
    params = {"type": "object", "properties": {"n": {"type": "integer"}}}
    doc = {
        "name": "n",
        "tools": [{"name": "a", "json_schema": {"parameters": params}}],
        "tool_rules": [{"tool_name": "a", "type": "run_first", "args": {"n": "five"}}],
    }
    imported = _one(json.dumps(doc))
    assert imported.lossy
    assert "do not fit" in imported.translation.skipped[0].reason


@pytest.mark.parametrize(
    "text",
    [
        "true",
        "1",
        "yes",
        "null",
        "on",
        "-",
        "a: b",
        "#x",
        "é ü",
        "\u2028",
        "line\nbreak",
        "tab\there",
        "\x7f",
        "\ufeff",
        "'q'",
        '"q"',
        "[x]",
        "1e3",
        ".inf",
        "",
        " ",
        "~",
    ],
)
def test_every_string_reloads_as_itself(text: str) -> None:
    raw, _source, diagnostics = parse_yaml(f"k: {scalar(text)}\n{scalar(text)}: v\n", "s.yaml")
    assert not diagnostics
    assert raw == {"k": text, text: "v"}


def test_names_and_descriptions_with_odd_characters_survive() -> None:
    doc = {
        "name": 'agent: #1 \u2028 "x"',
        "description": "multi\nline 'desc'",
        "tools": [{"name": "true", "description": "yes"}, "null"],
        "tool_rules": [
            {
                "tool_name": "true",
                "type": "conditional",
                "child_output_mapping": {"true": "null", "True": "true"},
            }
        ],
    }
    imported = _one(json.dumps(doc))
    rule_file = parse_rules(imported.text, "x.yaml")
    assert rule_file.ok and rule_file.spec == imported.translation.spec
    assert rule_file.spec.agent == doc["name"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ('"not json inside"', "its content is not JSON"),
        ("42", "expected a JSON object or list"),
        ('{"x": 1}', "not a Letta agent file"),
        ("[1, 2]", "list of JSON objects"),
        ('{"agents": []}', "lists no agents"),
        ('{"tool_rules": {}}', "must be a list"),
    ],
)
def test_unreadable_inputs_raise_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(LettaFormatError, match=message):
        parse_letta(text, "bad.json")


def test_agent_without_tools_or_rules_cannot_be_translated() -> None:
    with pytest.raises(TranslationError, match="has no tools"):
        import_letta(json.dumps({"name": "empty", "tools": [], "tool_rules": []}))


def test_unknown_tool_ids_are_noted() -> None:
    doc = {
        "agents": [{"name": "n", "tool_ids": ["tool-0", "tool-9"], "tool_rules": []}],
        "tools": [{"id": "tool-0", "name": "a"}],
    }
    (imported,) = import_letta(json.dumps(doc))
    assert "tool id 'tool-9' is not in the file's `tools` list" in imported.text
