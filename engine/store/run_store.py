"""`RunStore`: the synchronous persistence API the run loop calls between steps.

Every method is one short transaction, committed (or rolled back) before it returns, and
returns frozen records detached from the session. Every write goes through one path: the
operations of `engine.store.writes`, applied on the DB-API connection (`write` / `write_many`
take them directly, the other write methods are one operation each plus a read of what they
wrote, in the same transaction). Checks are conditions in the statements themselves
(`UPDATE run ... WHERE steps_count = :seq`), so two writers of one run are serialised by the
database (PostgreSQL: the row lock the UPDATE takes; SQLite: the whole database, via BEGIN
IMMEDIATE) and sequence numbers cannot be handed out twice.

Methods block; the async loop may call them directly (each is a few milliseconds) or through
`asyncio.to_thread` - one store is safe to share between threads and runs.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar, cast

from alembic.util import CommandError
from sqlalchemy import Engine, select
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    SQLAlchemyError,
    StatementError,
)
from sqlalchemy.exc import (
    TimeoutError as PoolTimeoutError,
)
from sqlalchemy.orm import Session
from sqlmodel import col

from engine.store.checkpoint import BACKSTOP_PAGES, Checkpointer
from engine.store.db import (
    ENV_VAR,
    SQLITE_BUSY_TIMEOUT_MS,
    WRITE_OPTION,
    NotJsonSerialisable,
    is_memory_sqlite,
    make_engine,
    redact_url,
    resolve_db_url,
)
from engine.store.errors import (
    AgentNotFound,
    AmbiguousRunId,
    CallNotFound,
    CallStateConflict,
    DuplicateCall,
    DuplicateStep,
    InvalidValue,
    LeaseLost,
    RunClaimed,
    RunNotFound,
    RunStateConflict,
    StepOutOfOrder,
    StoreConflict,
    StoreError,
    StoreUnavailable,
)
from engine.store.migrate import upgrade
from engine.store.records import (
    AgentRecord,
    CallStatus,
    MessageRecord,
    RunRecord,
    RunSnapshot,
    RunStatus,
    StepRecord,
    ToolCallRecord,
    utcnow,
)
from engine.store.tables import AgentRow, MessageRow, RunRow, StepRow, ToolCallRow
from engine.store.writes import (
    RESULT_EDGES,
    STATUS_EDGES,
    UNSET,
    AppendMessages,
    CommitStep,
    CreateRun,
    FinishCall,
    KeepLease,
    Missed,
    Op,
    ReleaseLease,
    SetCallStatus,
    StartCall,
    Statements,
    Unset,
    UpdateRun,
    apply,
    apply_many,
    expected_statuses,
)
from engine.store.writes import require_text as _require_text

__all__ = ["LEASE_SECONDS", "RunStore", "new_owner_id", "new_run_id", "open_store", "rules_hash"]

# How long a run's lease lasts without renewal. The owner renews it at every durability point
# and every third of this while it waits (a model call, a tool), so only a dead or frozen
# process lets it lapse; a lapsed lease can be taken over by another process.
LEASE_SECONDS = 30.0


_AMBIGUOUS_SHOWN = 5
_T = TypeVar("_T")


def rules_hash(rules_text: str) -> str:
    """Return the sha256 hex digest that identifies a rule file's content."""
    return hashlib.sha256(rules_text.encode("utf-8")).hexdigest()


def new_run_id() -> str:
    """Return a fresh run id (uuid4 hex: any 6-8 leading characters are practically unique)."""
    # Not a time-sortable ULID on purpose: ids of runs started in the same second would share
    # their first 8+ characters, defeating short prefixes on the command line. Runs are
    # ordered by created_at instead.
    return uuid.uuid4().hex


def new_owner_id() -> str:
    """A lease owner id, "host:pid:random": unique per claimant, and telling a human (and a
    process on the same host) which process holds a run."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_gone(owner: str) -> bool:
    """True when `owner` names a process on this host that no longer exists (it was killed):
    its lease can be taken over at once rather than when it lapses. Any doubt (another host,
    a pid that exists, whoever it is now) means False."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. PermissionError: it exists, as someone else's
        return False
    # A killed process its parent has not reaped yet is a zombie: gone all the same.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rpartition(")")[2].split()[:1] == ["Z"]
    except OSError:
        return False


