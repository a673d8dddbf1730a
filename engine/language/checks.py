"""Semantic checks of a schema-valid rule file: every problem the schema cannot see.

Each check is a small function from the spec to diagnostics; `check_spec` runs them all, so
an author sees every problem in one pass. Codes are stable (tests and docs name them):

    E020 tool declared twice              E026 conditional case leads to a forbidden tool
    E021 rule names an undeclared tool    E027 prefilled argument not a parameter / invalid
    E022 duplicate rule                   E028 tool parameter schema is not a valid JSON Schema
    E023 tool both terminal and continue  E029 prefilled args on a multi-tool init rule
    E024 rules on one tool allow nothing  E030 child args for a tool the rule does not allow
    E025 tool child of two parent rules   E031 conditional rule with no cases
                                          E032 two conditional rules on one tool
                                          E033 a `when:` that is no usable condition
    W201 redundant rule                   W203 `strict` has no effect beside a `default`
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from engine.errors import Diagnostic, Severity, SourceSpan
from engine.language import spec
from engine.language.yamltree import SourceMap

Path = tuple[Any, ...]


def _names_at(value: str | list[str], path: Path) -> Iterator[tuple[str, Path]]:
    if isinstance(value, str):
        yield value, path
    else:
        for i, name in enumerate(value):
            yield name, (*path, i)


def tool_references(rule: Any, index: int) -> Iterator[tuple[str, Path]]:
    """Every tool name a rule mentions, with the path of the mention in the document."""
    base: Path = ("rules", index)
    match rule:
        case spec.InitRule():
            yield from _names_at(rule.init, (*base, "init"))
        case spec.ChildRule():
            yield rule.after, (*base, "after")
            yield from _names_at(rule.allow, (*base, "allow"))
            for name in rule.args or {}:
                yield name, (*base, "args", name)
        case spec.ConditionalRule():
            yield rule.after, (*base, "after")
            for key, name in rule.on_output.items():
                yield name, (*base, "on_output", key)
            if rule.default is not None:
                yield rule.default, (*base, "default")
        case spec.ParentRule():
            yield rule.only_after, (*base, "only_after")
            yield from _names_at(rule.tools, (*base, "tools"))
        case spec.TerminalRule():
            yield from _names_at(rule.terminal, (*base, "terminal"))
        case spec.ContinueRule():
            yield from _names_at(rule.continue_, (*base, "continue"))
        case spec.MaxCallsRule():
            yield from _names_at(rule.tools, (*base, "tools"))
        case spec.RequiredBeforeExitRule():
            yield from _names_at(rule.required_before_exit, (*base, "required_before_exit"))
        case spec.RequiresApprovalRule():
            yield from _names_at(rule.requires_approval, (*base, "requires_approval"))


class _Report:
    def __init__(self, source: SourceMap) -> None:
        self.source = source
        self.items: list[Diagnostic] = []

    def error(
        self,
        code: str,
        message: str,
        at: Path,
        *,
        rule: int | None = None,
        hint: str | None = None,
        key: bool = False,
    ) -> None:
        span = self.source.span(at, key=key)
        self.items.append(Diagnostic(Severity.ERROR, code, message, span, rule=rule, hint=hint))

    def warning(
        self, code: str, message: str, at: Path, *, rule: int | None = None, hint: str | None = None
    ) -> None:
        span = self.source.span(at)
        self.items.append(Diagnostic(Severity.WARNING, code, message, span, rule=rule, hint=hint))

    def line(self, at: Path) -> int:
        return self.source.span(at).line


def _check_tools(agent: spec.AgentSpec, report: _Report) -> set[str]:
    """Declarations: duplicates and parameter schemas; returns the tools whose schema is bad."""
    seen: dict[str, int] = {}
    bad_schema: set[str] = set()
    for i, decl in enumerate(agent.tool_decls()):
        if decl.name in seen:
            first = report.line(("tools", seen[decl.name]))
            report.error(
                "E020",
                f"tool {decl.name!r} is declared twice (first on line {first})",
                ("tools", i),
            )
        else:
            seen[decl.name] = i
        if decl.parameters is not None:
            # Here, not at the top: jsonschema is most of validate's import time, and a rule
            # file without parameter schemas never needs it.
            from engine.language.jsonschemas import cached_schema_problem

            problem = cached_schema_problem(decl.parameters)
            if problem is not None:
                bad_schema.add(decl.name)
                report.error(
                    "E028",
                    f"parameters of {decl.name!r} are not a valid JSON Schema: {problem.message}",
                    ("tools", i, "parameters", *problem.at),  # at the bad part
                )
            elif decl.parameters.get("type", "object") != "object":
                bad_schema.add(decl.name)
                report.error(
                    "E028",
                    f"parameters of {decl.name!r} must be an object schema",
                    ("tools", i, "parameters"),
                )
    return bad_schema


def _check_references(agent: spec.AgentSpec, report: _Report) -> bool:
    known = set(agent.tool_names())
    ok = True
    for index, rule in enumerate(agent.rules):
        for name, path in tool_references(rule, index):
            if name not in known:
                ok = False
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f"did you mean {close[0]!r}?" if close else "declare it under `tools`"
                is_key = path[-2] == "args"
                report.error(
                    "E021",
                    f"rule names tool {name!r}, which the agent does not have",
                    path,
                    rule=index,
                    hint=hint,
                    key=is_key,
                )
    return ok


def _sorted_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_value(value[k]) for k in sorted(value, key=repr)}
    if isinstance(value, list):
        return [_sorted_value(v) for v in value]
    return value


def _signature(rule: spec.Rule) -> str:
    """What makes two rules the same rule: everything but the note.

    Prefilled `args` are compared whatever their key order; `on_output` keeps its order (the
    first matching case wins), and repr keeps `true` and `"true"` keys apart.
    """
    data = rule.model_dump(exclude={"note"})
    if data.get("args") is not None:
        data["args"] = _sorted_value(data["args"])
    return repr(data)


def _check_duplicates(agent: spec.AgentSpec, report: _Report) -> None:
    first: dict[tuple[str, str], int] = {}
    for index, rule in enumerate(agent.rules):
        key = (type(rule).__name__, _signature(rule))
        if key in first:
            line = report.line(("rules", first[key]))
            report.error(
                "E022",
                f"duplicate rule: the same {spec.rule_kind(rule)} rule stands on line {line}",
                ("rules", index),
                rule=index,
            )
        else:
            first[key] = index


def _flag_rules(agent: spec.AgentSpec) -> dict[str, dict[str, list[int]]]:
    """kind -> tool -> indices of the rules that set that flag on the tool."""
    flags: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for index, rule in enumerate(agent.rules):
        for name in spec.flag_tools(rule):
            flags[spec.rule_kind(rule) or ""][name].append(index)
    return flags


def _duplicate_indices(agent: spec.AgentSpec) -> set[int]:
    seen: set[tuple[str, str]] = set()
    duplicates: set[int] = set()
    for index, rule in enumerate(agent.rules):
        key = (type(rule).__name__, _signature(rule))
        if key in seen:
            duplicates.add(index)
        seen.add(key)
    return duplicates


def _check_flags(agent: spec.AgentSpec, report: _Report) -> None:
    flags = _flag_rules(agent)
    duplicates = _duplicate_indices(agent)
    for kind, by_tool in flags.items():
        for tool, indices in by_tool.items():
            # An exact duplicate rule is E022 already; here: lists that overlap.
            distinct = sorted(set(indices) - duplicates)
            if len(distinct) > 1:
                line = report.line(("rules", distinct[0]))
                report.warning(
                    "W201",
                    f"{tool!r} is already {kind} by the rule on line {line}",
                    ("rules", distinct[1]),
                    rule=distinct[1],
                )
    for tool, terminal in flags["terminal"].items():
        if tool in flags["continue"]:
            cont = flags["continue"][tool][0]
            report.error(
                "E023",
                f"{tool!r} is both terminal (line {report.line(('rules', terminal[0]))}) "
                "and continue: the run cannot both stop and go on after it",
                ("rules", cont),
                rule=cont,
            )
    continuing: dict[str, int] = {}
    for index, rule in enumerate(agent.rules):
        if isinstance(rule, spec.ChildRule | spec.ConditionalRule):
            continuing.setdefault(rule.after, index)
        elif isinstance(rule, spec.MaxCallsRule):
            for name in spec.as_tuple(rule.tools):
                continuing.setdefault(name, index)
    for tool, indices in flags["continue"].items():
        if tool in continuing:
            other = continuing[tool]
            report.warning(
                "W201",
                f"continue on {tool!r} is redundant: the run already goes on "
                f"after it because of the rule on line {report.line(('rules', other))}",
                ("rules", indices[0]),
                rule=indices[0],
            )


def _check_prefill(agent: spec.AgentSpec, report: _Report, bad_schema: set[str]) -> None:
    # A tool whose schema is itself invalid (E028) has nothing to check prefills against.
    decls = {d.name: d for d in agent.tool_decls() if d.name not in bad_schema}

    def check(tool: str, args: dict[str, Any], at: Path, index: int) -> None:
        decl = decls.get(tool)
        if decl is None or decl.parameters is None:
            return
        schema = decl.parameters
        properties = schema.get("properties", {})
        for key in args:
            if (key not in properties and schema.get("additionalProperties", True) is False) or (
                key not in properties and properties
            ):
                close = difflib.get_close_matches(key, list(properties), n=1)
                hint = (
                    f"did you mean {close[0]!r}?"
                    if close
                    else ("parameters: " + ", ".join(properties) if properties else None)
                )
                report.error(
                    "E027",
                    f"prefilled argument {key!r} is not a parameter of {tool!r}",
                    (*at, key),
                    rule=index,
                    hint=hint,
                    key=True,
                )
        # Prefilled values are partial: the model supplies the rest, so a missing property is
        # no error (the schema is kept whole: its references point into it).
        from engine.language import jsonschemas

        for error in jsonschemas.validator(schema).iter_errors(args):
            if error.validator == "required" and not error.absolute_path:
                continue
            where = (*at, *error.absolute_path)
            report.error(
                "E027",
                f"prefilled arguments for {tool!r} do not fit its parameters: {error.message}",
                where,
                rule=index,
            )

    for index, rule in enumerate(agent.rules):
        if isinstance(rule, spec.InitRule) and rule.args is not None:
            tools = spec.as_tuple(rule.init)
            if len(tools) != 1:
                report.error(
                    "E029",
                    "prefilled `args` need exactly one init tool; write one init rule per tool",
                    ("rules", index, "args"),
                    rule=index,
                    key=True,
                )
            else:
                check(tools[0], rule.args, ("rules", index, "args"), index)
        elif isinstance(rule, spec.ChildRule) and rule.args:
            allowed = set(spec.as_tuple(rule.allow))
            for tool, args in rule.args.items():
                if tool not in allowed:
                    report.error(
                        "E030",
                        f"`args` for {tool!r}, which this rule does not allow after {rule.after!r}",
                        ("rules", index, "args", tool),
                        rule=index,
                        key=True,
                    )
                else:
                    check(tool, args, ("rules", index, "args", tool), index)


def _check_sets(agent: spec.AgentSpec, report: _Report) -> None:
    """Child, parent and conditional rules on one tool must leave something to call after it."""
    parents = _Parents(agent)
    conflicted = _check_two_parents(parents, report)
    by_tool, conditionals = _gates_by_tool(agent, report)
    _check_one_conditional_per_tool(conditionals, report)
    all_tools = agent.tool_names()
    for tool in dict.fromkeys([*by_tool, *conditionals]):
        blame = by_tool.get(tool, [])
        permitted = set(all_tools)
        for index in blame:
            gate = agent.rules[index]
            assert isinstance(gate, spec.ChildRule | spec.ParentRule)  # by_tool holds only these
            children = gate.allow if isinstance(gate, spec.ChildRule) else gate.tools
            permitted &= set(spec.as_tuple(children))
        # Children of other tools' parent rules may not follow `tool`.
        excluded = parents.excluded_after(tool)
        allowed = permitted - set(excluded)
        lines = ("line " if len(blame) == 1 else "lines ") + ", ".join(
            str(report.line(("rules", i))) for i in blame
        )
        if not blame or allowed:
            for index in conditionals.get(tool, []):
                _check_cases(agent, report, tool, index, allowed, excluded, lines)
        elif not (permitted and permitted <= conflicted):  # else E025 says why
            message = _nothing_allowed(all_tools, tool, lines, permitted, excluded)
            report.error("E024", message, ("rules", blame[-1]), rule=blame[-1])


def _gates_by_tool(
    agent: spec.AgentSpec, report: _Report
) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Per tool, its child and parent rules, and its conditional rules (each checked)."""
    by_tool: dict[str, list[int]] = defaultdict(list)
    conditionals: dict[str, list[int]] = defaultdict(list)
    for index, rule in enumerate(agent.rules):
        if isinstance(rule, spec.ChildRule):
            by_tool[rule.after].append(index)
        elif isinstance(rule, spec.ParentRule):
            by_tool[rule.only_after].append(index)
        elif isinstance(rule, spec.ConditionalRule):
            conditionals[rule.after].append(index)
            _check_conditional(index, rule, report)
    return by_tool, conditionals


