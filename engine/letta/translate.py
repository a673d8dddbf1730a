"""Translate Letta tool rules to an `AgentSpec` and back, keeping the reference meaning exactly.

Import (`letta_to_spec`) groups Letta's one-object-per-tool rules into readable toolfsm rules
(all `exit_loop` rules become one `terminal` list, and so on) and records, for each toolfsm
rule, the Letta rules it came from. What toolfsm cannot represent with Letta's meaning (a rule
naming a tool the agent lacks, two conditional rules on one tool, `max_count_limit` 0, rule sets
the checks reject as contradictory, ...) is *skipped*: it becomes a comment in the output and
makes the import lossy. Conditional keys stay strings, so they keep Letta's exact-string match.

Export (`spec_to_letta`) writes one Letta object per tool per rule. Boolean and number output
keys have no Letta equivalent (JSON keys are strings, matched exactly), so they make the export
lossy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from engine.errors import ToolfsmError
from engine.language import spec
from engine.language.agenttools import BUILTIN_AGENT_TOOLS
from engine.language.loader import parse_rules
from engine.language.yamltree import MAX_BYTES, plain_key
from engine.letta.reader import LettaAgent, LettaTool

RULE_TYPES = (
    "run_first",
    "constrain_child_tools",
    "parent_last_tool",
    "conditional",
    "exit_loop",
    "continue_loop",
    "max_count_per_step",
    "required_before_exit",
    "requires_approval",
)
# Older Letta versions wrote class names as the type; they mean the same rules.
DEPRECATED_TYPES = {
    "InitToolRule": "run_first",
    "TerminalToolRule": "exit_loop",
    "ToolRule": "constrain_child_tools",
}
# The fields each type may carry besides tool_name, type and prompt_template.
_FIELDS: dict[str, frozenset[str]] = {
    "run_first": frozenset({"args"}),
    "constrain_child_tools": frozenset({"children", "child_arg_nodes"}),
    "parent_last_tool": frozenset({"children"}),
    "conditional": frozenset({"child_output_mapping", "default_child", "require_output_mapping"}),
    "max_count_per_step": frozenset({"max_count_limit"}),
}
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class TranslationError(ToolfsmError):
    """An agent cannot be translated at all (for example: it has no tools and no rules)."""


@dataclass(frozen=True)
class Skipped:
    """A Letta rule that was not translated, and why (each one makes the import lossy)."""

    index: int | None  # position in the agent's `tool_rules`; None for a tool-level problem
    rule: Any  # the raw Letta JSON, quoted in the output's comment
    reason: str


@dataclass(frozen=True)
class Translation:
    """An imported agent: the spec, where each rule came from, notes, and what was skipped."""

    agent: LettaAgent
    spec: spec.AgentSpec
    origins: tuple[tuple[int, ...], ...]  # per spec rule: indices into the Letta `tool_rules`
    notes: tuple[str, ...]  # exact translations worth a word (folded duplicates, dropped fields)
    skipped: tuple[Skipped, ...]
    tools_derived: bool  # the tool list was not in the input: it lists the tools rules mention

    @property
    def lossy(self) -> bool:
        return bool(self.skipped)


@dataclass(frozen=True)
class _Letta:
    """One Letta rule, checked and normalised."""

    index: int
    type: str
    tool: str
    children: tuple[str, ...] = ()
    child_args: tuple[tuple[str, dict[str, Any]], ...] = ()
    mapping: tuple[tuple[str, str], ...] = ()
    default: str | None = None
    require: bool = False
    limit: int = 0
    args: dict[str, Any] | None = None

    def tools(self) -> tuple[str, ...]:
        """Every tool the rule names, in the order it names them."""
        return (
            self.tool,
            *self.children,
            *(name for name, _ in self.child_args),
            *(child for _, child in self.mapping),
            *((self.default,) if self.default else ()),
        )


class _Invalid(Exception):
    """A Letta rule Letta itself would refuse, or one with no faithful translation."""


def _names(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _Invalid(f"`{what}` must be a list of tool names")
    return tuple(dict.fromkeys(value))


def _normalise(index: int, raw: Any, notes: list[str]) -> _Letta:
    """Check one raw rule; `_Invalid` when Letta would refuse it or toolfsm cannot keep it."""
    if not isinstance(raw, dict):
        raise _Invalid("a rule must be a JSON object")
    kind = raw.get("type")
    kind = DEPRECATED_TYPES.get(kind, kind) if isinstance(kind, str) else kind
    if kind not in RULE_TYPES:
        raise _Invalid(f"unknown rule type {raw.get('type')!r}")
    tool = raw.get("tool_name")
    if not isinstance(tool, str) or not tool:
        raise _Invalid("`tool_name` is missing or empty")
    _note_unused_fields(f"tool_rules[{index}] ({kind} on {tool})", kind, raw, notes)
    read = _READERS.get(kind)
    return read(index, kind, tool, raw) if read else _Letta(index, kind, tool)


def _note_unused_fields(where: str, kind: str, raw: dict[str, Any], notes: list[str]) -> None:
    if raw.get("prompt_template") is not None:
        notes.append(
            f"{where}: `prompt_template` dropped; toolfsm renders its own prompt line per rule"
        )
    ignored = set(raw) - {"tool_name", "type", "prompt_template"} - _FIELDS.get(kind, frozenset())
    for key in sorted(ignored):
        if raw[key] is not None:
            notes.append(f"{where}: field `{key}` is not used by {kind} rules; ignored")


def _object_or_none(value: Any, what: str) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise _Invalid(f"{what} must be a JSON object")
    return value


def _read_run_first(index: int, kind: str, tool: str, raw: dict[str, Any]) -> _Letta:
    args = _object_or_none(raw.get("args"), "`args`")
    return _Letta(index, kind, tool, args=args or None)


def _read_children(index: int, kind: str, tool: str, raw: dict[str, Any]) -> _Letta:
    children = _names(raw.get("children"), "children")
    if not children:
        raise _Invalid(
            f"no children: nothing is allowed after {tool!r}, where Letta silently offers "
            "every tool again and toolfsm would dead-end"
        )
    nodes = raw.get("child_arg_nodes") if kind == "constrain_child_tools" else None
    return _Letta(index, kind, tool, children=children, child_args=_child_args(nodes))


def _child_args(nodes: Any) -> tuple[tuple[str, dict[str, Any]], ...]:
    if nodes is None:
        return ()
    if not isinstance(nodes, list):
        raise _Invalid("`child_arg_nodes` must be a list of {name, args}")
    child_args: list[tuple[str, dict[str, Any]]] = []
    for node in nodes:
        if not isinstance(node, dict) or not isinstance(node.get("name"), str):
            raise _Invalid("each `child_arg_nodes` entry needs a tool `name`")
        args = _object_or_none(node.get("args"), f"`args` of child {node['name']!r}")
        if args:
            child_args.append((node["name"], args))
    return tuple(child_args)


def _read_conditional(index: int, kind: str, tool: str, raw: dict[str, Any]) -> _Letta:
    mapping = raw.get("child_output_mapping")
    if not isinstance(mapping, dict) or not mapping:
        raise _Invalid("`child_output_mapping` must be a non-empty JSON object")
    if not all(isinstance(v, str) and v for v in mapping.values()):
        raise _Invalid("`child_output_mapping` values must be tool names")
    default = raw.get("default_child")
    if default is not None and (not isinstance(default, str) or not default):
        raise _Invalid("`default_child` must be a tool name or null")
    require = raw.get("require_output_mapping", False)
    if require is None:
        require = False
    if not isinstance(require, bool):
        raise _Invalid("`require_output_mapping` must be true or false")
    return _Letta(
        index,
        kind,
        tool,
        mapping=tuple((str(k), v) for k, v in mapping.items()),
        default=default,
        require=require,
    )


def _read_max_count(index: int, kind: str, tool: str, raw: dict[str, Any]) -> _Letta:
    limit = raw.get("max_count_limit")
    if isinstance(limit, bool) or not isinstance(limit, int):
        shown = json.dumps(limit) if limit is not None else "nothing"
        raise _Invalid(f"`max_count_limit` must be a whole number, got {shown}")
    if limit < 1:
        raise _Invalid(
            f"max_count_limit {limit} forbids {tool!r} outright; toolfsm's `max_calls` "
            "starts at 1 (remove the tool from the agent instead)"
        )
    return _Letta(index, kind, tool, limit=limit)


# How each rule type with fields of its own is read (the others carry only their tool).
_READERS: dict[str, Callable[[int, str, str, dict[str, Any]], _Letta]] = {
    "run_first": _read_run_first,
    "constrain_child_tools": _read_children,
    "parent_last_tool": _read_children,
    "conditional": _read_conditional,
    "max_count_per_step": _read_max_count,
}


def _one_or_list(tools: Iterable[str]) -> str | list[str]:
    names = list(dict.fromkeys(tools))
    return names[0] if len(names) == 1 else names


# Checks that reject what Letta accepts: why toolfsm does, in words that make sense without
# the intermediate document's line numbers.
_CHECK_REASONS = {
    "E022": "duplicate rule",
    "E024": "after the tool, the rules leave no tool to call: Letta silently offers every tool "
    "again, toolfsm treats an empty allowed set as a dead end and rejects the rule set",
    "E025": "the tool is the child of two parent rules, so it can never be called; toolfsm "
    "rejects this contradiction",
    "E026": "an output case leads to a tool that other rules forbid after this tool: Letta "
    "would silently offer every tool, toolfsm rejects the dead end",
    "E027": "prefilled arguments do not fit the tool's parameters",
    "E030": "`child_arg_nodes` names a tool that is not among the children",
    "E031": "conditional rule with no output cases",
}


def _reason(diagnostic: Any) -> str:
    base = _CHECK_REASONS.get(diagnostic.code)
    message = re.sub(r" \(?(?:first )?on lines? [0-9]+(?:, [0-9]+)*\)?", "", diagnostic.message)
    return f"{base} ({message})" if base else message


# The `tool_type` Letta gives its multi-agent tools.
LETTA_MULTI_AGENT_TOOL_TYPE = "letta_multi_agent_core"


def _tool_entry(tool: LettaTool, parameters: bool) -> str | spec.ToolDecl:
    if tool.name in BUILTIN_AGENT_TOOLS:
        # Letta's multi-agent tools are toolfsm built-ins too: named, they bring their own
        # parameters and description (and need no Python function).
        return tool.name
    params = tool.parameters if parameters else None
    if not tool.description and params is None:
        return tool.name
    return spec.ToolDecl(name=tool.name, description=tool.description, parameters=params)


# Agent types Letta runs with its older loop, where a tool call without a rule that continues
# ends the run unless the model set `request_heartbeat` (LettaAgentV2; `letta_v1_agent` and
# `sleeptime_agent` run the newer loop, which goes on after any tool call).
HEARTBEAT_AGENT_TYPES = frozenset(
    {"memgpt_agent", "memgpt_v2_agent", "react_agent", "workflow_agent", "split_thread_agent"}
)


def _run_settings(agent: LettaAgent) -> dict[str, Any]:
    """The `run:` block that makes toolfsm run the agent as Letta does: Letta's output text
    (`str()`), its loop, and no parallel tool calls when the agent has rules other than
    approval rules (Letta turns them off then)."""
    run: dict[str, Any] = {"output_text": "python"}
    if agent.agent_type in HEARTBEAT_AGENT_TYPES:
        run["continuation"] = "heartbeat"
    if any(
        not isinstance(raw, dict) or raw.get("type") != "requires_approval"
        for raw in agent.tool_rules
    ):
        run["parallel_tool_calls"] = False
    return run


def letta_to_spec(agent: LettaAgent) -> Translation:
    """Translate one Letta agent; never raises for untranslatable rules (they are skipped)."""
    notes: list[str] = list(agent.notes)
    skipped: list[Skipped] = []
    rules: list[_Letta] = []
    for index, raw in enumerate(agent.tool_rules):
        try:
            rules.append(_normalise(index, raw, notes))
        except _Invalid as exc:
            skipped.append(Skipped(index, raw, str(exc)))
    declared = _declared_tools(agent, rules, notes, skipped)
    kept = _rules_on_known_tools(agent, rules, declared, skipped)
    spec_rules, origins = _group(kept, agent, notes, skipped)
    built = _checked_spec(agent, declared, spec_rules, origins, notes, skipped)
    skipped.sort(key=lambda s: (s.index is not None, s.index or 0))
    return Translation(
        agent,
        built,
        tuple(tuple(o) for o in origins),
        tuple(notes),
        tuple(skipped),
        agent.tools is None,
    )


def _declared_tools(
    agent: LettaAgent, rules: list[_Letta], notes: list[str], skipped: list[Skipped]
) -> dict[str, LettaTool]:
    """The agent's tools by name (bare tool_rules: every tool the rules mention), each once."""
    if agent.tools is None:
        mentioned = dict.fromkeys(t for rule in rules for t in rule.tools())
        tools = [LettaTool(name) for name in mentioned]
    else:
        tools = list(agent.tools)
    declared: dict[str, LettaTool] = {}
    for tool in tools:
        if not _TOOL_NAME.match(tool.name):
            skipped.append(
                Skipped(
                    None,
                    tool.name,
                    f"tool name {tool.name!r} is not a valid function name "
                    "(letters, digits, '_' and '-', 1 to 64 characters); the tool is left out",
                )
            )
        elif tool.name in declared:
            notes.append(f"tool {tool.name!r} is listed twice; kept once")
        else:
            declared[tool.name] = tool
    if not declared:
        unread = "; ".join(
            f"tool_rules[{s.index}]: {s.reason}" for s in skipped if s.index is not None
        )
        raise TranslationError(
            f"agent {agent.name!r} has no tools (and no rule names one)"
            + (f"; rules that could not be read: {unread}" if unread else "")
        )
    return declared


