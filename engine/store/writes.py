"""Batched writes: the run loop's store operations as values, applied many to a transaction.

The run loop does not need a round trip per operation: it buffers what happened in a step
(`AppendMessages`, `StartCall`, `FinishCall`, `CommitStep`, ...) and hands the buffer to
`RunStore.write` at the points where durability matters (before a side-effect call runs, at
the step commit, when the run stops). One buffer is one transaction; `RunStore.write_many`
commits the buffers of many runs in one transaction (group commit): their statements side by
side, one executemany per statement; if one run's statement fails, again one run at a time, each
in a savepoint of its own, so one run's conflict does not undo another's step.

This is the store's only write path (the `RunStore` methods are one operation each). It
talks to the DB-API connection directly: statements are built once from the SQLAlchemy tables
and compiled for the engine's dialect, and values are converted as the column types' bind
processors would (JSON encoded once per value, `Encoded` for a value stored twice; SQLite
datetimes formatted once per transaction), so rows are stored exactly as the ORM would. Checks are conditions in
the statements (`UPDATE ... WHERE steps_count = :seq`, `... AND status IN (...)`); a statement
that matches no row is reported as `Missed` and the store reads the rows afterwards to say why.
Tool-call operations do not touch the run row (its `updated_at` moves with run changes, steps
and appended messages).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, Final, NamedTuple, TypeVar

from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal_column,
    null,
    select,
    update,
)
from sqlalchemy.sql import ClauseElement

from engine.store.db import json_dumps
from engine.store.errors import InvalidValue
from engine.store.records import CallStatus, RunStatus, StepRecord
from engine.store.tables import AgentRow, MessageRow, RunRow, StepRow, ToolCallRow

__all__ = [
    "UNSET",
    "AppendMessages",
    "CommitStep",
    "CreateRun",
    "Encoded",
    "FinishCall",
    "KeepLease",
    "Missed",
    "Op",
    "ReleaseLease",
    "SetCallStatus",
    "StartCall",
    "StepValues",
    "UpdateRun",
]


# Ids the store generates are uuid4 hex; callers may choose their own (tests, replays) within
# this alphabet. Lower case only, so find_run can fold a typed prefix to lower case.
RUN_ID: Final = re.compile(r"[0-9a-z][0-9a-z_.-]{0,63}")


class Unset(Enum):
    """Marks an argument as "leave unchanged", since None is a meaningful value to store."""

    UNSET = "UNSET"


UNSET: Final = Unset.UNSET

# Status changes of a tool call that record no result (`set_call_status`) ...
STATUS_EDGES: Final[Mapping[CallStatus, frozenset[CallStatus]]] = {
    CallStatus.AWAITING_APPROVAL: frozenset(
        {CallStatus.APPROVED, CallStatus.DENIED, CallStatus.FAILED}
    ),
    CallStatus.APPROVED: frozenset({CallStatus.STARTED, CallStatus.FAILED}),
    CallStatus.STARTED: frozenset({CallStatus.FAILED}),
}
# ... and the ones that record the result (`record_call_finished`), once per call. A call set
# to denied/failed (or started as a violation) keeps its status while the result is recorded.
RESULT_EDGES: Final[Mapping[CallStatus, frozenset[CallStatus]]] = {
    CallStatus.STARTED: frozenset({CallStatus.FINISHED, CallStatus.ERROR, CallStatus.FAILED}),
    CallStatus.APPROVED: frozenset({CallStatus.FINISHED, CallStatus.ERROR, CallStatus.FAILED}),
    CallStatus.AWAITING_APPROVAL: frozenset({CallStatus.DENIED, CallStatus.FAILED}),
    CallStatus.DENIED: frozenset({CallStatus.DENIED}),
    CallStatus.VIOLATION: frozenset({CallStatus.VIOLATION}),
    CallStatus.FAILED: frozenset({CallStatus.FAILED}),
}
INITIAL_CALL_STATUSES: Final = (
    CallStatus.STARTED,
    CallStatus.AWAITING_APPROVAL,
    CallStatus.VIOLATION,
)

_E = TypeVar("_E", bound=Enum)


def enum_value(kind: type[_E], value: object, what: str) -> _E:
    """`kind(value)`, or `InvalidValue` listing the choices."""
    if value.__class__ is kind:  # already a member (what the run loop passes): nothing to look up
        return value
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(str(member.value) for member in kind)
        raise InvalidValue(f"unknown {what} {value!r}; expected one of: {choices}") from None


def require_text(what: str, value: str) -> None:
    """`InvalidValue` unless `value` is a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidValue(f"{what} must be a non-empty string, got {value!r}")


def _utc(value: datetime) -> datetime:
    # SQLite's DATETIME keeps the wall time and drops the zone: store UTC.
    zone = value.tzinfo
    if zone is UTC:
        return value
    return value.replace(tzinfo=UTC) if zone is None else value.astimezone(UTC)


def _previous(edges: Mapping[CallStatus, frozenset[CallStatus]], new: CallStatus) -> list[str]:
    """The statuses a call may be in for a move to `new`."""
    return sorted(old.value for old, targets in edges.items() if new in targets)


# --- operations ----------------------------------------------------------------------------
# Each is what the RunStore method of the same meaning does, and validates its values.