class _Parents:
    """The parent rules: each child's parents, and the children excluded after a tool."""

    def __init__(self, agent: spec.AgentSpec) -> None:
        self.of: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for index, rule in enumerate(agent.rules):
            if isinstance(rule, spec.ParentRule):
                for child in spec.as_tuple(rule.tools):
                    self.of[child].append((rule.only_after, index))
        # Children of parent rules, each with the last of its parents (for messages); after a
        # tool, every child with a parent other than that tool is excluded. Computed once, and
        # adjusted only for the tools that are parents themselves.
        self.last_parent = {c: ps[-1][0] for c, ps in self.of.items()}
        self.own_children: dict[str, set[str]] = defaultdict(set)
        for child, parents in self.of.items():
            for parent, _ in parents:
                self.own_children[parent].add(child)

    def excluded_after(self, tool: str) -> dict[str, str]:
        """Child -> the parent it may only follow, for each child that may not follow `tool`."""
        if tool not in self.own_children:
            return self.last_parent
        excluded = dict(self.last_parent)
        for child in self.own_children[tool]:
            others = [p for p, _ in self.of[child] if p != tool]
            if others:
                excluded[child] = others[-1]
            else:
                del excluded[child]
        return excluded


def _check_two_parents(parents: _Parents, report: _Report) -> set[str]:
    """E025 for each child of two different parents; those children."""
    conflicted: set[str] = set()
    for child, of in parents.of.items():
        distinct = sorted({p for p, _ in of})
        if len(distinct) > 1:
            conflicted.add(child)
            index = of[-1][1]
            report.error(
                "E025",
                f"{child!r} may only be called right after {distinct[0]!r} and "
                f"right after {distinct[1]!r}: it can never be called",
                ("rules", index),
                rule=index,
                hint="list both parents' children in one place",
            )
    return conflicted