def _rules_on_known_tools(
    agent: LettaAgent,
    rules: list[_Letta],
    declared: dict[str, LettaTool],
    skipped: list[Skipped],
) -> list[_Letta]:
    """The rules that name only declared tools; the others are skipped."""
    kept: list[_Letta] = []
    for rule in rules:
        unknown = [t for t in dict.fromkeys(rule.tools()) if t not in declared]
        if not unknown:
            kept.append(rule)
            continue
        names = ", ".join(repr(t) for t in unknown)
        skipped.append(
            Skipped(
                rule.index,
                agent.tool_rules[rule.index],
                f"names {names}, which the agent does not have (Letta accepts this "
                "silently; toolfsm rejects it)",
            )
        )
    return kept


def _checked_spec(
    agent: LettaAgent,
    declared: dict[str, LettaTool],
    spec_rules: list[Any],
    origins: list[list[int]],
    notes: list[str],
    skipped: list[Skipped],
) -> spec.AgentSpec:
    """Build the spec and run the checks on it, dropping what they reject, until it is clean.

    `spec_rules` and `origins` lose the rejected rules in place."""
    parameters = dict.fromkeys(declared, True)
    while True:
        candidate = {
            "version": 1,
            "agent": agent.name,
            "description": agent.description,
            **({"tags": list(agent.tags)} if agent.tags else {}),
            "tools": [_tool_entry(t, parameters[t.name]) for t in declared.values()],
            "rules": spec_rules,
            "run": _run_settings(agent),
        }
        built = spec.AgentSpec.model_validate(candidate)
        document = built.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        checked = parse_rules(json.dumps(document, ensure_ascii=False), f"<{agent.name}>")
        errors = [d for d in checked.diagnostics if d.is_error]
        if not errors:
            return built
        if any(d.code == "E003" for d in errors):
            raise TranslationError(too_large_message(agent.name))
        dropped_schema = _drop_broken_schemas(errors, parameters, notes)
        dropped_rules = _drop_rejected_rules(errors, agent, spec_rules, origins, skipped)
        if not dropped_rules and not dropped_schema:
            raise TranslationError(f"internal: translation does not check clean: {errors[0]}")