@dataclass(frozen=True, slots=True)
class CreateRun:
    """`create_run` for an agent whose record the caller holds (see `RunStore.cached_agent`)."""

    run_id: str
    agent_id: int
    rules_hash: str
    model: str
    input: str
    options: Mapping[str, Any]
    position: Any = None
    # The run's first lease (see `KeepLease`): the process that creates a run runs it.
    owner: str | None = None
    lease_seconds: float | None = None

    def __post_init__(self) -> None:
        require_text("model", self.model)
        if not RUN_ID.fullmatch(self.run_id):
            raise InvalidValue(
                f"run id {self.run_id!r} must be 1-64 characters of a-z, 0-9, '_', '.', '-', "
                "starting with a letter or digit"
            )


@dataclass(frozen=True, slots=True)
class AppendMessages:
    """`append_messages`: numbered after the run's last message, or from `first_seq` when the
    caller keeps count (then nothing is read; a wrong count fails on the primary key).
    `step_seq` ties them to a step not committed yet (a reply is stored when it arrives, so a
    resume tells the pending reply of step `steps_count` from the committed ones)."""

    messages: Sequence[Mapping[str, Any] | Encoded]
    first_seq: int | None = None
    step_seq: int | None = None


@dataclass(frozen=True, slots=True)
class StartCall:
    """`record_call_started`."""

    call_id: str
    step_seq: int
    batch_index: int
    tool: str
    arguments_raw: str
    arguments: Any = None
    status: CallStatus = CallStatus.STARTED
    side_effects: bool = False
    violation: str | None = None

    def __post_init__(self) -> None:
        require_text("call id", self.call_id)
        status = enum_value(CallStatus, self.status, "initial call status")
        if status not in INITIAL_CALL_STATUSES:
            raise InvalidValue(
                f"a call starts as one of {', '.join(INITIAL_CALL_STATUSES)}, not {status!r}"
            )
        if (status is CallStatus.VIOLATION) != (self.violation is not None):
            raise InvalidValue("pass `violation` (the reason) exactly when status is 'violation'")
        object.__setattr__(self, "status", status)


@dataclass(frozen=True, slots=True)
class FinishCall:
    """`record_call_finished`: the call's result, once."""

    call_id: str
    status: CallStatus
    result: Any
    is_error: bool
    duration_ms: int | None = None
    arguments: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", enum_value(CallStatus, self.status, "call status"))


@dataclass(frozen=True, slots=True)
class SetCallStatus:
    """`set_call_status`: approve, deny, start or mark failed, without a result."""

    call_id: str
    status: CallStatus

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", enum_value(CallStatus, self.status, "call status"))


@dataclass(slots=True)
class StepValues:
    """A step as the run loop hands it to `CommitStep`: `StepRecord`'s fields, unchecked (the
    loop builds them itself); JSON fields may be `Encoded`."""

    seq: int
    position_before: Any
    position_after: Any
    allowed: Any
    force: bool
    forced_tool: str | None
    tool_choice: Any
    reply: Any
    decision: str | None
    reason: str | None
    started_at: datetime
    finished_at: datetime | None
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class CommitStep:
    """`commit_step`: the step, its messages, the run moved to `step.position_after`."""

    step: StepRecord | StepValues
    messages: Sequence[Mapping[str, Any] | Encoded] = ()
    status: RunStatus | Unset = UNSET
    stop_reason: str | Unset | None = UNSET
    error: str | Unset | None = UNSET
    first_message_seq: int | None = None  # as `AppendMessages.first_seq`

    def __post_init__(self) -> None:
        if self.status is not UNSET:
            object.__setattr__(self, "status", enum_value(RunStatus, self.status, "run status"))


@dataclass(frozen=True, slots=True)
class UpdateRun:
    """`update_run`: status, stop reason, position, error; token increments; and, with
    `expect_status`, only if the run is in one of those statuses (`RunStateConflict`)."""

    status: RunStatus | Unset = UNSET
    stop_reason: str | Unset | None = UNSET
    position: Any = UNSET
    error: str | Unset | None = UNSET
    add_input_tokens: int = 0
    add_output_tokens: int = 0
    expect_status: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.status is not UNSET:
            object.__setattr__(self, "status", enum_value(RunStatus, self.status, "run status"))
        if self.add_input_tokens < 0 or self.add_output_tokens < 0:
            raise InvalidValue("token counts only grow: add_*_tokens must not be negative")
        if self.expect_status is not None:
            object.__setattr__(self, "expect_status", expected_statuses(self.expect_status))


@dataclass(frozen=True, slots=True)
class KeepLease:
    """The batch applies only while `owner` holds the run's lease, which it renews for
    `seconds` from the transaction's time; otherwise nothing of the batch is written
    (`LeaseLost`). The run loop puts it first in every batch it writes (a fence: a process
    whose lease was taken over cannot write, so it cannot record or start a call)."""

    owner: str
    seconds: float

    def __post_init__(self) -> None:
        require_text("lease owner", self.owner)
        if not self.seconds > 0:
            raise InvalidValue(f"a lease lasts more than 0 seconds, got {self.seconds!r}")


@dataclass(frozen=True, slots=True)
class ReleaseLease:
    """As `KeepLease`, and the lease is given up: the run has no owner afterwards."""

    owner: str

    def __post_init__(self) -> None:
        require_text("lease owner", self.owner)