def _check_conditional(index: int, rule: spec.ConditionalRule, report: _Report) -> None:
    """E031 for a conditional rule without cases, W203 for `strict` beside a `default`."""
    if not rule.on_output:
        report.error(
            "E031",
            f"conditional rule on {rule.after!r} has no cases",
            ("rules", index, "on_output"),
            rule=index,
            hint="add cases, or use `allow:` for a plain child rule",
        )
    if rule.default is not None and rule.strict:
        report.warning(
            "W203",
            "`strict` has no effect when a `default` is given",
            ("rules", index, "strict"),
            rule=index,
        )


def _check_one_conditional_per_tool(conditionals: dict[str, list[int]], report: _Report) -> None:
    """E032 for a second conditional rule on one tool."""
    for tool, indices in conditionals.items():
        if len(indices) > 1:
            line = report.line(("rules", indices[0]))
            report.error(
                "E032",
                f"{tool!r} already has a conditional rule on line {line}; "
                "merge the cases into one rule",
                ("rules", indices[1]),
                rule=indices[1],
            )


def _nothing_allowed(
    all_tools: tuple[str, ...],
    tool: str,
    lines: str,
    permitted: set[str],
    excluded: dict[str, str],
) -> str:
    """E024's message: the child and parent rules on `tool` leave no tool to call after it."""
    if not permitted:
        return f"after {tool!r} no tool is allowed: the rules on {lines} have no tool in common"
    why = "; ".join(
        f"{c!r} may only be called right after {excluded[c]!r}" for c in all_tools if c in permitted
    )
    return (
        f"after {tool!r} no tool is allowed: the rules on {lines} allow only "
        f"tools that other rules forbid there ({why})"
    )


