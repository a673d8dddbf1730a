"""`SqlStore`: the run journal in SQLite (WAL, the default) or PostgreSQL (by URL).

Writes are `append` only: each `Append` is a run's events, inserted one row each by a single
statement fenced by the lease (`INSERT INTO run_event ... SELECT ... FROM run WHERE id = ? AND
owner = ?`: a process whose lease was taken over inserts nothing; PostgreSQL locks the run row
FOR SHARE, so a claim waits for the append's commit or the append sees the new owner). The
events that change the run's status (created, paused, resumed, stopped) also write the header
row, in the same transaction. Many runs' appends share a transaction (`GroupCommit`); one
run's failure undoes only its own events (a savepoint each, on the second try).

The write path talks to the DB-API connection directly: its statements are SQLAlchemy
constructs over the tables, compiled once for the engine's dialect, and values go through the
column types' own bind processors (`_Statement`), so rows are stored as the ORM would store
them. Reads use SQLAlchemy and fold the events (`engine.store.fold`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext, suppress
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from alembic.util import CommandError
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError
from sqlalchemy import (
    ClauseElement,
    Engine,
    String,
    bindparam,
    func,
    insert,
    literal_column,
    null,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler

from engine.store.db import (
    ENV_VAR,
    SQLITE_BUSY_TIMEOUT_MS,
    WRITE_OPTION,
    NotJsonSerialisable,
    is_memory_sqlite,
    json_dumps,
    make_engine,
    redact_url,
    resolve_db_url,
)
from engine.store.errors import (
    AgentNotFound,
    AmbiguousRunId,
    InvalidValue,
    LeaseLost,
    RunClaimed,
    RunNotFound,
    RunStateConflict,
    StoreConflict,
    StoreError,
    StoreUnavailable,
)
from engine.store.events import (
    EVENT_ADAPTER,
    Decided,
    Event,
    Paused,
    Resumed,
    RunCreated,
    Stopped,
    StoredEvent,
)
from engine.store.fold import Fold, check_decision, fold
from engine.store.ids import RUN_ID, owner_is_gone, rules_hash
from engine.store.migrate import upgrade
from engine.store.protocol import LEASE_SECONDS, Append
from engine.store.records import AgentRecord, RunRecord, RunSnapshot, utcnow
from engine.store.status import RunStatus, StatusFilter
from engine.store.tables import METADATA, AgentRow, RunRow

__all__ = ["SqlStore", "open_store"]

_AMBIGUOUS_SHOWN = 5
_RUN = METADATA.tables["run"]
_EVENT = METADATA.tables["run_event"]
_AGENT = METADATA.tables["agent"]


def open_store(url: str | None = None) -> SqlStore:
    """Open (creating and migrating as needed) the store at `url`, $TOOLFSM_DB or default."""
    resolved = resolve_db_url(url)
    engine = make_engine(resolved)
    try:
        upgrade(engine)
    except CommandError as exc:
        engine.dispose()
        raise StoreUnavailable(
            redact_url(resolved),
            f"the database schema is at a revision this toolfsm does not know ({exc})",
            "it was written by a newer toolfsm: upgrade toolfsm, or use another database",
        ) from exc
    except SQLAlchemyError as exc:
        engine.dispose()
        raise _unavailable(resolved, exc) from exc
    return SqlStore(engine, url=resolved)


class _Missed(Exception):
    """Internal: a fenced statement matched no row; the store reads why (`_explain`)."""

    def __init__(self, append: Append, event: Event | dict[str, Any] | None) -> None:
        super().__init__(append.run_id)
        self.append = append
        self.event = event


class SqlStore:
    """Agents and run journals in any SQLAlchemy database (see the module docstring).

    Build it with `open_store()`, which also migrates the schema. Close it (or use it as a
    context manager) to release pooled connections. One store is safe to share between
    threads and runs; its methods block (each is one short transaction).
    """

    def __init__(self, engine: Engine, *, url: str) -> None:
        """Wrap an engine whose database is already migrated (use `open_store`)."""
        self._engine = engine
        self._url = url
        self._sql = _Statements(engine)
        self._sqlite = engine.dialect.name == "sqlite"
        self._keep = self._sqlite and not is_memory_sqlite(engine.url)
        self._write_lock = threading.Lock()
        self._connection: tuple[Any, Any] | None = None  # SQLite file: the write path's own
        self._agents: dict[int, AgentRecord] = {}
        self._writer = engine.execution_options(**{WRITE_OPTION: True})
        # load_run reads three tables; PostgreSQL's READ COMMITTED could mix two commits.
        pg = engine.dialect.name == "postgresql"
        self._reader = engine.execution_options(isolation_level="REPEATABLE READ") if pg else engine

    @property
    def url(self) -> str:
        """The database URL with the password masked."""
        return redact_url(self._url)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for tests and diagnostics)."""
        return self._engine

    def close(self) -> None:
        """Release pooled connections; the store must not be used afterwards."""
        with self._write_lock:
            if self._connection is not None:
                with suppress(Exception):
                    self._connection[0].close()
                self._connection = None
        self._engine.dispose()

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqlStore({self.url!r})"

    # --- agents ---------------------------------------------------------------------------

    def save_agent(
        self, name: str, rules_text: str, rules_path: str | os.PathLike[str] | None = None
    ) -> AgentRecord:
        """Store an agent's rule file; returns the existing row for the same (name, hash)."""
        _require_text("agent name", name)
        digest = rules_hash(rules_text)
        for record in self._agents.values():
            if record.name == name and record.rules_hash == digest:
                return record
        path = None if rules_path is None else os.fspath(rules_path)
        try:
            record = self._insert_agent(name, rules_text, digest, path)
        except StoreConflict:  # another process inserted the same agent at once: read its row
            record = self._insert_agent(name, rules_text, digest, path)
        self._agents[record.id] = record
        return record

    def _insert_agent(self, name: str, text: str, digest: str, path: str | None) -> AgentRecord:
        """The agent's row, inserted unless it is there."""
        query = select(AgentRow).where(_AGENT.c.name == name, _AGENT.c.rules_hash == digest)
        with self._session("save agent", write=True) as session:
            row = session.scalars(query).first()
            if row is None:
                row = AgentRow(
                    name=name,
                    rules_text=text,
                    rules_hash=digest,
                    rules_path=path,
                    created_at=utcnow(),
                )
                session.add(row)
                session.flush()
            record = _agent_record(row)
            session.commit()
        return record

    def get_agent(self, agent_id: int) -> AgentRecord:
        """Return the agent with this id."""
        cached = self._agents.get(agent_id)
        if cached is not None:
            return cached
        with self._session("get agent") as session:
            row = session.get(AgentRow, agent_id)
            if row is None:
                raise AgentNotFound(agent_id)
            record = self._agents[agent_id] = _agent_record(row)
            return record

    # --- the run lease --------------------------------------------------------------------

    def claim_run(self, run_id: str, owner: str, *, seconds: float = LEASE_SECONDS) -> RunRecord:
        """Make `owner` the one process that writes `run_id`, for `seconds` unless renewed.

        Atomic (PostgreSQL: SELECT ... FOR UPDATE; SQLite: BEGIN IMMEDIATE): of two claims,
        one wins. Succeeds when the run has no owner, `owner` holds it already, its lease
        has lapsed, or its owner is a process of this host that no longer exists; otherwise
        `RunClaimed`, naming the owner and the age of its lease."""
        _require_text("lease owner", owner)
        with self._session("claim run", write=True) as session:
            row = _header(session, run_id, lock=True)
            now = utcnow()
            holder = row.owner
            if holder is not None and holder != owner:
                expires = _utc_or_none(row.lease_expires_at)
                lapsed = expires is not None and expires <= now
                if not lapsed and not owner_is_gone(holder):
                    raise RunClaimed(
                        run_id, holder, _utc_or_none(row.lease_renewed_at), expires, now
                    )
            row.owner = owner
            row.lease_renewed_at = now
            row.lease_expires_at = now + timedelta(seconds=seconds)
            session.flush()
            values = _row_values(row)
            session.commit()
        return self._run_record(values)

    def renew_lease(self, run_id: str, owner: str, *, seconds: float = LEASE_SECONDS) -> None:
        """Extend `owner`'s lease of the run by `seconds` from now (`LeaseLost` if not held)."""
        self._append_one(Append(run_id, owner, (), lease_seconds=seconds))

    def release_run(self, run_id: str, owner: str) -> None:
        """Give up `owner`'s lease of the run (`LeaseLost` if it does not hold it)."""
        self._append_one(Append(run_id, owner, (), release=True))

    # --- reads ----------------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunRecord:
        """Return the run with exactly this id (a running run's counters folded)."""
        with self._session("get run") as session:
            values = _row_values(_header(session, run_id))
        return self._current(self._run_record(values))

    def find_run(self, prefix: str) -> RunRecord:
        """Return the one run whose id starts with `prefix` (case-insensitive), for the CLI."""
        prefix = prefix.strip().lower()
        if not prefix:
            raise InvalidValue("an empty run id prefix matches every run; type a run id")
        query = (
            select(_RUN.c.id)
            .where(_RUN.c.id.startswith(prefix, autoescape=True))
            .order_by(_RUN.c.id)
            .limit(_AMBIGUOUS_SHOWN + 1)
        )
        with self._session("find run") as session:
            ids = list(session.scalars(query).all())
        if not ids:
            raise RunNotFound(prefix, prefix=True)
        # A complete id wins even when it is also the prefix of a longer (custom) id.
        if len(ids) > 1 and prefix not in ids:
            raise AmbiguousRunId(prefix, ids[:_AMBIGUOUS_SHOWN], more=len(ids) > _AMBIGUOUS_SHOWN)
        return self.get_run(prefix if prefix in ids else ids[0])

    def list_runs(
        self,
        *,
        status: StatusFilter = None,
        agent: str | None = None,
        limit: int = 50,
        parent: str | None = None,
    ) -> list[RunRecord]:
        """Return runs newest first, optionally only those in `status`, of agent `agent`,
        or called by run `parent`."""
        if limit < 1:
            raise InvalidValue(f"limit must be at least 1, got {limit}")
        query = select(RunRow).join(AgentRow, _RUN.c.agent_id == _AGENT.c.id)
        statuses = _statuses(status)
        if statuses:
            query = query.where(_RUN.c.status.in_(sorted(statuses)))
        if agent is not None:
            query = query.where(_AGENT.c.name == agent)
        if parent is not None:
            query = query.where(_RUN.c.parent_run_id == parent)
        query = query.order_by(_RUN.c.created_at.desc(), _RUN.c.id.desc()).limit(limit)
        with self._session("list runs") as session:
            rows = [_row_values(row) for row in session.scalars(query).all()]
        return [self._current(self._run_record(values)) for values in rows]

    def load_run(self, run_id: str) -> RunSnapshot:
        """Return the run with its agent, steps, calls and messages, from one snapshot."""
        with self._session("load run") as session:
            values = _row_values(_header(session, run_id))
            events = session.execute(_events(_EVENT.c.run_id == run_id)).all()
        run = self._run_record(values)
        return _fold_rows(run_id, events).snapshot(run, self.get_agent(run.agent_id))

    def _current(self, run: RunRecord) -> RunRecord:
        """A running run's record with its journal's counters (the header's lag behind)."""
        return self.load_run(run.id).run if run.status is RunStatus.RUNNING else run

    def _run_record(self, values: dict[str, Any]) -> RunRecord:
        """The record of a header row's values (read outside the row's transaction: the
        agent may need a read of its own)."""
        agent = self.get_agent(values["agent_id"])
        return RunRecord(agent_name=agent.name, **values)

    # --- writes ---------------------------------------------------------------------------

    def append(self, appends: Sequence[Append]) -> list[StoreError | None]:
        """Commit the appends in one transaction (see `Store.append`)."""
        if not appends:
            return []
        try:  # SQLite has one writer at a time anyway: one connection for it
            with self._write_lock if self._sqlite else nullcontext():
                errors = self._transaction(appends)
        except Exception as exc:
            translated = self._translated("append", exc)
            if translated is exc:
                raise
            raise translated from exc
        return [self._explain(e) if isinstance(e, _Missed) else e for e in errors]

    def _append_one(self, append: Append) -> None:
        (error,) = self.append([append])
        if error is not None:
            raise error

    def _transaction(self, appends: Sequence[Append]) -> list[StoreError | _Missed | None]:
        # SQLite file: one connection (and cursor) kept for every append, not a pool checkout.
        if self._connection is None:
            connection = self._engine.raw_connection()
            cursor = connection.cursor()
        else:
            connection, cursor = self._connection
        keep = self._keep
        try:
            errors = self._attempt(connection, cursor, appends)
            connection.commit()
            return errors
        except BaseException as exc:
            with suppress(Exception):
                connection.rollback()
            if isinstance(exc, self._sql.dbapi_error):
                keep = False  # a failed connection goes back to the pool, to be checked
                raise DBAPIError.instance(None, None, exc, self._sql.dbapi_error) from exc
            raise
        finally:
            self._connection = (connection, cursor) if keep else None
            if not keep:
                with suppress(Exception):
                    connection.close()

    def _attempt(
        self, connection: Any, cursor: Any, appends: Sequence[Append]
    ) -> list[StoreError | _Missed | None]:
        """Apply the appends: all together first; if one fails, again, one savepoint each."""
        now = utcnow()
        # One step's event is one statement, which SQLite commits by itself (the connection
        # is in autocommit mode) and which waits for the write lock on the busy timeout as
        # BEGIN IMMEDIATE does. Without the BEGIN and COMMIT round trips, a step with a
        # side-effect call measured 10% nearer the floor (`benchmarks/loop.py`).
        alone = self._sqlite and len(appends) == 1 and _is_step_append(appends[0])
        if self._sqlite and not alone:
            cursor.execute("BEGIN IMMEDIATE")  # take the write lock up front
        try:
            if not self._together(cursor, appends, now):
                for append in appends:
                    self._apply(cursor, append, now)
            return [None] * len(appends)
        except (_Missed, StoreError, self._sql.integrity_error) as exc:
            if len(appends) == 1:
                connection.rollback()
                return [_failure(exc)]
        connection.rollback()
        if self._sqlite:
            cursor.execute("BEGIN IMMEDIATE")
        errors: list[StoreError | _Missed | None] = []
        for append in appends:
            cursor.execute("SAVEPOINT toolfsm_append")
            try:
                self._apply(cursor, append, now)
                errors.append(None)
            except (_Missed, StoreError, self._sql.integrity_error) as exc:
                cursor.execute("ROLLBACK TO SAVEPOINT toolfsm_append")
                errors.append(_failure(exc))
            cursor.execute("RELEASE SAVEPOINT toolfsm_append")
        return errors

    def _together(self, cursor: Any, appends: Sequence[Append], now: datetime) -> bool:
        """The common case of a group commit, one executemany: each append one event of a
        step, no lease change, every run once. False when the appends are not all so."""
        if len(appends) < 2 or len({a.run_id for a in appends}) != len(appends):
            return False
        if not all(_is_step_append(a) for a in appends):
            return False
        if len({a.seq is None for a in appends}) != 1:
            return False
        stmt = self._sql.append_event(appends[0])
        rows = [stmt.bind(_event_values(a, 0, now)) for a in appends]
        cursor.executemany(stmt.sql, rows)
        if cursor.rowcount != len(rows):
            raise _Missed(appends[0], None)  # some lease is lost: find which, one by one
        return True

    def _apply(self, cursor: Any, append: Append, now: datetime) -> None:
        """One run's events, with their header changes, in the open transaction."""
        sql = self._sql
        for index, event in enumerate(append.events):
            if _kind(event) in _HEADER_KINDS:
                model = _model(append.run_id, event)
                self._header_event(cursor, append, index, model, now)
            else:  # a step's event: the run's hot path, one statement
                values = _event_values(append, index, now)
                sql.run(cursor, sql.append_event(append), values, append, event)
        if append.lease_seconds is None and not append.release and append.events:
            return  # a step's append: its events were the fence
        fence = {"run_id": append.run_id, "owner": append.owner}
        if append.lease_seconds is not None and not _creates(append):
            expires = now + timedelta(seconds=append.lease_seconds)
            lease = {**fence, "lease_renewed_at": now, "lease_expires_at": expires}
            sql.run(cursor, sql.renew, lease, append, None)
        if append.release:
            sql.run(cursor, sql.release, fence, append, None)
        if not append.events and append.lease_seconds is None and not append.release:
            sql.run(cursor, sql.fence, fence, append, None)

    def _header_event(
        self, cursor: Any, append: Append, index: int, event: Event, now: datetime
    ) -> None:
        """An event that also writes the run's header row (or, a decision, checks the call)."""
        sql, fence = self._sql, {"run_id": append.run_id, "owner": append.owner}
        if isinstance(event, RunCreated):
            self._create(cursor, append, event, now)
        elif isinstance(event, Decided):
            check_decision(self._fold_in(cursor, append.run_id), event)
        stmt = sql.append_event(append) if event.kind == "paused" else sql.append_any(append)
        sql.run(cursor, stmt, _event_values(append, index, now, event), append, event)
        if isinstance(event, Paused | Stopped):
            values = {**fence, **event.totals.model_dump(), "status": event.status.value}
            values.update(stop_reason=event.stop_reason, error=getattr(event, "error", None))
            values.update(steps_count=values.pop("steps"), updated_at=now)
            values["finished_at"] = now if isinstance(event, Stopped) else None
            sql.run(cursor, sql.stop_run, values, append, event)
        elif isinstance(event, Resumed):
            values = {**fence, **_RESUMED, "updated_at": now, "previous": event.previous}
            sql.run(cursor, sql.resume_run, values, append, event)

    def _create(self, cursor: Any, append: Append, event: RunCreated, now: datetime) -> None:
        if not RUN_ID.fullmatch(append.run_id):
            raise InvalidValue(
                f"run id {append.run_id!r} must be 1-64 characters of a-z, 0-9, '_', '.', "
                "'-', starting with a letter or digit"
            )
        _require_text("model", event.model)
        _require_text("lease owner", append.owner)
        seconds = append.lease_seconds or LEASE_SECONDS
        values: dict[str, Any] = dict.fromkeys(_RUN.columns.keys())
        values.update({name: getattr(event, name) for name in _CREATED_COLUMNS})
        values.update(
            id=append.run_id,
            status=RunStatus.RUNNING.value,
            steps_count=0,
            input_tokens=0,
            output_tokens=0,
            created_at=now,
            updated_at=now,
            owner=append.owner,
            lease_renewed_at=now,
            lease_expires_at=now + timedelta(seconds=seconds),
        )
        stmt = self._sql.insert_run
        try:
            cursor.execute(stmt.sql, stmt.bind(values))
        except self._sql.integrity_error as exc:
            raise _Missed(append, event) from exc

    def _fold_in(self, cursor: Any, run_id: str) -> Fold:
        """The run's journal folded, read in the write transaction (for a decision)."""
        stmt = self._sql.read_events
        cursor.execute(stmt.sql, stmt.bind({"run_id": run_id}))
        return _fold_rows(run_id, cursor.fetchall())

    def _explain(self, missed: _Missed) -> StoreError:
        """Why a fenced statement matched no row: no run, the lease lost, another status."""
        append = missed.append
        if isinstance(missed.event, RunCreated):
            return self._create_conflict(append.run_id, missed.event)
        try:
            with self._session("append") as session:
                row = _header(session, append.run_id)
                owner, status = row.owner, row.status
        except StoreError as exc:
            return exc
        if owner != append.owner:
            return LeaseLost(append.run_id, append.owner, owner)
        if isinstance(missed.event, Resumed):
            return RunStateConflict(append.run_id, status, [missed.event.previous.value])
        if missed.event is not None and _kind(missed.event) in _STEP_KINDS:
            return RunStateConflict(append.run_id, status, [RunStatus.RUNNING.value])
        return StoreConflict(f"run {append.run_id}: the append matched no row")

    def _create_conflict(self, run_id: str, event: RunCreated) -> StoreError:
        self._agents.pop(event.agent_id, None)  # the cached agent row may be gone
        try:
            self.get_agent(event.agent_id)
            with self._session("create run") as session:
                if session.get(RunRow, run_id) is not None:
                    return StoreConflict(f"a run with id {run_id!r} already exists")
        except StoreError as exc:
            return exc
        return StoreConflict(f"cannot create run {run_id}: a constraint failed")

    # --- sessions and error translation ---------------------------------------------------

    @contextmanager
    def _session(self, action: str, *, write: bool = False) -> Iterator[Session]:
        """One transaction: a writer's (committed by the caller) or a snapshot read."""
        try:
            with Session(self._writer if write else self._reader) as session:
                yield session
                session.rollback()  # a read ends its snapshot now; a write committed already
        except Exception as exc:
            translated = self._translated(action, exc)
            if translated is exc:
                raise
            raise translated from exc

    def _translated(self, action: str, exc: Exception) -> Exception:
        """The StoreError to raise for `exc` (itself when it is one, or not a database's)."""
        if isinstance(exc, StoreError):
            return exc
        if isinstance(exc, NotJsonSerialisable):
            return InvalidValue(f"cannot {action}: {exc}")
        if isinstance(exc, IntegrityError):
            return StoreConflict(f"cannot {action}: {_driver_message(exc)}")
        if isinstance(exc, DBAPIError | PoolTimeoutError):
            if isinstance(exc, DBAPIError) and not _is_connectivity_error(exc):
                return StoreError(f"cannot {action}: {_driver_message(exc)}")
            return _unavailable(self._url, exc)
        if isinstance(exc, StatementError):
            if isinstance(exc.orig, NotJsonSerialisable):
                return InvalidValue(f"cannot {action}: {exc.orig}")
            return StoreError(f"cannot {action}: {exc.orig}")
        if isinstance(exc, SQLAlchemyError):
            return StoreError(f"cannot {action}: {exc}")
        return exc