def _drop_broken_schemas(errors: list[Any], parameters: dict[str, bool], notes: list[str]) -> bool:
    """Keep a tool whose own schema is broken (E028), without the schema. True if any was."""
    found = False
    for d in errors:
        if d.rule is not None:
            continue
        if d.code != "E028":
            raise TranslationError(f"internal: unexpected problem in the translation: {d}")
        found = True
        for name in parameters:
            if repr(name) in d.message and parameters[name]:
                parameters[name] = False
                notes.append(f"parameters of {name!r} dropped: not a valid JSON Schema")
    return found


def _drop_rejected_rules(
    errors: list[Any],
    agent: LettaAgent,
    spec_rules: list[Any],
    origins: list[list[int]],
    skipped: list[Skipped],
) -> bool:
    """Skip the Letta rules behind each spec rule the checks reject. True if any was."""
    bad_rules = {d.rule for d in errors if d.rule is not None}
    for position in sorted(bad_rules, reverse=True):
        reason = "; ".join(dict.fromkeys(_reason(d) for d in errors if d.rule == position))
        for index in origins[position]:
            skipped.append(Skipped(index, agent.tool_rules[index], reason))
        del spec_rules[position]
        del origins[position]
    return bool(bad_rules)


def too_large_message(name: str) -> str:
    return (
        f"agent {name!r} is too large to import: its rule file would be larger than "
        f"{MAX_BYTES} bytes, the limit of a rule file (its tools' descriptions and parameter "
        "schemas take too much room)"
    )


