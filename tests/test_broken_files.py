"""Broken rule files: each reports the exact codes at the exact places, and nothing crashes.

Every file under `tests/broken/` starts with `# expect: CODE LINE:COL[, CODE LINE:COL...]`
(every diagnostic, in the order reported) and optionally `# hint: TEXT` (the first
diagnostic's hint), so the expectation lives beside the file it is about.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import RuleFileError, compile_rules, load_rules, parse_rules, read_rule_file

BROKEN = Path(__file__).parent / "broken"
FILES = sorted(BROKEN.glob("*.yaml"))
EXPECT = re.compile(rb"^# expect: (.+)$", re.MULTILINE)
HINT = re.compile(rb"^# hint: (.+)$", re.MULTILINE)


def _expectations(path: Path) -> tuple[list[tuple[str, int, int]], str | None]:
    raw = path.read_bytes()
    found = EXPECT.search(raw)
    assert found, f"{path.name} has no '# expect:' header"
    items = []
    for item in found.group(1).decode().split(","):
        code, where = item.split()
        line, column = where.split(":")
        items.append((code, int(line), int(column)))
    hint = HINT.search(raw)
    return items, hint.group(1).decode() if hint else None


def test_there_are_enough_broken_files_each_about_a_different_error() -> None:
    assert len(FILES) >= 20
    single = [_expectations(p)[0] for p in FILES]
    codes = {code for items in single for code, _, _ in items}
    every_error = {"E000", "E001", "E002", "E003", "E004"}
    every_error |= {f"E0{n}" for n in range(10, 16)} | {f"E0{n}" for n in range(20, 33)}
    assert every_error <= codes, f"no broken file for {sorted(every_error - codes)}"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_broken_file_reports_exact_code_line_and_column(path: Path) -> None:
    expected, hint = _expectations(path)
    rule_file = read_rule_file(path)
    got = [(d.code, d.span.line, d.span.column) for d in rule_file.diagnostics]
    assert got == expected
    assert not rule_file.ok
    for diagnostic in rule_file.diagnostics:
        assert diagnostic.span.path == str(path)
        assert str(diagnostic).startswith(
            f"{path}:{diagnostic.span.line}:{diagnostic.span.column}: "
        )
        assert diagnostic.message
    if hint is not None:
        assert rule_file.diagnostics[0].hint == hint
    with pytest.raises(RuleFileError) as info:
        load_rules(path)
    assert [d.code for d in info.value.diagnostics] == [code for code, _, _ in expected]
    with pytest.raises(RuleFileError):
        compile_rules(rule_file)


def test_several_problems_are_all_reported_in_one_pass() -> None:
    rule_file = read_rule_file(BROKEN / "several_problems.yaml")
    errors = [d for d in rule_file.diagnostics if d.is_error]
    assert len(errors) == 5
    # Rules are numbered as in the document even though broken rules were set aside.
    by_code = {d.code: d for d in errors}
    assert by_code["E021"].rule == 0
    assert by_code["E013"].rule == 1
    assert by_code["E014"].rule == 2
    assert by_code["E023"].rule == 4
    assert by_code["E020"].rule is None


def test_missing_file_is_a_diagnostic_not_an_exception(tmp_path: Path) -> None:
    rule_file = read_rule_file(tmp_path / "nope.yaml")
    assert [d.code for d in rule_file.diagnostics] == ["E000"]
    assert not rule_file.ok


# -- nothing ever raises --------------------------------------------------------------

VALID = {
    "version": 1,
    "agent": "fuzz",
    "tools": ["a", {"name": "b", "parameters": {"type": "object", "properties": {"x": {}}}}],
    "rules": [
        {"init": "a", "args": {"q": 1}},
        {"after": "a", "on_output": {True: "b"}, "default": "a"},
        {"only_after": "a", "tools": ["b"]},
        {"max_calls": 2, "tools": "a"},
        {"terminal": "b"},
    ],
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.sampled_from(["a", "b", "init", "after", "allow", "tools", "args", "on_output", "$ref"]),
)
structures = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.one_of(st.text(max_size=8), st.sampled_from(list(VALID))), inner, max_size=4
        )
    ),
    max_leaves=12,
)


@st.composite
def mutated_documents(draw: st.DrawFn) -> Any:
    """The valid document with one value somewhere replaced by random data."""
    document: Any = yaml.safe_load(yaml.safe_dump(VALID))
    node = document
    for _ in range(draw(st.integers(0, 4))):
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node, key=str)))
            if draw(st.booleans()) or not isinstance(node[key], dict | list):
                node[key] = draw(structures)
                break
            node = node[key]
        elif isinstance(node, list) and node:
            index = draw(st.integers(0, len(node) - 1))
            if draw(st.booleans()) or not isinstance(node[index], dict | list):
                node[index] = draw(structures)
                break
            node = node[index]
    return document


def _never_raises(text: str) -> None:
    rule_file = parse_rules(text, "fuzz.yaml")
    for diagnostic in rule_file.diagnostics:
        assert diagnostic.span.line >= 1 and diagnostic.span.column >= 1
        assert diagnostic.code
        str(diagnostic)
    if rule_file.ok:
        compile_rules(rule_file)
    else:
        assert any(d.is_error for d in rule_file.diagnostics)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_random_text_never_raises(text: str) -> None:
    _never_raises(text)


@settings(max_examples=200, deadline=None)
@given(structures)
def test_random_yaml_structures_never_raise(data: Any) -> None:
    _never_raises(yaml.safe_dump(data, allow_unicode=True))


@settings(max_examples=300, deadline=None)
@given(mutated_documents())
def test_mutated_rule_files_never_raise(document: Any) -> None:
    _never_raises(yaml.safe_dump(document, allow_unicode=True, sort_keys=False))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list("{}[]:,-&*!|>'\"#%@` \n\tab1")), max_size=60))
def test_yaml_punctuation_soup_never_raises(chars: list[str]) -> None:
    _never_raises("".join(chars))


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("version: 1\nagent: é\x1f\n", (2, 9)),  # a control character YAML forbids
        ("version: 1\nagent: a\ud800\n", (2, 9)),  # a lone surrogate (only via the API)
        ("\x00", (1, 1)),
    ],
)
def test_unacceptable_characters_are_located(text: str, where: tuple[int, int]) -> None:
    (diagnostic,) = parse_rules(text, "chars.yaml").diagnostics
    assert diagnostic.code == "E001"
    assert (diagnostic.span.line, diagnostic.span.column) == where


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(exclude_categories=()), max_size=60))  # surrogates too
def test_any_code_point_never_raises(text: str) -> None:
    _never_raises(text)
