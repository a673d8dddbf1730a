"""Semantic checks: messages that name the rules and tools responsible."""

from __future__ import annotations

from engine import parse_rules

HEAD = "version: 1\nagent: c\ntools: [a, b, c, d]\nrules:\n"


def diagnostics(rules: str) -> list[str]:
    return [
        f"{d.code} {d.span.line}:{d.span.column} {d.message}"
        for d in parse_rules(HEAD + rules).diagnostics
    ]


def test_case_leading_to_another_parents_child_names_that_parent() -> None:
    got = diagnostics(
        "  - only_after: a\n    tools: b\n  - after: c\n    on_output: {x: b}\n    default: d\n"
    )
    assert got == [
        "E026 8:20 this case leads to 'b', but 'b' may only be called right after 'a': "
        "the run would dead-end"
    ]


def test_child_rule_left_only_with_another_parents_children() -> None:
    got = diagnostics("  - only_after: a\n    tools: [b, c]\n  - after: d\n    allow: [c, b]\n")
    assert got == [
        "E024 7:5 after 'd' no tool is allowed: the rules on line 7 allow only tools that "
        "other rules forbid there ('b' may only be called right after 'a'; "
        "'c' may only be called right after 'a')"
    ]


def test_a_parent_may_follow_itself_with_its_own_children() -> None:
    assert diagnostics("  - only_after: a\n    tools: [a, b]\n  - after: a\n    allow: b\n") == []


def test_redundant_rules_are_warnings_only() -> None:
    rule_file = parse_rules(HEAD + "  - terminal: [a, b]\n  - terminal: b\n")
    assert rule_file.ok
    assert [d.code for d in rule_file.diagnostics] == ["W201"]
    strict = parse_rules(
        HEAD + "  - after: a\n    on_output: {1: b}\n    default: c\n    strict: true\n"
    )
    assert strict.ok and [d.code for d in strict.diagnostics] == ["W203"]


def test_duplicate_rules_are_found_whatever_the_order_of_their_prefilled_args() -> None:
    found = diagnostics(
        "  - after: a\n    allow: b\n    args: {b: {p: 0, q: 1}}\n"
        "  - after: a\n    allow: b\n    args: {b: {q: 1, p: 0}}\n"
    )
    assert found == ["E022 8:5 duplicate rule: the same child rule stands on line 5"]


def test_a_boolean_case_and_a_string_case_are_different_rules() -> None:
    found = diagnostics(
        '  - after: a\n    on_output: {true: b}\n  - after: a\n    on_output: {"true": b}\n'
    )
    codes = [line.split()[0] for line in found]
    assert "E022" not in codes  # `true` matches any case of "true", "true" only itself
    assert "E032" in codes  # still two conditional rules on one tool