class _Grouped:
    """The toolfsm rules built so far (plain dicts) and, for each, its Letta rules' indices."""

    def __init__(self, agent: LettaAgent, notes: list[str], skipped: list[Skipped]) -> None:
        self.agent = agent
        self.notes = notes
        self.skipped = skipped
        self.out: list[Any] = []
        self.origins: list[list[int]] = []

    def add(self, rule: Any, sources: Iterable[int]) -> None:
        self.out.append(rule)
        self.origins.append(sorted(set(sources)))


def _group(
    rules: list[_Letta], agent: LettaAgent, notes: list[str], skipped: list[Skipped]
) -> tuple[list[Any], list[list[int]]]:
    """Readable toolfsm rules (as plain dicts) and, for each, the Letta rules it came from."""
    grouped = _Grouped(agent, notes, skipped)
    _group_init(rules, grouped)
    _group_edges(rules, grouped)
    _group_limits(rules, grouped)
    _group_flags(rules, grouped)
    return grouped.out, grouped.origins


def _group_init(rules: list[_Letta], grouped: _Grouped) -> None:
    """One init rule for the tools without prefilled args, one per tool with args."""
    init_args, init_from = _merged_init_args(rules, grouped.notes)
    plain = [t for t, a in init_args.items() if a is None]
    if plain:
        grouped.add({"init": _one_or_list(plain)}, (i for t in plain for i in init_from[t]))
    for tool, args in init_args.items():
        if args is not None:
            grouped.add({"init": tool, "args": args}, init_from[tool])