def expected_statuses(statuses: Any) -> frozenset[str]:
    """Run status values from one status or a collection of them (empty for None)."""
    if statuses is None:
        return frozenset()
    if isinstance(statuses, str):
        statuses = (statuses,)
    return frozenset(enum_value(RunStatus, status, "run status").value for status in statuses)


Op = (
    CreateRun
    | AppendMessages
    | StartCall
    | FinishCall
    | SetCallStatus
    | CommitStep
    | UpdateRun
    | KeepLease
    | ReleaseLease
)


def _missed(statements: Statements, cursor: Any, run_id: str, op: Op) -> Missed:
    """A `Missed` for `op`, with the rows that explain it read in the same transaction."""
    stmt = statements.run_state
    cursor.execute(stmt.sql, stmt.params({"p_run": run_id}))
    found = cursor.fetchone()
    call = None
    if found is not None and isinstance(op, FinishCall | SetCallStatus):
        stmt = statements.call_state
        cursor.execute(stmt.sql, stmt.params({"p_run": run_id, "p_call": op.call_id}))
        row = cursor.fetchone()
        call = None if row is None else (row[0], row[1] is not None)
    if found is None:
        return Missed(run_id, op, call=call)
    return Missed(run_id, op, steps_count=found[0], status=found[1], call=call)


class Missed(Exception):
    """Internal: a conditional statement matched no row, or a constraint failed (`conflict`);
    the store reads the rows afterwards to say which error it is."""

    def __init__(
        self,
        run_id: str,
        op: Op,
        *,
        conflict: BaseException | None = None,
        steps_count: int | None = None,
        status: str | None = None,
        call: tuple[str, bool] | None = None,
    ) -> None:
        super().__init__(run_id, op)
        self.run_id = run_id
        self.op = op
        self.conflict = conflict
        # Read in the failing transaction, before it is undone (None: no such run / call).
        self.steps_count = steps_count
        self.status = status  # the run's
        self.call = call  # (status, finished)


# --- compiled statements --------------------------------------------------------------------


