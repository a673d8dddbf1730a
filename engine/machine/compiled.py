"""The compiled machine: immutable gating tables, and the small position value of one run.

A `Machine` is built once by `engine.machine.compiler.compile_rules` and shared by every run; it is
never mutated (the only inner state is a memo of allowed tuples for positions where max-call
limits are exhausted, which is a cache, not behaviour). A `Position` is everything a run needs
to be gated: the machine node (start / after tool X / after X with output case K), how often
each max-called tool has been called (capped at its limit), and which required-before-exit
tools have been called. Every gating decision is a few table look-ups: O(1) in the length of
the run's history.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

from engine.errors import PositionError, SourceSpan, ToolfsmError, UnknownToolError
from engine.language.outputs import TEXT_FORMS, compile_cases


class Reason(StrEnum):
    """Why the run goes on or stops after a model reply (see README, "Continue or stop")."""

    TERMINAL_TOOL = "terminal_tool"  # stop: a terminal tool was called
    REQUIRED_BEFORE_EXIT = "required_before_exit"  # go on: required tools not called yet
    RULE_CONTINUES = "rule_continues"  # go on: the tool has a child/conditional/max_calls rule
    CONTINUE_RULE = "continue_rule"  # go on: the tool has a continue rule
    TOOL_CALL = "tool_call"  # go on: default mode continues after any tool call
    HEARTBEAT = "heartbeat"  # go on: heartbeat mode, the model asked to continue
    NO_HEARTBEAT = "no_heartbeat"  # stop: heartbeat mode, the model did not ask to continue
    END_TURN = "end_turn"  # stop: the model replied without a tool call
    DEAD_END = "dead_end"  # stop: a call is needed next but no tool is allowed


class StopReason(StrEnum):
    """Why a run stopped, as stored with every run."""

    END_TURN = "end_turn"
    TERMINAL_TOOL = "terminal_tool"
    DEAD_END = "dead_end"
    STEP_LIMIT = "step_limit"
    AWAITING_APPROVAL = "awaiting_approval"
    AWAITING_DECISION = "awaiting_decision"
    # An agent call waits on a callee's run that is paused (see `engine.runtime.agents`).
    AWAITING_AGENTS = "awaiting_agents"
    ERROR = "error"
    CANCELLED = "cancelled"
    # The model kept answering without a tool call where the rules force one (the server
    # does not honour a forced tool_choice): the run loop stopped re-asking.
    FORCING_IGNORED = "forcing_ignored"


_STOP_FOR = {
    Reason.TERMINAL_TOOL: StopReason.TERMINAL_TOOL,
    Reason.NO_HEARTBEAT: StopReason.END_TURN,
    Reason.END_TURN: StopReason.END_TURN,
    Reason.DEAD_END: StopReason.DEAD_END,
}


@dataclass(frozen=True, slots=True)
class Verdict:
    """Continue or stop after a reply, why, and the message to send the model when going on."""

    continues: bool
    reason: Reason
    message: str | None = None

    @property
    def stop_reason(self) -> StopReason | None:
        return None if self.continues else _STOP_FOR[self.reason]

    @property
    def decision(self) -> str:
        return "continue" if self.continues else "stop"


@dataclass(frozen=True, slots=True)
class RuleRef:
    """A rule as the compiled machine remembers it: kind, where it stands, and one line."""

    index: int
    kind: str
    span: SourceSpan
    text: str  # the line rendered into the system prompt

    def __str__(self) -> str:
        return f"{self.span}: {self.text}"


@dataclass(frozen=True, slots=True)
class Gate:
    """What the model may do next: allowed tools (declaration order), forcing, prefills."""

    allowed: tuple[str, ...]
    force: bool
    forced_tool: str | None  # the named tool when a call is forced and exactly one is allowed
    prefill: Mapping[str, Mapping[str, Any]]  # tool -> arguments that replace the model's
    mask: int  # bit i set = tool i allowed

    @property
    def dead_end(self) -> bool:
        """A call is forced and no tool is allowed: the run cannot go on from here."""
        return self.force and not self.allowed

    @property
    def answer_only(self) -> bool:
        """No tool is allowed and none is forced: the model may only give its final answer
        (a reply without a tool call, which ends the run unless a required tool is pending)."""
        return not self.force and not self.allowed


_new_tuple = tuple.__new__

# The verdicts without a message, one value each: frozen, so every call and run shares them
# (after_call gives one per executed call).
_GOES_ON = {reason: Verdict(True, reason) for reason in Reason}
_STOPS = {reason: Verdict(False, reason) for reason in Reason}
_DEAD_END = Verdict(False, Reason.DEAD_END, "No tool is allowed next: dead end.")


class Position(NamedTuple):
    """A run's place in the machine. Small, immutable, and serialisable with `Machine.dump`."""

    node: int
    counts: tuple[int, ...]  # calls so far of each max-called tool, capped at its limit
    exhausted: int  # bit i set = tool i reached its max_calls limit (derived from counts)
    required: int  # bit i set = required-before-exit tool i has been called


