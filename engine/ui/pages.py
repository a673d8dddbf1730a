"""The console's HTML: whole pages rendered on the server, with one small script each that
polls the JSON API to keep them live. Nothing is loaded from elsewhere (no CDN, no font, no
library): styles and scripts are inline, the machine's diagram is an inline SVG."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from engine.machine.fsm import DiagramTooLarge, markup
from engine.machine.render.svg import render_svg

__all__ = ["not_found", "run_page", "runs_page"]

STATUSES = (
    "running",
    "awaiting_approval",
    "awaiting_decision",
    "awaiting_agents",
    "finished",
    "failed",
    "cancelled",
)

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:10px 20px;display:flex;gap:18px;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}
main{padding:16px 20px;max-width:1200px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{padding:6px 10px;border-bottom:1px solid #e3e6eb;text-align:left;vertical-align:top}
th{background:#eef0f4;font-weight:600}
code,pre,textarea{font:12px/1.4 ui-monospace,monospace}
pre{white-space:pre-wrap;margin:2px 0}
.status{padding:1px 7px;border-radius:9px;background:#e3e6eb;font-size:12px}
.status.finished{background:#d5f0dc}.status.failed{background:#f7d4d4}
.status.awaiting_approval,.status.awaiting_decision,.status.awaiting_agents{background:#ffe7b3}
.status.running{background:#d6e6ff}
.step{background:#fff;border:1px solid #e3e6eb;border-radius:6px;margin:10px 0;padding:8px 12px}
.call{margin:6px 0 6px 12px}.violation{color:#a4262c}.muted{color:#69707d}
.pending{border:2px solid #f0b429;background:#fffbea;border-radius:6px;padding:10px 14px}
form{margin:8px 0}button{font-size:14px;padding:5px 14px;cursor:pointer}
textarea{width:100%;min-height:110px}input[type=text]{width:300px}
.error{color:#a4262c;font-weight:600}
.diagram{overflow-x:auto;background:#fff;border:1px solid #e3e6eb;border-radius:6px;padding:6px}
svg.machine text{font:12px ui-monospace,monospace;text-anchor:middle}
svg.machine .node rect{fill:#fff;stroke:#9aa1ad}
svg.machine .node.taken rect{fill:#dcebff;stroke:#1f6feb;stroke-width:2}
svg.machine .node.current rect{stroke:#d1242f;stroke-width:3}
svg.machine .edge path{fill:none;stroke:#b4bac4}
svg.machine .edge text{fill:#69707d;font-size:11px}
svg.machine .edge.taken path{stroke:#1f6feb;stroke-width:2.5}
svg.machine .edge.taken text{fill:#1f6feb;font-weight:600}
svg.machine marker path{fill:#9aa1ad}
"""


def _page(title: str, body: str, script: str = "") -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · toolfsm</title><style>{_STYLE}</style></head><body>"
        '<header><a href="/">toolfsm</a><span>runs console</span></header>'
        f"<main>{body}</main>" + (f"<script>{script}</script>" if script else "") + "</body></html>"
    )


def not_found(message: str) -> str:
    return _page("not found", f'<p class="error">{escape(message)}</p><p><a href="/">runs</a></p>')


def _status(status: str) -> str:
    return f'<span class="status {escape(status)}">{escape(status)}</span>'


