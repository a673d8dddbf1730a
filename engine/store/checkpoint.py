"""SQLite WAL checkpoints on a thread of their own, off the run loop's write path.

In WAL mode a commit appends the pages it changed to the -wal file; a checkpoint copies them
back into the database file and, with `synchronous=NORMAL`, fsyncs both. By default SQLite runs
one inside whichever commit takes the log past 1,000 pages, so every few dozen steps one step
pays milliseconds for it, and with a `GroupCommit` the event loop of every run stalls meanwhile.

The store's write connection leaves that work to a `Checkpointer` instead: a daemon thread that,
shortly after writes, runs a PASSIVE checkpoint on a connection of its own. PASSIVE never waits
for (or blocks) the writer or readers, and SQLite releases the GIL while it works, so the loop
goes on stepping runs. The write connection keeps a much higher automatic threshold
(`BACKSTOP_PAGES`) so that the log stays bounded even if the thread falls behind or has stopped.
Other connections (readers, other processes) keep SQLite's default.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Final

__all__ = ["BACKSTOP_PAGES", "Checkpointer"]

# The write connection's own automatic checkpoint threshold, in pages (4 KiB each): ten times
# SQLite's default, reached only if the checkpoint thread cannot keep up.
BACKSTOP_PAGES: Final = 10_000


class Checkpointer:
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` on its own thread after writes.

    `written()` is what the writer calls after each commit: it only sets a flag (and starts
    the thread the first time). The thread looks at the flag every `interval` seconds, so the
    log grows by at most what is written meanwhile before it is copied back. Not much more
    often: a checkpoint copies each page once however many commits rewrote it (the run row,
    the tables' last pages), so rarer checkpoints copy less.
    """

    def __init__(self, connect: Callable[[], Any], *, interval: float = 0.25) -> None:
        self._connect = connect  # a DB-API connection to the same database, for the thread
        self.interval = interval
        self._dirty = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0  # run so far (for tests and diagnostics)
        self.error: BaseException | None = None  # why the thread stopped early, if it did

    def written(self) -> None:
        """Note that the log has grown; a checkpoint follows within `interval` seconds."""
        self._dirty = True
        if self._thread is None:
            self._start()

    def close(self) -> None:
        """Stop the thread (after the checkpoint in progress, if any)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            thread = threading.Thread(target=self._run, name="toolfsm-wal-checkpoint", daemon=True)
            self._thread = thread
        thread.start()

    def _run(self) -> None:
        try:
            connection = self._connect()
        except Exception as exc:  # the writer's backstop threshold takes over
            self.error = exc
            return
        try:
            while not self._stop.wait(self.interval):
                if self._dirty:
                    self._dirty = False
                    cursor = connection.cursor()
                    try:
                        cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
                        cursor.fetchall()
                    finally:
                        cursor.close()
                    self.checkpoints += 1
        except Exception as exc:  # e.g. the database file was removed; the backstop remains
            self.error = exc
        finally:
            with suppress(Exception):
                connection.close()