def _merged_init_args(
    rules: list[_Letta], notes: list[str]
) -> tuple[dict[str, dict[str, Any] | None], dict[str, list[int]]]:
    """Per run_first tool: its merged prefilled args (None for none) and its rules' indices."""
    init_args: dict[str, dict[str, Any] | None] = {}
    init_from: dict[str, list[int]] = {}
    for rule in rules:
        if rule.type != "run_first":
            continue
        if rule.tool in init_args and rule.args is None:
            notes.append(
                f"tool_rules[{rule.index}]: run_first on {rule.tool} repeats an earlier one; folded"
            )
        merged = dict(init_args.get(rule.tool) or {})
        if rule.args:
            merged.update(rule.args)  # a later rule wins key by key, as in Letta
        init_args[rule.tool] = merged or None
        init_from.setdefault(rule.tool, []).append(rule.index)
    return init_args, init_from


_EDGE_TYPES = ("constrain_child_tools", "parent_last_tool", "conditional")


def _group_edges(rules: list[_Letta], grouped: _Grouped) -> None:
    """Child, conditional and parent rules: one each, in Letta's order; exact repeats folded."""
    seen: dict[tuple[Any, ...], int] = {}
    conditional_on: dict[str, int] = {}
    for rule in rules:
        if rule.type not in _EDGE_TYPES:
            continue
        # Arg nodes for one child merge key by key (a later node wins), so two rules repeat
        # each other when their merged arguments are equal, whatever the nodes' order.
        per_child: dict[str, dict[str, Any]] = {}
        for name, values in rule.child_args:
            per_child.setdefault(name, {}).update(values)
        key = (
            rule.type,
            rule.tool,
            rule.children,
            json.dumps(per_child, sort_keys=True),
            rule.mapping,
            rule.default,
            rule.require,
        )
        if key in seen:
            first = grouped.origins[seen[key]]
            first.append(rule.index)
            grouped.notes.append(
                f"tool_rules[{rule.index}] repeats tool_rules[{first[0]}] "
                f"({rule.type} on {rule.tool}); folded"
            )
            continue
        if rule.type == "conditional" and rule.tool in conditional_on:
            grouped.skipped.append(
                Skipped(
                    rule.index,
                    grouped.agent.tool_rules[rule.index],
                    f"a second conditional rule on {rule.tool!r} (the first is "
                    f"tool_rules[{conditional_on[rule.tool]}]); toolfsm allows one per tool, "
                    "with all its cases",
                )
            )
            continue
        seen[key] = len(grouped.out)
        if rule.type == "conditional":
            conditional_on[rule.tool] = rule.index
        grouped.add(_edge_body(rule, per_child, grouped.notes), [rule.index])