def _check_cases(
    agent: spec.AgentSpec,
    report: _Report,
    tool: str,
    index: int,
    allowed: set[str],
    excluded: dict[str, str],
    lines: str,
) -> None:
    """E026 for each case (and the default) of a conditional rule that leads to a tool the
    other rules forbid after `tool`."""
    rule = agent.rules[index]
    assert isinstance(rule, spec.ConditionalRule)  # conditionals holds only these
    targets: list[tuple[str, Path]] = [
        (name, ("rules", index, "on_output", key)) for key, name in rule.on_output.items()
    ]
    if rule.default is not None:
        targets.append((rule.default, ("rules", index, "default")))
    for name, path in targets:
        if name in allowed:
            continue
        if name in excluded:
            why = f"{name!r} may only be called right after {excluded[name]!r}"
        else:
            why = f"the rules on {lines} do not allow {name!r} after {tool!r}"
        report.error(
            "E026",
            f"this case leads to {name!r}, but {why}: the run would dead-end",
            path,
            rule=index,
        )


def _check_approval_when(agent: spec.AgentSpec, report: _Report, bad_schema: set[str]) -> None:
    """E033: a `requires_approval` rule's `when:` must be a valid JSON Schema (nothing
    fetched), and the properties it names must be parameters of the tools it covers."""
    from engine.language.jsonschemas import cached_schema_problem

    decls = {d.name: d for d in agent.tool_decls() if d.name not in bad_schema}
    for index, rule in enumerate(agent.rules):
        if not isinstance(rule, spec.RequiresApprovalRule) or rule.when is None:
            continue
        at: Path = ("rules", index, "when")
        problem = cached_schema_problem(rule.when)
        if problem is not None:
            report.error(
                "E033",
                f"`when:` is not a valid JSON Schema: {problem.message}",
                (*at, *problem.at),
                rule=index,
            )
            continue
        named = rule.when.get("properties")
        if isinstance(named, dict):
            for tool in spec.as_tuple(rule.requires_approval):
                _check_when_names(decls.get(tool), tool, list(named), report, at, index)


