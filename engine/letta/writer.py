"""Write an imported agent as a readable toolfsm rule file: hand-emitted YAML with comments.

Hand-emitted so each rule can carry a comment naming the Letta rules it came from, and so the
untranslated rules can stand, quoted, where they would have been. Every string that a YAML
reader could take for something else is double-quoted (JSON string syntax, which is valid YAML),
and output-case keys are *always* quoted: "true", "1", "yes", "on" and "null" must stay strings
to keep Letta's exact-string meaning. `render_rule_file` re-loads what it wrote and refuses to
return text that does not give back the same spec.
"""

from __future__ import annotations

import json
import re
from typing import Any

from engine.language import spec
from engine.language.loader import parse_rules
from engine.language.yamltree import MAX_BYTES
from engine.letta.translate import Translation, TranslationError, too_large_message

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
# Plain words some YAML reader (1.1 or 1.2) turns into a boolean or null.
_RESERVED = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"})
# Kind keys whose value is one tool or a list of tools: written in flow style, `[a, b]`.
_TOOL_LISTS = frozenset(
    {"init", "allow", "tools", "terminal", "continue", "required_before_exit", "requires_approval"}
)


def _printable(char: str) -> bool:
    code = ord(char)
    if char in "\u2028\u2029\ufeff\x85":  # line breaks or marks to some YAML readers
        return False
    return (
        char in "\t\n\r"
        or 0x20 <= code <= 0x7E
        or 0xA0 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or code >= 0x10000
    )


def quote(text: str) -> str:
    """A double-quoted YAML scalar for `text` (JSON syntax; non-printables escaped)."""
    out = []
    for char in json.dumps(text, ensure_ascii=False):
        if _printable(char):
            out.append(char)
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:  # pragma: no cover - astral characters are printable
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)


def scalar(value: Any) -> str:
    """One scalar (or empty container), written so that YAML 1.2 reads back the same value."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return ".nan"
        if value in (float("inf"), float("-inf")):
            return ".inf" if value > 0 else "-.inf"
        return json.dumps(value)
    if isinstance(value, str):
        plain = _PLAIN.match(value) and value.lower() not in _RESERVED
        return value if plain else quote(value)
    if value == {}:
        return "{}"
    if value == []:
        return "[]"
    raise TypeError(f"not a scalar: {value!r}")


def _inline(value: Any) -> bool:
    return not isinstance(value, dict | list) or not value


def block(value: dict[str, Any] | list[Any], indent: int) -> list[str]:
    """A non-empty mapping or list in block style, `indent` spaces in."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            head = f"{pad}{scalar(str(key))}:"
            if _inline(item):
                lines.append(f"{head} {scalar(item)}")
            else:
                lines.append(head)
                lines += block(item, indent + 2)
    else:
        for item in value:
            if _inline(item):
                lines.append(f"{pad}- {scalar(item)}")
            else:
                inner = block(item, indent + 2)
                lines.append(f"{pad}- {inner[0].lstrip()}")
                lines += inner[1:]
    return lines


def _tools(value: str | list[str]) -> str:
    if isinstance(value, str):
        return scalar(value)
    return "[" + ", ".join(scalar(name) for name in value) + "]"


def _rule_lines(rule: Any) -> list[str]:
    """One rule as a list item, kind key first, tool lists in flow style, cases quoted."""
    body = rule.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    lines: list[str] = []
    for key, value in body.items():
        if key in _TOOL_LISTS and isinstance(value, str | list):
            lines.append(f"{key}: {_tools(value)}")
        elif key == "on_output":
            lines.append("on_output:")
            # Always quoted: an unquoted `true:` or `1:` would be a boolean or number case.
            lines += [f"  {quote(str(case))}: {scalar(tool)}" for case, tool in value.items()]
        elif _inline(value):
            lines.append(f"{key}: {scalar(value)}")
        else:
            lines.append(f"{key}:")
            lines += block(value, 2)
    return ["  - " + lines[0], *("    " + line for line in lines[1:])]


def _comment(text: str, indent: int = 0) -> str:
    # One physical line: a newline inside would end the comment and start YAML.
    flat = " ".join(text.split())
    flat = "".join(c if _printable(c) else f"\\u{ord(c):04x}" for c in flat)
    return " " * indent + "# " + flat if flat else " " * indent + "#"


def _origin(translation: Translation, indices: tuple[int, ...]) -> str:
    raw = translation.agent.tool_rules
    types = dict.fromkeys(str(raw[i].get("type")) for i in indices if isinstance(raw[i], dict))
    where = ", ".join(f"tool_rules[{i}]" for i in indices)
    return f"from Letta {where}: {', '.join(types)}"


