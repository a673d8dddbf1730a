"""Run every example against a real OpenAI-compatible server and check the engine's invariants.

Started by `scripts/check-real-llm.sh` (which starts the server); usable on its own against any
server: `python scripts/check_real_llm.py --base-url http://127.0.0.1:8081/v1 --work DIR`.

Each example runs with `toolfsm run` in a subprocess, in the default gating mode, into one
SQLite store; a run that stops awaiting approval is approved (`toolfsm runs approve`), as a
reviewer would. Then, for every stored run:

1. no tool the rules do not allow was executed: the calls that ran (any status but violation,
   denied, awaiting_approval) are replayed through the machine compiled from the run's stored
   rules, from each step's stored position, and each must be in the gate where it ran; the
   replay must end at the step's stored position;
2. the run ended with a defined stop reason (not `running`, a known StopReason) and every
   command exited 0 or 1 without a traceback;
3. every step is in the store: steps 0..N-1, N the run's step count;
4. `toolfsm runs show RUN` renders (exit 0, no traceback);
5. the stored conversation is a valid Chat Completions history: each tool result answers a
   call of the assistant message before it.

`toolfsm run` streams (its live view prints the model's text as it arrives). Streaming is also
checked on its own first, through the provider: an answer-only request and a forced tool call,
each asked with `stream()` and then with `complete()`; the stream must end with its reply, its
text pieces must join to the reply's text and each call's argument fragments to its arguments,
a text of several words must come in more than one piece, and both replies must parse.

Prints one line per run and a summary; exit 1 when an invariant breaks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EXECUTED = frozenset({"started", "finished", "error", "failed", "approved"})
MAX_APPROVALS = 3


@dataclass
class Outcome:
    example: str
    run_id: str = ""
    stop: str = "?"
    steps: int = 0
    ran: int = 0
    refused: int = 0
    notices: list[str] = field(default_factory=list)
    seconds: float = 0.0
    approvals: int = 0
    broken: list[str] = field(default_factory=list)


def toolfsm(args: list[str], work: Path, log: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOOLFSM_DB": str(work / "runs.db"), "COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    with log.open("a") as out:
        out.write(
            f"$ toolfsm {' '.join(args)}\n{proc.stdout}{proc.stderr}[exit {proc.returncode}]\n"
        )
    return proc


def command_problems(proc: subprocess.CompletedProcess[str], what: str) -> list[str]:
    problems = []
    if proc.returncode not in (0, 1):
        problems.append(f"{what} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    if "Traceback" in proc.stdout + proc.stderr:
        problems.append(f"{what} printed a traceback")
    return problems


def newest_run(work: Path) -> str | None:
    from engine.store import open_store

    store = open_store(str(work / "runs.db"))
    try:
        runs = store.list_runs(limit=1)
        return runs[0].id if runs else None
    finally:
        store.close()


def run_example(agent: Path, args: argparse.Namespace, work: Path, index: int) -> Outcome:
    name = agent.parent.name
    outcome = Outcome(f"{name}#{index}" if args.runs > 1 else name)
    log = work / f"{outcome.example}.log"
    before = newest_run(work)
    started = time.monotonic()
    proc = toolfsm(
        [
            "run",
            str(agent.relative_to(REPO)),
            "--model",
            args.model,
            "--base-url",
            args.base_url,
            "--max-tokens",
            str(args.max_tokens),
            "--timeout",
            str(args.timeout),
            "--retries",
            "1",
        ],
        work,
        log,
    )
    outcome.broken += command_problems(proc, "toolfsm run")
    run_id = newest_run(work)
    if run_id is None or run_id == before:
        outcome.broken.append("toolfsm run stored no run")
        outcome.seconds = time.monotonic() - started
        return outcome
    outcome.run_id = run_id
    while run_status(work, run_id) == "awaiting_approval" and outcome.approvals < MAX_APPROVALS:
        outcome.approvals += 1
        proc = toolfsm(["runs", "approve", run_id], work, log)
        outcome.broken += command_problems(proc, "toolfsm runs approve")
    outcome.seconds = time.monotonic() - started
    check_run(outcome, work, log)
    return outcome


def run_status(work: Path, run_id: str) -> str:
    from engine.store import open_store

    store = open_store(str(work / "runs.db"))
    try:
        return str(store.get_run(run_id).status)
    finally:
        store.close()


def check_run(outcome: Outcome, work: Path, log: Path) -> None:
    from engine.machine import StopReason
    from engine.store import open_store

    store = open_store(str(work / "runs.db"))
    try:
        snap = store.load_run(outcome.run_id)
        rules = store.get_agent(snap.run.agent_id)
    finally:
        store.close()
    run = snap.run
    outcome.stop = run.stop_reason or str(run.status)
    outcome.steps = run.steps_count
    outcome.ran = sum(1 for c in snap.calls if str(c.status) in EXECUTED)
    outcome.refused = sum(1 for c in snap.calls if str(c.status) == "violation")
    outcome.notices = [
        str(s.reply["notice"])
        for s in snap.steps
        if isinstance(s.reply, dict) and s.reply.get("notice")
    ]
    broken = outcome.broken
    # 2. a defined stop reason
    if str(run.status) == "running" or run.stop_reason not in {r.value for r in StopReason}:
        broken.append(f"run ended without a defined stop reason: {run.status} / {run.stop_reason}")
    # 3. every step in the store
    seqs = [s.seq for s in snap.steps]
    if seqs != list(range(run.steps_count)):
        broken.append(f"steps {seqs} stored for a run of {run.steps_count} step(s)")
    # 1. no tool outside the rules executed
    broken += replay_calls(snap, rules.rules_text, rules.rules_path or "<stored>")
    # 5. a valid Chat Completions history
    broken += history_problems(snap)
    # 4. runs show renders
    proc = toolfsm(["runs", "show", outcome.run_id], work, log)
    if proc.returncode != 0 or "Traceback" in proc.stdout + proc.stderr:
        broken.append(f"runs show exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    elif f"run {outcome.run_id}" not in proc.stdout:
        broken.append("runs show did not show the run")


def replay_calls(snap: Any, rules_text: str, rules_path: str) -> list[str]:
    import engine
    from engine.language.loader import parse_rules

    machine = engine.compile_rules(parse_rules(rules_text, rules_path))
    problems = []
    by_step: dict[int, list[Any]] = {}
    for call in snap.calls:
        by_step.setdefault(call.step_seq, []).append(call)
    for step in snap.steps:
        position = machine.load(step.position_before)
        for call in sorted(by_step.get(step.seq, []), key=lambda c: c.batch_index):
            status = str(call.status)
            if status not in EXECUTED:
                continue
            if call.tool not in machine.gate(position).allowed:
                problems.append(
                    f"step {step.seq}: {call.tool} ran ({status}) but the rules allowed only "
                    f"{list(machine.gate(position).allowed)}"
                )
            if status in ("finished", "error"):
                position = machine.advance(position, call.tool, call.result)
        if machine.dump(position) != step.position_after:
            problems.append(
                f"step {step.seq}: replaying its calls gives {machine.dump(position)}, the store "
                f"says {step.position_after}"
            )
    return problems


def history_problems(snap: Any) -> list[str]:
    problems = []
    open_ids: set[str] = set()
    for message in sorted(snap.messages, key=lambda m: m.seq):
        content = message.content
        if message.role == "assistant":
            open_ids = {c["id"] for c in content.get("tool_calls", ())}
        elif message.role == "tool":
            if content.get("tool_call_id") not in open_ids:
                problems.append(
                    f"message {message.seq}: a tool result for {content.get('tool_call_id')!r} "
                    "follows no assistant call with that id"
                )
        # a user message between a call and its results is refused by the API too
        elif message.role == "user" and open_ids and not message.step_seq:
            open_ids = set()
    return problems


STREAM_TOOL = {
    "name": "lookup",
    "description": "Look an account up by its id.",
    "parameters": {
        "type": "object",
        "properties": {"account": {"type": "string"}},
        "required": ["account"],
    },
}


def check_streaming(args: argparse.Namespace) -> list[str]:
    """Stream an answer and a forced call from the server; one line per request, and what
    broke (empty: streaming holds)."""
    import asyncio

    from engine.providers import Message, ModelRequest, ToolSpec, make_provider

    tool = ToolSpec(**STREAM_TOOL)
    ask = (Message("user", "Say hello in one short sentence, then look up account a1."),)
    requests = {
        "answer": ModelRequest("Answer briefly.", ask, (tool,), (), force=False),
        "forced call": ModelRequest(
            "Use the tool.", ask, (tool,), ("lookup",), force=True, forced_tool="lookup"
        ),
    }

    async def check(name: str, request: Any) -> list[str]:
        provider = make_provider(
            args.model, base_url=args.base_url, max_tokens=args.max_tokens, timeout=args.timeout
        )
        try:
            started = time.monotonic()
            items = [item async for item in provider.stream(request)]
            seconds = time.monotonic() - started
            whole = await provider.complete(request)
        finally:
            await provider.aclose()
        broken = stream_problems(items)
        reply = items[-1]
        pieces = sum(1 for i in items[:-1] if type(i).__name__ == "TextChunk")
        print(
            f"stream {name:<12} {len(items) - 1} delta(s) ({pieces} text) in {seconds:.1f} s, "
            f"text {reply.text!r:.60}, calls {[c.name for c in reply.tool_calls]}, usage "
            f"{reply.usage.input_tokens} in / {reply.usage.output_tokens} out; complete(): "
            f"{len(whole.tool_calls)} call(s)  "
            + ("ok" if not broken else "BROKEN: " + " | ".join(broken)),
            flush=True,
        )
        return [f"stream {name}: {b}" for b in broken]

    async def both() -> list[str]:
        return [p for name, request in requests.items() for p in await check(name, request)]

    return asyncio.run(both())


def stream_problems(items: list[Any]) -> list[str]:
    """What a provider's stream broke of its contract (deltas, then the reply they spell)."""
    from engine.providers import ModelReply
    from engine.providers.base import TextChunk, ToolCallChunk

    if not items or not isinstance(items[-1], ModelReply):
        return ["the stream did not end with a ModelReply"]
    reply, deltas = items[-1], items[:-1]
    problems = []
    if any(not isinstance(d, TextChunk | ToolCallChunk) for d in deltas):
        problems.append("the stream yielded something that is no delta before the reply")
    text = "".join(d.text for d in deltas if isinstance(d, TextChunk))
    if text != (reply.text or ""):
        problems.append(f"the text pieces join to {text!r}, the reply says {reply.text!r}")
    if len((reply.text or "").split()) > 3 and sum(isinstance(d, TextChunk) for d in deltas) < 2:
        problems.append("a text of several words came in one piece: nothing was streamed")
    for index, call in enumerate(reply.tool_calls):
        parts = [d for d in deltas if isinstance(d, ToolCallChunk) and d.index == index]
        arguments = "".join(d.arguments for d in parts)
        names = {d.name for d in parts if d.name}
        if arguments != call.arguments or names - {call.name}:
            problems.append(
                f"call {index}: the pieces spell {names} {arguments!r}, the reply "
                f"{call.name} {call.arguments!r}"
            )
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", default="openai:smollm2")
    parser.add_argument("--work", type=Path, required=True, help="where the store and logs go")
    parser.add_argument("--runs", type=int, default=1, help="runs per example")
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    args.work.mkdir(parents=True, exist_ok=True)
    streaming = check_streaming(args)
    outcomes = []
    for agent in sorted(REPO.glob("examples/*/agent.yaml")):
        for index in range(1, args.runs + 1):
            outcome = run_example(agent, args, args.work, index)
            outcomes.append(outcome)
            print(line(outcome), flush=True)
    return summary(outcomes, streaming, args)


