"""What `toolfsm lsp` answers, as plain data: diagnostics, hover, completion, definitions and
"did you mean" fixes for one rule-file text. The server (`engine.lsp.server`) only converts
these to LSP types; everything here can be used without pygls.

Diagnostics are exactly those of `toolfsm check` (validation first: a file with errors is not
explored), each with the range of the key or value it points at. Hover texts are the field
descriptions of `engine.language.spec`, the same text the JSON Schema carries.
"""

from __future__ import annotations

import difflib
import re
import string
from dataclasses import dataclass

from pydantic import BaseModel

from engine.analysis.check import check_rule_file
from engine.errors import Diagnostic, format_trace
from engine.language import spec
from engine.language.loader import parse_rules
from engine.lsp.document import (
    RULE_MODELS,
    Node,
    Path,
    Position,
    RuleDocument,
    field_for,
    model_keys,
    owner_model,
)

Range = tuple[Position, Position]

# Keys whose value is one tool or a list of tools, by section: completion offers the declared
# tools there and go-to-definition jumps from them to the declaration.
_RULE_TOOL_KEYS = frozenset(
    {
        "init",
        "after",
        "allow",
        "only_after",
        "tools",
        "terminal",
        "continue",
        "required_before_exit",
        "requires_approval",
        "default",
    }
)
_EXPECT_TOOL_KEYS = frozenset({*spec.EXPECT_KEYS, "tools"}) - {"at_most"}
_DID_YOU_MEAN = re.compile(r"did you mean '([^']+)'\?")


# -- diagnostics ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EditorDiagnostic:
    """A diagnostic with its range; `fix` is the "did you mean" replacement and its range."""

    range: Range
    diagnostic: Diagnostic
    fix: tuple[Range, str] | None = None

    @property
    def message(self) -> str:
        d = self.diagnostic
        lines = [d.message]
        if d.hint:
            lines.append(f"hint: {d.hint}")
        if d.trace is not None:
            lines.append(f"trace: {format_trace(d.trace)}")
        return "\n".join(lines)


# The folder rule of `toolfsm validate`: a YAML file is a rule file when it has one of these
# top-level keys; or when it points editors at toolfsm's schema. Editors attach the server to
# every YAML file: the others (CI workflows, scripts, ...) are left alone.
_RULE_FILE_KEY = re.compile(r"^(?:version|agent|tools|rules)\s*:", re.MULTILINE)
_SCHEMA_LINE = re.compile(r"^#\s*yaml-language-server:\s*\$schema=\S*toolfsm\.schema\.json", re.M)


def is_rule_file(text: str) -> bool:
    """Whether `text` is a rule file by its top-level keys or its schema line."""
    return bool(_RULE_FILE_KEY.search(text) or _SCHEMA_LINE.search(text))


def _is_blank(text: str) -> bool:
    return all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines())


def diagnostics(text: str, path: str) -> list[EditorDiagnostic]:
    """Everything `toolfsm check` reports for `text`, with ranges and quick fixes."""
    if not is_rule_file(text):
        return []
    document = RuleDocument.parse(text)
    result = check_rule_file(parse_rules(text, path))
    return [_located(document, d) for d in result.diagnostics]


def _located(document: RuleDocument, diagnostic: Diagnostic) -> EditorDiagnostic:
    start = (diagnostic.span.line - 1, diagnostic.span.column - 1)
    node = document.node_starting_at(start)
    if node is not None and (node.text is not None or node.flow):
        where = (node.start, node.end)
    else:  # no node there (malformed YAML), or a block mapping or sequence: its first word
        where = _word_range(document.text, start)
    return EditorDiagnostic(where, diagnostic, _fix(document, node, diagnostic))


_TOKEN = re.compile(r"[^\s:,\[\]{}]+")


def _word_range(text: str, start: Position) -> Range:
    """From `start` to the end of the word there (at least one character, within the line)."""
    lines = text.split("\n")
    line = lines[start[0]] if start[0] < len(lines) else ""
    column = min(start[1], len(line))
    match = _TOKEN.match(line, column)
    end = match.end() if match else min(column + 1, len(line))
    return (start[0], column), (start[0], end)


