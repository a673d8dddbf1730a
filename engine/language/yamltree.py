"""Safe YAML reading that keeps the line and column of every node.

PyYAML composes the node graph (in C when libyaml is there); this module turns it into plain
Python values itself, so that:
- scalars follow the YAML 1.2 core schema: only true/false are booleans (`yes`, `no`, `on`, `off`
  stay strings, a classic trap for output cases), and no tag can construct an object;
- every value and every mapping key has a recorded position (a `SourceMap`), so schema errors
  can point at FILE:LINE:COL;
- documents that are too large, too deep, or that expand through aliases ("billion laughs")
  are refused with a clear diagnostic instead of eating the machine.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml
from yaml.composer import Composer
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from engine.errors import Diagnostic, Severity, SourceSpan

MAX_BYTES = 1_000_000
MAX_NODES = 100_000
MAX_DEPTH = 64
# Longest integer literal (sign and base prefix included). Python refuses to print an int of
# more than 4,300 digits, and no count or output case of a rule file needs anywhere near this.
MAX_INT_CHARS = 100

Path = tuple[Any, ...]

_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"

# YAML 1.2 core schema, plain scalars only (quoted scalars are always strings).
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT10 = re.compile(r"^[-+]?[0-9]+$")
_INT8 = re.compile(r"^0o[0-7]+$")
_INT16 = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_NAN = re.compile(r"^\.(?:nan|NaN|NAN)$")


class _PlainResolver(BaseResolver):
    """Every untagged node gets the default tag of its kind (values are typed by `_plain_scalar`).

    Equivalent to `BaseResolver` with no implicit or path resolvers registered, minus its
    per-node Python work: the composer calls these three methods for every node.
    """

    _DEFAULT: ClassVar[dict[Any, str]] = {
        yaml.ScalarNode: _STR,
        yaml.SequenceNode: _SEQ,
        yaml.MappingNode: _MAP,
    }

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        return self._DEFAULT[kind]

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None


class _PyLoader(Reader, Scanner, Parser, Composer, _PlainResolver):
    """PyYAML's pure-Python reader: the same grammar as libyaml, and it reads `\\uD83D\\uDE80`
    (a UTF-16 surrogate pair, as JSON writes characters beyond U+FFFF) as two code points,
    which `_Builder` joins; libyaml refuses such escapes."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _PlainResolver.__init__(self)


_Loader: Any
try:  # libyaml composes about ten times faster; the pure-Python parser is the same grammar.
    from yaml.cyaml import CParser as _Parser  # type: ignore[attr-defined]  # (the stubs omit it)

    class _CLoader(_Parser, _PlainResolver):
        def __init__(self, stream: str) -> None:
            _Parser.__init__(self, stream)
            _PlainResolver.__init__(self)

    _Loader = _CLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = _PyLoader

# libyaml's complaint about a `\u` escape of a surrogate (half of a pair written JSON-style).
_SURROGATE_ESCAPE = "found invalid Unicode character escape code"
_SURROGATES = re.compile("[\ud800-\udfff]")


def _compose_with_surrogates(text: str, refusal: yaml.MarkedYAMLError) -> Any:
    """The document's node graph by the pure-Python reader, after libyaml's `refusal`."""
    loader = _PyLoader(text)
    try:
        return loader.get_single_node()
    except ValueError:  # an escape beyond U+10FFFF (chr() refuses it): libyaml's refusal stands
        raise refusal from None
    finally:
        loader.dispose()


def _join_surrogates(text: str) -> str | None:
    """`text` with its UTF-16 surrogate pairs joined into characters; None for a lone half."""
    try:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeDecodeError:
        return None


@dataclass
class SourceMap:
    """Positions of the values and mapping keys of one document, by path from the root."""

    path: str
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)
    # Where each value and key ends (line, column just past it), by the same paths.
    value_ends: dict[Path, tuple[int, int]] = field(default_factory=dict)
    key_ends: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def span(self, at: Path, *, key: bool = False) -> SourceSpan:
        """The extent of the value (or the key) at `at`; the nearest enclosing node if absent."""
        table, ends = (self.keys, self.key_ends) if key else (self.values, self.value_ends)
        probe = tuple(at)
        while probe:
            if probe in table:
                return SourceSpan(self.path, *table[probe], *ends.get(probe, (None, None)))
            if key and probe in self.values:
                return self.span(probe)
            probe = probe[:-1]
        line, column = self.values.get((), (1, 1))
        return SourceSpan(self.path, line, column, *self.value_ends.get((), (None, None)))


