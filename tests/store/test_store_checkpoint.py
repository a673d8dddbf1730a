"""WAL checkpoints run on the store's checkpoint thread, not inside the run loop's commits."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from engine.store import SqlStore, open_store
from engine.store.checkpoint import BACKSTOP_PAGES, Checkpointer
from tests.store._journal import append, new_run, opened, started

THREAD = "toolfsm-wal-checkpoint"


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD]


def _wait_for(condition, timeout: float = 10.0) -> bool:
    """Poll `condition` until it holds or `timeout` passes (no timing is asserted)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def _write_steps(store: SqlStore, run_id: str, count: int) -> None:
    """The run's creation and `count` mid-step appends: `count` + 1 events."""
    new_run(store, run_id)
    for seq in range(count):
        reply = {"role": "assistant", "text": "x" * 500}
        append(store, run_id, started(seq, opened(f"c{seq}", seq), reply=reply))


def _messages_in_database_file(path: Path, scratch: Path) -> int:
    """Events in the database file itself, without its log: what checkpoints copied back."""
    scratch.write_bytes(path.read_bytes())  # no -wal beside the copy
    try:
        connection = sqlite3.connect(scratch)
        try:
            return connection.execute("SELECT count(*) FROM run_event").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.DatabaseError:  # copied mid-checkpoint, or the table not copied back yet
        return -1


def test_the_thread_copies_the_log_back_after_writes(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    store = open_store(f"sqlite:///{path}")
    try:
        # 30 small steps are far below SQLite's own threshold (1,000 pages): only the
        # thread copies them into the database file.
        _write_steps(store, "r1", 30)
        checkpointer = store._checkpointer
        scratch = tmp_path / "copy.db"
        # The thread counts a checkpoint after SQLite has copied the pages, so the copy can
        # be seen before the count: wait for both.
        assert _wait_for(
            lambda: (
                _messages_in_database_file(path, scratch) == 31 and checkpointer.checkpoints >= 1
            )
        )
        assert checkpointer.error is None
        assert len(_threads()) >= 1
        # The write connection leaves checkpoints to the thread, up to the backstop.
        assert store._connection is not None
        cursor = store._connection[1]
        (threshold,) = cursor.execute("PRAGMA wal_autocheckpoint").fetchone()
        assert threshold == BACKSTOP_PAGES
        assert store.get_run("r1").status == "running"
    finally:
        store.close()
    assert checkpointer._thread is not None and not checkpointer._thread.is_alive()


def test_reading_and_closing_without_writes_starts_no_thread(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'runs.db'}")
    before = len(_threads())
    store.list_runs()
    assert store._checkpointer._thread is None
    store.close()
    assert len(_threads()) == before


@pytest.mark.parametrize("url", ["sqlite://"])
def test_a_store_in_memory_has_no_log_to_copy(url: str) -> None:
    store = open_store(url)
    try:
        _write_steps(store, "r1", 3)
        assert store._checkpointer._thread is None
    finally:
        store.close()


def test_a_failing_connection_leaves_the_backstop(tmp_path: Path) -> None:
    def refuse() -> object:
        raise sqlite3.OperationalError("unable to open database file")

    checkpointer = Checkpointer(refuse, interval=0.01)
    checkpointer.written()
    assert _wait_for(lambda: checkpointer.error is not None)
    assert "unable to open" in str(checkpointer.error)
    checkpointer.close()
    checkpointer.written()  # after close: no new thread
    assert checkpointer.checkpoints == 0


def test_closing_stops_the_thread_promptly(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    sqlite3.connect(path).execute("PRAGMA journal_mode = WAL").close()
    checkpointer = Checkpointer(lambda: sqlite3.connect(path, check_same_thread=False), interval=60)
    checkpointer.written()
    thread = checkpointer._thread
    assert thread is not None and thread.is_alive()
    checkpointer.close()  # does not wait out the 60 s interval
    assert not thread.is_alive()
