"""`engine.testing`: strategies, the tool state machine, and the pytest plugin."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidDefinition  # noqa: F401 - documents what we avoid
from hypothesis.stateful import invariant, run_state_machine_as_test

from engine.errors import ToolfsmError
from engine.language.loader import parse_rules, read_rule_file
from engine.machine import Machine, StopReason
from engine.machine.compiler import compile_rules
from engine.machine.trace import trace
from engine.testing import complete_runs, invalid_steps, positions, tool_state_machine, traces
from tests.analysis.helpers import CASES

SHOP = """\
version: 1
agent: shop
tools: [search, add_to_cart, check_stock, checkout, send_message]
rules:
  - init: search
  - after: check_stock
    on_output: {true: checkout, false: search}
  - after: add_to_cart
    allow: [add_to_cart, check_stock]
  - max_calls: 2
    tools: add_to_cart
  - terminal: send_message
  - required_before_exit: search
"""


def _machine(text: str = SHOP) -> Machine:
    return compile_rules(parse_rules(text, "shop.yaml"))


MACHINE = _machine()


@settings(max_examples=150, deadline=None)
@given(traces(MACHINE, max_length=12))
def test_traces_are_valid(steps) -> None:
    rows = trace(MACHINE, steps)
    assert all(row.violation is None for row in rows)
    assert len(steps) <= 12
    # only the last step may stop the run
    assert all(row.decision == "continue" for row in rows[1:-1])


@settings(max_examples=150, deadline=None)
@given(invalid_steps(MACHINE, max_length=8))
def test_invalid_steps_are_violations_after_a_valid_prefix(case) -> None:
    rows = trace(MACHINE, [*case.prefix, case.step])
    assert all(row.violation is None for row in rows[:-1])
    assert rows[-1].violation is not None
    assert case.step.tool not in case.allowed
    assert rows[-2].position == case.position


@settings(max_examples=150, deadline=None)
@given(complete_runs(MACHINE, max_length=8))
def test_complete_runs_end_legitimately(run) -> None:
    rows = trace(MACHINE, list(run.steps))
    assert all(row.violation is None for row in rows)
    assert len(run.steps) <= 8
    assert rows[-1].position == run.position
    if run.stop is StopReason.TERMINAL_TOOL:
        assert rows[-1].reason == "terminal_tool" and rows[-1].decision == "stop"
    else:
        assert run.stop is StopReason.END_TURN
        assert not MACHINE.gate(run.position).force
        assert MACHINE.after_text(run.position).stop_reason is StopReason.END_TURN


@settings(max_examples=50, deadline=None)
@given(positions(MACHINE))
def test_positions_are_reachable(position) -> None:
    assert position.node < len(MACHINE.nodes)


def test_strategies_refuse_impossible_requests() -> None:
    trap = compile_rules(read_rule_file(CASES / "c110_trap.yaml"))
    with pytest.raises(ToolfsmError, match="can end"):
        complete_runs(trap)
    free = _machine("version: 1\nagent: free\ntools: [a, b]\n")
    with pytest.raises(ToolfsmError, match="forbids a tool"):
        invalid_steps(free)


def test_complete_runs_shrink_to_the_shortest_run() -> None:
    from hypothesis import find

    shortest = find(complete_runs(MACHINE, max_length=8), lambda run: True)
    assert shortest.tools == ("search",)  # init search, then a reply ends the run


class Cart:
    """A user's tools with an invariant worth testing: stock is never oversold."""

    def __init__(self, stock: int) -> None:
        self.stock = stock
        self.items = 0
        self.sold = 0

    def tools(self) -> dict:
        return {
            "search": lambda query="": ["widget"],
            "add_to_cart": self.add,
            "check_stock": lambda: self.stock - self.sold >= self.items,
            "checkout": self.checkout,
            "send_message": lambda text="": "sent",
        }

    def add(self, quantity: int = 1) -> int:
        self.items += quantity
        return self.items

    def checkout(self) -> str:
        self.sold += self.items
        self.items = 0
        return "ok"


