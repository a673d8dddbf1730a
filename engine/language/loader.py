"""Read a rule file: YAML text -> `RuleFile` (validated `AgentSpec` + source map + diagnostics).

Every problem is reported as a `Diagnostic` with FILE:LINE:COL, all of them in one pass:
YAML problems first (parsing stops there), then every schema problem, then the semantic
checks of `engine.language.checks`. Nothing here raises for a bad file except `load_rules`, which
raises `RuleFileError` carrying all the diagnostics.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from engine.errors import Diagnostic, RuleFileError, Severity, SourceSpan
from engine.files import FileRefused, read_limited
from engine.language import spec
from engine.language.checks import check_spec
from engine.language.spec import AgentSpec
from engine.language.yamltree import MAX_BYTES, SourceMap, parse_yaml


@dataclass(frozen=True)
class RuleFile:
    """A rule file as read: its text, the validated spec (None if invalid) and all diagnostics."""

    path: str
    text: str
    spec: AgentSpec | None  # (the field shadows the module in the class body)
    source: SourceMap
    diagnostics: tuple[Diagnostic, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.spec is not None and not any(d.is_error for d in self.diagnostics)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def rule_span(self, index: int) -> SourceSpan:
        return self.source.span(("rules", index))

    def require(self) -> AgentSpec:
        """The spec, or `RuleFileError` with every diagnostic when the file has errors."""
        if self.spec is None or not self.ok:
            raise RuleFileError(self.path, list(self.diagnostics))
        return self.spec


def _walk_loc(data: Any, loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any]:
    """Follow a pydantic error location through the input data, skipping union tags.

    Pydantic puts union tag names into `loc`; walking the real data keeps only the elements
    that exist in the document, which are exactly the source map's paths.
    """
    path: list[Any] = []
    node = data
    for element in loc:
        if isinstance(node, dict) and isinstance(element, str) and element not in node:
            # Pydantic writes a non-string mapping key as text in `loc` (None -> 'None').
            element = next(
                (k for k in node if not isinstance(k, str) and str(k) == element), element
            )
        if (isinstance(node, dict) and element in node) or (
            isinstance(node, list) and isinstance(element, int) and 0 <= element < len(node)
        ):
            node = node[element]
            path.append(element)
    return tuple(path), node


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


_RULE_MODELS: dict[str, type[BaseModel]] = {
    "init": spec.InitRule,
    "child": spec.ChildRule,
    "conditional": spec.ConditionalRule,
    "parent": spec.ParentRule,
    "terminal": spec.TerminalRule,
    "continue": spec.ContinueRule,
    "max_calls": spec.MaxCallsRule,
    "required_before_exit": spec.RequiredBeforeExitRule,
    "requires_approval": spec.RequiresApprovalRule,
}


def _owner_fields(data: Any, path: tuple[Any, ...]) -> list[str]:
    """The keys allowed in the mapping at `path` (for 'did you mean' hints)."""
    if len(path) == 0:
        return _field_names(spec.AgentSpec)
    if path[0] == "tools" and len(path) == 2:
        return _field_names(spec.ToolDecl)
    if path[0] == "rules" and len(path) == 2:
        rule = data["rules"][path[1]]
        kind = spec.rule_kind(rule)
        return _field_names(_RULE_MODELS[kind]) if kind else []
    return []


def _schema_diagnostics(data: Any, errors: list[Any], source: SourceMap) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    seen: set[tuple[Any, ...]] = set()
    for item in errors:
        path, value = _walk_loc(data, item["loc"])
        if "[key]" in item["loc"] and path:
            problem = _bad_case_key(path, source)
        else:
            explain = _SCHEMA_PROBLEMS.get(item["type"], _other_problem)
            problem = explain(item, path, value, data, source)
        code, message, hint, span = problem
        key = (span.line, span.column, code)
        if key in seen:
            continue
        seen.add(key)
        rule = path[1] if len(path) >= 2 and path[0] == "rules" else None
        out.append(Diagnostic(Severity.ERROR, code, message, span, rule=rule, hint=hint))
    return out


# A schema problem in words: code, message, hint, and where.
_Problem = tuple[str, str, str | None, SourceSpan]


def _bad_case_key(path: tuple[Any, ...], source: SourceMap) -> _Problem:
    """A mapping key of the wrong type (output cases): one error at the key itself."""
    shown = "null" if path[-1] is None else str(path[-1])
    return (
        "E010",
        f"output case {shown} must be true/false, a number or a string",
        f'quote it ("{shown}") to match the output text {shown}',
        source.span(path, key=True),
    )


def _unknown_key(
    item: Any, path: tuple[Any, ...], value: Any, data: Any, source: SourceMap
) -> _Problem:
    key = path[-1]
    owner = path[:-1]
    choices = _owner_fields(data, owner)
    close = difflib.get_close_matches(str(key), choices, n=1)
    where = (
        "rule"
        if len(owner) == 2 and owner[0] == "rules"
        else ("tool" if len(owner) == 2 else "file")
    )
    hint = (
        f"did you mean {close[0]!r}?"
        if close
        else ("allowed keys: " + ", ".join(choices) if choices else None)
    )
    return "E013", f"unknown key {key!r} in this {where}", hint, source.span(path, key=True)


def _missing_key(
    item: Any, path: tuple[Any, ...], value: Any, data: Any, source: SourceMap
) -> _Problem:
    return "E014", f"missing key {item['loc'][-1]!r}", None, source.span(path)


def _bad_tool_name(
    item: Any, path: tuple[Any, ...], value: Any, data: Any, source: SourceMap
) -> _Problem:
    if not isinstance(value, str):
        return _other_problem(item, path, value, data, source)
    message = (
        f"{value!r} is not a valid tool name (letters, digits, '_' and '-', 1 to 64 characters)"
    )
    return "E015", message, None, source.span(path)


def _other_problem(
    item: Any, path: tuple[Any, ...], value: Any, data: Any, source: SourceMap
) -> _Problem:
    message = f"{item['msg']} (got {value!r})"
    if item["type"] == "literal_error" and path == ("version",):
        message = f"unsupported version {value!r}; this toolfsm reads version 1"
    elif item["type"] == "int_type" and isinstance(value, bool):
        # YAML's true/false are booleans, and a boolean is not a count (True == 1).
        message = f"expected a whole number, got the boolean {str(value).lower()}"
    return "E010", message, None, source.span(path)


# Pydantic error types with words of their own; any other: `_other_problem`.
_SCHEMA_PROBLEMS: dict[str, Callable[[Any, tuple[Any, ...], Any, Any, SourceMap], _Problem]] = {
    "extra_forbidden": _unknown_key,
    "missing": _missing_key,
    "string_pattern_mismatch": _bad_tool_name,
}


def _rule_shape_diagnostics(
    data: dict[str, Any], source: SourceMap
) -> tuple[list[Diagnostic], set[int]]:
    """Rules with no kind key or several: one precise error each (pydantic would be vaguer)."""
    out: list[Diagnostic] = []
    skipped: set[int] = set()
    rules = data.get("rules")
    if not isinstance(rules, list):
        return out, skipped
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict):
            continue  # pydantic reports the wrong type
        present = [key for key in spec.KIND_KEYS if key in rule]
        if len(present) == 1:
            continue
        skipped.add(index)
        span = source.span(("rules", index))
        if not present:
            close = [
                match
                for key in rule
                for match in difflib.get_close_matches(str(key), list(spec.KIND_KEYS), n=1)
            ]
            hint = f"did you mean {close[0]!r}?" if close else None
            message = "rule has no kind key; expected one of: " + ", ".join(spec.KIND_KEYS)
            out.append(Diagnostic(Severity.ERROR, "E011", message, span, rule=index, hint=hint))
        else:
            message = f"rule mixes kinds ({', '.join(present)}); write one rule per kind"
            out.append(Diagnostic(Severity.ERROR, "E012", message, span, rule=index))
    return out, skipped


def parse_rules(text: str, path: str = "<string>") -> RuleFile:
    """Parse and check rule-file text; never raises for problems in the text."""
    data, source, diagnostics = parse_yaml(text, path)
    if diagnostics:
        return RuleFile(path, text, None, source, tuple(diagnostics))
    if not isinstance(data, dict):
        span = source.span(())
        message = "a rule file is a mapping with keys version, agent, tools and rules"
        return RuleFile(
            path, text, None, source, (Diagnostic(Severity.ERROR, "E010", message, span),)
        )
    shape, skipped = _rule_shape_diagnostics(data, source)
    errors = _rule_errors(data.get("rules"), skipped)
    found = _schema_diagnostics(data, errors, source)
    agent, checked = _validated(data, source, skipped)
    found += checked
    return RuleFile(path, text, agent, source, tuple(_sorted([*shape, *found])))


def _rule_errors(rules: Any, skipped: set[int]) -> list[dict[str, Any]]:
    """Each rule validated on its own first, so one broken rule does not hide the others'
    problems: their errors; each broken rule joins `skipped`."""
    errors: list[dict[str, Any]] = []
    if not isinstance(rules, list):
        return errors
    for index, rule in enumerate(rules):
        if index in skipped:
            continue
        try:
            _RULE_ADAPTER.validate_python(rule)
        except ValidationError as error:
            skipped.add(index)
            # loc[0] is the union tag (the rule kind). Drop it: a tag such as `terminal`
            # is also a key of the rule, and walking it would blame the wrong key.
            errors += [{**e, "loc": ("rules", index, *e["loc"][1:])} for e in error.errors()]
    return errors


def _validated(
    data: dict[str, Any], source: SourceMap, skipped: set[int]
) -> tuple[AgentSpec | None, list[Diagnostic]]:
    """The spec (None if any rule was skipped) and the problems of the file without the
    skipped rules: all problems in one pass, with rule indices of the document's."""
    candidate, view, kept = data, source, None
    if skipped:  # rules is a list whenever a rule was skipped
        # Validate and check the rest without the broken rules, then map rule indices of
        # the filtered list back to the document's.
        rules = data["rules"]
        kept = [i for i in range(len(rules)) if i not in skipped]
        candidate = {**data, "rules": [rules[i] for i in kept]}
        view = _ReindexedSource(source, kept)
    try:
        agent = AgentSpec.model_validate(candidate)
    except ValidationError as error:
        return None, _schema_diagnostics(candidate, error.errors(), view)
    found = check_spec(agent, view)
    if kept:
        found = [_reindex(d, kept) for d in found]
    return (None if skipped else agent), found