def _fix(
    document: RuleDocument, node: Node | None, diagnostic: Diagnostic
) -> tuple[Range, str] | None:
    """The replacement a "did you mean" hint proposes, and the range of the word it replaces:
    the node the diagnostic points at, or the key of that mapping the suggestion resembles (a
    rule without a kind key points at the rule, not at its misspelt key)."""
    match = _DID_YOU_MEAN.search(diagnostic.hint or "")
    if match is None or node is None:
        return None
    suggestion = match.group(1)
    candidates = [node]
    if node.is_key:
        owner = node.path[:-1]
        candidates += [
            n for n in document.nodes if n.is_key and n.path[:-1] == owner and n is not node
        ]
    for candidate in candidates:
        if candidate.text and difflib.get_close_matches(suggestion, [candidate.text], n=1):
            return (candidate.start, candidate.end), suggestion
    return None


# -- what stands under the cursor -------------------------------------------------------------------


def takes_tools(document: RuleDocument, node: Node) -> bool:
    """Whether `node` is where a rule or an assertion names a tool."""
    path = node.path
    if len(path) < 3 or path[0] not in ("rules", "expect") or not isinstance(path[1], int):
        return False
    section, key = path[0], path[2]
    if node.is_key:
        # `args:` of a child rule is keyed by tool names (an init rule's by parameter names).
        owner_keys = document.keys.get(path[:2], [])
        return section == "rules" and len(path) == 4 and key == "args" and "allow" in owner_keys
    if section == "rules":
        if key == "on_output":
            return len(path) == 4
        return key in _RULE_TOOL_KEYS and len(path) <= 4
    return key in _EXPECT_TOOL_KEYS and len(path) <= 4


def definition(document: RuleDocument, position: Position) -> Range | None:
    """Where the tool named under the cursor is declared."""
    node = document.node_at(position)
    if node is None or node.text is None or not takes_tools(document, node):
        return None
    declared = document.declared_tools().get(node.text)
    return (declared.start, declared.end) if declared is not None else None


def hover(document: RuleDocument, position: Position) -> tuple[str, Range] | None:
    """Markdown for the key under the cursor (what it means), or for a tool name (its
    declaration); None elsewhere."""
    node = document.node_at(position)
    if node is None or node.text is None:
        return None
    where = (node.start, node.end)
    if takes_tools(document, node):
        return _tool_hover(document, node.text), where
    if not node.is_key:
        return None
    owner = node.path[:-1]
    if len(owner) == 3 and owner[0] == "rules" and owner[2] == "on_output":
        cases = spec.ConditionalRule.model_fields["on_output"].description
        return f"**output case** `{node.text}`\n\n{cases}", where
    model = document.owner_model(owner)
    info = field_for(model, node.text) if model is not None else None
    if info is None or not info.description:
        return None
    # A kind key is headed by its rule kind ("child rule"); other keys (whose title is
    # pydantic's default, the name in title case) by themselves.
    default_title = node.text.replace("_", " ").title()
    named = info.title and info.title != default_title
    heading = f"**{info.title}** (`{node.text}`)" if named else f"**`{node.text}`**"
    return f"{heading}\n\n{info.description}", where


def _tool_hover(document: RuleDocument, name: str) -> str:
    declared = document.declared_tools().get(name)
    if declared is None:
        return f"**tool `{name}`**: not declared under `tools`"
    description = document.value((*declared.path[:2], "description"))
    text = f"**tool `{name}`**, declared on line {declared.start[0] + 1}"
    return text + (f"\n\n{description.text}" if description and description.text else "")


# -- completion -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Completion:
    label: str
    is_key: bool  # a key (inserted with its colon) or a value (a tool name)
    detail: str
    documentation: str
    replace: Range  # the word being typed, replaced by `insert`

    @property
    def insert(self) -> str:
        return f"{self.label}: " if self.is_key else self.label


_PLACEHOLDER = "toolfsmCursor"
_WORD_CHARACTERS = frozenset(string.ascii_letters + string.digits + "_-")