def open_store(url: str | None = None) -> RunStore:
    """Open (creating and migrating as needed) the run store at `url`, $TOOLFSM_DB or default."""
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
    return RunStore(engine, url=resolved)


class RunStore:
    """Agents, runs, steps, tool calls and messages, in any SQLAlchemy database.

    Build it with `open_store()`, which also migrates the schema. Close it (or use it as a
    context manager) to release pooled connections.
    """

    def __init__(self, engine: Engine, *, url: str) -> None:
        """Wrap an engine whose database is already migrated (use `open_store`)."""
        self._engine = engine
        self._url = url
        self._statements: Statements | None = None  # the batched write path, built on first use
        self._memory = is_memory_sqlite(engine.url)
        self._write_lock = threading.Lock()
        self._write_connection: Any = None  # SQLite file: the write path's own connection
        self._write_cursor: Any = None  # ... and its cursor
        # ... whose WAL pages a thread of its own copies back (started on the first write).
        self._checkpointer = Checkpointer(engine.raw_connection)
        # Agent rows are never updated or deleted: (name, rules hash) -> record, per store.
        self._agents: dict[tuple[str, str], AgentRecord] = {}
        self._agents_by_id: dict[int, AgentRecord] = {}
        # SQLite: writers BEGIN IMMEDIATE (see engine.store.db). Elsewhere the option is inert.
        self._writer = engine.execution_options(**{WRITE_OPTION: True})
        # load_run reads five tables; on PostgreSQL the default READ COMMITTED could show a
        # step without the run update committed with it. SQLite's BEGIN already gives a
        # snapshot.
        self._reader = (
            engine.execution_options(isolation_level="REPEATABLE READ")
            if engine.dialect.name == "postgresql"
            else engine
        )

    @property
    def url(self) -> str:
        """The database URL with the password masked."""
        return redact_url(self._url)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for tests and diagnostics; callers should not need it)."""
        return self._engine

    def close(self) -> None:
        """Release pooled connections; the store must not be used afterwards."""
        self._checkpointer.close()
        with self._write_lock:
            if self._write_connection is not None:
                self._write_connection.close()
                self._write_connection = self._write_cursor = None
        self._engine.dispose()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunStore({self.url!r})"

    # --- agents -------------------------------------------------------------------------

    def save_agent(
        self, name: str, rules_text: str, rules_path: str | os.PathLike[str] | None = None
    ) -> AgentRecord:
        """Store an agent's rule file; returns the existing row for the same (name, hash)."""
        _require_text("agent name", name)
        digest = rules_hash(rules_text)
        cached = self._agents.get((name, digest))
        if cached is not None:
            return cached
        path = None if rules_path is None else os.fspath(rules_path)
        # Two processes may insert the same agent at once on PostgreSQL; the loser's unique
        # violation means the row now exists, so a second attempt finds it.
        for attempt in range(2):
            try:
                with self._write("save agent") as session:
                    row = session.scalars(
                        select(AgentRow).where(
                            col(AgentRow.name) == name, col(AgentRow.rules_hash) == digest
                        )
                    ).first()
                    if row is None:
                        row = AgentRow(
                            name=name,
                            rules_text=rules_text,
                            rules_hash=digest,
                            rules_path=path,
                            created_at=utcnow(),
                        )
                        session.add(row)
                        session.flush()
                    record = self._agents[name, digest] = _agent_record(row)
                    self._agents_by_id[record.id] = record
                    return record
            except StoreConflict:
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def get_agent(self, agent_id: int) -> AgentRecord:
        """Return the agent with this id."""
        with self._read("get agent") as session:
            row = session.get(AgentRow, agent_id)
            if row is None:
                raise AgentNotFound(agent_id)
            return _agent_record(row)

    def _agent_by_id(self, agent_id: int) -> AgentRecord:
        record = self._agents_by_id.get(agent_id)
        if record is None:
            record = self._agents_by_id[agent_id] = self.get_agent(agent_id)
        return record

    # --- runs ---------------------------------------------------------------------------

    def create_run(
        self,
        agent_id: int,
        *,
        model: str,
        input: str,
        options: Mapping[str, Any] | None = None,
        position: Any = None,
        run_id: str | None = None,
    ) -> RunRecord:
        """Start a run of an agent in status `running`; `run_id` defaults to a new uuid4 hex."""
        _require_text("model", model)
        agent = self._agent_by_id(agent_id)
        op = CreateRun(
            run_id=run_id if run_id is not None else new_run_id(),
            agent_id=agent_id,
            rules_hash=agent.rules_hash,
            model=model,
            input=input,
            options=dict(options or {}),
            position=position,
        )
        return self._write_one("create run", op.run_id, [op], _read_run)

    def update_run(
        self,
        run_id: str,
        *,
        status: RunStatus | str | Unset = UNSET,
        stop_reason: str | Unset | None = UNSET,
        position: Any = UNSET,
        error: str | Unset | None = UNSET,
        add_input_tokens: int = 0,
        add_output_tokens: int = 0,
        expect_status: RunStatus | str | Collection[RunStatus | str] | None = None,
    ) -> RunRecord:
        """Change a run's header; omitted fields stay as they are, tokens are increments.

        `expect_status` makes the update conditional (raises `RunStateConflict` otherwise),
        e.g. so only one process resumes a run that awaits approval.
        """
        op = UpdateRun(
            status=status,  # type: ignore[arg-type]  # converted by the operation
            stop_reason=stop_reason,
            position=position,
            error=error,
            add_input_tokens=add_input_tokens,
            add_output_tokens=add_output_tokens,
            expect_status=expected_statuses(expect_status) or None,
        )
        return self._write_one("update run", run_id, [op], _read_run)

    # --- the run lease ----------------------------------------------------------------------

    def claim_run(self, run_id: str, owner: str, *, seconds: float = LEASE_SECONDS) -> RunRecord:
        """Make `owner` the one process that runs `run_id`, for `seconds` unless renewed.

        Atomic: the run row is locked for the check (PostgreSQL: SELECT ... FOR UPDATE;
        SQLite: the write lock of BEGIN IMMEDIATE), so of two processes claiming one run,
        exactly one wins. Succeeds when the run has no owner, `owner` already holds it, its
        lease has lapsed, or its owner is a process of this host that no longer exists;
        otherwise raises `RunClaimed` naming the owner and the age of its lease.
        """
        _require_text("lease owner", owner)
        with self._write("claim run") as session:
            row = session.get(RunRow, run_id, with_for_update=True)
            if row is None:
                raise RunNotFound(run_id)
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
            agent_id = row.agent_id
            record_row = row
        return _run_record(record_row, self._agent_by_id(agent_id).name)

    def renew_lease(self, run_id: str, owner: str, *, seconds: float = LEASE_SECONDS) -> None:
        """Extend `owner`'s lease of the run by `seconds` from now (`LeaseLost` if not held)."""
        self._write_one("renew lease", run_id, [KeepLease(owner, seconds)], None)

    def release_run(self, run_id: str, owner: str) -> None:
        """Give up `owner`'s lease of the run (`LeaseLost` if it does not hold it)."""
        self._write_one("release run", run_id, [ReleaseLease(owner)], None)

    def get_run(self, run_id: str) -> RunRecord:
        """Return the run with exactly this id."""
        with self._read("get run") as session:
            found = session.execute(_runs_query().where(col(RunRow.id) == run_id)).first()
            if found is None:
                raise RunNotFound(run_id)
            return _run_record(found[0], found[1])

    def find_run(self, prefix: str) -> RunRecord:
        """Return the one run whose id starts with `prefix` (case-insensitive), for the CLI."""
        prefix = prefix.strip().lower()
        if not prefix:
            raise InvalidValue("an empty run id prefix matches every run; type a run id")
        with self._read("find run") as session:
            ids = session.scalars(
                select(col(RunRow.id))
                .where(col(RunRow.id).startswith(prefix, autoescape=True))
                .order_by(col(RunRow.id))
                .limit(_AMBIGUOUS_SHOWN + 1)
            ).all()
        if not ids:
            raise RunNotFound(prefix, prefix=True)
        # A complete id wins even when it is also the prefix of a longer (custom) id.
        if len(ids) > 1 and prefix not in ids:
            raise AmbiguousRunId(prefix, ids[:_AMBIGUOUS_SHOWN], more=len(ids) > _AMBIGUOUS_SHOWN)
        return self.get_run(prefix if prefix in ids else ids[0])

    def list_runs(
        self,
        *,
        status: RunStatus | str | Collection[RunStatus | str] | None = None,
        agent: str | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """Return runs newest first, optionally only those in `status` or of agent `agent`."""
        if limit < 1:
            raise InvalidValue(f"limit must be at least 1, got {limit}")
        statuses = expected_statuses(status)
        query = _runs_query()
        if statuses:
            query = query.where(col(RunRow.status).in_(sorted(statuses)))
        if agent is not None:
            query = query.where(col(AgentRow.name) == agent)
        query = query.order_by(col(RunRow.created_at).desc(), col(RunRow.id).desc()).limit(limit)
        with self._read("list runs") as session:
            return [_run_record(run, name) for run, name in session.execute(query).all()]

    def load_run(self, run_id: str) -> RunSnapshot:
        """Return the run with its agent, steps, calls and messages, all from one snapshot."""
        with self._read("load run") as session:
            found = session.execute(
                select(RunRow, AgentRow)
                .join(AgentRow, col(RunRow.agent_id) == col(AgentRow.id))
                .where(col(RunRow.id) == run_id)
            ).first()
            if found is None:
                raise RunNotFound(run_id)
            run, agent = found
            steps = session.scalars(
                select(StepRow).where(col(StepRow.run_id) == run_id).order_by(col(StepRow.seq))
            ).all()
            calls = session.scalars(_calls_query(run_id)).all()
            messages = session.scalars(
                select(MessageRow)
                .where(col(MessageRow.run_id) == run_id)
                .order_by(col(MessageRow.seq))
            ).all()
            return RunSnapshot(
                run=_run_record(run, agent.name),
                agent=_agent_record(agent),
                steps=tuple(_step_record(step) for step in steps),
                calls=tuple(_call_record(call) for call in calls),
                messages=tuple(_message_record(message) for message in messages),
            )

    # --- steps and messages -------------------------------------------------------------

    def commit_step(
        self,
        run_id: str,
        step: StepRecord,
        *,
        messages: Sequence[Mapping[str, Any]] = (),
        status: RunStatus | str | Unset = UNSET,
        stop_reason: str | Unset | None = UNSET,
        error: str | Unset | None = UNSET,
    ) -> RunRecord:
        """Atomically append a step and its messages and move the run to `position_after`.

        Also adds the step's tokens to the run and counts the step. Either all of it is
        stored or none of it: a process killed mid-call leaves the previous step as the last.
        """
        op = CommitStep(
            step,
            messages,
            status=status,  # type: ignore[arg-type]  # converted by the operation
            stop_reason=stop_reason,
            error=error,
        )
        return self._write_one("commit step", run_id, [op], _read_run)

    def append_step(self, run_id: str, step: StepRecord) -> RunRecord:
        """Append a step without messages (same guarantees as `commit_step`)."""
        return self.commit_step(run_id, step)

    def append_messages(
        self, run_id: str, messages: Sequence[Mapping[str, Any]], *, step_seq: int | None = None
    ) -> list[MessageRecord]:
        """Append conversation messages in order; the store numbers them 0, 1, 2, ...
        `step_seq`: the step they belong to (a reply stored before its step is committed)."""
        count = len(messages)

        def read(statements: Statements, cursor: Any, run_id: str) -> list[MessageRecord]:
            if not count:
                return []
            stmt = statements.read_last_messages
            cursor.execute(stmt.sql, stmt.params({"p_run": run_id}))
            return [_message_record(_Row(row)) for row in reversed(stmt.rows(cursor, count))]

        return self._write_one(
            "append messages", run_id, [AppendMessages(messages, step_seq=step_seq)], read
        )

    # --- tool calls ---------------------------------------------------------------------

    def record_call_started(
        self,
        run_id: str,
        call_id: str,
        *,
        step_seq: int,
        batch_index: int,
        tool: str,
        arguments_raw: str,
        arguments: Any = None,
        status: CallStatus | str = CallStatus.STARTED,
        side_effects: bool = False,
        violation: str | None = None,
    ) -> ToolCallRecord:
        """Record a call the model made: started, awaiting approval, or a rule violation."""
        op = StartCall(
            call_id,
            step_seq=step_seq,
            batch_index=batch_index,
            tool=tool,
            arguments_raw=arguments_raw,
            arguments=arguments,
            status=status,  # type: ignore[arg-type]  # converted by the operation
            side_effects=side_effects,
            violation=violation,
        )
        return self._write_one("record call started", run_id, [op], _read_call(call_id))

    def set_call_status(
        self, run_id: str, call_id: str, status: CallStatus | str, *, owner: str | None = None
    ) -> ToolCallRecord:
        """Move a call along without a result (approve, deny, start, or mark failed).

        With `owner`, only while it holds the run's lease (`LeaseLost` otherwise)."""
        ops: list[Op] = [SetCallStatus(call_id, status)]  # type: ignore[arg-type]
        return self._write_one("set call status", run_id, _fenced(ops, owner), _read_call(call_id))

    def record_call_finished(
        self,
        run_id: str,
        call_id: str,
        *,
        status: CallStatus | str,
        result: Any,
        is_error: bool,
        duration_ms: int | None = None,
        arguments: Any = None,
        owner: str | None = None,
    ) -> ToolCallRecord:
        """Record a call's result (once); `arguments`, when given, replaces the stored ones.

        With `owner`, only while it holds the run's lease (`LeaseLost` otherwise)."""
        op = FinishCall(
            call_id,
            status,  # type: ignore[arg-type]
            result,
            is_error,
            duration_ms,
            arguments,
        )
        return self._write_one(
            "record call finished", run_id, _fenced([op], owner), _read_call(call_id)
        )

    def pending_calls(self, run_id: str) -> list[ToolCallRecord]:
        """Return the run's calls with no recorded result, in the order the model made them."""
        with self._read("list pending calls") as session:
            if session.get(RunRow, run_id) is None:
                raise RunNotFound(run_id)
            rows = session.scalars(
                _calls_query(run_id).where(col(ToolCallRow.finished_at).is_(None))
            ).all()
            return [_call_record(row) for row in rows]

    # --- batched writes (the run loop's hot path) -----------------------------------------

    def write(self, run_id: str, ops: Sequence[Op]) -> None:
        """Apply one run's operations (`engine.store.writes`) in one transaction, or none.

        The methods above are these operations one at a time, with the same checks and
        errors; this returns nothing, so nothing is read back.
        """
        self._write_one("write", run_id, ops, None)

    def write_many(self, batches: Sequence[tuple[str, Sequence[Op]]]) -> list[StoreError | None]:
        """Group commit: many runs' operations in one transaction (see `engine.store.writes`).

        Returns one entry per batch: None when it is committed, else the error that undid it
        (the other batches still commit). An error of the transaction itself (the database is
        unreachable, the commit fails) is raised and nothing is committed.
        """
        if not batches:
            return []
        errors, _ = self._transaction("write", batches, None)
        return errors

    def _write_one(
        self, action: str, run_id: str, ops: Sequence[Op], read: Callable[..., _T] | None
    ) -> _T:
        """One run's operations in one transaction; `read(statements, cursor, run_id)` is
        what the transaction returns, read after the writes and before the commit."""
        (error,), value = self._transaction(action, [(run_id, ops)], read)
        if error is not None:
            raise error
        return cast(_T, value)

    def _transaction(
        self,
        action: str,
        batches: Sequence[tuple[str, Sequence[Op]]],
        read: Callable[..., Any] | None,
    ) -> tuple[list[StoreError | None], Any]:
        statements = self._statements
        if statements is None:
            statements = self._statements = Statements(self._engine)
        if statements.sqlite:
            # One writer at a time per SQLite database anyway: keep one connection for it
            # rather than a pool checkout (and reset) per write.
            with self._write_lock:
                return self._run_transaction(action, statements, batches, read)
        return self._run_transaction(action, statements, batches, read)

    def _run_transaction(
        self,
        action: str,
        statements: Statements,
        batches: Sequence[tuple[str, Sequence[Op]]],
        read: Callable[..., Any] | None,
    ) -> tuple[list[StoreError | None], Any]:
        # The hot path: plain try/except rather than context managers, and on SQLite one
        # connection and cursor kept for every write.
        keep = statements.sqlite and not self._memory
        connection = self._write_connection if keep else None
        value = None
        try:
            if connection is None:
                connection = self._engine.raw_connection()
                cursor = connection.cursor()
                if keep:
                    # Checkpoints are the checkpoint thread's job (engine.store.checkpoint);
                    # this connection runs one itself only past the backstop.
                    cursor.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")
            else:
                cursor = self._write_cursor
            try:
                if statements.sqlite:
                    cursor.execute("BEGIN IMMEDIATE")  # take the write lock up front
                now = utcnow()
                # Many runs: their statements side by side, one executemany per statement.
                together = (
                    apply_many(statements, cursor, batches, now) if len(batches) > 1 else None
                )
                if together is None:
                    errors = _attempt(statements, cursor, batches, now, savepoints=False)
                elif together:
                    errors = None
                else:
                    errors = [None] * len(batches)  # one failed: find which (below)
                if errors is None:
                    if read is not None:
                        value = read(statements, cursor, batches[0][0])
                elif len(batches) > 1:
                    # Again with one savepoint per batch, so only the failing ones are undone.
                    connection.rollback()
                    if statements.sqlite:
                        cursor.execute("BEGIN IMMEDIATE")
                    errors = _attempt(statements, cursor, batches, now, savepoints=True)
                else:
                    connection.rollback()
                connection.commit()
                if keep:
                    self._checkpointer.written()
            except BaseException as exc:
                _rollback_quietly(connection)
                if isinstance(exc, statements.dbapi_error):
                    keep = False  # a failed connection goes back to the pool, to be checked
                    raise DBAPIError.instance(None, None, exc, statements.dbapi_error) from exc
                raise
            finally:
                if keep:
                    self._write_connection, self._write_cursor = connection, cursor
                else:
                    self._write_connection = self._write_cursor = None
                    with suppress(Exception):
                        cursor.close()
                    connection.close()
        except Exception as exc:
            translated = self._translated(action, exc)
            if translated is exc:
                raise
            raise translated from exc
        if errors is None:
            return [None] * len(batches), value
        return [self._explain(e) if isinstance(e, Missed) else e for e in errors], value

    def _explain(self, missed: Missed) -> StoreError:
        """Why a batched write matched no row or hit a constraint."""
        try:
            return self._diagnose(missed)
        except StoreError as exc:  # e.g. RunNotFound, AgentNotFound
            return exc

    def _diagnose(self, missed: Missed) -> StoreError:
        op, run_id, conflict = missed.op, missed.run_id, missed.conflict
        if conflict is None:
            # A conditional statement matched no row: the rows were read in its transaction.
            if missed.steps_count is None:
                raise RunNotFound(run_id)
            if isinstance(op, KeepLease | ReleaseLease):
                return LeaseLost(run_id, op.owner, self.get_run(run_id).owner)
            if isinstance(op, CommitStep):
                seq, count = op.step.seq, missed.steps_count
                return (DuplicateStep if seq < count else StepOutOfOrder)(run_id, seq, count)
            if isinstance(op, UpdateRun) and op.expect_status:
                assert missed.status is not None  # read with steps_count
                return RunStateConflict(run_id, missed.status, sorted(op.expect_status))
            if isinstance(op, FinishCall | SetCallStatus):
                if missed.call is None:
                    return CallNotFound(run_id, op.call_id)
                status, finished = missed.call
                edges = RESULT_EDGES if isinstance(op, FinishCall) else STATUS_EDGES
                current = CallStatus(status)
                allowed = frozenset[CallStatus]() if finished else edges.get(current)
                return CallStateConflict(
                    run_id, op.call_id, current.value, op.status.value, sorted(allowed or ())
                )
            return StoreConflict(f"run {run_id}: the write matched no row ({type(op).__name__})")
        # A constraint failed; the transaction is undone, so read what is committed.
        if isinstance(op, CreateRun):
            self._agents.clear()  # the cached agent row may be gone
            self._agents_by_id.clear()
            self.get_agent(op.agent_id)
            with self._read("create run") as session:
                if session.get(RunRow, op.run_id) is not None:
                    return StoreConflict(f"a run with id {op.run_id!r} already exists")
            return StoreConflict(f"cannot create run: {_raw_message(conflict)}")
        self.get_run(run_id)
        if isinstance(op, StartCall):
            return DuplicateCall(run_id, op.call_id)
        if isinstance(op, CommitStep):
            return DuplicateStep(run_id, op.step.seq, op.step.seq + 1)
        return StoreConflict(f"cannot write: {_raw_message(conflict)}")

    # --- transactions and error translation ---------------------------------------------

    @contextmanager
    def _write(self, action: str) -> Iterator[Session]:
        """One write transaction, committed on success; errors become StoreErrors."""
        with self._translate(action), Session(self._writer, expire_on_commit=False) as session:
            yield session
            session.commit()

    @contextmanager
    def _read(self, action: str) -> Iterator[Session]:
        """One read transaction (a consistent snapshot); errors become StoreErrors."""
        with self._translate(action), Session(self._reader, expire_on_commit=False) as session:
            yield session
            # End the read transaction now rather than when the connection is reused.
            session.rollback()

    @contextmanager
    def _translate(self, action: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            translated = self._translated(action, exc)
            if translated is exc:
                raise
            raise translated from exc

    def _translated(self, action: str, exc: Exception) -> Exception:
        """The StoreError to raise for `exc` (itself when it is one, or not a database's)."""
        if isinstance(exc, NotJsonSerialisable):
            return InvalidValue(f"cannot {action}: {exc}")
        if isinstance(exc, StoreError):
            return exc
        if isinstance(exc, IntegrityError):
            return StoreConflict(f"cannot {action}: {_driver_message(exc)}")
        if isinstance(exc, DBAPIError | PoolTimeoutError):
            if isinstance(exc, DBAPIError) and not _is_connectivity_error(exc):
                return StoreError(f"cannot {action}: {_driver_message(exc)}")
            return _unavailable(self._url, exc)
        if isinstance(exc, StatementError):
            # Raised before reaching the database, while binding values: SQLite's path wraps
            # the JSON encoder's error this way.
            if isinstance(exc.orig, NotJsonSerialisable):
                return InvalidValue(f"cannot {action}: {exc.orig}")
            return StoreError(f"cannot {action}: {exc.orig}")
        if isinstance(exc, SQLAlchemyError):
            return StoreError(f"cannot {action}: {exc}")
        return exc


# --- helpers ----------------------------------------------------------------------------


def _runs_query() -> Any:
    return select(RunRow, col(AgentRow.name)).join(
        AgentRow, col(RunRow.agent_id) == col(AgentRow.id)
    )


def _calls_query(run_id: str) -> Any:
    return (
        select(ToolCallRow)
        .where(col(ToolCallRow.run_id) == run_id)
        .order_by(
            col(ToolCallRow.step_seq),
            col(ToolCallRow.batch_index),
            col(ToolCallRow.started_at),
        )
    )


def _fenced(ops: list[Op], owner: str | None) -> list[Op]:
    """`ops`, applied only while `owner` holds the run's lease (which they renew)."""
    return ops if owner is None else [KeepLease(owner, LEASE_SECONDS), *ops]


def _attempt(
    statements: Statements,
    cursor: Any,
    batches: Sequence[tuple[str, Sequence[Op]]],
    now: datetime,
    *,
    savepoints: bool,
) -> list[StoreError | Missed | None] | None:
    """Apply the batches in the open transaction: None when all applied, else each one's
    error (without savepoints the first failure ends it, and the caller rolls back)."""
    errors: list[StoreError | Missed | None] | None = None
    for index, (run_id, ops) in enumerate(batches):
        if savepoints:
            cursor.execute("SAVEPOINT toolfsm_write")
        try:
            apply(statements, cursor, run_id, ops, now)
        except (Missed, InvalidValue) as exc:
            if errors is None:
                errors = [None] * len(batches)
            errors[index] = exc
            if not savepoints:
                return errors
            cursor.execute("ROLLBACK TO SAVEPOINT toolfsm_write")
        if savepoints:
            cursor.execute("RELEASE SAVEPOINT toolfsm_write")
    return errors


def _rollback_quietly(connection: Any) -> None:
    # The connection may be gone; the error being raised says why.
    with suppress(Exception):
        connection.rollback()


class _Row:
    """A row read back by the write path, with the attribute access the ORM rows have."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:  # for the type checker: any column
        raise AttributeError(name)


def _read_run(statements: Statements, cursor: Any, run_id: str) -> RunRecord:
    stmt = statements.read_run
    cursor.execute(stmt.sql, stmt.params({"p_run": run_id}))
    (row,) = stmt.rows(cursor)
    return _run_record(_Row(row), row["agent_name"])


def _read_call(call_id: str) -> Callable[[Statements, Any, str], ToolCallRecord]:
    def read(statements: Statements, cursor: Any, run_id: str) -> ToolCallRecord:
        stmt = statements.read_call
        cursor.execute(stmt.sql, stmt.params({"p_run": run_id, "p_call": call_id}))
        (row,) = stmt.rows(cursor)
        return _call_record(_Row(row))

    return read


def _raw_message(exc: BaseException | None) -> str:
    return " ".join(str(exc).split()) if exc is not None else "constraint violated"


def _utc(value: datetime) -> datetime:
    """Normalise to aware UTC: SQLite hands back naive values, PostgreSQL the session zone."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


def _agent_record(row: AgentRow) -> AgentRecord:
    assert row.id is not None  # flushed rows always have their id
    return AgentRecord(
        id=row.id,
        name=row.name,
        rules_text=row.rules_text,
        rules_hash=row.rules_hash,
        rules_path=row.rules_path,
        created_at=_utc(row.created_at),
    )


def _run_record(row: RunRow | _Row, agent_name: str) -> RunRecord:
    return RunRecord(
        id=row.id,
        agent_id=row.agent_id,
        agent_name=agent_name,
        rules_hash=row.rules_hash,
        model=row.model,
        input=row.input,
        options=row.options,
        status=RunStatus(row.status),
        stop_reason=row.stop_reason,
        position=row.position,
        error=row.error,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        steps_count=row.steps_count,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
        finished_at=_utc_or_none(row.finished_at),
        owner=row.owner,
        lease_renewed_at=_utc_or_none(row.lease_renewed_at),
        lease_expires_at=_utc_or_none(row.lease_expires_at),
    )


def _step_record(row: StepRow) -> StepRecord:
    decision: Literal["continue", "stop"] | None = row.decision  # type: ignore[assignment]
    return StepRecord(
        seq=row.seq,
        position_before=row.position_before,
        position_after=row.position_after,
        allowed=tuple(row.allowed),
        force=row.force,
        forced_tool=row.forced_tool,
        tool_choice=row.tool_choice,
        reply=row.reply,
        decision=decision,
        reason=row.reason,
        started_at=_utc(row.started_at),
        finished_at=_utc(row.finished_at),
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
    )


def _call_record(row: ToolCallRow | _Row) -> ToolCallRecord:
    return ToolCallRecord(
        call_id=row.call_id,
        step_seq=row.step_seq,
        batch_index=row.batch_index,
        tool=row.tool,
        arguments_raw=row.arguments_raw,
        arguments=row.arguments,
        status=CallStatus(row.status),
        result=row.result,
        is_error=row.is_error,
        violation=row.violation,
        side_effects=row.side_effects,
        started_at=_utc(row.started_at),
        finished_at=_utc_or_none(row.finished_at),
        duration_ms=row.duration_ms,
    )


def _message_record(row: MessageRow | _Row) -> MessageRecord:
    return MessageRecord(
        seq=row.seq,
        role=row.role,
        content=row.content,
        step_seq=row.step_seq,
        created_at=_utc(row.created_at),
    )


# --- error translation ------------------------------------------------------------------

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