def _edge_body(
    rule: _Letta, per_child: dict[str, dict[str, Any]], notes: list[str]
) -> dict[str, Any]:
    if rule.type == "constrain_child_tools":
        body: dict[str, Any] = {"after": rule.tool, "allow": _one_or_list(rule.children)}
        if per_child:
            body["args"] = per_child
        return body
    if rule.type == "parent_last_tool":
        return {"only_after": rule.tool, "tools": _one_or_list(rule.children)}
    body = {"after": rule.tool, "on_output": dict(rule.mapping)}
    if rule.require:
        body["strict"] = True
        if rule.default is not None:
            notes.append(
                f"tool_rules[{rule.index}]: default_child {rule.default!r} dropped: with "
                "require_output_mapping Letta allows nothing when no case matches, so the "
                "default is never used (`strict: true` says the same)"
            )
    elif rule.default is not None:
        body["default"] = rule.default
    return body


def _group_limits(rules: list[_Letta], grouped: _Grouped) -> None:
    """max_count_per_step: one rule per limit; several limits on one tool: the smallest binds."""
    limit_of: dict[str, int] = {}
    limit_from: dict[str, list[int]] = {}
    for rule in rules:
        if rule.type != "max_count_per_step":
            continue
        if rule.tool in limit_of:
            grouped.notes.append(
                f"tool_rules[{rule.index}]: a second max_count_per_step on "
                f"{rule.tool}; the smaller limit binds, as in Letta"
            )
        limit_of[rule.tool] = min(rule.limit, limit_of.get(rule.tool, rule.limit))
        limit_from.setdefault(rule.tool, []).append(rule.index)
    for limit in dict.fromkeys(limit_of.values()):
        tools = [t for t, n in limit_of.items() if n == limit]
        grouped.add(
            {"max_calls": limit, "tools": _one_or_list(tools)},
            (i for t in tools for i in limit_from[t]),
        )