def _check_when_names(
    decl: spec.ToolDecl | None, tool: str, named: list[str], report: _Report, at: Path, index: int
) -> None:
    """E033 for each property a `when:` names that the tool's parameters do not have."""
    properties = (decl.parameters or {}).get("properties") if decl else None
    if not isinstance(properties, dict) or not properties:
        return  # no declared parameters to compare with
    for key in named:
        if key not in properties:
            close = difflib.get_close_matches(key, list(properties), n=1)
            report.error(
                "E033",
                f"`when:` names {key!r}, which is not a parameter of {tool!r}",
                (*at, "properties", key),
                rule=index,
                hint=f"did you mean {close[0]!r}?" if close else None,
                key=True,
            )


def check_spec(agent: spec.AgentSpec, source: SourceMap) -> list[Diagnostic]:
    """All semantic problems of a schema-valid spec, errors and warnings, in one pass."""
    report = _Report(source)
    bad_schema = _check_tools(agent, report)
    references_ok = _check_references(agent, report)
    _check_duplicates(agent, report)
    _check_flags(agent, report)
    _check_prefill(agent, report, bad_schema)
    _check_approval_when(agent, report, bad_schema)
    if references_ok:  # set arithmetic over unknown tools would only add noise
        _check_sets(agent, report)
    return report.items


__all__ = ["SourceSpan", "check_spec", "tool_references"]
