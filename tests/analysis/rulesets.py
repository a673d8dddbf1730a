"""A Hypothesis strategy of small random rule files (valid ones, compiled to machines)."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import assume
from hypothesis import strategies as st

from engine.language.loader import parse_rules
from engine.machine import Machine
from engine.machine.compiler import compile_rules

TOOLS = ["a", "b", "c", "d"]
KEYS = ["yes", "no", True, 2]  # distinct under Python equality (True == 1, so no 1)


@st.composite
def rule(draw: st.DrawFn, tools: list[str]) -> dict[str, Any]:
    tool = st.sampled_from(tools)
    some = st.lists(tool, min_size=1, max_size=len(tools), unique=True)
    kind = draw(
        st.sampled_from(
            [
                "init",
                "child",
                "child",
                "conditional",
                "parent",
                "terminal",
                "terminal",
                "continue",
                "max_calls",
                "max_calls",
                "required",
                "approval",
            ]
        )
    )
    match kind:
        case "init":
            return {"init": draw(tool)}
        case "child":
            return {"after": draw(tool), "allow": draw(some)}
        case "conditional":
            keys = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True))
            out: dict[str, Any] = {"after": draw(tool), "on_output": {k: draw(tool) for k in keys}}
            if draw(st.booleans()):
                out["default"] = draw(tool)
            elif draw(st.booleans()):
                out["strict"] = True
            return out
        case "parent":
            return {"only_after": draw(tool), "tools": draw(some)}
        case "terminal":
            return {"terminal": draw(tool)}
        case "continue":
            return {"continue": draw(tool)}
        case "max_calls":
            return {"max_calls": draw(st.integers(1, 2)), "tools": draw(some)}
        case "required":
            return {"required_before_exit": draw(tool)}
        case _:
            return {"requires_approval": draw(tool)}


@st.composite
def rule_texts(draw: st.DrawFn, *, expect: bool = False) -> str:
    tools = TOOLS[: draw(st.integers(2, len(TOOLS)))]
    rules = draw(st.lists(rule(tools), max_size=6))
    document: dict[str, Any] = {"version": 1, "agent": "random", "tools": tools, "rules": rules}
    if expect:
        tool = st.sampled_from(tools)
        document["expect"] = draw(
            st.lists(
                st.one_of(
                    st.builds(lambda t: {"never": t}, tool),
                    st.builds(lambda x, y: {"never_after": y, "tools": x}, tool, tool),
                    st.builds(lambda x, y: {"only_after": y, "tools": x}, tool, tool),
                    st.builds(lambda t: {"always_before": t}, tool),
                    st.builds(lambda t, n: {"at_most": n, "tools": t}, tool, st.integers(0, 2)),
                    st.builds(lambda t: {"eventually": t}, tool),
                    st.builds(lambda t: {"ends_with": t}, tool),
                ),
                min_size=1,
                max_size=3,
            )
        )
    return yaml.safe_dump(document, sort_keys=False)


@st.composite
def machines(draw: st.DrawFn, *, expect: bool = False) -> Machine:
    """A compiled machine of a random valid rule file (invalid draws are rejected)."""
    text = draw(rule_texts(expect=expect))
    rule_file = parse_rules(text, "random.yaml")
    assume(rule_file.ok)
    return compile_rules(rule_file)