def runs_page(runs: list[dict[str, Any]], agent: str, status: str, agents: list[str]) -> str:
    """The runs list, newest first, filtered; it refreshes itself from /api/runs."""
    agent_options = "".join(
        f"<option{' selected' if a == agent else ''}>{escape(a)}</option>" for a in agents
    )
    status_options = "".join(
        f"<option{' selected' if s == status else ''}>{s}</option>" for s in STATUSES
    )
    body = (
        "<h1>Runs</h1>"
        '<form id="filters" method="get" action="/">'
        f'agent <select name="agent"><option value="">any</option>{agent_options}</select> '
        f'status <select name="status"><option value="">any</option>{status_options}</select> '
        '<button type="submit">filter</button></form>'
        '<table id="runs"><thead><tr><th>run</th><th>agent</th><th>status</th><th>stop reason'
        "</th><th>steps</th><th>tokens in/out</th><th>started</th></tr></thead>"
        f'<tbody id="rows">{"".join(_run_row(r) for r in runs)}</tbody></table>'
        f'<p class="muted" id="count">{len(runs)} run(s)</p>'
    )
    script = (
        "const esc=s=>String(s??'').replace(/[&<>\"']/g,c=>'&#'+c.charCodeAt(0)+';');"
        "async function poll(){try{const q=new URLSearchParams(location.search);"
        "const r=await fetch('/api/runs?'+q,{headers:{accept:'application/json'}});"
        "if(r.ok){const runs=await r.json();document.getElementById('rows').innerHTML="
        'runs.map(x=>`<tr data-run="${esc(x.id)}"><td><a href="/runs/${esc(x.id)}">'
        "<code>${esc(x.id.slice(0,12))}</code></a></td><td>${esc(x.agent)}</td><td>"
        '<span class="status ${esc(x.status)}">${esc(x.status)}</span></td><td>'
        "${esc(x.stop_reason||'-')}</td><td>${x.steps}</td><td>${x.input_tokens}/"
        "${x.output_tokens}</td><td>${esc(x.created_at.slice(0,19).replace('T',' '))}</td>"
        "</tr>`).join('');document.getElementById('count').textContent=runs.length+' run(s)';}"
        "}catch(e){}setTimeout(poll,1500);}setTimeout(poll,1500);"
    )
    return _page("runs", body, script)


def _run_row(r: dict[str, Any]) -> str:
    return (
        f'<tr data-run="{escape(r["id"])}"><td><a href="/runs/{escape(r["id"])}">'
        f"<code>{escape(r['id'][:12])}</code></a></td><td>{escape(r['agent'])}</td>"
        f"<td>{_status(r['status'])}</td><td>{escape(r['stop_reason'] or '-')}</td>"
        f"<td>{r['steps']}</td><td>{r['input_tokens']}/{r['output_tokens']}</td>"
        f"<td>{escape(r['created_at'][:19].replace('T', ' '))}</td></tr>"
    )


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _call(call: Any) -> str:
    css = "call violation" if call.violation else "call"
    result = ""
    if call.result is not None:
        text = call.result if isinstance(call.result, str) else _json(call.result)
        result = f'<pre class="{"violation" if call.is_error else "muted"}">{escape(text)}</pre>'
    return (
        f'<div class="{css}" data-call="{escape(call.call_id)}"><code>{escape(call.call_id)} '
        f"{escape(call.tool)}({escape(_json(call.arguments))})</code> "
        f'<span class="muted">[{escape(str(call.status))}]</span>{result}</div>'
    )


def _node(position: Any) -> str:
    return str(position.get("node", "?")) if isinstance(position, dict) else "?"


def _steps(snapshot: Any) -> str:
    by_step: dict[int, list[Any]] = {}
    for call in snapshot.calls:
        by_step.setdefault(call.step_seq, []).append(call)
    out = []
    for step in snapshot.steps:
        forced = f" (forced: {escape(step.forced_tool or 'any')})" if step.force else ""
        reply = step.reply if isinstance(step.reply, dict) else {}
        text = f"<pre>model: {escape(str(reply['text']))}</pre>" if reply.get("text") else ""
        out.append(
            f'<div class="step" data-step="{step.seq}"><b>step {step.seq}</b> '
            f"<code>{escape(_node(step.position_before))} → {escape(_node(step.position_after))}"
            f'</code> <span class="muted">{escape(str(step.decision))} ({escape(str(step.reason))})'
            f"</span><div>allowed: <code>{escape(', '.join(step.allowed) or '(none)')}</code>"
            f"{forced}</div>{text}{''.join(_call(c) for c in by_step.get(step.seq, []))}</div>"
        )
    pending = [c for c in snapshot.calls if c.step_seq >= snapshot.run.steps_count]
    if pending:
        out.append(
            f'<div class="step"><b>step {snapshot.run.steps_count}</b> '
            '<span class="muted">(not committed yet)</span>'
            f"{''.join(_call(c) for c in pending)}</div>"
        )
    return "".join(out)


