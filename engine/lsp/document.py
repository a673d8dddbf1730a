"""A rule file as an editor sees it: every key and value with its exact range, by path.

The loader reports where a problem starts (line and column); an editor needs the whole range,
and hover, completion and go-to-definition need to know what stands under the cursor. This
module composes the text with PyYAML (which keeps start and end marks) and indexes each node
by its path from the root: `("rules", 2, "allow", 0)` is the first tool of the third rule's
`allow`. Positions are 0-based lines and columns counted in code points (the LSP server
converts them to the client's units).

Nothing here validates: a document that YAML cannot compose has no nodes, and the features
fall back to what they can do without them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel

from engine.language import spec
from engine.language.yamltree import MAX_BYTES, MAX_DEPTH, MAX_NODES

Path = tuple[Any, ...]
Position = tuple[int, int]  # (line, column), 0-based, code points

try:  # the same grammar either way; libyaml is faster
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader


@dataclass(frozen=True, slots=True)
class Node:
    """One key or value: where it stands and what it is."""

    path: Path  # a value's path; for a key, the path of the value it introduces
    is_key: bool
    start: Position
    end: Position
    text: str | None  # a scalar's text; None for a mapping or a sequence
    flow: bool = False  # a `[...]` or `{...}` collection (its range is its brackets)

    def contains(self, position: Position) -> bool:
        return self.start <= position <= self.end


@dataclass
class RuleDocument:
    """The nodes of one rule-file text, and the keys of each mapping."""

    text: str
    nodes: list[Node] = field(default_factory=list)
    keys: dict[Path, list[str]] = field(default_factory=dict)  # mapping path -> its keys

    @classmethod
    def parse(cls, text: str) -> RuleDocument:
        """Index `text`; a text YAML cannot compose (or too large to read) has no nodes."""
        document = cls(text)
        if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
            return document
        try:
            root = yaml.compose(text, Loader=_Loader)
        except (yaml.YAMLError, ValueError):
            return document
        if root is not None:
            _Indexer(document).visit(root, (), is_key=False, depth=0)
        return document

    # -- lookups ---------------------------------------------------------------------------------

    def node_at(self, position: Position) -> Node | None:
        """The innermost scalar under `position` (a key or a value), else the innermost node."""
        containing = [n for n in self.nodes if n.contains(position)]
        scalars = [n for n in containing if n.text is not None]
        candidates = scalars or containing
        if not candidates:
            return None
        return min(candidates, key=lambda n: (n.end[0] - n.start[0], n.end[1] - n.start[1]))

    def node_starting_at(self, position: Position) -> Node | None:
        """The smallest node that starts at `position` (where a diagnostic points)."""
        starting = [n for n in self.nodes if n.start == position]
        if not starting:
            return None
        return min(starting, key=lambda n: (n.text is None, n.end))

    def value(self, path: Path) -> Node | None:
        return next((n for n in self.nodes if n.path == path and not n.is_key), None)

    def key(self, path: Path) -> Node | None:
        return next((n for n in self.nodes if n.path == path and n.is_key), None)

    def declared_tools(self) -> dict[str, Node]:
        """Each declared tool's name -> the node of its name under `tools:`, in order."""
        found: dict[str, Node] = {}
        for node in self.nodes:
            path = node.path
            if node.is_key or node.text is None or not path or path[0] != "tools":
                continue
            if len(path) == 2 or (len(path) == 3 and path[2] == "name"):
                found.setdefault(node.text, node)
        return found

    def owner_model(self, owner: Path) -> type[BaseModel] | None:
        """The model of the mapping at `owner` (None where keys are free, e.g. `parameters`)."""
        return owner_model(owner, self.keys.get(owner, []))


def owner_model(owner: Path, keys: list[str]) -> type[BaseModel] | None:
    """The model whose fields are the keys allowed in the mapping at `owner`, given the keys
    it has (a rule's kind follows from its kind key); None when that is not known."""
    present = dict.fromkeys(keys)
    if owner == ():
        return spec.AgentSpec
    if owner == ("run",):
        return spec.RunSettings
    if len(owner) != 2 or not isinstance(owner[1], int):
        return None
    section = owner[0]
    if section == "tools":
        return spec.ToolDecl
    if section == "silence":
        return spec.Silence
    if section == "rules":
        kind = spec.rule_kind(present)
        return RULE_MODELS.get(kind) if kind else None
    if section == "expect":
        expect = spec.expect_kind(present)
        return spec.EXPECT_KEYS[expect] if expect else None
    return None


RULE_MODELS: dict[str, type[BaseModel]] = {
    kind: model for model, kind in spec.RULE_KINDS_BY_CLASS.items()
}


def field_for(model: type[BaseModel], key: str) -> Any:
    """The pydantic FieldInfo of `key` (by alias first) in `model`, or None."""
    for name, info in model.model_fields.items():
        if (info.alias or name) == key:
            return info
    return None


def model_keys(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


class _Indexer:
    """Walks the composed node graph once; aliases are not followed twice (no alias bombs)."""

    def __init__(self, document: RuleDocument) -> None:
        self.document = document
        self.seen: set[int] = set()

    def visit(self, node: yaml.Node, path: Path, *, is_key: bool, depth: int) -> None:
        if depth > MAX_DEPTH or len(self.document.nodes) > MAX_NODES or id(node) in self.seen:
            return
        self.seen.add(id(node))
        start = (node.start_mark.line, node.start_mark.column)
        end = (node.end_mark.line, node.end_mark.column)
        if isinstance(node, yaml.ScalarNode):
            self.document.nodes.append(Node(path, is_key, start, end, str(node.value)))
            return
        flow = bool(getattr(node, "flow_style", False))
        self.document.nodes.append(Node(path, False, start, end, None, flow=flow))
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.visit(item, (*path, index), is_key=False, depth=depth + 1)
        elif isinstance(node, yaml.MappingNode):
            keys = self.document.keys.setdefault(path, [])
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = str(key_node.value)
                keys.append(key)
                self.visit(key_node, (*path, key), is_key=True, depth=depth + 1)
                self.visit(value_node, (*path, key), is_key=False, depth=depth + 1)
