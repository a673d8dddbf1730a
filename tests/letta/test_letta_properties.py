"""Property tests: on random Letta rule lists and random traces, the imported machine behaves
like the naive Letta interpreter of `reference.py` (with the documented deviations), and
import -> export -> import gives back the same rules and the same machine."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine.letta import spec_to_letta, spec_to_letta_agent

from .reference import LettaRun, import_machine

POOL = ["a", "b", "c", "d", "e"]
# Keys Letta stores (always strings) and outputs that probe the exact-string rule.
KEYS = ["true", "True", "1", "yes", "null"]
OUTPUTS = [*KEYS, "TRUE", "1.0", " 1", "zz"]
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)


@st.composite
def letta_agents(draw: st.DrawFn) -> tuple[list[str], list[dict[str, Any]]]:
    """An agent's tools and a Letta `tool_rules` list over them."""
    tools = POOL[: draw(st.integers(2, len(POOL)))]
    tool = st.sampled_from(tools)
    children = st.lists(tool, min_size=1, max_size=3, unique=True)
    args = st.dictionaries(st.sampled_from(["p", "q"]), st.integers(0, 3), min_size=1)

    @st.composite
    def child_rule(draw: st.DrawFn) -> dict[str, Any]:
        kids = draw(children)
        named = draw(st.lists(st.sampled_from(kids), max_size=2))
        nodes = [{"name": n, "args": draw(args)} for n in named]
        return {
            "tool_name": draw(tool),
            "type": "constrain_child_tools",
            "children": kids,
            "child_arg_nodes": nodes or None,
        }

    conditional = st.builds(
        lambda t, m, d, r: {
            "tool_name": t,
            "type": "conditional",
            "child_output_mapping": m,
            "default_child": d,
            "require_output_mapping": r,
        },
        tool,
        st.dictionaries(st.sampled_from(KEYS), tool, min_size=1, max_size=3),
        st.none() | tool,
        st.booleans(),
    )
    rule = st.one_of(
        st.builds(
            lambda t, a: {"tool_name": t, "type": "run_first", "args": a}, tool, st.none() | args
        ),
        child_rule(),
        st.builds(
            lambda t, c: {"tool_name": t, "type": "parent_last_tool", "children": c}, tool, children
        ),
        conditional,
        conditional,  # twice: output cases are where the exact-string rule is tested
        st.builds(
            lambda t, n: {"tool_name": t, "type": "max_count_per_step", "max_count_limit": n},
            tool,
            st.integers(1, 3),
        ),
        st.builds(
            lambda t, k: {"tool_name": t, "type": k},
            tool,
            st.sampled_from(
                ["exit_loop", "continue_loop", "required_before_exit", "requires_approval"]
            ),
        ),
    )
    return tools, draw(st.lists(rule, max_size=6))


def _steps(data: st.DataObject, tools: list[str]) -> list[tuple[str, str, bool | None]]:
    step = st.tuples(
        st.sampled_from(tools), st.sampled_from(OUTPUTS), st.sampled_from([None, None, True, False])
    )
    return data.draw(st.lists(step, max_size=12))


def _gate(machine: Any, position: Any) -> tuple[Any, ...]:
    gate = machine.gate(position)
    prefill = {t: dict(a) for t, a in gate.prefill.items()}
    return (
        list(gate.allowed),
        gate.force,
        gate.forced_tool,
        prefill,
        machine.after_text(position).decision,
    )


@SETTINGS
@given(agent=letta_agents(), data=st.data())
def test_imported_machine_matches_the_letta_interpreter(agent: Any, data: st.DataObject) -> None:
    tools, rules = agent
    imported, machine = import_machine(tools, rules, "prop")
    assume(not imported.lossy)
    run = LettaRun(tools, rules)
    position = machine.start()
    for tool, output, heartbeat in _steps(data, tools):
        expected = (run.allowed(), run.forced(), run.forced_tool(), run.prefill(), run.after_text())
        assert _gate(machine, position) == expected
        if not run.call(tool, output):
            assert not machine.is_allowed(position, tool)
            continue
        position = machine.advance(position, tool, output)
        verdict = machine.after_call(position, tool, heartbeat=heartbeat)
        assert verdict.decision == run.after_call(tool, heartbeat)


def _canon(rules: list[dict[str, Any]]) -> set[str]:
    """Letta rules up to order and ignorable fields, with the documented exact foldings."""
    out: set[str] = set()
    terminal = {r["tool_name"] for r in rules if r["type"] == "exit_loop"}
    init: dict[str, dict[str, Any]] = {}
    limits: dict[str, int] = {}
    for r in rules:
        kind, tool = r["type"], r["tool_name"]
        if kind == "run_first":
            init.setdefault(tool, {}).update(r.get("args") or {})
        elif kind == "max_count_per_step":
            limits[tool] = min(r["max_count_limit"], limits.get(tool, r["max_count_limit"]))
        elif kind in ("constrain_child_tools", "parent_last_tool"):
            nodes: dict[str, dict[str, Any]] = {}
            for node in r.get("child_arg_nodes") or []:
                if node.get("args"):
                    nodes.setdefault(node["name"], {}).update(node["args"])
            out.add(
                json.dumps([kind, tool, list(dict.fromkeys(r["children"])), nodes], sort_keys=True)
            )
        elif kind == "conditional":
            require = bool(r.get("require_output_mapping"))
            default = None if require else r.get("default_child")
            out.add(
                json.dumps(
                    [kind, tool, r["child_output_mapping"], default, require], sort_keys=True
                )
            )
        elif not (kind == "continue_loop" and tool in terminal):
            out.add(json.dumps([kind, tool]))
    out |= {json.dumps(["run_first", t, a], sort_keys=True) for t, a in init.items()}
    out |= {json.dumps(["max", t, n]) for t, n in limits.items()}
    return out


@SETTINGS
@given(agent=letta_agents(), data=st.data())
def test_import_export_import_keeps_the_rules_and_the_machine(
    agent: Any, data: st.DataObject
) -> None:
    tools, rules = agent
    imported, machine = import_machine(tools, rules, "prop")
    assume(not imported.lossy)
    exported = spec_to_letta(imported.translation.spec)
    assert not exported.lossy  # imported keys are strings: nothing to lose
    assert _canon(exported.tool_rules) == _canon(rules)

    document, _ = spec_to_letta_agent(imported.translation.spec)
    again, machine2 = import_machine(tools, document["tool_rules"], "prop")
    assert not again.lossy
    assert again.translation.spec == imported.translation.spec
    one, two = machine.start(), machine2.start()
    for tool, output, heartbeat in _steps(data, tools):
        assert _gate(machine, one) == _gate(machine2, two)
        if not machine.is_allowed(one, tool):
            assert not machine2.is_allowed(two, tool)
            continue
        one = machine.advance(one, tool, output)
        two = machine2.advance(two, tool, output)
        assert machine.after_call(one, tool, heartbeat=heartbeat) == machine2.after_call(
            two, tool, heartbeat=heartbeat
        )


@settings(max_examples=100, deadline=None)
@given(agent=letta_agents())
def test_every_import_reloads_clean_and_names_each_skipped_rule(agent: Any) -> None:
    tools, rules = agent
    imported, _machine = import_machine(tools, rules, "prop")  # asserts the file re-loads clean
    for skipped in imported.translation.skipped:
        assert f"# NOT TRANSLATED tool_rules[{skipped.index}]:" in imported.text