def complete(text: str, position: Position) -> list[Completion]:
    """Keys and tool names that fit at `position`, for the word being typed there."""
    lines = text.split("\n")
    if position[0] >= len(lines) or not (is_rule_file(text) or _is_blank(text)):
        return []  # (a new, blank file may become a rule file: complete its first keys)
    line = lines[position[0]]
    column = min(position[1], len(line))
    start, end = column, column
    while start > 0 and line[start - 1] in _WORD_CHARACTERS:
        start -= 1
    while end < len(line) and line[end] in _WORD_CHARACTERS:
        end += 1
    replace = ((position[0], start), (position[0], end))
    found = _cursor_node(lines, position[0], start, end)
    if found is None:
        return []
    document, node = found
    if takes_tools(document, node):
        return _tool_completions(document, replace)
    if node.is_key:
        return _key_completions(document, node.path[:-1], replace)
    if len(node.path) == 2 and node.path[0] in ("rules", "expect", "tools", "silence"):
        # `- word` where a mapping belongs: the word starts the item's first key.
        return _key_completions(document, node.path, replace, keys=[])
    return []


def _cursor_node(
    lines: list[str], row: int, start: int, end: int
) -> tuple[RuleDocument, Node] | None:
    """The document with the typed word replaced by a placeholder, and the placeholder's node.

    A bare word on a line of its own is tried as a key first (`word:`), so that it is read as
    a key of the mapping it is indented into rather than as the continuation of a value.
    """
    line = lines[row]
    before, after = line[:start], line[end:]
    variants = [before + _PLACEHOLDER + after]
    if not after.strip():
        keyed = before + _PLACEHOLDER + ":"
        variants.insert(0 if not before.strip() else 1, keyed)
        # A flow collection still being typed (`[a, b, `): close it.
        closers = "]" * (before.count("[") - before.count("]"))
        closers += "}" * (before.count("{") - before.count("}"))
        if closers:
            variants.append(before + _PLACEHOLDER + closers)
    for variant in variants:
        document = RuleDocument.parse("\n".join([*lines[:row], variant, *lines[row + 1 :]]))
        node = next((n for n in document.nodes if n.text == _PLACEHOLDER), None)
        if node is not None:
            return document, node
    return None


def _key_completions(
    document: RuleDocument, owner: Path, replace: Range, keys: list[str] | None = None
) -> list[Completion]:
    present = (
        [k for k in document.keys.get(owner, []) if k != _PLACEHOLDER] if keys is None else keys
    )
    return [
        Completion(key, True, title, description, replace)
        for key, title, description in _candidate_keys(owner, present)
        if key not in present
    ]


def _candidate_keys(owner: Path, present: list[str]) -> list[tuple[str, str, str]]:
    """(key, title, description) of the keys that fit the mapping at `owner`: its model's
    when the keys present say which model it is; in a rule or an assertion without a kind
    key yet, the kind keys."""
    model = owner_model(owner, present)
    if model is spec.ChildRule and "allow" not in present:
        models: list[type[BaseModel]] = [spec.ChildRule, spec.ConditionalRule]  # either may follow
    elif model is not None:
        models = [model]
    elif owner[:1] == ("rules",):
        kinds = {key: RULE_MODELS[kind] for key, kind in spec.KIND_KEYS.items()}
        return [_described(m, key) for key, m in kinds.items()]
    elif owner[:1] == ("expect",):
        return [_described(m, key) for key, m in spec.EXPECT_KEYS.items()]
    else:
        return []
    seen: dict[str, tuple[str, str, str]] = {}
    for each in models:
        for key in model_keys(each):
            seen.setdefault(key, _described(each, key))
    return list(seen.values())


def _described(model: type[BaseModel], key: str) -> tuple[str, str, str]:
    info = field_for(model, key)
    return key, (info.title or key), (info.description or "")


def _tool_completions(document: RuleDocument, replace: Range) -> list[Completion]:
    out = []
    for name, declared in document.declared_tools().items():
        if name == _PLACEHOLDER:
            continue
        description = document.value((*declared.path[:2], "description"))
        doc = description.text if description is not None and description.text else ""
        out.append(Completion(name, False, f"tool, line {declared.start[0] + 1}", doc, replace))
    return out