@dataclass(frozen=True, slots=True)
class Node:
    """A machine state: the start, or "after tool X" (with output case K for conditionals)."""

    name: str
    last_tool: str | None
    case: str | None = None  # conditional output case label: repr(key), "default", "no match"


class NotAllowedError(ToolfsmError):
    """`advance` was given a call the machine does not allow at that position."""

    def __init__(self, tool: str, gate: Gate) -> None:
        self.tool = tool
        self.allowed = gate.allowed
        allowed = ", ".join(gate.allowed) or "none (dead end)"
        super().__init__(f"{tool!r} is not allowed here; allowed: {allowed}")


class Machine:
    """Immutable gating tables for one rule file (build it with `compile_rules`)."""

    __slots__ = (
        "_approval_checks",
        "_case_keys",
        "_case_nodes",
        "_count_bit",
        "_count_limit",
        "_count_slot",
        "_counted",
        "_gates",
        "_index_of",
        "_masked",
        "_masks",
        "_matchers",
        "_next",
        "_node_index",
        "_required_bit",
        "_required_bits",
        "agent",
        "approval",
        "approval_when",
        "continue_tools",
        "nodes",
        "output_text",
        "required_tools",
        "rule_continues",
        "rules",
        "sha256",
        "source_path",
        "spec",
        "terminal",
        "tool_index",
        "tools",
    )

    def __init__(
        self,
        *,
        agent: str,
        tools: tuple[str, ...],
        nodes: tuple[Node, ...],
        gates: tuple[Gate, ...],
        next_node: tuple[int, ...],
        case_keys: Mapping[int, tuple[Any, ...]],
        case_nodes: Mapping[int, tuple[int, ...]],
        count_slot: tuple[int, ...],
        count_limit: tuple[int, ...],
        required_bit: tuple[int, ...],
        terminal: frozenset[str],
        continue_tools: frozenset[str],
        rule_continues: frozenset[str],
        approval: frozenset[str],
        rules: tuple[RuleRef, ...],
        source_path: str,
        sha256: str,
        spec: Any,
        output_text: str = "json",
        approval_when: Mapping[str, tuple[dict[str, Any], ...]] | None = None,
    ) -> None:
        self.spec = spec  # the AgentSpec it was compiled from (for explanations and analysis)
        self.agent = agent
        self.tools = tools
        self._index_of = {name: i for i, name in enumerate(tools)}  # hot path: a plain dict
        self.tool_index = MappingProxyType(self._index_of)
        self.nodes = nodes
        self._node_index = MappingProxyType({node.name: i for i, node in enumerate(nodes)})
        self._gates = gates
        self._masks = tuple(gate.mask for gate in gates)
        self._next = next_node
        self._case_keys = MappingProxyType(dict(case_keys))
        # How a real return value becomes the text cases match (`run.output_text`).
        self.output_text = output_text
        text_of = TEXT_FORMS[output_text]
        self._matchers = {index: compile_cases(keys, text_of) for index, keys in case_keys.items()}
        self._case_nodes = MappingProxyType(dict(case_nodes))
        self._count_slot = count_slot
        self._count_limit = count_limit
        self._count_bit = tuple(1 << i for i in range(len(tools)))
        self._required_bit = required_bit
        self.terminal = terminal
        self.continue_tools = continue_tools
        self.rule_continues = rule_continues
        # The tools that may need approval; of those, the ones that need it only when their
        # arguments match one of their rules' `when:` schemas (see `needs_approval`).
        self.approval = approval
        self.approval_when = MappingProxyType(dict(approval_when or {}))
        self._approval_checks: dict[str, tuple[Any, ...]] = {}
        if self.approval_when:
            from engine.language.jsonschemas import validator

            self._approval_checks = {
                tool: tuple(validator(when) for when in whens)
                for tool, whens in self.approval_when.items()
            }
        self.required_tools = tuple(t for t in tools if required_bit[self.tool_index[t]])
        # For `dump`: (tool, count slot) of max-called tools and (tool, bit) of required
        # ones, in declaration order.
        self._counted = tuple((t, count_slot[i]) for i, t in enumerate(tools) if count_slot[i] >= 0)
        self._required_bits = tuple(
            (t, required_bit[self._index_of[t]]) for t in self.required_tools
        )
        self.rules = rules
        self.source_path = source_path
        self.sha256 = sha256
        # Memo of gates for (node, exhausted mask): a cache of pure results, shared safely.
        self._masked: dict[tuple[int, int], Gate] = {}

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, "_masked"):
            raise AttributeError("a compiled Machine is immutable")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return f"<Machine {self.agent!r}: {len(self.tools)} tools, {len(self.nodes)} nodes>"

    # -- the hot path ---------------------------------------------------------------------

    def start(self) -> Position:
        """The position at the beginning of every run."""
        return Position(0, (0,) * sum(1 for s in self._count_slot if s >= 0), 0, 0)

    def gate(self, position: Position) -> Gate:
        """Allowed tools (in declaration order), forcing and prefills at `position`."""
        exhausted = position.exhausted
        if not exhausted or (position.node == 0 and self._gates[0].force):
            return self._gates[position.node]
        key = (position.node, exhausted)
        gate = self._masked.get(key)
        if gate is None:
            gate = self._masked[key] = self._narrow(self._gates[position.node], exhausted)
        return gate

    def allowed(self, position: Position) -> tuple[str, ...]:
        return self.gate(position).allowed

    def is_allowed(self, position: Position, tool: str) -> bool:
        index = self.tool_index.get(tool)
        return index is not None and bool(self.gate(position).mask >> index & 1)

    def advance(self, position: Position, tool: str, output: Any = None) -> Position:
        """The position after `tool` was called and returned `output`.

        Raises `UnknownToolError` for a tool the agent does not have and `NotAllowedError`
        for one the rules do not allow here (a violation never enters the history).
        """
        # The per-call hot path: plain dict/tuple look-ups, no intermediate Gate when no
        # max_calls limit is exhausted, and the Position tuple built without NamedTuple's
        # Python-level __new__.
        index = self._index_of.get(tool)
        if index is None:
            raise UnknownToolError(tool, self.tools)
        node, counts, exhausted, required = position
        mask = self._masks[node] if not exhausted else self.gate(position).mask
        if not mask >> index & 1:
            raise NotAllowedError(tool, self.gate(position))
        after = self._next[index]
        if after < 0:  # conditional tool: the output picks the node
            case = self._matchers[index](output)
            nodes = self._case_nodes[index]
            after = nodes[-1] if case is None else nodes[case]
        slot = self._count_slot[index]
        if slot >= 0 and counts[slot] < self._count_limit[index]:
            count = counts[slot] + 1
            updated = list(counts)  # two C-level copies: cheaper than slicing and unpacking
            updated[slot] = count
            counts = tuple(updated)
            if count >= self._count_limit[index]:
                exhausted |= self._count_bit[index]
        return _new_tuple(
            Position, (after, counts, exhausted, required | self._required_bit[index])
        )

    # -- after a reply: continue or stop ------------------------------------------------

    def pending_required(self, position: Position) -> tuple[str, ...]:
        """Required-before-exit tools not called yet, in declaration order."""
        return tuple(
            t
            for t in self.required_tools
            if not position.required & self._required_bit[self.tool_index[t]]
        )

    def _may_stop(self, position: Position, reason: Reason) -> Verdict:
        pending = self.pending_required(position)
        if pending:
            message = "You must call these tools before ending: " + ", ".join(pending) + "."
            return self._unless_dead_end(
                position, Verdict(True, Reason.REQUIRED_BEFORE_EXIT, message)
            )
        return _STOPS[reason]

    def needs_approval(self, tool: str, arguments: Any) -> bool:
        """Whether a call of `tool` with `arguments` (as JSON values) waits for a human: the
        tool has an approval rule without `when:`, or one whose `when:` the arguments match.
        (`approval` is the set of tools that *may* need it, as `check` reads them.)"""
        if tool not in self.approval:
            return False
        checks = self._approval_checks.get(tool)
        return checks is None or any(check.is_valid(arguments) for check in checks)

    def dead_end(self, position: Position) -> bool:
        """No tool is allowed at `position` and the run cannot end there: a call is forced,
        or a required-before-exit tool is pending (and can no longer be called). Without
        either, an empty allowed set is an answer-only position, not a dead end."""
        gate = self.gate(position)
        return not gate.allowed and (gate.force or bool(self.pending_required(position)))

    def _unless_dead_end(self, position: Position, verdict: Verdict) -> Verdict:
        if verdict.continues and self.dead_end(position):
            return _DEAD_END
        return verdict

    def after_call(
        self, position: Position, tool: str, *, heartbeat: bool | None = None
    ) -> Verdict:
        """Continue or stop after `tool` ran; `position` is the one after the call.

        `heartbeat` is None in the default mode (any tool call continues); in heartbeat mode it
        is the call's `request_heartbeat` argument.
        """
        if tool in self.terminal:
            return self._may_stop(position, Reason.TERMINAL_TOOL)
        if tool in self.rule_continues:
            verdict = _GOES_ON[Reason.RULE_CONTINUES]
        elif tool in self.continue_tools:
            verdict = _GOES_ON[Reason.CONTINUE_RULE]
        elif heartbeat is None:
            verdict = _GOES_ON[Reason.TOOL_CALL]
        elif heartbeat:
            verdict = _GOES_ON[Reason.HEARTBEAT]
        else:
            return self._may_stop(position, Reason.NO_HEARTBEAT)
        return self._unless_dead_end(position, verdict)

    def after_text(self, position: Position) -> Verdict:
        """Continue or stop after a reply without a tool call."""
        return self._may_stop(position, Reason.END_TURN)

    # -- inspection and (de)serialisation --------------------------------------------

    def node(self, position: Position) -> Node:
        return self.nodes[position.node]

    def node_index(self, name: str) -> int:
        return self._node_index[name]

    def base_gate(self, node: int) -> Gate:
        """The gate of a node with no max_calls limit exhausted."""
        return self._gates[node]

    def successors(self, node: int, tool: str) -> tuple[tuple[str | None, int], ...]:
        """Nodes `tool` can lead to from anywhere: (case label or None, node index) pairs."""
        index = self.tool_index[tool]
        if self._next[index] >= 0:
            return ((None, self._next[index]),)
        return tuple((self.nodes[n].case, n) for n in self._case_nodes[index])

    def case_keys(self, tool: str) -> tuple[Any, ...]:
        """The output-case keys of a conditional tool, in match order (empty if none)."""
        return self._case_keys.get(self.tool_index[tool], ())

    def max_calls(self, tool: str) -> int | None:
        index = self.tool_index[tool]
        return self._count_limit[index] if self._count_slot[index] >= 0 else None

    def count(self, position: Position, tool: str) -> int:
        """Calls of a max-called tool so far (capped at its limit); 0 for other tools."""
        slot = self._count_slot[self.tool_index[tool]]
        return position.counts[slot] if slot >= 0 else 0

    def dump(self, position: Position) -> dict[str, Any]:
        """A JSON-friendly form of a position, by names, so it survives rule-file edits."""
        # Built once per step: straight from the position's numbers (zero counts and an
        # empty required mask, the common case, skip the loops).
        counts = position.counts
        required = position.required
        return {
            "node": self.nodes[position.node].name,
            "counts": {t: counts[s] for t, s in self._counted if counts[s]} if any(counts) else {},
            "required_called": (
                [t for t, bit in self._required_bits if required & bit] if required else []
            ),
        }

    def load(self, data: Mapping[str, Any]) -> Position:
        """The inverse of `dump`; `PositionError` when the data does not fit this machine."""
        try:
            node = self._node_index[data["node"]]
            counts = [0] * len(self.start().counts)
            exhausted = 0
            for tool, value in dict(data.get("counts", {})).items():
                index = self.tool_index[tool]
                slot = self._count_slot[index]
                if slot < 0:
                    raise KeyError(tool)
                counts[slot] = min(int(value), self._count_limit[index])
                if counts[slot] >= self._count_limit[index]:
                    exhausted |= self._count_bit[index]
            required = 0
            for tool in data.get("required_called", []):
                bit = self._required_bit[self.tool_index[tool]]
                if not bit:
                    raise KeyError(tool)
                required |= bit
        except (KeyError, TypeError, ValueError) as exc:
            raise PositionError(
                f"position {dict(data)!r} does not fit the machine of {self.agent!r} "
                f"(unknown {exc}); was the rule file changed?"
            ) from exc
        return Position(node, tuple(counts), exhausted, required)

    # -- internals ------------------------------------------------------------------

    def _narrow(self, gate: Gate, exhausted: int) -> Gate:
        mask = gate.mask & ~exhausted
        allowed = tuple(t for i, t in enumerate(self.tools) if mask >> i & 1)
        forced_tool = allowed[0] if gate.force and len(allowed) == 1 else None
        return Gate(allowed, gate.force, forced_tool, gate.prefill, mask)
