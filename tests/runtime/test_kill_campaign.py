"""The kill -9 campaign (slow lane: `pytest -m campaign`; `.ci/run` runs it).

Real `toolfsm run` / `runs resume` processes against a fake OpenAI-compatible model that
answers from the history it is sent (`fake_openai`) and rejects a history the real API would
reject. Each run is SIGKILLed one to three times at seeded random points: inside a side-effect
tool before or after it took effect, while the process waits for the model (between two
steps), or after a random delay; some resumes are started twice at once. After every kill the
run is resumed as its hints say (`runs resume`, then `--retry` when the ledger shows the
interrupted call never took effect, `--mark-failed` when it did).

Asserted for every run, on SQLite and PostgreSQL: each side effect (by its id) executed at most
once, the run finished, no request had a broken history, and no process printed a traceback
or state-machine internals. Whatever the size, every durability point is hit: the first kill
of the first runs goes, one run each, to each side-effect call before and after its effect and
to the wait for each model turn (asserted to have been reached); the other kills are drawn at
random. $TOOLFSM_CAMPAIGN_RUNS (default 100 on each backend, the size issue 9's durability
campaign asks for: tens of minutes on CI's 2 cores; at least len(COVERAGE), 15, for the coverage) and $TOOLFSM_CAMPAIGN_SEED (default 9) set the
size and the seed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine.store import open_store
from tests.runtime.fake_openai import FakeModelServer

pytestmark = [
    pytest.mark.campaign,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)"),
]

RUNS = int(os.environ.get("TOOLFSM_CAMPAIGN_RUNS") or 100)
SEED = int(os.environ.get("TOOLFSM_CAMPAIGN_SEED") or 9)
WORKERS = 2
TIMEOUT_S = 180
MAX_ROUNDS = 16

AGENT = """\
version: 1
agent: ledgered
tools:
  - {name: lookup, idempotent: true}
  - charge
  - finish
rules:
  - terminal: finish
run:
  max_steps: 20
"""

# Every tool appends to the ledger; BLOCK_AT ("tool:key:before|after") makes one hang before
# or after its ledger line (the side effect), having written BLOCKED: the kill point.
TOOLS = """\
import os, pathlib, time

def _hit(name, key):
    point = os.environ.get("BLOCK_AT", "")
    if point == f"{name}:{key}:before":
        _hang()
    with open(os.environ["LEDGER"], "a") as ledger:
        ledger.write(f"{name}|{key}\\n")
        ledger.flush()
        os.fsync(ledger.fileno())
    if point == f"{name}:{key}:after":
        _hang()

def _hang():
    pathlib.Path(os.environ["BLOCKED"]).write_text("1")
    time.sleep(600)

def lookup(account: str) -> dict:
    _hit("lookup", account)
    return {"account": account, "balance": 40}

def charge(key: str) -> str:
    _hit("charge", key)
    return f"charged {key}"

def finish(key: str) -> str:
    _hit("finish", key)
    return "settled"
"""


def plan(tag: str, turn: int) -> list[tuple[str, dict[str, Any]]]:
    """The model's calls for a run at `turn` (assistant turns in its history)."""
    key = f"{tag}-{turn}"
    steps: list[list[tuple[str, dict[str, Any]]]] = [
        [("lookup", {"account": f"{tag}-a"})],
        [("charge", {"key": f"{key}-0"})],
        [("charge", {"key": f"{key}-0"}), ("lookup", {"account": f"{tag}-b"})],
        [("charge", {"key": f"{key}-0"}), ("charge", {"key": f"{key}-1"})],
    ]
    if turn < len(steps):
        return steps[turn]
    return [("finish", {"key": f"{key}-0"})]  # (again, after a finish marked failed)


SIDE_EFFECT_POINTS = [
    ("charge", 1, 0),
    ("charge", 2, 0),
    ("charge", 3, 0),
    ("charge", 3, 1),
    ("finish", 4, 0),
]
MODEL_TURNS = range(5)  # the turns plan() answers; the last one calls finish