class Encoded:
    """A JSON value stored in more than one place (a reply is both a message and its step's
    record; a position is the run's and its step's): encoded once, when first written.

    Pass it wherever a JSON value goes (a message, a column value). `value` must not change.
    """

    __slots__ = ("text", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        self.text: str | None = None  # the JSON text, once encoded

    def encoded(self) -> str:
        text = self.text
        if text is None:
            text = self.text = json_dumps(self.value)
        return text


def _sqlite_time() -> Callable[[Any], Any]:
    """SQLAlchemy's SQLite DATETIME format (wall time, microseconds always shown), without its
    per-call dict and %-formatting; remembers the last value, since a batch stores the same
    `now` many times (by identity: datetimes are immutable)."""
    last: tuple[Any, Any] = (object(), None)

    def convert(value: Any) -> Any:
        nonlocal last
        seen, text = last
        if value is seen:
            return text
        if value is None:
            return None
        text = value.isoformat(" ", "microseconds")[:26]
        last = (value, text)  # one assignment: threads see a consistent pair
        return text

    return convert


def _sqlite_json(value: Any) -> Any:
    if value is None:
        return None  # SQL NULL (the columns are none_as_null)
    if value.__class__ is Encoded:
        if value.value is None:
            return None
        return value.text or value.encoded()
    return json_dumps(value)


def _same(value: Any) -> Any:
    return value


def _pg_json(processor: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    from psycopg.types.json import Json

    def same(text: str) -> str:
        return text

    def convert(value: Any) -> Any:
        if value.__class__ is Encoded:
            return None if value.value is None else Json(value.encoded(), dumps=same)
        return value if processor is None else processor(value)

    return convert


class _Statement:
    """One statement compiled for a dialect: SQL text, the order its values are given in,
    value converters, and for a SELECT its column names and result converters."""

    __slots__ = ("convert", "keys", "named", "order", "perm", "results", "sql")

    def __init__(
        self,
        statement: ClauseElement,
        statements: Statements,
        keys: Sequence[str] = (),
        order: Sequence[str] = (),
    ) -> None:
        dialect = statements.dialect
        compiled: Any = statement.compile(dialect=dialect, column_keys=list(keys) or None)
        self.sql: str = compiled.string
        # The order callers give values in (`bind`, `ready`): `keys` for an INSERT, else
        # `order` when given (the hot path's row builders), else the names as compiled.
        self.order: tuple[str, ...] = tuple(keys) or tuple(order) or tuple(compiled.binds)
        if set(self.order) != set(compiled.binds):
            raise RuntimeError(f"values {self.order} for a statement of {set(compiled.binds)}")
        positions = compiled.positiontup
        self.named = positions is None  # psycopg's pyformat takes a dict
        perm = () if positions is None else tuple(self.order.index(n) for n in positions)
        self.perm = None if perm == tuple(range(len(self.order))) else perm
        convert = []
        for index, name in enumerate(self.order):
            converter = statements.converter(compiled.binds[name].type)
            if converter is not None:
                convert.append((index, converter))
        self.convert = tuple(convert)
        columns = getattr(statement, "selected_columns", ())
        self.keys: tuple[str, ...] = tuple(column.key for column in columns)
        self.results = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        )

    def bind(self, values: list[Any]) -> Any:
        """The driver's parameters from values in `order` (the list is converted in place)."""
        for index, convert in self.convert:
            values[index] = convert(values[index])
        if self.named:
            return dict(zip(self.order, values, strict=True))
        perm = self.perm
        return values if perm is None else [values[i] for i in perm]

    def params(self, values: Mapping[str, Any]) -> Any:
        """The driver's parameters from values by name."""
        return self.bind([values[name] for name in self.order])

    def ready(self, values: list[Any]) -> Any:
        """The driver's parameters from values in `order` that are converted already (the
        hot path's row builders convert each value themselves: `Statements.json`, ...)."""
        if self.named:
            return dict(zip(self.order, values, strict=True))
        perm = self.perm
        return values if perm is None else [values[i] for i in perm]

    def rows(self, cursor: Any, limit: int | None = None) -> list[dict[str, Any]]:
        """The fetched rows (the first `limit`) as dicts, values converted as the ORM would."""
        keys, results = self.keys, self.results
        return [
            {
                key: value if convert is None or value is None else convert(value)
                for key, convert, value in zip(keys, results, row, strict=True)
            }
            for row in (cursor.fetchall() if limit is None else cursor.fetchmany(limit))
        ]


_RUN = RunRow.__table__  # type: ignore[attr-defined]
_STEP = StepRow.__table__  # type: ignore[attr-defined]
_CALL = ToolCallRow.__table__  # type: ignore[attr-defined]
_MESSAGE = MessageRow.__table__  # type: ignore[attr-defined]
_AGENT = AgentRow.__table__  # type: ignore[attr-defined]


def _p(name: str, column: Any) -> Any:
    """A bound parameter typed like `column` (so its bind processor applies)."""
    return bindparam(name, type_=column.type)


def _in(column: Any, statuses: Sequence[str]) -> Any:
    # Our own enum values (letters and underscores), inlined so one statement fits all rows.
    return column.in_([literal_column(f"'{status}'") for status in statuses])


# The order the hot path gives each INSERT's values in (checked against the tables below).
_RUN_ORDER = (
    "id",
    "agent_id",
    "rules_hash",
    "model",
    "input",
    "options",
    "status",
    "stop_reason",
    "position",
    "error",
    "input_tokens",
    "output_tokens",
    "steps_count",
    "created_at",
    "updated_at",
    "finished_at",
    "owner",
    "lease_renewed_at",
    "lease_expires_at",
)
_CALL_ORDER = (
    "run_id",
    "call_id",
    "step_seq",
    "batch_index",
    "tool",
    "arguments_raw",
    "arguments",
    "status",
    "result",
    "is_error",
    "violation",
    "side_effects",
    "started_at",
    "finished_at",
    "duration_ms",
)
_STEP_ORDER = (
    "run_id",
    "seq",
    "position_before",
    "position_after",
    "allowed",
    "force",
    "forced_tool",
    "tool_choice",
    "reply",
    "decision",
    "reason",
    "started_at",
    "finished_at",
    "input_tokens",
    "output_tokens",
)
_MESSAGE_ORDER = ("run_id", "seq", "role", "content", "step_seq", "created_at")


def _insert(table: Any, order: tuple[str, ...], statements: Statements) -> _Statement:
    columns = {column.key for column in table.columns}
    if set(order) != columns:  # a column added to a table and not to the write path
        raise RuntimeError(f"the write path's {table.name} columns {order} != {columns}")
    return _Statement(insert(table), statements, order)


# The order the hot path's row builders give an UPDATE's values in.
_FINISH_ORDER = ("p_run", "p_call", "p_status", "p_result", "p_is_error", "p_duration", "p_now")


class Statements:
    """The write path's statements for one engine, compiled on first use and kept."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.dialect = dialect = engine.dialect
        self.sqlite = dialect.name == "sqlite"
        dbapi = dialect.loaded_dbapi
        self.integrity_error: type[Exception] = dbapi.IntegrityError
        self.dbapi_error: type[Exception] = dbapi.Error
        self._time = _sqlite_time() if self.sqlite else None
        # Value converters of the hot path's row builders (as `converter` gives per type).
        json_converter = self.converter(_RUN.c.options.type)
        assert json_converter is not None
        self.json: Callable[[Any], Any] = json_converter
        self.time: Callable[[datetime], Any] = self._time or _same
        self.boolean: Callable[[Any], Any] = self.converter(_CALL.c.is_error.type) or _same
        self._cache: dict[Any, _Statement] = {}
        self.insert_message = _insert(_MESSAGE, _MESSAGE_ORDER, self)
        self.insert_call = _insert(_CALL, _CALL_ORDER, self)
        self.insert_step = _insert(_STEP, _STEP_ORDER, self)
        self.insert_run = _insert(_RUN, _RUN_ORDER, self)
        self.last_message = _Statement(
            select(func.max(_MESSAGE.c.seq)).where(_MESSAGE.c.run_id == _p("p_run", _RUN.c.id)),
            self,
        )
        self.run_state = _Statement(
            select(_RUN.c.steps_count, _RUN.c.status).where(_RUN.c.id == _p("p_run", _RUN.c.id)),
            self,
        )
        self.call_state = _Statement(
            select(_CALL.c.status, _CALL.c.finished_at).where(
                _CALL.c.run_id == _p("p_run", _CALL.c.run_id),
                _CALL.c.call_id == _p("p_call", _CALL.c.call_id),
            ),
            self,
        )
        owner = _p("p_owner", _RUN.c.owner)
        fenced = (_RUN.c.id == _p("p_run", _RUN.c.id), _RUN.c.owner == owner)
        self.keep_lease = _Statement(
            update(_RUN)
            .where(*fenced)
            .values(
                lease_renewed_at=_p("p_now", _RUN.c.lease_renewed_at),
                lease_expires_at=_p("p_expires", _RUN.c.lease_expires_at),
            ),
            self,
            order=("p_run", "p_owner", "p_now", "p_expires"),
        )
        self.release_lease = _Statement(
            update(_RUN)
            .where(*fenced)
            .values(owner=null(), lease_renewed_at=null(), lease_expires_at=null()),
            self,
            order=("p_run", "p_owner"),
        )
        self.touch_run = _Statement(
            update(_RUN)
            .where(_RUN.c.id == _p("p_run", _RUN.c.id))
            .values(updated_at=_p("p_now", _RUN.c.updated_at)),
            self,
        )

    def converter(self, type_: Any) -> Callable[[Any], Any] | None:
        """How a value bound to a column of `type_` is handed to the driver: as SQLAlchemy's
        bind processor does, with faster equivalents for JSON (which also takes `Encoded`)
        and SQLite's datetimes."""
        dialect = self.dialect
        processor: Callable[[Any], Any] | None = type_.dialect_impl(dialect).bind_processor(dialect)
        if isinstance(type_, JSON):
            return _sqlite_json if self.sqlite else _pg_json(processor)
        if isinstance(type_, DateTime) and self._time is not None:
            return self._time
        return processor

    def _compiled(
        self,
        key: Any,
        build: Callable[[], ClauseElement],
        order: Callable[[], Sequence[str]] | None = None,
    ) -> _Statement:
        statement = self._cache.get(key)
        if statement is None:
            given = () if order is None else order()
            statement = self._cache[key] = _Statement(build(), self, order=given)
        return statement

    def finish_call(self, status: CallStatus, with_arguments: bool) -> _Statement:
        key = ("finish", status, with_arguments)
        found = self._cache.get(key)
        if found is not None:  # the usual case: no closures to build
            return found

        def build() -> ClauseElement:
            values = {
                "status": _p("p_status", _CALL.c.status),
                "result": _p("p_result", _CALL.c.result),
                "is_error": _p("p_is_error", _CALL.c.is_error),
                "duration_ms": _p("p_duration", _CALL.c.duration_ms),
                "finished_at": _p("p_now", _CALL.c.finished_at),
            }
            if with_arguments:
                values["arguments"] = _p("p_arguments", _CALL.c.arguments)
            return (
                update(_CALL)
                .where(
                    _CALL.c.run_id == _p("p_run", _CALL.c.run_id),
                    _CALL.c.call_id == _p("p_call", _CALL.c.call_id),
                    _CALL.c.finished_at.is_(None),
                    _in(_CALL.c.status, _previous(RESULT_EDGES, status)),
                )
                .values(**values)
            )

        def order() -> Sequence[str]:
            return (*_FINISH_ORDER, "p_arguments") if with_arguments else _FINISH_ORDER

        return self._compiled(key, build, order)

    def set_call_status(self, status: CallStatus) -> _Statement:
        def build() -> ClauseElement:
            return (
                update(_CALL)
                .where(
                    _CALL.c.run_id == _p("p_run", _CALL.c.run_id),
                    _CALL.c.call_id == _p("p_call", _CALL.c.call_id),
                    _CALL.c.finished_at.is_(None),
                    _in(_CALL.c.status, _previous(STATUS_EDGES, status)),
                )
                .values(status=_p("p_status", _CALL.c.status))
            )

        return self._compiled(("status", status), build)

    def update_run(
        self,
        fields: frozenset[str],
        terminal: bool | None,
        step: bool,
        tokens: bool = False,
        expect: frozenset[str] = frozenset(),
    ) -> _Statement:
        """UPDATE run for `fields` (status, stop_reason, position, error). `terminal` says
        whether a new status is terminal (it decides `finished_at`), None when the status is
        unchanged. With `step`, the step commit's counters and its `steps_count = :seq`
        condition; with `tokens`, token increments alone; with `expect`, only a run in one of
        those statuses is updated. Its `order`: run, now, the fields' values (by field name),
        then the token increments and the step's seq where they apply.
        """
        key = ("run", fields, terminal, step, tokens, expect)
        found = self._cache.get(key)
        if found is not None:  # the usual case: no closures to build
            return found

        def build() -> ClauseElement:
            values: dict[str, Any] = {"updated_at": _p("p_now", _RUN.c.updated_at)}
            for name in sorted(fields):
                values[name] = _p(f"p_{name}", _RUN.c[name])
            if terminal is not None:
                # finished_at marks when the run last reached a terminal status; a run set to
                # a non-terminal status is open again. SET expressions see the old values.
                values["finished_at"] = (
                    case(
                        (
                            and_(
                                _RUN.c.status == _p("p_status", _RUN.c.status),
                                _RUN.c.finished_at.is_not(None),
                            ),
                            _RUN.c.finished_at,
                        ),
                        else_=_p("p_now", _RUN.c.finished_at),
                    )
                    if terminal
                    else null()
                )
            conditions = [_RUN.c.id == _p("p_run", _RUN.c.id)]
            if step or tokens:
                values["input_tokens"] = _RUN.c.input_tokens + _p("p_in", _RUN.c.input_tokens)
                values["output_tokens"] = _RUN.c.output_tokens + _p("p_out", _RUN.c.output_tokens)
            if step:
                values["steps_count"] = _RUN.c.steps_count + literal_column("1")
                conditions.append(_RUN.c.steps_count == _p("p_seq", _RUN.c.steps_count))
            if expect:
                conditions.append(_in(_RUN.c.status, sorted(expect)))
            return update(_RUN).where(*conditions).values(**values)

        def order() -> Sequence[str]:
            names = ["p_run", "p_now", *(f"p_{name}" for name in sorted(fields))]
            if step or tokens:
                names += ("p_in", "p_out")
            if step:
                names.append("p_seq")
            return names

        return self._compiled(key, build, order)

    # Reads in the write's own transaction, for the methods that return what they wrote.

    @property
    def read_run(self) -> _Statement:
        return self._compiled(
            "read_run",
            lambda: (
                select(*_RUN.columns, _AGENT.c.name.label("agent_name"))
                .join(_AGENT, _AGENT.c.id == _RUN.c.agent_id)
                .where(_RUN.c.id == _p("p_run", _RUN.c.id))
            ),
        )

    @property
    def read_call(self) -> _Statement:
        return self._compiled(
            "read_call",
            lambda: select(*_CALL.columns).where(
                _CALL.c.run_id == _p("p_run", _CALL.c.run_id),
                _CALL.c.call_id == _p("p_call", _CALL.c.call_id),
            ),
        )

    @property
    def read_last_messages(self) -> _Statement:
        return self._compiled(
            "read_last_messages",
            lambda: (
                select(*_MESSAGE.columns)
                .where(_MESSAGE.c.run_id == _p("p_run", _MESSAGE.c.run_id))
                .order_by(_MESSAGE.c.seq.desc())
            ),
        )


# --- applying operations --------------------------------------------------------------------
# A run's operations are first turned into a plan (each statement with its driver parameters),
# then executed: one run at a time (`apply`), or the plans of many runs side by side, each
# statement once for all of them (`apply_many`, executemany).


class _Exec(NamedTuple):
    """One planned statement: `params` (a list of parameter rows when `many`); `op` is what
    it does, and with `check` it must match exactly one row (per parameter row)."""

    stmt: _Statement
    params: Any
    op: Any
    check: bool
    many: bool = False


class _NeedsRead(Exception):
    """Internal: the plan needs a read (store-numbered messages); not for `apply_many`."""


def _numbered_by_store(ops: Sequence[Op]) -> bool:
    """Whether a message must be numbered after the run's last stored one (a read)."""
    known = False  # the next number is known from an earlier operation of the batch
    for op in ops:
        if isinstance(op, CreateRun):
            known = True
        elif isinstance(op, AppendMessages):
            if op.first_seq is not None:
                known = True
            elif not known:  # even with no messages: the run must exist
                return True
        elif isinstance(op, CommitStep):
            if op.first_message_seq is not None:
                known = True
            elif op.messages and not known:
                return True
    return False


def apply(
    statements: Statements, cursor: Any, run_id: str, ops: Sequence[Op], now: datetime
) -> None:
    """Execute one run's operations on an open transaction (raises `Missed`, driver errors)."""
    if not ops:
        return
    next_message: list[int] = []  # the run's next message number, read once per batch
    if _numbered_by_store(ops):
        # The store numbers the messages: take the run's row lock first (PostgreSQL; SQLite's
        # write lock is the database's), so two writers of a run cannot read the same max.
        touch = statements.touch_run
        cursor.execute(touch.sql, touch.params({"p_run": run_id, "p_now": now}))
        if cursor.rowcount != 1:
            raise _missed(statements, cursor, run_id, ops[0])
        last = statements.last_message
        cursor.execute(last.sql, last.params({"p_run": run_id}))
        found = cursor.fetchone()[0]
        next_message.append(0 if found is None else found + 1)
    integrity_error = statements.integrity_error
    stamp = statements.time(now)  # the transaction's time as stored, converted once
    for stmt, params, op, check, many in _plan(statements, run_id, ops, now, stamp, next_message):
        try:
            if many:
                cursor.executemany(stmt.sql, params)
            else:
                cursor.execute(stmt.sql, params)
        except integrity_error as exc:
            raise Missed(run_id, op, conflict=exc) from exc
        if check and cursor.rowcount != 1:
            raise _missed(statements, cursor, run_id, op)


def apply_many(
    statements: Statements,
    cursor: Any,
    batches: Sequence[tuple[str, Sequence[Op]]],
    now: datetime,
) -> bool | None:
    """Execute many runs' operations side by side: the k-th statement of every run's plan
    together, one executemany per statement (each run's own order is kept; runs touch
    disjoint rows). None: not possible for these batches (nothing was executed); False: a
    statement failed or matched the wrong number of rows (the caller rolls back and applies
    the batches one by one, to find which); True: all applied.
    """
    if len({run_id for run_id, _ in batches}) != len(batches):
        return None  # one run twice: its batches must run in order
    plans = []
    stamp = statements.time(now)  # the transaction's time as stored, converted once
    for run_id, ops in batches:
        if not ops:
            continue
        if _numbered_by_store(ops):
            return None
        try:
            plans.append(_plan(statements, run_id, ops, now, stamp, []))
        except (_NeedsRead, InvalidValue):
            return None
    integrity_error = statements.integrity_error
    for depth in range(max((len(plan) for plan in plans), default=0)):
        groups: dict[int, tuple[_Exec, list[Any]]] = {}
        for plan in plans:
            if depth < len(plan):
                planned = plan[depth]
                group = groups.get(id(planned.stmt))
                if group is None:
                    group = groups[id(planned.stmt)] = (planned, [])
                if planned.many:
                    group[1].extend(planned.params)
                else:
                    group[1].append(planned.params)
        for planned, rows in groups.values():
            try:
                if len(rows) == 1:
                    cursor.execute(planned.stmt.sql, rows[0])
                else:
                    cursor.executemany(planned.stmt.sql, rows)
            except integrity_error:
                return False
            if planned.check and cursor.rowcount != len(rows):
                return False
    return True


def _plan(
    statements: Statements,
    run_id: str,
    ops: Sequence[Op],
    now: datetime,
    stamp: Any,
    next_message: list[int],
) -> list[_Exec]:
    """The statements for one run's operations, in order (values converted, so a value that
    is not JSON fails here, before anything runs). `stamp` is `now` as the driver takes it.

    The loop's operations (messages, calls, steps) have row builders of their own that
    convert each value as its column's converter would (`Statements.json`, `.time`,
    `.boolean`), rather than a generic pass over every value; the others go through
    `_Statement.params`.
    """
    plan: list[_Exec] = []
    count = len(ops)
    index = 0
    while index < count:
        op = ops[index]
        index += 1
        if isinstance(op, AppendMessages):
            if op.first_seq is not None:
                next_message[:] = [op.first_seq]
            _add_messages(
                plan, statements, run_id, op, op.messages, op.step_seq, stamp, next_message
            )
        elif isinstance(op, StartCall):
            # A call started and finished in one batch (an idempotent tool, a violation) is
            # inserted finished: one statement, the same row.
            finish = ops[index] if index < count else None
            if (
                isinstance(finish, FinishCall)
                and finish.call_id == op.call_id
                and finish.status in RESULT_EDGES[op.status]
            ):
                index += 1
            else:
                finish = None
            plan.append(_start_call(statements, run_id, op, stamp, finish))
        elif isinstance(op, FinishCall):
            plan.append(_finish_call(statements, run_id, op, stamp))
        elif isinstance(op, CommitStep):
            _commit_step(plan, statements, run_id, op, now, stamp, next_message)
        elif isinstance(op, SetCallStatus):
            stmt = statements.set_call_status(op.status)
            values = {"p_run": run_id, "p_call": op.call_id, "p_status": op.status.value}
            plan.append(_Exec(stmt, stmt.params(values), op, True))
        elif isinstance(op, UpdateRun):
            plan.append(_update_run(statements, run_id, op, now))
        elif isinstance(op, KeepLease):
            stmt = statements.keep_lease
            expires = statements.time(now + timedelta(seconds=op.seconds))
            plan.append(_Exec(stmt, stmt.ready([run_id, op.owner, stamp, expires]), op, True))
        elif isinstance(op, ReleaseLease):
            stmt = statements.release_lease
            plan.append(_Exec(stmt, stmt.ready([run_id, op.owner]), op, True))
        elif isinstance(op, CreateRun):
            plan.append(_create_run(statements, op, now))
            next_message[:] = [0]
        else:  # pragma: no cover - the Op union is closed
            raise TypeError(f"not a store operation: {op!r}")
    return plan


def _create_run(statements: Statements, op: CreateRun, now: datetime) -> _Exec:
    stmt = statements.insert_run
    row = [
        op.run_id,
        op.agent_id,
        op.rules_hash,
        op.model,
        op.input,
        dict(op.options),
        RunStatus.RUNNING.value,
        None,
        op.position,
        None,
        0,
        0,
        0,
        now,
        now,
        None,
        op.owner,
        None if op.owner is None else now,
        None if op.lease_seconds is None else now + timedelta(seconds=op.lease_seconds),
    ]
    return _Exec(stmt, stmt.bind(row), op, False)


def _start_call(
    statements: Statements,
    run_id: str,
    op: StartCall,
    stamp: Any,
    finish: FinishCall | None,
) -> _Exec:
    stmt = statements.insert_call
    json, boolean = statements.json, statements.boolean
    side_effects = op.side_effects
    if side_effects.__class__ is not bool:
        side_effects = boolean(side_effects)
    # In `_CALL_ORDER`, values converted.
    if finish is None:
        row = [
            run_id,
            op.call_id,
            op.step_seq,
            op.batch_index,
            op.tool,
            op.arguments_raw,
            json(op.arguments),
            op.status.value,
            None,
            False,
            op.violation,
            side_effects,
            stamp,
            None,
            None,
        ]
    else:
        is_error = finish.is_error
        row = [
            run_id,
            op.call_id,
            op.step_seq,
            op.batch_index,
            op.tool,
            op.arguments_raw,
            json(op.arguments if finish.arguments is None else finish.arguments),
            finish.status.value,
            json(finish.result),
            is_error if is_error.__class__ is bool else boolean(is_error),
            op.violation,
            side_effects,
            stamp,
            stamp,
            finish.duration_ms,
        ]
    return _Exec(stmt, stmt.ready(row), op, False)


def _finish_call(statements: Statements, run_id: str, op: FinishCall, stamp: Any) -> _Exec:
    with_arguments = op.arguments is not None
    stmt = statements.finish_call(op.status, with_arguments)
    json = statements.json
    is_error = op.is_error
    # In `_FINISH_ORDER`, values converted.
    row = [
        run_id,
        op.call_id,
        op.status.value,
        json(op.result),
        is_error if is_error.__class__ is bool else statements.boolean(is_error),
        op.duration_ms,
        stamp,
    ]
    if with_arguments:
        row.append(json(op.arguments))
    return _Exec(stmt, stmt.ready(row), op, True)


def _run_values(
    run_id: str, op: CommitStep | UpdateRun, now: datetime
) -> tuple[frozenset[str], bool | None, dict[str, Any]]:
    values: dict[str, Any] = {"p_run": run_id, "p_now": now}
    fields = []
    terminal: bool | None = None
    if op.status is not UNSET:
        fields.append("status")
        values["p_status"] = op.status.value
        terminal = op.status.is_terminal
    if op.stop_reason is not UNSET:
        fields.append("stop_reason")
        values["p_stop_reason"] = op.stop_reason
    if op.error is not UNSET:
        fields.append("error")
        values["p_error"] = op.error
    return frozenset(fields), terminal, values


def _update_run(statements: Statements, run_id: str, op: UpdateRun, now: datetime) -> _Exec:
    fields, terminal, values = _run_values(run_id, op, now)
    if op.position is not UNSET:
        fields = fields | _POSITION
        values["p_position"] = op.position
    tokens = bool(op.add_input_tokens or op.add_output_tokens)
    if tokens:
        values["p_in"] = op.add_input_tokens
        values["p_out"] = op.add_output_tokens
    stmt = statements.update_run(
        fields, terminal, step=False, tokens=tokens, expect=op.expect_status or frozenset()
    )
    return _Exec(stmt, stmt.params(values), op, True)


_POSITION = frozenset({"position"})


def _commit_step(
    plan: list[_Exec],
    statements: Statements,
    run_id: str,
    op: CommitStep,
    now: datetime,
    stamp: Any,
    next_message: list[int],
) -> None:
    step = op.step
    json, time = statements.json, statements.time
    if op.status is UNSET and op.stop_reason is UNSET and op.error is UNSET:
        # Every step but a run's last: the position and counters alone, in the statement's
        # `order` (run, now, position, tokens, seq), converted.
        stmt = statements.update_run(_POSITION, None, step=True)
        params = stmt.ready(
            [
                run_id,
                stamp,
                json(step.position_after),
                step.input_tokens,
                step.output_tokens,
                step.seq,
            ]
        )
    else:
        fields, terminal, values = _run_values(run_id, op, now)
        values["p_position"] = step.position_after
        values["p_seq"] = step.seq
        values["p_in"] = step.input_tokens
        values["p_out"] = step.output_tokens
        stmt = statements.update_run(fields | _POSITION, terminal, step=True)
        params = stmt.params(values)
    plan.append(_Exec(stmt, params, op, True))
    insert_step = statements.insert_step
    allowed = step.allowed
    force = step.force
    finished_at = step.finished_at
    # In `_STEP_ORDER`, values converted.
    row = [
        run_id,
        step.seq,
        json(step.position_before),
        json(step.position_after),
        json(allowed if allowed.__class__ is Encoded else list(allowed)),
        force if force.__class__ is bool else statements.boolean(force),
        step.forced_tool,
        json(step.tool_choice),
        json(step.reply),
        step.decision,
        step.reason,
        time(_utc(step.started_at)),
        stamp if finished_at is None else time(_utc(finished_at)),
        step.input_tokens,
        step.output_tokens,
    ]
    plan.append(_Exec(insert_step, insert_step.ready(row), op, False))
    if op.first_message_seq is not None:
        next_message[:] = [op.first_message_seq]
    _add_messages(plan, statements, run_id, op, op.messages, step.seq, stamp, next_message)


def _add_messages(
    plan: list[_Exec],
    statements: Statements,
    run_id: str,
    op: Op,
    messages: Sequence[Mapping[str, Any] | Encoded],
    step_seq: int | None,
    stamp: Any,
    next_message: list[int],
) -> None:
    if not messages:
        return
    if not next_message:
        raise _NeedsRead
    seq = next_message[0]
    stmt = statements.insert_message
    json = statements.json
    rows = []
    content: Any
    for offset, message in enumerate(messages):
        cls = message.__class__
        if cls is Encoded:
            content = message
            value = message.value  # type: ignore[union-attr]
            mapping = value.__class__ is dict or isinstance(value, Mapping)
            role = value.get("role") if mapping else None
        elif cls is dict or isinstance(message, Mapping):
            # A dict is encoded as it is; another mapping as a dict (the encoder's type).
            content = message if cls is dict else dict(message)  # type: ignore[arg-type]
            role = message.get("role")  # type: ignore[union-attr]
        else:
            role = None
        if not isinstance(role, str) or not role:
            raise InvalidValue(
                f"message {offset} for run {run_id} must be a dict with a non-empty 'role'"
            )
        # In `_MESSAGE_ORDER`, values converted.
        rows.append(stmt.ready([run_id, seq + offset, role, json(content), step_seq, stamp]))
    if len(rows) == 1:
        plan.append(_Exec(stmt, rows[0], op, False))
    else:
        plan.append(_Exec(stmt, rows, op, False, many=True))
    next_message[0] = seq + len(rows)