def line(o: Outcome) -> str:
    fell_back = (
        "  fallback: " + "; ".join(n.split(";")[0][:60] for n in o.notices) if o.notices else ""
    )
    approved = f", {o.approvals} approval(s)" if o.approvals else ""
    verdict = "ok" if not o.broken else "BROKEN: " + " | ".join(o.broken)
    return (
        f"{o.example:<12} run {o.run_id[:12]:<12} {o.stop:<18} {o.steps:>2} steps, "
        f"{o.ran} call(s) ran, {o.refused} refused{approved}, {o.seconds:.0f} s  {verdict}{fell_back}"
    )


def summary(outcomes: list[Outcome], streaming: list[str], args: argparse.Namespace) -> int:
    broken = [o for o in outcomes if o.broken]
    stops: dict[str, int] = {}
    for o in outcomes:
        stops[o.stop] = stops.get(o.stop, 0) + 1
    print(
        f"summary: {len(outcomes)} run(s) against {args.base_url} ({args.model}); stop reasons "
        + ", ".join(f"{k} {v}" for k, v in sorted(stops.items()))
        + f"; {sum(o.steps for o in outcomes)} steps, {sum(o.ran for o in outcomes)} calls ran, "
        f"{sum(o.refused for o in outcomes)} refused"
    )
    print(
        "invariants (allowed tools only, defined stop reason, every step stored, runs show "
        f"renders, valid history): {'all hold' if not broken else f'BROKEN in {len(broken)} run(s)'}"
    )
    print(f"streaming: {'holds' if not streaming else 'BROKEN: ' + ' | '.join(streaming)}")
    if args.json:
        print(
            json.dumps(
                {
                    "runs": len(outcomes),
                    "broken": len(broken),
                    "streaming_broken": streaming,
                    "stop_reasons": stops,
                    "outcomes": [o.__dict__ for o in outcomes],
                }
            )
        )
    return 1 if broken or streaming else 0


if __name__ == "__main__":
    sys.exit(main())