# A kill point: ("before" | "after", tool, turn, call index) or ("model", turn).
Point = tuple[Any, ...]
# Every durability point, each the first kill of one of the first runs.
COVERAGE: list[Point] = [
    *((kind, *point) for point in SIDE_EFFECT_POINTS for kind in ("before", "after")),
    *(("model", turn) for turn in MODEL_TURNS),
]


@dataclass
class Campaign:
    workdir: Path
    db: str
    server: FakeModelServer
    kills: Counter[str] = field(default_factory=Counter)
    reached: set[Point] = field(default_factory=set)  # the COVERAGE points killed at
    processes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def env(self, tag: str, block: str | None) -> dict[str, str]:
        env = {
            **os.environ,
            "LEDGER": str(self.workdir / f"ledger-{tag}"),
            "BLOCKED": str(self.workdir / f"blocked-{tag}"),
            "TOOLFSM_DB": self.db,
            "OPENAI_API_KEY": "fake",
        }
        env.pop("BLOCK_AT", None)
        if block:
            env["BLOCK_AT"] = block
        return env

    def count(self, what: str) -> None:
        with self.lock:
            self.kills[what] += 1


def _ledger(campaign: Campaign, tag: str) -> list[str]:
    path = campaign.workdir / f"ledger-{tag}"
    return path.read_text().splitlines() if path.exists() else []


def _run_of(campaign: Campaign, tag: str) -> Any:
    with open_store(campaign.db) as store:
        found = [r for r in store.list_runs(agent="ledgered", limit=500) if f"[{tag}]" in r.input]
        assert len(found) <= 1, found
        return found[0] if found else None


def _check_output(out: str, err: str, returncode: int | None) -> None:
    both = out + err
    assert "Traceback" not in both, both
    assert "cannot become" not in both, both  # state-machine internals
    if returncode not in (0, -signal.SIGKILL, None):
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("toolfsm: error: "), both