_RUN_COMMENTS = {
    "output_text": "output cases match str() of a tool's return value, as in Letta",
    "continuation": "Letta runs this agent type with its heartbeat loop",
    "parallel_tool_calls": "Letta turns parallel tool calls off for agents with tool rules",
}


def _run_lines(run: Any) -> list[str]:
    """The `run:` block of an imported agent, one commented line per setting."""
    settings = run.model_dump(mode="json", exclude_defaults=True)
    if not settings:
        return []
    lines = ["run:"]
    for key, value in settings.items():
        comment = _RUN_COMMENTS.get(key)
        line = f"  {key}: {scalar(value)}"
        lines.append(f"{line}  # {comment}" if comment else line)
    return lines


def render_rule_file(translation: Translation, source: str) -> str:
    """The rule file text of one imported agent; re-loaded and compared before it is returned."""
    agent = translation.spec
    lines = _header_lines(translation, source)
    lines += ["", "version: 1", f"agent: {scalar(agent.agent)}"]
    if agent.description:
        lines.append(f"description: {scalar(agent.description)}")
    if agent.tags:
        lines.append(f"tags: [{', '.join(scalar(tag) for tag in agent.tags)}]")
    lines += _tool_lines(translation)
    lines += _rules_lines(translation)
    lines += _run_lines(agent.run)
    text = "\n".join(lines) + "\n"
    _check_reloads(text, agent, source)
    return text


def _header_lines(translation: Translation, source: str) -> list[str]:
    """The comments that open the file: where it came from, the notes, whether it is lossy."""
    lines = [
        "# yaml-language-server: $schema=https://toolfsm.dev/schemas/toolfsm.schema.json",
        _comment(
            f"Imported from Letta by `toolfsm import`: {source}, agent {translation.spec.agent!r}."
        ),
        "# Output cases are quoted strings: Letta matches its (always string) keys exactly.",
    ]
    if translation.tools_derived:
        lines.append(
            "# The input had no tool list (a bare `tool_rules` list, or an agent without tools):"
        )
        lines.append("# `tools` lists the tools the rules name. Add the agent's other tools.")
    if translation.notes:
        lines.append("# Notes (the translation keeps Letta's meaning):")
        lines += [_comment(f"- {note}") for note in translation.notes]
    if translation.skipped:
        lines.append(
            f"# LOSSY: {len(translation.skipped)} item(s) could not be translated; see NOT "
            "TRANSLATED below."
        )
    return lines


def _tool_lines(translation: Translation) -> list[str]:
    """The `tools:` list, then a comment per tool that was left out."""
    lines = ["tools:"]
    for tool in translation.spec.tools:
        if isinstance(tool, str):
            lines.append(f"  - {scalar(tool)}")
            continue
        entry = tool.model_dump(mode="json", exclude_defaults=True)
        lines += block([entry], 2)
    tool_level = [s for s in translation.skipped if s.index is None]
    for item in tool_level:
        lines.append(_comment(f"NOT TRANSLATED: {item.reason}", 2))
    return lines


def _rules_lines(translation: Translation) -> list[str]:
    """The `rules:` list, each rule under a comment naming its Letta rules, then the skipped."""
    rules = translation.spec.rules
    lines = ["rules:" if rules else "rules: []"]
    for rule, origin in zip(rules, translation.origins, strict=True):
        lines.append(_comment(_origin(translation, origin), 2))
        lines += _rule_lines(rule)
    for item in translation.skipped:
        if item.index is None:
            continue
        lines.append(_comment(f"NOT TRANSLATED tool_rules[{item.index}]: {item.reason}", 2))
        lines.append(_comment("Letta: " + json.dumps(item.rule, ensure_ascii=False), 2))
    return lines


def _check_reloads(text: str, agent: spec.AgentSpec, source: str) -> None:
    """`TranslationError` unless the text fits a rule file and loads back as `agent`."""
    if len(text.encode("utf-8")) > MAX_BYTES:
        raise TranslationError(too_large_message(agent.agent))
    reloaded = parse_rules(text, source)
    if not reloaded.ok or reloaded.spec != agent:
        problems = "; ".join(str(d) for d in reloaded.diagnostics if d.is_error)
        raise TranslationError(
            f"internal: the emitted YAML for {agent.agent!r} does not re-load as the same rules"
            + (f": {problems}" if problems else "")
        )


__all__ = ["block", "quote", "render_rule_file", "scalar"]
