"""Fixtures: every store test runs against a real SQLite file and a real PostgreSQL server.

PostgreSQL isolation: one uniquely named schema per test session (`toolfsm_test_<pid>_<hex>`),
selected through libpq's `options=-csearch_path=...`, dropped with CASCADE when the session
ends; tests that need an empty database get their own throwaway schema. Between tests the
session schema is emptied. Nothing outside those schemas is touched, so concurrent sessions
(or a shared CI database) do not collide.

When PostgreSQL does not answer, its tests are skipped with the reason shown in the summary,
unless TOOLFSM_REQUIRE_PG=1 (CI), in which case they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from engine.store import SqlStore, open_store
from engine.store.db import redact_url

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ["sqlite", "postgresql"]
TABLES = ("agent", "run", "run_event")


def _pg_base_url() -> str:
    return os.environ.get("TOOLFSM_TEST_PG_URL") or DEFAULT_PG_URL


def _schema_url(base: str, schema: str) -> str:
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@contextmanager
def _pg_schema(base: str, label: str) -> Iterator[str]:
    """Create a uniquely named schema, yield a URL that uses it, drop it afterwards."""
    schema = f"toolfsm_test_{label}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        yield _schema_url(base, schema)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_base_url() -> str:
    """The PostgreSQL test server's URL, or a skip (a failure under TOOLFSM_REQUIRE_PG=1)."""
    base = _pg_base_url()
    engine = create_engine(base, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        reason = (
            f"PostgreSQL at {redact_url(base)} did not answer "
            f"({' '.join(str(getattr(exc, 'orig', None) or exc).split())[:200]}); "
            "set TOOLFSM_TEST_PG_URL"
        )
        if os.environ.get("TOOLFSM_REQUIRE_PG") == "1":
            pytest.fail(f"TOOLFSM_REQUIRE_PG=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    finally:
        engine.dispose()
    return base


@pytest.fixture(scope="session")
def pg_session_url(pg_base_url: str) -> Iterator[str]:
    """A schema for this test session, migrated once."""
    with _pg_schema(pg_base_url, "session") as url:
        open_store(url).close()
        yield url


def _truncate(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            # DELETE, children first: TRUNCATE takes ~50 ms a table even when it is empty.
            for table in reversed(TABLES):
                connection.execute(text(f"DELETE FROM {table}"))
    finally:
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend under test; parametrises every test that uses a store or a URL."""
    return str(request.param)


@pytest.fixture
def store_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL whose database is migrated and empty."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.db'}"
    url = str(request.getfixturevalue("pg_session_url"))
    _truncate(url)
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStore]:
    """An open store on an empty, migrated database of the current backend."""
    with open_store(store_url) as opened:
        yield opened


@pytest.fixture
def empty_db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of a database the store has never touched (for migration tests)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh' / 'runs.db'}"
        return
    base = str(request.getfixturevalue("pg_base_url"))
    with _pg_schema(base, "fresh") as url:
        yield url