def _cart_machine(stock: int):
    base = tool_state_machine(
        MACHINE,
        lambda: Cart(stock).tools(),
        args={"add_to_cart": st.fixed_dictionaries({"quantity": st.integers(1, 3)})},
    )

    class CartRuns(base):  # type: ignore[misc, valid-type]
        @invariant()
        def never_oversold(self) -> None:
            cart = self.tools["checkout"].__self__
            assert cart.sold <= cart.stock

        @invariant()
        def runs_respect_rules(self) -> None:
            calls = [tool for tool, _, _ in self.history]
            assert calls.count("add_to_cart") <= 2
            if calls:
                assert calls[0] == "search"

    return CartRuns


def test_tool_state_machine_drives_tools_through_allowed_sequences() -> None:
    run_state_machine_as_test(
        _cart_machine(stock=100), settings=settings(max_examples=60, deadline=None)
    )


def test_tool_state_machine_finds_a_broken_tool() -> None:
    class Leaky(Cart):
        def checkout(self) -> str:  # forgets to check: sells what it does not have
            self.sold += self.items + 1
            self.items = 0
            return "ok"

    base = tool_state_machine(MACHINE, lambda: Leaky(1).tools())

    class LeakyRuns(base):  # type: ignore[misc, valid-type]
        @invariant()
        def never_oversold(self) -> None:
            cart = self.tools["checkout"].__self__
            assert cart.sold <= cart.stock

    with pytest.raises(AssertionError):
        run_state_machine_as_test(LeakyRuns, settings=settings(max_examples=100, deadline=None))


def test_tool_state_machine_requires_every_tool() -> None:
    with pytest.raises(ToolfsmError, match="checkout"):
        tool_state_machine(MACHINE, {"search": lambda: None})


pytest_plugins = ["pytester"]


def test_pytest_plugin_turns_rule_files_into_items(pytester: pytest.Pytester) -> None:
    for stem in ("c110_trap", "a105_at_most_ok", "a105_at_most"):
        pytester.path.joinpath(f"{stem}.yaml").write_text((CASES / f"{stem}.yaml").read_text())
    pytester.path.joinpath("notes.yaml").write_text("just: data\n")
    result = pytester.runpytest("--toolfsm", "-p", "toolfsm", "-v")
    result.assert_outcomes(passed=6, failed=2)
    result.stdout.fnmatch_lines(
        [
            "a105_at_most.yaml::expect?0? FAILED*",  # -v lines are node ids
            "c110_trap.yaml::check FAILED*",
            "*a105_at_most.yaml:7:5: error?A105?*",
            "*trace: search search search*",
            "*c110_trap.yaml:5:5: error?C110?*",
        ]
    )


def test_pytest_plugin_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        f"""
        def test_fixtures(toolfsm_machine, toolfsm_check):
            machine = toolfsm_machine({str(CASES / "c110_trap_ok.yaml")!r})
            assert machine.agent == "no-trap"
            assert toolfsm_machine({str(CASES / "c110_trap_ok.yaml")!r}) is machine
            assert toolfsm_check({str(CASES / "c110_trap.yaml")!r}).codes()[-1] == "C110"
        """
    )
    pytester.runpytest("-p", "toolfsm").assert_outcomes(passed=1)


def test_complete_runs_end_with_the_answer_at_an_answer_only_position() -> None:
    # "Search once, then answer": after the search nothing is allowed and nothing is forced,
    # so the reply ends the run there (issue 10, section 2); no run is a dead end.
    machine = compile_rules(read_rule_file(CASES / "answer_only_search_once.yaml"))
    seen: set[tuple[tuple[str, ...], StopReason]] = set()

    @settings(max_examples=60, deadline=None, database=None, derandomize=True)
    @given(complete_runs(machine, max_length=5))
    def collect(run) -> None:
        assert run.stop is StopReason.END_TURN
        assert run.tools in ((), ("search",))
        seen.add((run.tools, run.stop))

    collect()
    assert ((("search",), StopReason.END_TURN)) in seen
