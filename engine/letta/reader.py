"""Read Letta's serialised forms: an agent file (`.af`), an agent JSON object, or a bare
`tool_rules` list, into plain `LettaAgent` records (no translation happens here).

The reader is forgiving about the outer shape (files found in the wild are sometimes a JSON
string whose content is the document, encoded a second time) and strict about nothing else:
rules are kept as the raw JSON objects they are, so the translator can quote them verbatim in
its comments when it cannot translate them.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ToolfsmError
from engine.files import FileRefused, read_limited

# A JSON document encoded as a JSON string, possibly more than once; more layers are refused.
MAX_ENCODING_LAYERS = 4


# An agent file carries its message history, so it may be far larger than a rule file.
MAX_BYTES = 64_000_000
# Deeper JSON than this is refused where Python's parser would run out of stack.
MAX_DEPTH = 500


class LettaFormatError(ToolfsmError):
    """A file is not one of Letta's serialised forms (or not JSON at all); `line` and `column`
    (1-based) say where, when the problem has a place."""

    def __init__(
        self, path: str, message: str, line: int | None = None, column: int | None = None
    ) -> None:
        self.path, self.line, self.column = path, line, column
        where = path if line is None else f"{path}:{line}:{column}"
        super().__init__(f"{where}: {message}")


_INT_DIGITS = sys.get_int_max_str_digits() or 4300
_LONG_INTEGER = re.compile(rf"[0-9]{{{_INT_DIGITS + 1},}}")
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _line_column(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _too_deep(text: str, path: str) -> LettaFormatError:
    """Where the JSON first nests deeper than MAX_DEPTH (it did: the parser ran out of stack)."""
    depth = 0
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                line, column = _line_column(text, match.start())
                return LettaFormatError(
                    path, f"JSON nests deeper than {MAX_DEPTH} levels", line, column
                )
        elif token in "]}":
            depth -= 1
    return LettaFormatError(path, "JSON nests too deep to read")


def _loads(text: str, path: str, what: str = "not JSON", *, in_file: bool = True) -> Any:
    """`json.loads`, with every failure as a `LettaFormatError`, located when `text` is the
    file's (a place inside a JSON-encoded string is no place in the file)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if not in_file:
            raise LettaFormatError(path, f"{what}: {exc.msg}") from None
        raise LettaFormatError(path, f"{what}: {exc.msg}", exc.lineno, exc.colno) from None
    except RecursionError:
        if not in_file:
            raise LettaFormatError(path, f"{what}: it nests too deep") from None
        raise _too_deep(text, path) from None
    except ValueError as exc:  # an integer of more digits than Python converts
        digits = _LONG_INTEGER.search(text) if in_file else None
        if digits is None:
            raise LettaFormatError(path, f"{what}: {exc}") from None
        line, column = _line_column(text, digits.start())
        message = f"an integer of {len(digits.group())} digits; Python reads at most {_INT_DIGITS}"
        raise LettaFormatError(path, message, line, column) from None


@dataclass(frozen=True)
class LettaTool:
    """One tool as Letta stores it: name, description, and the JSON Schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None
    tool_type: str | None = None


@dataclass(frozen=True)
class LettaAgent:
    """One agent: its tools (None when the source does not say) and its raw `tool_rules`."""

    name: str
    tools: tuple[LettaTool, ...] | None
    tool_rules: tuple[Any, ...]
    description: str = ""
    agent_id: str | None = None
    notes: tuple[str, ...] = ()  # what the reader noticed (unknown tool ids, ...)
    agent_type: str | None = None  # Letta's `agent_type` ("memgpt_agent", ...): its loop
    tags: tuple[str, ...] = ()  # what other agents find it by (the multi-agent tools)


@dataclass(frozen=True)
class LettaDocument:
    """What a file held: its form ("agent_file", "agent" or "tool_rules") and the agents."""

    path: str
    form: str
    agents: tuple[LettaAgent, ...]
    encoding_layers: int = 1  # 2 = the JSON document was itself a JSON-encoded string
    notes: tuple[str, ...] = field(default=())


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _tool(raw: Any) -> LettaTool | None:
    """A tool from a top-level `tools` entry (or a bare name); None when it has no name."""
    if isinstance(raw, str):
        return LettaTool(raw)
    if not isinstance(raw, dict):
        return None
    given = raw.get("json_schema")
    schema: dict[str, Any] = given if isinstance(given, dict) else {}
    name = raw.get("name") or schema.get("name")
    if not isinstance(name, str) or not name:
        return None
    parameters = schema.get("parameters")
    if parameters is None and isinstance(raw.get("parameters"), dict):
        parameters = raw["parameters"]  # an already-flattened tool object
    description = _text(raw.get("description")) or _text(schema.get("description"))
    return LettaTool(
        name=name,
        description=description,
        parameters=parameters if isinstance(parameters, dict) else None,
        tool_type=raw.get("tool_type") if isinstance(raw.get("tool_type"), str) else None,
    )


def _rules(raw: Any, where: str, path: str) -> tuple[Any, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise LettaFormatError(
            path, f"{where}: `tool_rules` must be a list, got {type(raw).__name__}"
        )
    return tuple(raw)


def _agent(
    raw: dict[str, Any],
    where: str,
    default_name: str,
    tools_by_id: dict[str, LettaTool] | None,
    path: str,
) -> LettaAgent:
    name = raw.get("name") if isinstance(raw.get("name"), str) and raw.get("name") else None
    notes: list[str] = []
    tools: list[LettaTool] | None = None
    if tools_by_id is not None and isinstance(raw.get("tool_ids"), list):
        tools = _tools_by_id(raw["tool_ids"], tools_by_id, notes)
    elif isinstance(raw.get("tools"), list):
        tools = _tools_inline(raw["tools"], notes)
    return LettaAgent(
        name=name or default_name,
        tools=None if tools is None else tuple(tools),
        tool_rules=_rules(raw.get("tool_rules"), where, path),
        description=_text(raw.get("description")),
        agent_id=raw.get("id") if isinstance(raw.get("id"), str) else None,
        notes=tuple(notes),
        agent_type=_text(raw.get("agent_type")) or None,
        tags=_tags(raw.get("tags")),
    )


def _tags(raw: Any) -> tuple[str, ...]:
    """An agent's `tags`: its non-empty strings, each once, in order."""
    if not isinstance(raw, list):
        return ()
    return tuple(dict.fromkeys(t for t in raw if isinstance(t, str) and t))


