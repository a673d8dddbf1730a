"""Persistence of agents and runs: every step committed, so runs can be inspected and resumed.

    store = open_store()                       # $TOOLFSM_DB, else the per-user SQLite file
    agent = store.save_agent("triage", rules_text, "rules/triage.yaml")
    run = store.create_run(agent.id, model="openai:gpt-4o", input="...", position=start)
    store.commit_step(run.id, StepRecord(...), messages=[...])   # one atomic transaction
    snapshot = store.load_run(run.id)         # everything needed to resume

The store imports nothing else from the engine: it keeps the JSON values the run loop hands it.
"""

from engine.store.db import resolve_db_url
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
from engine.store.records import (
    AgentRecord,
    CallStatus,
    MessageRecord,
    RunRecord,
    RunSnapshot,
    RunStatus,
    StepRecord,
    ToolCallRecord,
)
from engine.store.run_store import (
    LEASE_SECONDS,
    RunStore,
    new_owner_id,
    new_run_id,
    open_store,
    rules_hash,
)

__all__ = [
    "LEASE_SECONDS",
    "AgentNotFound",
    "AgentRecord",
    "AmbiguousRunId",
    "CallNotFound",
    "CallStateConflict",
    "CallStatus",
    "DuplicateCall",
    "DuplicateStep",
    "InvalidValue",
    "LeaseLost",
    "MessageRecord",
    "RunClaimed",
    "RunNotFound",
    "RunRecord",
    "RunSnapshot",
    "RunStateConflict",
    "RunStatus",
    "RunStore",
    "StepOutOfOrder",
    "StepRecord",
    "StoreConflict",
    "StoreError",
    "StoreUnavailable",
    "ToolCallRecord",
    "new_owner_id",
    "new_run_id",
    "open_store",
    "resolve_db_url",
    "rules_hash",
]
