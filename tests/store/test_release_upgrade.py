"""A run store written by the release (tests/store/fixtures/release_v0_1: alembic revision
0002, made by make_release_db.py there) is read, shown and resumed by this toolfsm as the
release did: `toolfsm runs list` and every `runs show` print the release's goldens, and
approve, deny and resume (with `--retry` or `--mark-failed` for a cut-off call) go on from
where the release left each run, running every side effect once at most.

Every command is the real CLI in a subprocess, on a copy of the fixture folder (its working
directory: the fixture stores paths relative to it). The ledger file of the copy records
each tool call the command ran; it starts empty, so it holds only what the command ran.

On PostgreSQL, the fixture's rows are loaded into a fresh schema migrated to the release's
revision (`load_release_into`), which is what a PostgreSQL store the release wrote holds; then
the same commands run against it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import JSON, Boolean, DateTime, MetaData, create_engine, text

# About 90 CLI processes per backend: in the slow lane (`pytest -m slow`, which .ci/run runs),
# so the default run stays under ten minutes.
pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "release_v0_1"
GOLDEN = FIXTURE / "golden"
RUNS: dict[str, dict[str, str]] = json.loads((FIXTURE / "runs.json").read_text())
RELEASE_REVISION = "0002"
DENY_REASON = "Damage claims over 30 EUR need photos; offer an exchange."

# The one part of the release's output that legitimately differs from one day to the next:
# the lease line of a run a killed process left says how long ago its lease lapsed and was
# renewed, counted from now ("lapsed 144654 s ago (renewed 144684 s ago)").
_AGO = re.compile(r"\b\d+ s ago\b")


def id_of(name: str) -> str:
    return RUNS[name]["id"]


@dataclass(frozen=True)
class Release:
    """A copy of the fixture folder (agents, tools, scripts, runs.db, an empty ledger), and the
    URL of the store the commands use: the copy's runs.db, or PostgreSQL holding its rows."""

    folder: Path
    url: str


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    copy = tmp_path / "release"
    shutil.copytree(FIXTURE, copy, ignore=shutil.ignore_patterns("golden", "__pycache__"))
    (copy / "ledger").write_text("")
    return copy


TABLES = ("agent", "run", "step", "tool_call", "message")  # the release's, parents first


def load_release_into(url: str, release_db: Path) -> None:
    """Copy the fixture's rows into the empty PostgreSQL database at `url`, migrated to the
    release's revision first: the database the release would have written there."""
    from alembic import command

    from engine.store.migrate import alembic_config

    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), RELEASE_REVISION)
        schema = MetaData()
        schema.reflect(engine, only=TABLES)
        source = sqlite3.connect(release_db)
        source.row_factory = sqlite3.Row
        with engine.begin() as connection:
            for name in TABLES:
                table = schema.tables[name]
                rows = [
                    {
                        column: _pg_value(table.c[column].type, value)
                        for column, value in dict(row).items()
                    }
                    for row in source.execute(f"SELECT * FROM {name}")
                ]
                connection.execute(table.insert(), rows)
            # The ids were copied: the next agent the store saves gets the next one.
            connection.execute(
                text("SELECT setval(pg_get_serial_sequence('agent', 'id'), max(id)) FROM agent")
            )
        source.close()
    finally:
        engine.dispose()


def _pg_value(kind: Any, value: Any) -> Any:
    """A value as SQLite holds it (JSON as text, times as naive UTC text, 0/1) for PostgreSQL."""
    if value is None:
        return None
    if isinstance(kind, JSON):
        return json.loads(value)
    if isinstance(kind, DateTime):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    if isinstance(kind, Boolean):
        return bool(value)
    return value


@pytest.fixture
def release(folder: Path, backend: str, request: pytest.FixtureRequest) -> Release:
    if backend == "sqlite":
        return Release(folder, f"sqlite:///{folder / 'runs.db'}")
    url = str(request.getfixturevalue("empty_db_url"))
    load_release_into(url, folder / "runs.db")
    return Release(folder, url)


