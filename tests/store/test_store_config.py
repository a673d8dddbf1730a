"""Opening a store: URL resolution, SQLite settings, in-memory stores, clear failures."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

import engine.store.db as db
from engine.store import SqlStore, open_store, resolve_db_url
from engine.store.errors import StoreUnavailable


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the per-user data directory at a temporary one, with $TOOLFSM_DB unset."""
    target = tmp_path / "data" / "toolfsm"
    monkeypatch.setattr(db, "user_data_dir", lambda *_args, **_kwargs: str(target))
    monkeypatch.delenv("TOOLFSM_DB", raising=False)
    return target


def test_default_url_is_a_file_in_the_user_data_dir(data_dir: Path) -> None:
    assert resolve_db_url(None) == f"sqlite:///{data_dir / 'toolfsm.db'}"
    with open_store() as store:
        store.save_agent("a", "")
    assert (data_dir / "toolfsm.db").is_file()  # directory and file created on first use


def test_env_var_and_argument(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLFSM_DB", "sqlite:////srv/env.db")
    assert resolve_db_url(None) == "sqlite:////srv/env.db"
    assert resolve_db_url("sqlite:////srv/arg.db") == "sqlite:////srv/arg.db"  # argument wins
    monkeypatch.setenv("TOOLFSM_DB", "  ")
    assert resolve_db_url(None).endswith("toolfsm.db")  # blank means unset


def test_postgres_urls_use_psycopg(data_dir: Path) -> None:
    assert resolve_db_url("postgres://u:pw@h/db") == "postgresql+psycopg://u:pw@h/db"
    assert resolve_db_url("postgresql://u@h:5433/db") == "postgresql+psycopg://u@h:5433/db"
    assert resolve_db_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"


def test_plain_path_means_a_sqlite_file(data_dir: Path, tmp_path: Path) -> None:
    assert resolve_db_url(str(tmp_path / "runs.db")) == f"sqlite:///{tmp_path / 'runs.db'}"


def test_invalid_url(data_dir: Path) -> None:
    with pytest.raises(StoreUnavailable, match="SQLAlchemy URL"):
        resolve_db_url("a b://c")
    with pytest.raises(StoreUnavailable, match="no database driver for 'nosuchdb'"):
        open_store("nosuchdb://x/y")


def test_unreachable_postgres_hides_the_password() -> None:
    with pytest.raises(StoreUnavailable) as caught:
        open_store("postgresql+psycopg://alice:s3cret@127.0.0.1:1/nope")
    message = str(caught.value)
    assert "s3cret" not in message
    assert "postgresql+psycopg://alice:***@127.0.0.1:1/nope" in message
    assert "hint: is PostgreSQL running" in message
    assert caught.value.__cause__ is not None  # the driver error is kept for debugging


def test_unwritable_sqlite_location(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreUnavailable, match="cannot create the directory"):
        open_store(f"sqlite:///{blocker / 'sub' / 'runs.db'}")


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with open_store(f"sqlite:///{path}") as store:
        with store.engine.connect() as connection:
            pragma = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
        assert pragma == {
            "journal_mode": "wal",
            "synchronous": 1,  # NORMAL
            "foreign_keys": 1,
            "busy_timeout": db.SQLITE_BUSY_TIMEOUT_MS,
        }
        store.save_agent("a", "")
        assert path.with_name("runs.db-wal").exists()
    # WAL is a property of the file: any other client (another toolfsm) sees it too.
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_in_memory_store_is_shared_across_threads() -> None:
    with open_store("sqlite://") as store:
        agent = store.save_agent("mem", "")
        seen: list[str] = []
        thread = threading.Thread(target=lambda: seen.append(store.get_agent(agent.id).name))
        thread.start()
        thread.join()
        assert seen == ["mem"]


def test_store_repr_and_url_hide_the_password(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'r.db'}") as store:
        assert isinstance(store, SqlStore)
        assert repr(store) == f"SqlStore('sqlite:///{tmp_path / 'r.db'}')"
