"""Database URLs and SQLAlchemy engines for the run store.

One engine per store, shared by every run in the process: sessions are short (one per store
call) and the pool hands each its own connection, so many async runs (through threads) are
safe. SQLite files are opened in WAL mode so a second process can read while one writes, and
writes take the lock up front (`BEGIN IMMEDIATE`) so they wait on the busy timeout instead of
failing with "database is locked" when two writers race.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
from platformdirs import user_data_dir
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.pool import StaticPool

from engine.store.errors import InvalidValue, StoreUnavailable

__all__ = [
    "ENV_VAR",
    "SQLITE_BUSY_TIMEOUT_MS",
    "default_db_url",
    "json_dumps",
    "make_engine",
    "redact_url",
    "resolve_db_url",
]

ENV_VAR = "TOOLFSM_DB"
APP_NAME = "toolfsm"
DB_FILENAME = "toolfsm.db"

# Long enough to ride out another process's commit (each store write is one short
# transaction), short enough that a stuck writer surfaces as an error a human will see.
SQLITE_BUSY_TIMEOUT_MS = 10_000
PG_CONNECT_TIMEOUT_S = 10

# Execution option that marks a connection as a writer; see `_sqlite_begin`.
WRITE_OPTION = "toolfsm_write"

# orjson: a step's event body encodes in about 1 µs against the stdlib encoder's 15-30 µs
# (measured side by side; see the commit that brought it). Non-string keys become strings as
# json.dumps would make them; non-finite floats are stored as null (PostgreSQL's json type
# has no NaN), and text stays readable (UTF-8, not \u escapes).
_OPTIONS = orjson.OPT_NON_STR_KEYS


class NotJsonSerialisable(InvalidValue):
    """A JSON column was handed a value json.dumps rejects (raised while writing)."""


def json_dumps(value: Any) -> str:
    # Raise our own error: psycopg lets the encoder's exception escape as is, while SQLite's
    # path wraps it in a StatementError; the store translates this one type either way.
    try:
        return orjson.dumps(value, option=_OPTIONS).decode()
    except (TypeError, ValueError) as exc:
        raise NotJsonSerialisable(f"a value is not JSON-serialisable ({exc})") from exc


def default_db_url() -> str:
    """Return the URL of the per-user default SQLite file (the file is not created here)."""
    # appauthor=False: on Windows the default would nest the app name twice.
    path = Path(user_data_dir(APP_NAME, appauthor=False)) / DB_FILENAME
    return URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)


def resolve_db_url(url: str | None) -> str:
    """Pick the database URL: the argument, else $TOOLFSM_DB, else the per-user SQLite file."""
    chosen = url or os.environ.get(ENV_VAR, "").strip() or default_db_url()
    if "://" not in chosen:
        # A plain file path is what people type first: take it as a SQLite file.
        chosen = "sqlite:///" + str(Path(chosen).expanduser().resolve())
    parsed = _parse(chosen)
    # Plain "postgresql://" would select psycopg2 (not a dependency); "postgres://" is what
    # hosting providers hand out and SQLAlchemy rejects. Both mean psycopg 3 here.
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def redact_url(url: str) -> str:
    """Return `url` with any password masked, safe to print in errors and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError as exc:
        raise StoreUnavailable(
            "<unparseable database URL>",
            f"{exc}",
            f"set {ENV_VAR} (or pass --db) to a SQLAlchemy URL, e.g. "
            "sqlite:////absolute/path/toolfsm.db or postgresql+psycopg://user@host/db",
        ) from None


def is_memory_sqlite(url: URL) -> bool:
    """True for SQLite URLs that name no file (each connection would get its own database)."""
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def make_engine(url: str) -> Engine:
    """Create the engine for `url` with the store's connection settings (no I/O yet)."""
    parsed = _parse(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            return _sqlite_engine(parsed)
        connect_args: dict[str, Any] = {}
        if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
            # libpq waits forever on an unreachable host by default; fail with a clear error.
            connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
        # pre_ping: a server restart must not surface as an error on the next store call.
        return create_engine(
            parsed, json_serializer=json_dumps, pool_pre_ping=True, connect_args=connect_args
        )
    except (NoSuchModuleError, ImportError) as exc:
        raise StoreUnavailable(
            redact_url(url),
            f"no database driver for {parsed.drivername!r} ({exc})",
            "use sqlite:///PATH or postgresql+psycopg://...; for PostgreSQL install "
            "toolfsm[postgres]",
        ) from None


def _sqlite_engine(url: URL) -> Engine:
    memory = is_memory_sqlite(url)
    kwargs: dict[str, Any] = {"json_serializer": json_dumps}
    if memory:
        # One shared connection, or every pooled connection (and thread) sees its own empty
        # database. Handy for the run loop's tests; nothing survives the process.
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        path = Path(url.database or "")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(
                redact_url(url.render_as_string(hide_password=False)),
                f"cannot create the directory {path.parent}: {exc.strerror or exc}",
                f"check permissions, or point {ENV_VAR} at a writable location",
            ) from None
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (it would not BEGIN before a
        # SELECT, breaking snapshot reads) and let `_sqlite_begin` emit BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not memory:
                # WAL lets readers and one writer work at once across processes; NORMAL sync
                # is durable at every checkpoint and never corrupts, at a fraction of FULL's
                # fsync cost (a power cut may lose only the last commits, not a process kill).
                _enable_wal(cursor)
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(connection: Any) -> None:
        # Writers take the write lock at BEGIN: a deferred transaction that reads and then
        # writes cannot wait for the lock (SQLite returns SQLITE_BUSY at once to avoid a
        # deadlock), whereas BEGIN IMMEDIATE waits up to the busy timeout.
        if connection.get_execution_options().get(WRITE_OPTION):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")

    return engine


def _enable_wal(cursor: Any) -> None:
    """Switch a SQLite file to WAL, waiting out a concurrent opener.

    Turning a fresh file into WAL needs an exclusive lock, and SQLite may answer "database is
    locked" at once instead of calling the busy handler while another process holds the file
    (e.g. two processes opening a brand-new database together). Retry for as long as the busy
    timeout would have waited.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
