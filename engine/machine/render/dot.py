"""Graphviz DOT from the machine's markup (`toolfsm graph F --format dot | dot -Tsvg`)."""

from __future__ import annotations

import json
from typing import Any


def _q(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid DOT quoted string


def render_dot(markup: dict[str, Any]) -> str:
    lines = ["digraph toolfsm {", "    rankdir=LR;", "    node [shape=box, style=rounded];"]
    lines.append('    "__start" [shape=point];')
    lines.append(f'    "__start" -> {_q(markup["initial"])};')
    for state in markup["states"]:
        tags = state.get("tags", [])
        attrs = []
        if "terminal" in tags:
            attrs.append("peripheries=2")
        if "dead_end" in tags:
            attrs.append("color=red")
        if "answer_only" in tags:
            attrs.append("peripheries=2")  # the model's answer ends the run here
        if "forced" in tags:
            attrs.append('style="rounded,bold"')
        extra = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"    {_q(state['name'])}{extra};")
    for t in markup["transitions"]:
        lines.append(f"    {_q(t['source'])} -> {_q(t['dest'])} [label={_q(t['trigger'])}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