# --- statements -------------------------------------------------------------------------

_HEADER_KINDS = frozenset({"run_created", "paused", "stopped", "resumed", "decided"})
_STEP_KINDS = frozenset({"calls_started", "step_committed", "paused"})
_TIME_COLUMNS = tuple(column.name for column in _RUN.columns if column.type.python_type is datetime)
# The header columns a `run_created` event supplies (the others start empty or are the
# store's: id, status, counters, times, lease).
_CREATED_COLUMNS = tuple(name for name in RunCreated.model_fields if name in _RUN.columns)
# What a pause or a stop writes to the header (its totals with it), and what a resume resets.
_TOTALS = ("steps_count", "input_tokens", "output_tokens", "position")
_STOPPED = ("status", "stop_reason", "error", "updated_at", "finished_at", *_TOTALS)
_RESUMED = dict(status=RunStatus.RUNNING.value, stop_reason=None, error=None, finished_at=None)


class _Statement:
    """One statement compiled for a dialect, bound by name through the columns' types (an
    UPDATE sets `columns`, each from the parameter of its name)."""

    def __init__(self, engine: Engine, clause: ClauseElement, columns: Sequence[str] = ()) -> None:
        dialect = engine.dialect  # each type's implementation for the dialect converts
        compiled = cast(SQLCompiler, clause.compile(dialect=dialect, column_keys=columns or None))
        self.sql = str(compiled)
        self.positional = compiled.positional
        self.names = tuple((compiled.positiontup if self.positional else compiled.binds) or ())
        binds = compiled.binds
        # The statement's own values (a literal in the construct): used unless given.
        self.constants = {name: bind.value for name, bind in binds.items() if not bind.required}
        self._plan = [
            (name, binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in self.names
        ]

    def bind(self, values: Mapping[str, Any]) -> Any:
        """The DB-API parameters for `values` (a name absent from them and from the
        statement's constants is an error)."""
        constants, out = self.constants, []
        for name, process in self._plan:
            value = values[name] if name in values else constants[name]
            out.append(value if process is None or value is None else process(value))
        return tuple(out) if self.positional else dict(zip(self.names, out, strict=True))


def _events(where: Any) -> Any:
    """The journal's rows that `where` selects, in order."""
    return select(_EVENT.c.seq, _EVENT.c.at, _EVENT.c.body).where(where).order_by(_EVENT.c.seq)


def _append(engine: Engine, where: Any, *, numbered: bool) -> _Statement:
    """INSERT INTO run_event ... SELECT ... FROM run WHERE `where`: the event numbered
    `seq` (`numbered`) or after the run's last one, or nothing when `where` does not hold
    (the lease is not held)."""
    if numbered:
        seq: Any = bindparam("seq", type_=_EVENT.c.seq.type)
    else:
        prior = _EVENT.alias("prior")
        last = (
            select(prior.c.seq)
            .where(prior.c.run_id == _RUN.c.id)
            .order_by(prior.c.seq.desc())
            .limit(1)
            .scalar_subquery()
        )
        seq = func.coalesce(last, literal_column("-1")) + literal_column("1")
    given = [bindparam(name, type_=_EVENT.c[name].type) for name in ("kind", "at", "body")]
    source = select(_RUN.c.id, seq, *given).where(where)
    if engine.dialect.name == "postgresql":  # a claim waits for this append's commit
        source = source.with_for_update(read=True, of=_RUN)
    return _Statement(engine, insert(_EVENT).from_select(list(_EVENT.columns.keys()), source))


class _Statements:
    """The write path's statements for one engine. A header update sets the columns it
    names from parameters of the same names, bound as those columns' types."""

    def __init__(self, engine: Engine) -> None:
        dbapi = engine.dialect.dbapi
        self.dbapi_error: type[Exception] = dbapi.Error  # type: ignore[union-attr]
        self.integrity_error: type[Exception] = dbapi.IntegrityError  # type: ignore[union-attr]
        run_id, owner = bindparam("run_id", type_=String), bindparam("owner", type_=String)
        mine = (_RUN.c.id == run_id) & (_RUN.c.owner == owner)

        def header(*columns: str, where: Any = mine) -> _Statement:
            return _Statement(engine, update(_RUN).where(where), columns)

        self.insert_run = _Statement(engine, insert(_RUN))
        running = _RUN.c.status == RunStatus.RUNNING.value
        # A step's events only while the run runs; a decision, a resume or a stop in any
        # status. Each numbered by the writer (`Append.seq`) or by the store.
        self._append_event = {n: _append(engine, mine & running, numbered=n) for n in (False, True)}
        self._append_any = {n: _append(engine, mine, numbered=n) for n in (False, True)}
        self.stop_run = header(*_STOPPED)
        previous = _RUN.c.status == bindparam("previous", type_=String)
        self.resume_run = header(*_RESUMED, "updated_at", where=mine & previous)
        self.renew = header("lease_renewed_at", "lease_expires_at")
        self.release = _Statement(
            engine,
            update(_RUN)
            .where(mine)
            .values(owner=null(), lease_renewed_at=null(), lease_expires_at=null()),
        )
        self.fence = _Statement(engine, select(_RUN.c.id).where(mine))
        self.read_events = _Statement(engine, _events(_EVENT.c.run_id == run_id))

    def append_event(self, append: Append) -> _Statement:
        """The statement that appends a step's event of `append` (while the run runs)."""
        return self._append_event[append.seq is not None]

    def append_any(self, append: Append) -> _Statement:
        """The statement that appends any event of `append`, in any status."""
        return self._append_any[append.seq is not None]

    def run(
        self,
        cursor: Any,
        stmt: _Statement,
        values: Mapping[str, Any],
        append: Append,
        event: Event | dict[str, Any] | None,
    ) -> None:
        """Execute a fenced statement: `_Missed` unless it touched exactly one row."""
        cursor.execute(stmt.sql, stmt.bind(values))
        if stmt is self.fence:
            if cursor.fetchone() is None:
                raise _Missed(append, event)
        elif cursor.rowcount != 1:
            raise _Missed(append, event)


def _header(session: Session, run_id: str, *, lock: bool = False) -> RunRow:
    """The run's header row (`lock`: FOR UPDATE)."""
    row = session.get(RunRow, run_id, with_for_update=lock)
    if row is None:
        raise RunNotFound(run_id)
    return row


def _row_values(row: RunRow) -> dict[str, Any]:
    values = row.model_dump()
    for name in _TIME_COLUMNS:
        values[name] = _utc_or_none(values[name])
    return values


def _fold_rows(run_id: str, rows: Iterable[Any]) -> Fold:
    """The run's journal rows (seq, at, body), folded."""
    return fold(run_id, (_stored(seq, at, body) for seq, at, body in rows))


def _is_step_append(append: Append) -> bool:
    """One event of a step, no lease change: one statement, fenced by the lease."""
    return (
        len(append.events) == 1
        and append.lease_seconds is None
        and not append.release
        and _kind(append.events[0]) not in _HEADER_KINDS
    )


def _creates(append: Append) -> bool:
    return any(_kind(event) == "run_created" for event in append.events)


def _kind(event: Event | dict[str, Any]) -> str:
    return str(event["kind"]) if isinstance(event, dict) else event.kind


def _model(run_id: str, event: Event | dict[str, Any]) -> Event:
    """An event as its model (a draft validated: `InvalidValue` when it does not fit)."""
    if not isinstance(event, dict):
        return event
    try:
        return EVENT_ADAPTER.validate_python(event)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        kind = event.get("kind")
        raise InvalidValue(f"run {run_id}: a {kind!r} event: {where}: {first['msg']}") from None


def _event_values(
    append: Append, index: int, at: Any, event: Event | dict[str, Any] | None = None
) -> dict[str, Any]:
    """The append statement's values for event `index` of `append` (its body encoded; given
    as `event` when validated)."""
    if event is None:
        event = append.events[index]
    try:
        body = json_dumps(event) if isinstance(event, dict) else event.model_dump_json()
    except (PydanticSerializationError, NotJsonSerialisable) as exc:
        raise InvalidValue(f"run {append.run_id}: cannot record an event: {exc}") from exc
    return {
        "run_id": append.run_id,
        "owner": append.owner,
        "kind": _kind(event),
        "at": at,
        "body": body,
        "seq": None if append.seq is None else append.seq + index,
    }


def _stored(seq: int, at: Any, body: str) -> StoredEvent:
    if isinstance(at, str):  # SQLite through the raw cursor
        at = datetime.fromisoformat(at)
    try:
        event = EVENT_ADAPTER.validate_json(body)
    except ValidationError as exc:
        raise StoreError(
            f"event {seq} of a run cannot be read ({exc.error_count()} problem(s): "
            f"{exc.errors()[0]['msg']}); it was written by a newer toolfsm or edited by hand"
        ) from exc
    return StoredEvent(seq=seq, at=_utc(at), event=event)


# --- helpers ----------------------------------------------------------------------------


def _require_text(what: str, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidValue(f"{what} must be a non-empty string, got {value!r}")


def _statuses(statuses: Any) -> frozenset[str]:
    """Run status values from one status or a collection of them (empty for None)."""
    if isinstance(statuses, str):
        statuses = (statuses,)
    values = set()
    for status in statuses or ():
        try:
            values.add(RunStatus(status).value)
        except ValueError:
            choices = ", ".join(member.value for member in RunStatus)
            raise InvalidValue(
                f"unknown run status {status!r}; expected one of: {choices}"
            ) from None
    return frozenset(values)


def _utc(value: datetime) -> datetime:
    """Aware UTC: SQLite hands back naive values, PostgreSQL the session's zone."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


def _agent_record(row: AgentRow) -> AgentRecord:
    return AgentRecord.model_validate(row.model_dump() | {"created_at": _utc(row.created_at)})


def _failure(exc: BaseException) -> StoreError | _Missed:
    """What an append that raised `exc` reports (a driver's constraint error: a conflict)."""
    if isinstance(exc, _Missed | StoreError):
        return exc
    return StoreConflict(f"cannot append: {' '.join(str(exc).split())}")


# Driver errors that mean "cannot talk to / lock the database" rather than "bad statement".
_CONNECTIVITY_MARKERS = (
    "unable to open database",
    "database is locked",
    "disk i/o error",
    "readonly database",
    "connection",
    "could not connect",
    "server closed",
    "timeout",
    "no such table",
    "does not exist",
)


def _driver_message(exc: DBAPIError | PoolTimeoutError) -> str:
    orig = getattr(exc, "orig", None) or exc
    return " ".join(str(orig).split())


def _is_connectivity_error(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    message = _driver_message(exc).lower()
    return any(marker in message for marker in _CONNECTIVITY_MARKERS)


def _unavailable(url: str, exc: SQLAlchemyError) -> StoreUnavailable:
    reason = _driver_message(exc) if isinstance(exc, DBAPIError | PoolTimeoutError) else str(exc)
    lowered = reason.lower()
    if "database is locked" in lowered:
        hint = (
            f"another process held the database lock for more than "
            f"{SQLITE_BUSY_TIMEOUT_MS / 1000:g} s; retry, or stop the other process"
        )
    elif "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
        hint = "the schema is missing: open the database with open_store(), which migrates it"
    elif "unable to open database" in lowered or "readonly" in lowered:
        hint = f"check that the file and its directory are writable, or set {ENV_VAR}"
    elif isinstance(exc, PoolTimeoutError):
        hint = "all pooled connections are busy; too many concurrent store calls"
    elif url.startswith("postgresql"):
        hint = (
            "is PostgreSQL running and reachable? check host, port, user and database in "
            f"the URL ({ENV_VAR} or --db)"
        )
    else:
        hint = f"check the database URL ({ENV_VAR} or --db) and that the database is reachable"
    return StoreUnavailable(redact_url(url), reason, hint)