def _approval(snapshot: Any, csrf: str, user: str) -> str:
    waiting = [c for c in snapshot.pending_calls if str(c.status) == "awaiting_approval"]
    if str(snapshot.run.status) != "awaiting_approval" or not waiting:
        return ""
    call = waiting[0]
    rid = escape(snapshot.run.id)
    hidden = (
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<input type="hidden" name="call_id" value="{escape(call.call_id)}">'
    )
    who = f'<label>your name <input type="text" name="by" value="{escape(user)}"></label>'
    return (
        f'<section class="pending" id="pending"><h2>Waiting for approval</h2>'
        f"<p><code>{escape(call.call_id)}</code> <b>{escape(call.tool)}</b></p>"
        f'<form method="post" action="/runs/{rid}/approve" id="approve-form">{hidden}'
        "<label>arguments (edit to approve with changes)<textarea name=arguments "
        f'id="arguments">{escape(json.dumps(call.arguments, indent=2, ensure_ascii=False))}'
        f'</textarea></label>{who} <button type="submit" id="approve">Approve</button></form>'
        f'<form method="post" action="/runs/{rid}/deny" id="deny-form">{hidden}'
        '<label>reason <input type="text" name="reason" id="reason" required></label> '
        f'{who} <button type="submit" id="deny">Deny</button></form></section>'
    )


def _decisions(snapshot: Any) -> str:
    if not snapshot.decisions:
        return ""
    rows = []
    for d in snapshot.decisions:
        change = ""
        if d.arguments_after is not None:
            change = (
                f"<pre>before: {escape(_json(d.arguments_before))}\n"
                f"after:  {escape(_json(d.arguments_after))}</pre>"
            )
        rows.append(
            f"<tr><td>{d.decided_at:%Y-%m-%d %H:%M:%S}</td><td>{escape(d.decision)}</td>"
            f"<td><code>{escape(d.call_id)}</code></td><td>{escape(d.reviewer or '-')}</td>"
            f"<td>{escape(d.reason or '')}{change}</td></tr>"
        )
    return (
        '<h2>Decisions</h2><table id="decisions"><thead><tr><th>when</th><th>decision</th>'
        f"<th>call</th><th>by</th><th>reason, arguments</th></tr></thead>{''.join(rows)}</table>"
    )


def diagram(machine: Any, snapshot: Any) -> str:
    """The compiled machine with the run's path (the nodes and the edges its steps took)."""
    nodes, edges = set(), set()
    start = machine.dump(machine.start())["node"]
    nodes.add(start)
    for step in snapshot.steps:
        before, after = _node(step.position_before), _node(step.position_after)
        nodes.update((before, after))
        if before != after or any(c.step_seq == step.seq for c in snapshot.calls):
            edges.add((before, after))
    current = _node(snapshot.run.position) if snapshot.run.position else start
    try:
        drawn = markup(machine)
    except DiagramTooLarge as exc:
        return f'<p class="muted">{escape(str(exc))}</p>'
    return render_svg(
        drawn, path_nodes=frozenset(nodes), path_edges=frozenset(edges), current=current
    )


def run_page(snapshot: Any, machine: Any, *, csrf: str, user: str, error: str | None = None) -> str:
    """One run: header, the machine with its path, every step, the pending approval."""
    r = snapshot.run
    stop = escape(r.stop_reason or "-")
    failure = f'<p class="error">error: {escape(r.error)}</p>' if r.error else ""
    body = (
        f"<h1>Run <code>{escape(r.id)}</code></h1><p>agent <b>{escape(r.agent_name)}</b> · "
        f"model <code>{escape(r.model)}</code> · status <span id=status>{_status(str(r.status))}"
        f'</span> · stop reason <span id="stop-reason">{stop}</span> · steps {r.steps_count} · '
        f"tokens {r.input_tokens}/{r.output_tokens}</p>{failure}"
        f"<p>input: {escape(r.input)}</p>"
        + (f'<p class="error" id="error">{escape(error)}</p>' if error else "")
        + f"{_approval(snapshot, csrf, user)}"
        f'<h2>Machine</h2><div class="diagram">{diagram(machine, snapshot) if machine else ""}'
        f"</div><h2>Steps</h2>{_steps(snapshot)}{_decisions(snapshot)}"
    )
    # Live: reload when the run's status or step count changes.
    script = (
        f"const seen={_json([str(r.status), r.steps_count])};"
        "async function poll(){try{const r=await fetch(location.pathname.replace('/runs/',"
        "'/api/runs/'),{headers:{accept:'application/json'}});if(r.ok){const x=await r.json();"
        "if(x.status!==seen[0]||x.steps_count!==seen[1]){location.replace(location.pathname);"
        "return;}}}catch(e){}setTimeout(poll,1000);}setTimeout(poll,1000);"
    )
    return _page(f"run {r.id[:12]}", body, script)