def toolfsm(release: Release, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    for name in ("BLOCK_AT", "TOOLFSM_LEASE_SECONDS"):
        env.pop(name, None)
    # As the goldens were made (make_release_db.py's cli_env).
    env.update(
        COLUMNS="200",
        NO_COLOR="1",
        TERM="dumb",
        TZ="UTC",
        LEDGER=str(release.folder / "ledger"),
        BLOCKED=str(release.folder / "blocked"),
        TOOLFSM_DB=release.url,
    )
    proc = subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=release.folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == code, (
        f"toolfsm {' '.join(args)} exited {proc.returncode}, expected {code}\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    return proc


def ledger(release: Release) -> list[str]:
    return (release.folder / "ledger").read_text().splitlines()


def shown(release: Release, name: str) -> dict[str, Any]:
    return json.loads(toolfsm(release, "runs", "show", id_of(name), "--json").stdout)


# What `--json` gained after the release (issue 13: a callee's run names its caller's): a run
# of the release is nobody's callee, so these keys hold their empty values and are compared
# as such, then left out of the comparison with the release's output.
_CALLEE_KEYS = {"parent_run_id": None, "parent_call_id": None, "depth": 0}


def as_release_json(document: Any) -> Any:
    """A `runs list/show --json` document with the keys the release did not print checked
    empty and removed (`parent_run_id` stays where the release printed it: at the top)."""
    if isinstance(document, list):
        return [as_release_json(record) for record in document]
    record = dict(document)
    assert record.pop("callee_runs", []) == []
    # Issue 15's audit trail: decisions taken here are recorded (the release kept none).
    assert isinstance(record.pop("decisions", []), list)
    # Issue 11's journal numbering (RunSnapshot.next_event, the number the next event takes).
    assert isinstance(record.pop("next_event", 0), int)
    for key, empty in _CALLEE_KEYS.items():
        if key != "parent_run_id":
            assert record.pop(key, empty) == empty
    if isinstance(record.get("run"), dict):
        inner = dict(record["run"])
        for key, empty in _CALLEE_KEYS.items():
            assert inner.pop(key, empty) == empty
        record["run"] = inner
    return record


def golden(name: str) -> str:
    return (GOLDEN / name).read_text()


def calls_of(run: dict[str, Any], tool: str) -> list[dict[str, Any]]:
    every = [c for step in run["steps"] for c in step["calls"]] + run["pending_calls"]
    return [c for c in every if c["tool"] == tool]


def as_run(text: str, name: str) -> str:
    """`runs show` of the run `name` continued here, made comparable with the show of a run the
    release continued the same way: only the run id, the start time and the measured durations
    of the calls differ."""
    text = text.replace(id_of(name), "RUN").replace(id_of(name)[:12], "RUN")
    # Issue 15's audit trail (who decided, when): the release printed none.
    text = re.sub(r"^decisions\n(?:  .*\n)*", "", text, flags=re.MULTILINE)
    text = re.sub(r"started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "started T", text)
    return re.sub(r"\] \d+ ms$", "] N ms", text, flags=re.MULTILINE)


def same_as_release(release: Release, name: str, release_name: str) -> None:
    """`runs show name` reads as the release's show of `release_name`, a run it continued the
    same way."""
    text = toolfsm(release, "runs", "show", id_of(name)).stdout
    assert as_run(text, name) == as_run(golden(f"{release_name}.txt"), release_name)


# -- the store as the release left it, read by this toolfsm -----------------------------------


def test_the_fixture_is_the_releases(folder: Path) -> None:
    # Guards the fixture itself: written at the release's revision, and never regenerated.
    with sqlite3.connect(folder / "runs.db") as db:
        assert db.execute("SELECT version_num FROM toolfsm_alembic_version").fetchall() == [
            (RELEASE_REVISION,)
        ]
        assert db.execute("SELECT count(*) FROM run").fetchone() == (len(RUNS),)


def test_opening_the_store_brings_it_to_the_head(release: Release) -> None:
    from engine.store import open_store
    from engine.store.migrate import current_revision, head_revision

    with open_store(release.url) as store:
        assert {r.id: r.status for r in store.list_runs(limit=100)} == {
            run["id"]: run["status"] for run in RUNS.values()
        }
    engine = create_engine(release.url)
    try:
        with engine.connect() as connection:
            assert current_revision(connection) == head_revision()
    finally:
        engine.dispose()


def test_runs_list_prints_the_releases_list(release: Release) -> None:
    assert toolfsm(release, "runs", "list").stdout == golden("runs-list.txt")
    listed = json.loads(toolfsm(release, "runs", "list", "--json").stdout)
    assert as_release_json(listed) == json.loads(golden("runs-list.json"))


@pytest.mark.parametrize("name", sorted(RUNS))
def test_runs_show_prints_the_releases_show(release: Release, name: str) -> None:
    text = toolfsm(release, "runs", "show", id_of(name)).stdout
    assert _AGO.sub("N s ago", text) == _AGO.sub("N s ago", golden(f"{name}.txt"))
    assert as_release_json(shown(release, name)) == json.loads(golden(f"{name}.json"))


# -- approve, deny and resume go on where the release stopped ---------------------------------


def test_approve_runs_the_refund_once_and_finishes_as_the_release_did(release: Release) -> None:
    name = "support-awaiting-approval"
    done = toolfsm(release, "runs", "approve", id_of(name)[:12])
    assert "stopped: terminal_tool  7 step(s), tokens 7322 in / 272 out" in done.stdout
    assert ledger(release) == [
        "refund:O-5531",
        "send_reply:T-8812",
        "log_interaction:T-8812",
        "close_ticket:T-8812",
    ]
    run = shown(release, name)
    assert (run["status"], run["stop_reason"]) == ("finished", "terminal_tool")
    (refund,) = [c for c in calls_of(run, "refund") if c["status"] == "finished"]
    assert refund["result"].startswith("Refund RF-5531 of 39.90 EUR")
    # The run now reads as the one the release approved and finished (support-approved).
    same_as_release(release, name, "support-approved")
    # The decision is taken: a second approval is refused and runs nothing.
    again = toolfsm(release, "runs", "approve", id_of(name)[:12], code=2)
    assert "Traceback" not in again.stderr
    assert len(ledger(release)) == 4


def test_approve_of_a_step_with_a_call_already_run_runs_only_the_approved_one(
    release: Release,
) -> None:
    name = "payments-awaiting-approval"
    done = toolfsm(release, "runs", "approve", id_of(name)[:12])
    assert "stopped: terminal_tool" in done.stdout
    assert ledger(release) == ["approve_refund:r1", "finish:"]  # charge c1 ran before the pause
    run = shown(release, name)
    assert (run["status"], run["stop_reason"]) == ("finished", "terminal_tool")
    assert [c["status"] for c in calls_of(run, "charge")] == ["finished"]


def test_deny_sends_the_reason_and_the_run_goes_on_as_the_release_did(release: Release) -> None:
    name = "support-awaiting-approval-deny-script"
    done = toolfsm(release, "runs", "deny", id_of(name)[:12], "--reason", DENY_REASON)
    assert "stopped: terminal_tool" in done.stdout
    assert "refund:O-5531" not in ledger(release)
    assert ledger(release) == [
        "exchange:O-5531",
        "send_reply:T-8812",
        "log_interaction:T-8812",
        "close_ticket:T-8812",
    ]
    (refund,) = calls_of(shown(release, name), "refund")[1:]  # the first one broke a rule
    assert refund["status"] == "denied" and DENY_REASON in refund["result"]
    same_as_release(release, name, "support-denied")


def test_resume_retry_runs_the_cut_off_charge_again_once(release: Release) -> None:
    name = "payments-awaiting-decision"
    done = toolfsm(release, "runs", "resume", id_of(name)[:12], "--retry")
    assert "stopped: terminal_tool" in done.stdout
    assert ledger(release) == ["charge:c1", "finish:"]
    run = shown(release, name)
    assert (run["status"], run["stop_reason"]) == ("finished", "terminal_tool")
    (charge,) = calls_of(run, "charge")
    assert (charge["status"], charge["result"]) == ("finished", "charged 10 (c1)")


def test_resume_mark_failed_records_the_charge_failed_without_running_it(release: Release) -> None:
    name = "payments-awaiting-decision"
    done = toolfsm(release, "runs", "resume", id_of(name)[:12], "--mark-failed")
    assert "stopped: terminal_tool" in done.stdout
    assert ledger(release) == ["finish:"]
    run = shown(release, name)
    assert (run["status"], run["stop_reason"]) == ("finished", "terminal_tool")
    (charge,) = calls_of(run, "charge")
    assert charge["status"] != "finished" and charge["is_error"] is True


def test_a_run_killed_in_a_side_effect_call_waits_for_a_decision(release: Release) -> None:
    name = "payments-killed-in-charge"
    paused = toolfsm(release, "runs", "resume", id_of(name)[:12])
    assert "stopped: awaiting_decision" in paused.stdout
    short = id_of(name)[:12]
    assert f"retry:   toolfsm runs resume {short} --retry" in paused.stdout
    assert f"give up: toolfsm runs resume {short} --mark-failed" in paused.stdout
    assert ledger(release) == []  # the cut-off charge is not run again on its own
    # It now reads as the run the release resumed to the same point.
    same_as_release(release, name, "payments-awaiting-decision")


@pytest.mark.parametrize("name", ["payments-killed-in-model-call", "payments-cancelled"])
def test_a_run_stopped_during_the_model_call_asks_the_model_again(
    release: Release, name: str
) -> None:
    done = toolfsm(release, "runs", "resume", id_of(name)[:12])
    assert "stopped: terminal_tool" in done.stdout
    assert ledger(release) == ["charge:c1", "finish:"]  # step 0's lookup is not run again
    run = shown(release, name)
    assert (run["status"], run["stop_reason"], len(run["steps"])) == (
        "finished",
        "terminal_tool",
        3,
    )


def test_a_failed_run_resumes_from_its_last_step(release: Release) -> None:
    # Its script is still used up: the resume asks the model again and fails the same way.
    name = "payments-failed"
    again = toolfsm(release, "runs", "resume", id_of(name)[:12], code=1)
    assert "stopped: error" in again.stdout and "script_exhausted" in again.stdout
    assert ledger(release) == []
    run = shown(release, name)
    assert (run["status"], run["steps_count"]) == ("failed", 1)


def test_a_finished_run_is_not_resumed(release: Release) -> None:
    refused = toolfsm(release, "runs", "resume", id_of("payments-terminal")[:12], code=2)
    assert "finished" in refused.stderr and "Traceback" not in refused.stderr
    assert ledger(release) == []
