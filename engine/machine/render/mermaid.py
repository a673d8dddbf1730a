"""Mermaid `stateDiagram-v2` from the machine's markup (paste into Markdown on GitHub)."""

from __future__ import annotations

from typing import Any


def _ids(states: list[dict[str, Any]]) -> dict[str, str]:
    return {state["name"]: f"s{i}" for i, state in enumerate(states)}


def _label(text: str) -> str:
    # Mermaid labels cannot hold ':' after the first, nor quotes; keep them readable.
    return text.replace(":", " ").replace('"', "'")


def render_mermaid(markup: dict[str, Any]) -> str:
    ids = _ids(markup["states"])
    lines = ["stateDiagram-v2"]
    for state in markup["states"]:
        tags = state.get("tags", [])
        suffix = f" ({', '.join(tags)})" if tags else ""
        lines.append(f'    state "{_label(state["name"])}{suffix}" as {ids[state["name"]]}')
    lines.append(f"    [*] --> {ids[markup['initial']]}")
    for t in markup["transitions"]:
        lines.append(f"    {ids[t['source']]} --> {ids[t['dest']]}: {_label(t['trigger'])}")
    for state in markup["states"]:
        if {"terminal", "dead_end", "answer_only"} & set(state.get("tags", [])):
            lines.append(f"    {ids[state['name']]} --> [*]")
    return "\n".join(lines) + "\n"