def _spawn(campaign: Campaign, args: list[str], tag: str, block: str | None) -> Any:
    with campaign.lock:
        campaign.processes += 1
    return subprocess.Popen(
        [sys.executable, "-m", "engine", *args],
        env=campaign.env(tag, block),
        cwd=campaign.workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _attempt(
    campaign: Campaign,
    rng: random.Random,
    args: list[str],
    tag: str,
    kill: bool,
    forced: Point | None = None,
) -> None:
    """One process: killed at `forced` (a COVERAGE point) or at a random point when `kill`,
    else left to finish."""
    run = _run_of(campaign, tag)
    done_turns = run.steps_count if run is not None else 0
    kind = rng.choice(["model", "before", "after", "timer"]) if kill else "none"
    if forced is not None:
        kind = forced[0]
    block = None
    turn = -1
    point: Point | None = None
    if kind == "model":
        turn = forced[1] if forced else rng.randint(min(done_turns, 4), 4)
        campaign.server.hold(tag, turn)
        point = ("model", turn)
    elif kind in ("before", "after"):
        ahead = [p for p in SIDE_EFFECT_POINTS if p[1] >= done_turns] or SIDE_EFFECT_POINTS
        tool, at_turn, index = forced[1:] if forced else rng.choice(ahead)
        block = f"{tool}:{tag}-{at_turn}-{index}:{kind}"
        point = (kind, tool, at_turn, index)
    blocked = campaign.workdir / f"blocked-{tag}"
    blocked.unlink(missing_ok=True)
    proc = _spawn(campaign, args, tag, block)
    deadline = time.monotonic() + TIMEOUT_S
    kill_at = time.monotonic() + rng.uniform(0.3, 4.0) if kind == "timer" else None
    try:
        while proc.poll() is None:
            assert time.monotonic() < deadline, f"{tag}: {args} hung ({kind} {block} {turn})"
            now = time.monotonic()
            if (
                (block and blocked.exists())
                or (turn >= 0 and (tag, turn) in campaign.server.held_now)
                or (kill_at is not None and now >= kill_at)
            ):
                proc.send_signal(signal.SIGKILL)
                campaign.count(kind)
                if point is not None and kill_at is None:
                    with campaign.lock:
                        campaign.reached.add(point)
                break
            time.sleep(0.01)
        out, err = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
        campaign.server.release(tag)
    _check_output(out, err, proc.returncode)


def _decision(campaign: Campaign, tag: str, run_id: str) -> list[str]:
    """The flag the hint asks for, chosen as a human would: did the call take effect?"""
    with open_store(campaign.db) as store:
        started = [c for c in store.load_run(run_id).pending_calls if c.status == "started"]
    assert len(started) == 1, started
    call = started[0]
    took_effect = f"{call.tool}|{call.arguments['key']}" in _ledger(campaign, tag)
    return ["--mark-failed"] if took_effect else ["--retry"]


def _twice_at_once(campaign: Campaign, args: list[str], tag: str) -> None:
    """Two processes resume the same run at once: at most one may run it."""
    procs = [_spawn(campaign, args, tag, None) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=TIMEOUT_S)
        _check_output(out, err, proc.returncode)
    campaign.count("twice")


def drive(campaign: Campaign, index: int) -> None:
    """One run, from its start to `finished`, through its kills and resumes."""
    tag = f"r{index}"
    rng = random.Random(SEED * 100_003 + index)
    kills_left = rng.choice([1, 1, 2, 3])
    # The run's first process is killed at this durability point (then the draws go on).
    forced = COVERAGE[index] if index < len(COVERAGE) else None
    for _ in range(MAX_ROUNDS):
        run = _run_of(campaign, tag)
        if run is None:
            args = ["run", "agent.yaml", "--model", "openai:fake"]
            args += ["--base-url", campaign.server.base_url, "--input", f"settle [{tag}]"]
        elif run.status == "finished":
            break
        else:
            assert run.status in ("running", "cancelled", "awaiting_decision"), run
            args = ["runs", "resume", run.id]
            if run.status == "awaiting_decision":
                args += _decision(campaign, tag, run.id)
        if run is not None and not kills_left and rng.random() < 0.3:
            _twice_at_once(campaign, args, tag)
            continue
        _attempt(campaign, rng, args, tag, kill=kills_left > 0, forced=forced)
        forced = None
        kills_left = max(0, kills_left - 1)
    run = _run_of(campaign, tag)
    assert run is not None and run.status == "finished", (tag, run)
    assert run.stop_reason == "terminal_tool", run
    ledger = _ledger(campaign, tag)
    side_effects = Counter(line for line in ledger if not line.startswith("lookup|"))
    repeated = {line: n for line, n in side_effects.items() if n > 1}
    assert not repeated, f"{tag}: side effects run more than once: {repeated}"
    assert any(line.startswith("finish|") for line in ledger), ledger


@pytest.fixture(params=["sqlite", "postgresql"])
def campaign_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def test_kill_9_campaign(tmp_path: Path, campaign_db: str) -> None:
    (tmp_path / "agent.yaml").write_text(AGENT)
    (tmp_path / "tools.py").write_text(TOOLS)
    with FakeModelServer(plan) as server:
        campaign = Campaign(tmp_path, campaign_db, server)
        errors: list[BaseException] = []
        indexes = iter(range(RUNS))
        lock = threading.Lock()

        def worker() -> None:
            while not errors:
                with lock:
                    index = next(indexes, None)
                if index is None:
                    return
                try:
                    drive(campaign, index)
                except BaseException as exc:  # reported below, with the run's tag
                    errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        assert server.rejected == [], server.rejected[:3]
    print(
        json.dumps(
            {
                "runs": RUNS,
                "seed": SEED,
                "backend": campaign_db.partition(":")[0],
                "processes": campaign.processes,
                "kills": dict(campaign.kills),
                "points_reached": len(campaign.reached),
            }
        )
    )
    # Most chosen points are reached (a timer may fire after the process ended).
    assert sum(v for k, v in campaign.kills.items() if k != "twice") >= RUNS // 2
    # Every durability point was killed at (with at least one run for each).
    missed = set(COVERAGE[:RUNS]) - campaign.reached
    assert not missed, f"durability points never killed at: {sorted(missed, key=str)}"