# Letta's flag rule types and the toolfsm key of the list each becomes, in output order.
_FLAG_KEYS = {
    "exit_loop": "terminal",
    "continue_loop": "continue",
    "required_before_exit": "required_before_exit",
    "requires_approval": "requires_approval",
}


def _group_flags(rules: list[_Letta], grouped: _Grouped) -> None:
    """Flags: one list per kind; a continue_loop on an exit_loop tool is dropped."""
    flagged: dict[str, dict[str, list[int]]] = {}
    for rule in rules:
        if rule.type in _FLAG_KEYS:
            flagged.setdefault(rule.type, {}).setdefault(rule.tool, []).append(rule.index)
    for by_tool in flagged.values():
        for tool, indices in by_tool.items():
            if len(indices) > 1:
                grouped.notes.append(
                    f"tool_rules{indices}: the same rule on {tool} repeated; folded"
                )
    terminal = flagged.get("exit_loop", {})
    for tool in [t for t in flagged.get("continue_loop", {}) if t in terminal]:
        indices = flagged["continue_loop"].pop(tool)
        grouped.notes.append(
            f"tool_rules{indices}: continue_loop on {tool} dropped: it is also exit_loop, and "
            "Letta checks exit_loop first, so the continue rule never acts"
        )
    for kind, kind_key in _FLAG_KEYS.items():
        by_tool = flagged.get(kind, {})
        if by_tool:
            grouped.add({kind_key: _one_or_list(by_tool)}, (i for v in by_tool.values() for i in v))


# -- export ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Export:
    """Letta `tool_rules` for a spec, and why the export may change the meaning (lossy)."""

    tool_rules: list[dict[str, Any]]
    problems: tuple[str, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())

    @property
    def lossy(self) -> bool:
        return bool(self.problems)


def _letta_rule(tool: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"tool_name": tool, "type": kind, **fields, "prompt_template": None}


def _key_text(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int | float):
        return json.dumps(key)
    return str(key)


def spec_to_letta(agent: spec.AgentSpec) -> Export:
    """Letta's `tool_rules` for a checked spec: one object per tool per rule."""
    out: list[dict[str, Any]] = []
    problems: list[str] = []
    notes: list[str] = []
    for index, rule in enumerate(agent.rules):
        where = f"rule #{index + 1} ({spec.rule_kind(rule)})"
        if rule.note:
            notes.append(f"{where}: `note` dropped (Letta rules have no such field)")
        match rule:
            case spec.InitRule():
                for tool in spec.as_tuple(rule.init):
                    extra = {"args": dict(rule.args)} if rule.args else {}
                    out.append(_letta_rule(tool, "run_first", **extra))
            case spec.ChildRule():
                out.append(_export_child(rule))
            case spec.ConditionalRule():
                out.append(_export_conditional(rule, where, problems))
            case spec.ParentRule():
                children = list(spec.as_tuple(rule.tools))
                out.append(_letta_rule(rule.only_after, "parent_last_tool", children=children))
            case spec.MaxCallsRule():
                out += [
                    _letta_rule(t, "max_count_per_step", max_count_limit=rule.max_calls)
                    for t in spec.as_tuple(rule.tools)
                ]
            case _:
                kind, tools = _export_flag(rule)
                out += [_letta_rule(t, kind) for t in tools]
                problems += _flag_problems(rule, where, tools)
    return Export(out, tuple(problems), tuple(notes))


def _flag_problems(rule: spec.Rule, where: str, tools: tuple[str, ...]) -> list[str]:
    """What a flag rule loses in Letta's form: an approval's `when:` condition."""
    if isinstance(rule, spec.RequiresApprovalRule) and rule.when is not None:
        return [
            f"{where}: `when:` dropped (Letta's requires_approval has no condition): every "
            f"call of {', '.join(tools)} would need approval"
        ]
    return []


