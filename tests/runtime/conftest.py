"""Runtime test fixtures: agents built from YAML text, and stores on SQLite and PostgreSQL.

PostgreSQL runs in a schema of its own per test session (dropped afterwards); it is skipped
when no server answers, unless TOOLFSM_REQUIRE_PG=1 (CI), where that is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from engine.store import SqlStore, open_store

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    base = os.environ.get("TOOLFSM_TEST_PG_URL") or DEFAULT_PG_URL
    admin = create_engine(base, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        admin.dispose()
        reason = f"PostgreSQL did not answer ({' '.join(str(exc).split())[:160]})"
        if os.environ.get("TOOLFSM_REQUIRE_PG") == "1":
            pytest.fail(f"TOOLFSM_REQUIRE_PG=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    schema = f"toolfsm_rt_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    """A migrated store on each backend (runs are told apart by their ids, so PostgreSQL's
    session schema is shared between tests)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'runs.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    with open_store(url) as opened:
        yield opened


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[SqlStore]:
    with open_store(sqlite_url) as opened:
        yield opened


@pytest.fixture(autouse=True)
def _no_stray_db(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Nothing a test runs may touch the user's default database.
    monkeypatch.setenv("TOOLFSM_DB", f"sqlite:///{tmp_path / 'default.db'}")
