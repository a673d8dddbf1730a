"""SVG from the machine's markup, drawn here: no layout engine, no browser library, nothing
fetched (the web console shows it as it is). Nodes are laid out in columns by their distance
from the start; a run's path (`path_nodes`, `path_edges`) is drawn highlighted."""

from __future__ import annotations

from html import escape
from typing import Any

_CHAR = 7.2  # px per character of the 12 px monospace labels
_BOX_H = 30
_GAP_X = 90
_GAP_Y = 40
_PAD = 20


def _layers(markup: dict[str, Any]) -> list[list[str]]:
    """States by breadth-first distance from the initial one (unreached states last)."""
    names = [s["name"] for s in markup["states"]]
    after: dict[str, list[str]] = {}
    for t in markup["transitions"]:
        after.setdefault(t["source"], []).append(t["dest"])
    depth = {markup["initial"]: 0}
    order = [markup["initial"]]
    for name in order:
        for dest in after.get(name, ()):
            if dest not in depth:
                depth[dest] = depth[name] + 1
                order.append(dest)
    last = max(depth.values(), default=0) + 1
    layers: list[list[str]] = [[] for _ in range(last + 1)]
    for name in order:
        layers[depth[name]].append(name)
    layers[last].extend(n for n in names if n not in depth)
    return [layer for layer in layers if layer]


def render_svg(
    markup: dict[str, Any],
    *,
    path_nodes: frozenset[str] = frozenset(),
    path_edges: frozenset[tuple[str, str]] = frozenset(),
    current: str | None = None,
) -> str:
    """The diagram as one `<svg>` element; the path's nodes and edges carry the class
    `taken`, the node the run stands at `current`."""
    tags = {s["name"]: set(s.get("tags", [])) for s in markup["states"]}
    boxes: dict[str, tuple[float, float, float]] = {}  # name -> (x, y, width)
    x = float(_PAD)
    height = 0.0
    for layer in _layers(markup):
        width = max(len(n) for n in layer) * _CHAR + 24
        for row, name in enumerate(layer):
            y = _PAD + row * (_BOX_H + _GAP_Y)
            boxes[name] = (x, y, width)
            height = max(height, y + _BOX_H)
        x += width + _GAP_X
    total_w, total_h = x - _GAP_X + _PAD, height + _PAD + 14
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="machine" width="{total_w:.0f}" '
        f'height="{total_h:.0f}" viewBox="0 0 {total_w:.0f} {total_h:.0f}" role="img" '
        'aria-label="the compiled machine">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z"/></marker>'
        "</defs>",
    ]
    for t in markup["transitions"]:
        parts.append(_edge(t, boxes, (t["source"], t["dest"]) in path_edges))
    for name, (bx, by, bw) in boxes.items():
        classes = ["node", *sorted(tags.get(name, ()))]
        if name in path_nodes:
            classes.append("taken")
        if name == current:
            classes.append("current")
        parts.append(
            f'<g class="{" ".join(classes)}" data-node="{escape(name)}">'
            f'<rect x="{bx:.1f}" y="{by:.1f}" width="{bw:.1f}" height="{_BOX_H}" rx="6"/>'
            f'<text x="{bx + bw / 2:.1f}" y="{by + 19:.1f}">{escape(name)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _edge(t: dict[str, Any], boxes: dict[str, tuple[float, float, float]], taken: bool) -> str:
    sx, sy, sw = boxes[t["source"]]
    dx, dy, dw = boxes[t["dest"]]
    label = escape(t["trigger"])
    cls = "edge taken" if taken else "edge"
    if t["source"] == t["dest"]:  # a loop above the box
        x0, x1, y = sx + sw * 0.35, sx + sw * 0.65, sy
        path = f"M{x0:.1f},{y:.1f} C{x0:.1f},{y - 30:.1f} {x1:.1f},{y - 30:.1f} {x1:.1f},{y:.1f}"
        lx, ly = sx + sw / 2, y - 24
    elif dx > sx:  # forward: right side to left side
        x0, y0, x1, y1 = sx + sw, sy + _BOX_H / 2, dx, dy + _BOX_H / 2
        mid = (x0 + x1) / 2
        path = f"M{x0:.1f},{y0:.1f} C{mid:.1f},{y0:.1f} {mid:.1f},{y1:.1f} {x1:.1f},{y1:.1f}"
        lx, ly = mid, (y0 + y1) / 2 - 4
    else:  # back or same column: under the boxes
        x0, y0 = sx + sw / 2, sy + _BOX_H
        x1, y1 = dx + dw / 2, dy + _BOX_H
        low = max(y0, y1) + 34
        path = f"M{x0:.1f},{y0:.1f} C{x0:.1f},{low:.1f} {x1:.1f},{low:.1f} {x1:.1f},{y1:.1f}"
        lx, ly = (x0 + x1) / 2, low - 4
    return (
        f'<g class="{cls}"><path d="{path}" marker-end="url(#arrow)"/>'
        f'<text x="{lx:.1f}" y="{ly:.1f}">{label}</text></g>'
    )


__all__ = ["render_svg"]