def _export_flag(rule: spec.Rule) -> tuple[str, tuple[str, ...]]:
    """The Letta type of a flag rule and the tools it flags."""
    match rule:
        case spec.TerminalRule():
            return "exit_loop", spec.as_tuple(rule.terminal)
        case spec.ContinueRule():
            return "continue_loop", spec.as_tuple(rule.continue_)
        case spec.RequiredBeforeExitRule():
            return "required_before_exit", spec.as_tuple(rule.required_before_exit)
        case spec.RequiresApprovalRule():
            return "requires_approval", spec.as_tuple(rule.requires_approval)
    raise AssertionError(f"unhandled rule {rule!r}")


def _export_child(rule: spec.ChildRule) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if rule.args:
        extra["child_arg_nodes"] = [
            {"name": name, "args": dict(args)} for name, args in rule.args.items()
        ]
    children = list(spec.as_tuple(rule.allow))
    return _letta_rule(rule.after, "constrain_child_tools", children=children, **extra)


def _export_conditional(
    rule: spec.ConditionalRule, where: str, problems: list[str]
) -> dict[str, Any]:
    mapping: dict[str, str] = {}
    for typed, child in rule.on_output.items():
        key = plain_key(typed)
        text = _key_text(key)
        if not isinstance(key, str):
            problems.append(_typed_key_problem(f"{where} on {rule.after}", key, text))
        if text in mapping:
            problems.append(
                f"{where} on {rule.after}: cases {text!r} collide once written as "
                "Letta's string keys; the first one is kept"
            )
            continue
        mapping[text] = child
    return _letta_rule(
        rule.after,
        "conditional",
        child_output_mapping=mapping,
        default_child=rule.default,
        # With a default, toolfsm's `strict` has no effect; Letta's flag would
        # override the default, so it is only set without one.
        require_output_mapping=rule.strict and rule.default is None,
    )


def _typed_key_problem(where: str, key: Any, text: str) -> str:
    kind = "boolean" if isinstance(key, bool) else "number"
    matches = (
        "'true'/'false' in any letter case"
        if kind == "boolean"
        else "any text that parses as an equal number"
    )
    return (
        f"{where}: the {kind} case {key!r} becomes the string key {text!r}, which Letta "
        f"matches exactly, while toolfsm matches {matches}"
    )


def spec_to_letta_agent(agent: spec.AgentSpec) -> tuple[dict[str, Any], Export]:
    """A Letta agent object (name, description, tools with schemas, tool_rules)."""
    exported = spec_to_letta(agent)
    tools = []
    problems = list(exported.problems)
    for decl in agent.tool_decls():
        schema: dict[str, Any] = {"name": decl.name, "description": decl.description}
        if decl.parameters is not None:  # left out rather than invented, so imports match
            schema["parameters"] = decl.parameters
        tool = {"name": decl.name, "description": decl.description, "json_schema": schema}
        if decl.agents is not None:
            problems.append(
                f"tool {decl.name!r} messages the agents its `agents:` query matches; Letta "
                "has no such tool (exported as a custom tool without code; Letta's "
                "send_message_to_agents_matching_tags takes the tags from the model)"
            )
        elif decl.name in BUILTIN_AGENT_TOOLS:
            tool["tool_type"] = LETTA_MULTI_AGENT_TOOL_TYPE
        tools.append(tool)
    exported = replace(exported, problems=tuple(problems))
    document = {
        "name": agent.agent,
        "description": agent.description,
        "tags": list(agent.tags),
        # The Letta loop that matches the continuation mode (see HEARTBEAT_AGENT_TYPES).
        "agent_type": "memgpt_agent" if agent.run.continuation == "heartbeat" else "letta_v1_agent",
        "tools": tools,
        "tool_rules": exported.tool_rules,
    }
    return document, exported


__all__ = [
    "DEPRECATED_TYPES",
    "RULE_TYPES",
    "Export",
    "Skipped",
    "Translation",
    "TranslationError",
    "letta_to_spec",
    "spec_to_letta",
    "spec_to_letta_agent",
]