def _tools_by_id(
    tool_ids: list[Any], tools_by_id: dict[str, LettaTool], notes: list[str]
) -> list[LettaTool]:
    """An agent file's agent: its `tool_ids` resolved against the file's `tools` list."""
    tools = []
    for tool_id in tool_ids:
        tool = tools_by_id.get(tool_id) if isinstance(tool_id, str) else None
        if tool is None:
            notes.append(f"tool id {tool_id!r} is not in the file's `tools` list; skipped")
        else:
            tools.append(tool)
    return tools


def _tools_inline(entries: list[Any], notes: list[str]) -> list[LettaTool]:
    """An agent object's own `tools` entries, each with a name."""
    tools = []
    for entry in entries:
        tool = _tool(entry)
        if tool is None:
            notes.append(f"a tool entry without a name was skipped: {_short(entry)}")
        else:
            tools.append(tool)
    return tools


def _short(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_letta(text: str, path: str = "<string>") -> LettaDocument:
    """Parse Letta JSON text; `LettaFormatError` when it is none of the three forms."""
    data, layers = _decoded(text, path)
    notes = (
        ("the JSON document was itself JSON-encoded as a string; decoded",) if layers > 1 else ()
    )
    if isinstance(data, list):
        return _rules_document(data, path, layers, notes)
    if not isinstance(data, dict):
        raise LettaFormatError(path, f"expected a JSON object or list, got {type(data).__name__}")
    if isinstance(data.get("agents"), list):
        return _agent_file(data, path, layers, notes)
    if "tool_rules" in data or "tools" in data or "tool_ids" in data:
        agent = _agent(data, "the agent", Path(path).stem or "agent", None, path)
        extra = (
            ("`tool_ids` ignored: an agent object has no tool list to resolve them",)
            if ("tool_ids" in data and agent.tools is None)
            else ()
        )
        return LettaDocument(path, "agent", (agent,), layers, notes + extra)
    raise LettaFormatError(
        path,
        "not a Letta agent file (no `agents`), agent object (no `tool_rules`/`tools`) "
        "or `tool_rules` list",
    )


def _decoded(text: str, path: str) -> tuple[Any, int]:
    """The JSON value, decoding a document that was JSON-encoded as a string again (up to
    `MAX_ENCODING_LAYERS` times), and how many layers it had."""
    data: Any = _loads(text, path)
    layers = 1
    while isinstance(data, str):
        if layers >= MAX_ENCODING_LAYERS:
            raise LettaFormatError(
                path, f"JSON string encoded more than {MAX_ENCODING_LAYERS} times"
            )
        what = "the file is a JSON string, and its content is not JSON"
        data = _loads(data, path, what, in_file=False)
        layers += 1
    return data, layers


def _rules_document(
    data: list[Any], path: str, layers: int, notes: tuple[str, ...]
) -> LettaDocument:
    """A bare `tool_rules` list: one agent without a tool list."""
    if not all(isinstance(rule, dict) for rule in data):
        raise LettaFormatError(path, "a list must be Letta `tool_rules`: a list of JSON objects")
    agent = LettaAgent(name=Path(path).stem or "agent", tools=None, tool_rules=tuple(data))
    return LettaDocument(path, "tool_rules", (agent,), layers, notes)


def _agent_file(
    data: dict[str, Any], path: str, layers: int, notes: tuple[str, ...]
) -> LettaDocument:
    """An agent file: `agents` whose `tool_ids` point into the file's `tools`."""
    tools_by_id: dict[str, LettaTool] = {}
    for entry in data.get("tools") or []:
        tool = _tool(entry)
        if tool is not None and isinstance(entry, dict) and isinstance(entry.get("id"), str):
            tools_by_id[entry["id"]] = tool
    agents = []
    for index, raw in enumerate(data["agents"]):
        if not isinstance(raw, dict):
            raise LettaFormatError(path, f"agent #{index + 1} is not a JSON object")
        where = f"agent #{index + 1}"
        agents.append(_agent(raw, where, f"agent-{index + 1}", tools_by_id, path))
    if not agents:
        raise LettaFormatError(path, "the agent file lists no agents")
    return LettaDocument(path, "agent_file", tuple(agents), layers, notes)


def read_letta(path: str | Path) -> LettaDocument:
    """Read a Letta file from disk; unreadable or non-UTF-8 files raise `LettaFormatError`."""
    name = str(path)
    try:
        raw = read_limited(path, MAX_BYTES)
        text = raw.decode("utf-8")
    except FileRefused as exc:
        raise LettaFormatError(name, exc.reason) from None
    except UnicodeDecodeError as exc:
        bad = f"byte 0x{raw[exc.start]:02X} at offset {exc.start}"
        raise LettaFormatError(name, f"file is not UTF-8 text: {bad}") from exc
    return parse_letta(text, name)


__all__ = [
    "LettaAgent",
    "LettaDocument",
    "LettaFormatError",
    "LettaTool",
    "parse_letta",
    "read_letta",
]
