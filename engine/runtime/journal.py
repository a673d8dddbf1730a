"""A run's store writes, buffered between durability points and group-committed across runs.

The loop does not write each event on its own: it adds operations (`engine.store.writes`) to
the run's `Journal` and flushes it, as one transaction, only where durability matters:

- before a tool with side effects runs (its "started" record must be on disk first), and
  before any tool runs while a side-effect call's result is still buffered;
- at the end of every step (`CommitStep`), before the next model call;
- when the run stops or pauses, and when its task is cancelled.

Every batch is fenced by the run's lease (`KeepLease` first in it, or `ReleaseLease` last when
the run stops): a process whose lease was taken over writes nothing more, so it cannot record
or start a call; and every flush renews the lease. While the run waits (a model call, a slow
tool) a heartbeat renews it every third of its length.

So a step whose calls are idempotent costs one transaction, a step with one side-effect call
two. What stays in the buffer until the step commit (the reply, the records of idempotent
calls and of violations) is lost with the process; a resume then asks the model again and
re-runs the idempotent calls, which is what it does for an interrupted idempotent call anyway.

`GroupCommit` collects the flushes that all runs of one event loop make during one loop
iteration and commits them in a single transaction (`RunStore.write_many`); every run still
waits for its own flush to be committed before it goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the store (SQLAlchemy) is imported only when a run has a store
    from engine.store.writes import KeepLease, Op

__all__ = ["GroupCommit", "Journal"]


class GroupCommit:
    """Commits the batches handed to `write` during one event-loop iteration together.

    Runs on the event loop's thread: the commit blocks the loop for one transaction, as a
    direct store call would, but one transaction now carries the steps of every run that
    reached a durability point in that iteration.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self._pending: list[tuple[str, Sequence[Op], asyncio.Future[None]]] = []
        self._scheduled = False
        self.transactions = 0  # commits made (for benchmarks and tests)
        self.batches = 0  # run batches committed in them

    async def write(self, run_id: str, ops: Sequence[Op]) -> None:
        """Commit `ops` for `run_id`; returns once they are committed (or raises why not)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((run_id, ops, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._commit)
        await future

    def _commit(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        try:
            errors = self.store.write_many([(run_id, ops) for run_id, ops, _ in pending])
        except Exception as exc:
            for _, _, future in pending:
                if not future.done():
                    future.set_exception(exc)
            return
        self.transactions += 1
        self.batches += len(pending)
        for (_, _, future), error in zip(pending, errors, strict=True):
            if future.done():  # its run was cancelled meanwhile; the write stands
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


class Journal:
    """One run's operations not yet committed, and how to commit them."""

    __slots__ = ("_beat", "_group", "fresh_until", "lease", "ops", "run_id", "store", "urgent")

    def __init__(
        self,
        store: Any,
        run_id: str,
        group: GroupCommit | None = None,
        lease: KeepLease | None = None,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self._group = group
        self.ops: list[Op] = []
        # True while the buffer holds something a crash must not lose before another tool
        # runs: the result of a call with side effects.
        self.urgent = False
        # The lease every batch is fenced by and renews (None: not held, e.g. released).
        self.lease = lease
        # Until when (time.monotonic) the lease is known to be held: renewed by a write
        # that started before this minus its length.
        self.fresh_until = time.monotonic() + lease.seconds if lease is not None else 0.0
        self._beat: asyncio.TimerHandle | None = None

    def add(self, op: Op) -> None:
        self.ops.append(op)

    def _take(self) -> tuple[list[Op], float]:
        ops, self.ops = self.ops, []
        self.urgent = False
        lease = self.lease
        if lease is None:
            return ops, 0.0
        ops.insert(0, lease)
        return ops, time.monotonic() + lease.seconds

    async def flush(self, *, renew: bool = False) -> None:
        """Commit the buffer (one transaction, possibly shared with other runs); with
        `renew`, renew the lease even when nothing is buffered."""
        if not self.ops and not (renew and self.lease is not None):
            return
        ops, fresh = self._take()
        if self._group is None:
            self.store.write(self.run_id, ops)
        else:
            await self._group.write(self.run_id, ops)
        self.fresh_until = max(self.fresh_until, fresh)

    def flush_now(self) -> None:
        """Commit the buffer at once, on this thread (for a task being cancelled)."""
        if self.ops:
            ops, fresh = self._take()
            self.store.write(self.run_id, ops)
            self.fresh_until = max(self.fresh_until, fresh)

    def stale(self) -> bool:
        """Whether the lease must be renewed before a tool runs: more than half of it has
        passed since it was last confirmed (a heartbeat that could not run, e.g. while a
        blocking tool held the event loop)."""
        lease = self.lease
        return lease is not None and time.monotonic() > self.fresh_until - lease.seconds / 2

    # -- the heartbeat -----------------------------------------------------------------

    def start_heartbeat(self) -> None:
        """Renew the lease every third of its length until `stop_heartbeat` (or release)."""
        if self.lease is not None:
            loop = asyncio.get_running_loop()
            self._beat = loop.call_later(self.lease.seconds / 3, self._heartbeat)

    def stop_heartbeat(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None

    def _heartbeat(self) -> None:
        lease = self.lease
        if lease is None:
            self._beat = None
            return
        now = time.monotonic()
        # A write in the last third renewed it already.
        if now > self.fresh_until - lease.seconds * 2 / 3:
            try:
                self.store.write(self.run_id, [lease])
            except Exception:
                # Lost, or the store is unreachable: the next flush (fenced) says which and
                # stops the run; the heartbeat keeps trying meanwhile.
                pass
            else:
                self.fresh_until = max(self.fresh_until, now + lease.seconds)
        loop = asyncio.get_running_loop()
        self._beat = loop.call_later(lease.seconds / 3, self._heartbeat)