class TypedKey:
    """A mapping key that Python's `==` would confuse with an earlier key of another YAML type
    (`true` and `1`, `1` and `1.0`: `True == 1 == 1.0`). YAML keeps them apart, so the later
    one is stored wrapped: equal only to a `TypedKey` of the same type and value. `value` is
    the key itself; `plain_key` unwraps either form, and its repr is the key's."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TypedKey)
            and type(other.value) is type(self.value)
            and other.value == self.value
        )

    def __hash__(self) -> int:
        return hash((type(self.value), self.value))

    def __repr__(self) -> str:
        return repr(self.value)


def plain_key(key: Any) -> Any:
    """A mapping key as its YAML value (a `TypedKey` unwrapped)."""
    return key.value if isinstance(key, TypedKey) else key


class _Refused(Exception):
    def __init__(self, code: str, message: str, node: yaml.Node | None) -> None:
        self.code, self.message, self.node = code, message, node


# First characters a null, bool or number can start with; anything else is a string.
_TYPED_START = frozenset("~nNtTfF0123456789+-.")


class _IntTooLong(Exception):
    pass


def _plain_scalar(text: str) -> Any:
    if text and text[0] not in _TYPED_START:
        return text  # most scalars (tool names, descriptions) skip the regular expressions
    if _NULL.match(text):
        return None
    if _BOOL.match(text):
        return text[0] in "tT"
    number = _plain_number(text)
    return text if number is None else number


def _plain_number(text: str) -> int | float | None:
    """The number a plain scalar spells (YAML 1.2 core schema), or None for none."""
    if _INT10.match(text) or _INT8.match(text) or _INT16.match(text):
        if len(text) > MAX_INT_CHARS:
            raise _IntTooLong
        if _INT10.match(text):
            return int(text)
        return int(text[2:], 8 if _INT8.match(text) else 16)
    if _FLOAT.match(text):
        return float(text)
    if _INF.match(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.match(text):
        return math.nan
    return None


def _pos(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Builder:
    def __init__(self, source: SourceMap, text: str, *, surrogates: bool = False) -> None:
        self.source = source
        self.surrogates = surrogates  # double-quoted scalars may hold surrogate-pair escapes
        self.lines = text.splitlines()
        self.count = 0
        self.duplicates: list[Diagnostic] = []

    def build(self, node: yaml.Node, path: Path | None, depth: int) -> Any:
        """Convert `node`; record its position under `path` (None for mapping keys)."""
        self.count += 1
        if self.count > MAX_NODES:
            raise _Refused(
                "E003",
                f"document expands to more than {MAX_NODES} nodes (alias bomb or absurd size)",
                node,
            )
        if depth > MAX_DEPTH:
            raise _Refused("E003", f"document nests deeper than {MAX_DEPTH} levels", node)
        if path is not None and path not in self.source.values:
            self.source.values[path] = _pos(node)
            self.source.value_ends[path] = self._end(node)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                raise _Refused("E002", f"YAML tags are not allowed here ({node.tag})", node)
            assert path is not None  # only scalars are keys
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            assert path is not None  # only scalars are keys
            return self._mapping(node, path, depth)
        raise _Refused("E001", f"unsupported YAML node {type(node).__name__}", node)

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        if node.tag != _STR:
            raise _Refused("E002", f"YAML tags are not allowed here ({node.tag})", node)
        if node.style == '"' and self.surrogates and _SURROGATES.search(node.value):
            joined = _join_surrogates(node.value)
            if joined is None:
                raise _Refused(
                    "E001",
                    "malformed YAML: a \\u escape is half of a UTF-16 surrogate pair "
                    "without its other half",
                    node,
                )
            return joined
        if node.style:
            return node.value
        try:
            return _plain_scalar(node.value)
        except _IntTooLong:
            raise _Refused(
                "E003",
                f"integer of {len(node.value)} characters; the limit is {MAX_INT_CHARS}",
                node,
            ) from None

    def _mapping(self, node: yaml.MappingNode, path: Path, depth: int) -> dict[Any, Any]:
        if node.tag != _MAP:
            raise _Refused("E002", f"YAML tags are not allowed here ({node.tag})", node)
        result: dict[Any, Any] = {}
        typed: set[tuple[type, Any]] = set()  # keys by YAML type: true and 1 differ
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Refused("E001", "mapping keys must be plain values", key_node)
            key = self.build(key_node, None, depth + 1)
            if isinstance(key, float) and math.isnan(key):
                raise _Refused("E001", "NaN cannot be a mapping key", key_node)
            if (type(key), key) in typed:
                self._duplicate(key_node, key)
                continue
            typed.add((type(key), key))
            if key in result:  # equal to a key of another type (True == 1 == 1.0)
                key = TypedKey(key)
            self.source.keys[(*path, key)] = _pos(key_node)
            self.source.key_ends[(*path, key)] = self._end(key_node)
            result[key] = self.build(value_node, (*path, key), depth + 1)
        return result

    def _duplicate(self, key_node: yaml.Node, key: Any) -> None:
        line, column = _pos(key_node)
        self.duplicates.append(
            Diagnostic(
                Severity.ERROR,
                "E004",
                f"duplicate key {key!r} in mapping",
                SourceSpan(self.source.path, line, column, *self._end(key_node)),
            )
        )

    def _end(self, node: yaml.Node) -> tuple[int, int]:
        """Where `node` ends: 1-based line, and the column just past its last character.

        A block collection's end mark stands at the next token, on a line after it (past
        comments and blank lines): its end is then the end of its last line with content.
        """
        line, column = node.end_mark.line, node.end_mark.column
        before = self.lines[line][:column] if line < len(self.lines) else ""
        if line > node.start_mark.line and before.strip() in ("", "-"):
            line -= 1
            while line > node.start_mark.line and not self._content(line):
                line -= 1
            return line + 1, len(self._content(line)) + 1
        return line + 1, column + 1

    def _content(self, index: int) -> str:
        """Line `index` (0-based) without its comment or trailing blanks (a rough cut: a `#`
        inside a quoted string is taken as a comment, which only shortens an end column)."""
        text = self.lines[index] if index < len(self.lines) else ""
        cut = text.find(" #")
        return (
            text[:cut] if cut >= 0 else ("" if text.lstrip().startswith("#") else text)
        ).rstrip()


def _malformed(path: str, text: str, index: int, message: str) -> Diagnostic:
    """E001 at character `index` of `text`."""
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return Diagnostic(
        Severity.ERROR, "E001", f"malformed YAML: {message}", SourceSpan(path, line, column)
    )


def _compose(text: str) -> tuple[yaml.Node | None, bool]:
    """The document's node tree, and whether it was read again for surrogate-pair escapes."""
    loader: Any = None
    try:
        try:
            loader = _Loader(text)  # the pure-Python reader already checks characters here
            return loader.get_single_node(), False
        except yaml.MarkedYAMLError as exc:
            if exc.problem != _SURROGATE_ESCAPE or _Loader is _PyLoader:
                raise
            # JSON-style `\uD83D\uDE80`: YAML 1.2 reads it as one character (U+1F680).
            loader.dispose()
            loader = None
            return _compose_with_surrogates(text, exc), True
    finally:
        if loader is not None:
            loader.dispose()


