"""RandomProvider: determinism, uniform choice among allowed tools, schema-valid arguments."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from typing import Any

import jsonschema
import pytest
from _provider_fakes import TOOLS, request
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.providers import ModelRequest, ProviderConfigError, ToolSpec
from engine.providers.random import END_TEXT, RandomProvider, generate_value

pytestmark = pytest.mark.anyio


async def _run(p: RandomProvider, reqs: list[ModelRequest]) -> list[tuple[Any, ...]]:
    out = []
    for r in reqs:
        reply = await p.complete(r)
        out.append((reply.text, reply.tool_calls))
    return out


STEPS = [
    request(("search", "fetch", "finish")),
    request(("search",), force=True),
    request(("fetch", "finish"), force=True),
    request(("search", "fetch", "finish")),
] * 10


async def test_same_seed_same_replies_different_seed_different() -> None:
    a = await _run(RandomProvider(42), STEPS)
    b = await _run(RandomProvider(42), STEPS)
    c = await _run(RandomProvider(43), STEPS)
    assert a == b
    assert a != c


async def test_calls_only_allowed_tools_with_valid_args_and_sequential_ids() -> None:
    p = RandomProvider(7, text_probability=0.0)
    seen = Counter()
    for i in range(300):
        reply = await p.complete(request(("search", "fetch")))
        (call,) = reply.tool_calls
        assert call.id == f"call_{i + 1}"
        assert call.name in ("search", "fetch")
        spec = next(t for t in TOOLS if t.name == call.name)
        jsonschema.validate(json.loads(call.arguments), spec.parameters)
        seen[call.name] += 1
    # Uniform: both tools get a fair share (expected 150 each).
    assert 110 < seen["search"] < 190


async def test_text_probability_controls_ending_but_never_when_forced() -> None:
    always = RandomProvider(1, text_probability=1.0)
    reply = await always.complete(request())
    assert reply.text == END_TEXT and reply.tool_calls == ()
    forced = await always.complete(request(("fetch",), force=True))
    assert forced.text is None and forced.tool_calls[0].name == "fetch"

    never = RandomProvider(1, text_probability=0.0)
    for _ in range(50):
        assert (await never.complete(request())).tool_calls


def test_bad_text_probability() -> None:
    with pytest.raises(ProviderConfigError):
        RandomProvider(0, text_probability=1.5)


def test_default_seed_is_zero_for_reproducible_runs() -> None:
    assert RandomProvider().name == "random:0"


COMPLEX = {
    "type": "object",
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "label": {"type": "string", "minLength": 2, "maxLength": 5},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2},
            },
            "required": ["label"],
        }
    },
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "when": {"type": "string", "format": "date-time"},
        "mail": {"type": "string", "format": "email"},
        "mode": {"enum": ["fast", "slow", 3]},
        "version": {"const": 2},
        "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "count": {"type": "integer", "minimum": 5, "exclusiveMaximum": 9},
        "step": {"type": "integer", "multipleOf": 5, "minimum": 1, "maximum": 30},
        "ratio": {"type": "number", "multipleOf": 0.25, "minimum": 0, "maximum": 2},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "uniqueItems": True},
        "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "boolean"}]},
        "maybe": {"type": ["string", "null"]},
        "either": {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 3}]},
        "both": {
            "allOf": [
                {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
                {"properties": {"y": {"type": "boolean"}}, "required": ["y"]},
            ]
        },
        "tree": {"$ref": "#/$defs/node"},
        "free": {},
    },
    "required": ["id", "mode", "version", "score", "count", "step", "tree", "both", "ratio"],
    "additionalProperties": False,
}


def test_generates_valid_values_for_a_rich_schema() -> None:
    checker = jsonschema.Draft202012Validator(
        COMPLEX, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    rng = random.Random(3)
    for _ in range(300):
        value = generate_value(COMPLEX, rng)
        errors = list(checker.iter_errors(value))
        assert not errors, (value, [e.message for e in errors])


# --- property: any schema from the supported subset yields valid values ----------------------

_scalar = st.one_of(
    st.builds(
        lambda lo, span: {"type": "string", "minLength": lo, "maxLength": lo + span},
        st.integers(0, 5),
        st.integers(0, 5),
    ),
    st.builds(
        lambda lo, span, ex: {
            "type": "integer",
            "minimum": lo,
            **({"exclusiveMaximum": lo + span + 1} if ex else {"maximum": lo + span}),
        },
        st.integers(-1000, 1000),
        st.integers(0, 50),
        st.booleans(),
    ),
    st.builds(
        lambda lo, span: {"type": "number", "exclusiveMinimum": lo, "maximum": lo + span},
        st.floats(-1e6, 1e6, allow_nan=False),
        st.floats(0.5, 100, allow_nan=False),
    ),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.lists(st.one_of(st.text(max_size=4), st.integers()), min_size=1, max_size=4).map(
        lambda xs: {"enum": xs}
    ),
    st.one_of(st.integers(), st.text(max_size=3)).map(lambda v: {"const": v}),
)


def _extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    obj = st.dictionaries(
        st.text("abcdefgh", min_size=1, max_size=4), children, max_size=4
    ).flatmap(
        lambda props: st.builds(
            lambda req, closed: {
                "type": "object",
                "properties": props,
                "required": req,
                "additionalProperties": not closed,
            },
            st.lists(st.sampled_from(sorted(props)) if props else st.nothing(), unique=True),
            st.booleans(),
        )
    )
    arr = st.builds(
        lambda items, lo, span: {
            "type": "array",
            "items": items,
            "minItems": lo,
            "maxItems": lo + span,
        },
        children,
        st.integers(0, 3),
        st.integers(0, 3),
    )
    any_of = st.lists(children, min_size=1, max_size=3).map(lambda xs: {"anyOf": xs})
    return st.one_of(obj, arr, any_of)


schemas = st.recursive(_scalar, _extend, max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(schema=schemas, seed=st.integers(0, 2**32))
def test_generated_values_validate(schema: dict[str, Any], seed: int) -> None:
    value = generate_value(schema, random.Random(seed))
    jsonschema.validate(value, schema)


@settings(max_examples=50, deadline=None)
@given(
    props=st.dictionaries(st.text("xyz", min_size=1, max_size=3), _scalar, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_provider_arguments_validate_for_any_tool_schema(props: dict[str, Any], seed: int) -> None:
    schema = {"type": "object", "properties": props, "required": sorted(props)}
    tool = ToolSpec("t", "generated", schema)
    req = ModelRequest(system="", messages=(), tools=(tool,), allowed=("t",), force=True)
    reply = asyncio.run(RandomProvider(seed).complete(req))
    jsonschema.validate(json.loads(reply.tool_calls[0].arguments), schema)
