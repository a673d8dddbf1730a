"""The `Store` protocol the runtime and CLI depend on, the `Append` they write, and `NullStore`.

One write API: `append` takes the events of many runs (one `Append` each) and commits them in
one transaction; every append is fenced by its run's lease (`owner`), so a process whose
lease was taken over writes nothing. The rest is the lease (`claim_run`, `renew_lease`,
`release_run`) and the reads the CLI and a resume need.

This module imports neither SQLAlchemy nor SQLModel: a run without a store (`NullStore`)
never loads them. `engine.store.open_store` builds the SQL store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from engine.store.errors import AgentNotFound, RunNotFound, StoreError
from engine.store.records import AgentRecord, RunRecord, RunSnapshot, utcnow
from engine.store.status import StatusFilter

if TYPE_CHECKING:
    import os

    from engine.store.events import Event

__all__ = ["LEASE_SECONDS", "Append", "NullStore", "Store"]

# How long a run's lease lasts without renewal. The owner renews it every third of this while
# it runs (the heartbeat), and before a tool runs when more than half of it has passed, so
# only a dead or frozen process lets it lapse; a lapsed lease can be taken over.
LEASE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Append:
    """Events for one run, written only while `owner` holds its lease.

    An event is a model of `engine.store.events` or its draft: the same fields in a dict,
    `kind` and `version` included (the run loop's hot path: encoded as they are, with no
    validation pass; every read validates them). `lease_seconds` renews the lease (from
    the transaction's time; for a `run_created` event, the new run's first lease);
    `release` gives it up after the events.

    `seq` is the number of the first event when the writer knows it: the lease holder does
    (a run's journal counts from the run's creation, or from `RunSnapshot.next_event` on a
    resume), since nobody else appends while it holds the lease. The store then numbers the
    events from it instead of looking the run's last event up (about 10 µs of SQLite's
    work an append). A wrong number cannot overwrite: the pair (run, number) is unique, so it
    is a `StoreConflict`. None: the store numbers them."""

    run_id: str
    owner: str
    events: Sequence[Event | dict[str, Any]]
    lease_seconds: float | None = None
    release: bool = False
    seq: int | None = None


@runtime_checkable
class Store(Protocol):
    """What the run loop, resume, approval and the CLI need of a store."""

    @property
    def url(self) -> str:
        """Where the store keeps its runs (password masked)."""
        ...

    def close(self) -> None: ...

    def save_agent(
        self, name: str, rules_text: str, rules_path: str | os.PathLike[str] | None = None
    ) -> AgentRecord:
        """Store an agent's rule file; the existing record for the same name and text."""
        ...

    def get_agent(self, agent_id: int) -> AgentRecord: ...

    def append(self, appends: Sequence[Append]) -> list[StoreError | None]:
        """Commit the appends in one transaction: one entry per append, None when it is
        committed, else the error that undid it alone (`LeaseLost`, ...). An error of the
        transaction itself is raised, and nothing is committed."""
        ...

    def claim_run(self, run_id: str, owner: str, *, seconds: float = LEASE_SECONDS) -> RunRecord:
        """Make `owner` the one process that writes the run (`RunClaimed` if another live
        one holds it)."""
        ...

    def renew_lease(self, run_id: str, owner: str, *, seconds: float = LEASE_SECONDS) -> None:
        """Extend `owner`'s lease by `seconds` from now (`LeaseLost` if it is not held)."""
        ...

    def release_run(self, run_id: str, owner: str) -> None:
        """Give `owner`'s lease up (`LeaseLost` if it is not held)."""
        ...

    def get_run(self, run_id: str) -> RunRecord: ...

    def find_run(self, prefix: str) -> RunRecord:
        """The one run whose id starts with `prefix` (case-insensitive)."""
        ...

    def list_runs(
        self,
        *,
        status: StatusFilter = None,
        agent: str | None = None,
        limit: int = 50,
        parent: str | None = None,
    ) -> list[RunRecord]:
        """Runs newest first, optionally only those in `status`, of agent `agent`, or
        called by run `parent` (its callees' runs)."""
        ...

    def load_run(self, run_id: str) -> RunSnapshot:
        """The run with its agent, steps, calls and messages, folded from one snapshot."""
        ...


class NullStore:
    """A store that keeps nothing: a run without a store appends here, and reads find no
    run. Holding a lease always succeeds (there is nobody to share the run with)."""

    url = "(no store)"

    def close(self) -> None:
        pass

    def save_agent(
        self, name: str, rules_text: str, rules_path: str | os.PathLike[str] | None = None
    ) -> AgentRecord:
        from engine.store.ids import rules_hash

        path = None if rules_path is None else str(rules_path)
        return AgentRecord(
            id=0,
            name=name,
            rules_text=rules_text,
            rules_hash=rules_hash(rules_text),
            rules_path=path,
            created_at=utcnow(),
        )

    def get_agent(self, agent_id: int) -> AgentRecord:
        raise AgentNotFound(agent_id)

    def append(self, appends: Sequence[Append]) -> list[StoreError | None]:
        return [None] * len(appends)

    def claim_run(self, run_id: str, owner: str, *, seconds: float = LEASE_SECONDS) -> RunRecord:
        raise RunNotFound(run_id)

    def renew_lease(self, run_id: str, owner: str, *, seconds: float = LEASE_SECONDS) -> None:
        pass

    def release_run(self, run_id: str, owner: str) -> None:
        pass

    def get_run(self, run_id: str) -> RunRecord:
        raise RunNotFound(run_id)

    def find_run(self, prefix: str) -> RunRecord:
        raise RunNotFound(prefix, prefix=True)

    def list_runs(self, **filters: Any) -> list[RunRecord]:
        return []  # whatever the filters

    def load_run(self, run_id: str) -> RunSnapshot:
        raise RunNotFound(run_id)
