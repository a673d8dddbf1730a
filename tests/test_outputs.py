"""Output matching: the compiled matcher the machine uses agrees with the documented rule."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.language.outputs import case_matches, compile_cases, first_match, output_text

keys = st.one_of(
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.5, 2.0, -0.0, float("inf"), 1e300]),
    st.sampled_from(["true", "True", "1", "1.0", " 1", "billing", "", "null"]),
    st.text(max_size=4),
)
outputs = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=True),
    st.sampled_from(["true", " TRUE ", "1", "1.0", "1e0", " 2 ", "inf", "-0", "nan", "billing"]),
    st.text(max_size=5),
    st.lists(st.integers(0, 2), max_size=2),
    st.dictionaries(st.sampled_from("ab"), st.integers(0, 2), max_size=2),
)


def _unique(values: list[Any]) -> tuple[Any, ...]:
    """Keys as a rule file can hold them: no two of one type equal (YAML rejects duplicate
    keys; `true` and `1` are different keys)."""
    kept: list[Any] = []
    for value in values:
        if not any(type(value) is type(k) and value == k for k in kept):
            kept.append(value)
    return tuple(kept)


@settings(max_examples=300, deadline=None)
@given(st.lists(keys, max_size=6).map(_unique), outputs)
def test_compiled_matcher_equals_first_match(case_keys: tuple[Any, ...], output: Any) -> None:
    assert compile_cases(case_keys)(output) == first_match(case_keys, output)


def test_documented_examples() -> None:
    assert output_text(True) == "true" and output_text(None) == "null"
    assert output_text({"a": 1}) == '{"a": 1}'
    assert case_matches(True, " TRUE ") and not case_matches("True", "true")
    assert case_matches(1, "1.0") and case_matches(1.0, "1") and not case_matches("1", "1.0")
    assert not case_matches(1, "nan") and not case_matches(True, "1")
    assert first_match(("x", 1, True), "true") == 2
    assert compile_cases(("x", 1, True))(1) == 1