def _unreadable(path: str, text: str, exc: yaml.YAMLError | UnicodeEncodeError) -> Diagnostic:
    """The diagnostic for a document YAML cannot read."""
    if isinstance(exc, yaml.reader.ReaderError):
        # A character YAML forbids (control characters): point at its first occurrence
        # (libyaml counts bytes, the pure-Python reader characters; the text is what we have).
        character = chr(exc.character) if isinstance(exc.character, int) else ""
        index = max(text.find(character), 0) if character else 0
        message = f"character {character!r} is not allowed ({exc.reason})"
        return _malformed(path, text, index, message)
    if isinstance(exc, UnicodeEncodeError):
        message = f"{text[exc.start]!r} is not a Unicode character"
        return _malformed(path, text, exc.start, message)
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(p for p in (exc.context, exc.problem) if p) or "malformed YAML"
        span = SourceSpan(path, line, column)
        return Diagnostic(Severity.ERROR, "E001", f"malformed YAML: {message}", span)
    span = SourceSpan(path, 1, 1)
    return Diagnostic(Severity.ERROR, "E001", f"malformed YAML: {exc}", span)


def parse_yaml(text: str, path: str) -> tuple[Any, SourceMap, list[Diagnostic]]:
    """Parse one YAML document into plain values, its source map, and any problems found.

    On a problem that stops parsing, the value is None and the diagnostics say why.
    """
    source = SourceMap(path)
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        span = SourceSpan(path, 1, 1)
        message = f"file is larger than {MAX_BYTES} bytes; a rule file should be small"
        return None, source, [Diagnostic(Severity.ERROR, "E003", message, span)]
    try:
        root, surrogates = _compose(text)
    except (yaml.YAMLError, UnicodeEncodeError) as exc:
        return None, source, [_unreadable(path, text, exc)]
    if root is None:
        return (
            None,
            source,
            [Diagnostic(Severity.ERROR, "E001", "the file is empty", SourceSpan(path, 1, 1))],
        )
    builder = _Builder(source, text, surrogates=surrogates)
    try:
        value = builder.build(root, (), 0)
    except _Refused as refused:
        line, column = _pos(refused.node) if refused.node is not None else (1, 1)
        span = SourceSpan(path, line, column)
        return None, source, [Diagnostic(Severity.ERROR, refused.code, refused.message, span)]
    return value, source, builder.duplicates