_RULE_ADAPTER: TypeAdapter[Any] = TypeAdapter(spec.Rule)


class _ReindexedSource(SourceMap):
    """A source map seen through a filtered rule list (rule i of the filtered list = kept[i])."""

    def __init__(self, inner: SourceMap, kept: list[int]) -> None:
        super().__init__(inner.path, inner.values, inner.keys)
        self._kept = kept

    def span(self, at: tuple[Any, ...], *, key: bool = False) -> SourceSpan:
        if len(at) >= 2 and at[0] == "rules" and isinstance(at[1], int):
            at = ("rules", self._kept[at[1]], *at[2:])
        return super().span(at, key=key)


def _reindex(diagnostic: Diagnostic, kept: list[int]) -> Diagnostic:
    if diagnostic.rule is None:
        return diagnostic
    return Diagnostic(
        diagnostic.severity,
        diagnostic.code,
        diagnostic.message,
        diagnostic.span,
        rule=kept[diagnostic.rule],
        hint=diagnostic.hint,
    )


def _sorted(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    return sorted(diagnostics, key=lambda d: (d.span.line, d.span.column, d.code))


def read_rule_file(path: str | Path) -> RuleFile:
    """Read and check a rule file from disk; unreadable files become diagnostics too."""
    name = str(path)
    try:
        raw = read_limited(path, MAX_BYTES)
    except FileRefused as exc:
        span = SourceSpan(name, 1, 1)
        code, message = "E000", exc.reason
        if exc.reason.startswith("file is larger"):
            code, message = "E003", f"{exc.reason}; a rule file should be small"
        return RuleFile(
            name, "", None, SourceMap(name), (Diagnostic(Severity.ERROR, code, message, span),)
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Point at the bad byte: its line, and its column counted in bytes.
        line = raw.count(b"\n", 0, exc.start) + 1
        span = SourceSpan(name, line, exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1)
        message = f"file is not UTF-8 text: byte 0x{raw[exc.start]:02X} at offset {exc.start}"
        return RuleFile(
            name, "", None, SourceMap(name), (Diagnostic(Severity.ERROR, "E000", message, span),)
        )
    return parse_rules(text, name)


def load_rules(path: str | Path) -> RuleFile:
    """Read a rule file and insist it is valid: raises `RuleFileError` with every problem."""
    rule_file = read_rule_file(path)
    rule_file.require()
    return rule_file
