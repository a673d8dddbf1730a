"""Run the real `toolfsm` CLI against a throwaway SQLite store: in this process by default
(tests/_inprocess.py: a fresh process's state, without its start-up), in a subprocess with
`process=True`."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.store import open_store
from tests._inprocess import toolfsm as run_toolfsm

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Cli:
    """`toolfsm` as `python -m engine`, run from the repository root with TOOLFSM_DB set."""

    db: Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        # Wide and colourless, so lines are compared as a user would read them.
        env.update(TOOLFSM_DB=str(self.db), COLUMNS="200", NO_COLOR="1", TERM="dumb")
        return env

    def __call__(
        self, *args: str, check: int | None = 0, process: bool = False
    ) -> subprocess.CompletedProcess[str]:
        proc = run_toolfsm(args, env=self.env(), cwd=REPO, process=process)
        if check is not None:
            assert proc.returncode == check, (
                f"toolfsm {' '.join(args)} exited {proc.returncode}, expected {check}\n"
                f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
            )
        return proc

    def last_run(self) -> Any:
        """The newest run in the store, loaded whole (a `RunSnapshot`)."""
        store = open_store(str(self.db))
        try:
            runs = store.list_runs(limit=1)
            assert runs, "no run was stored"
            return store.load_run(runs[0].id)
        finally:
            store.close()


def calls(snapshot: Any) -> list[tuple[int, str, str]]:
    """(step, tool, status) of every call, in order."""
    return [(c.step_seq, c.tool, str(c.status)) for c in snapshot.calls]


def notices(snapshot: Any) -> list[tuple[int | None, str]]:
    """Messages the loop sent the model after a step (role user, tied to a step)."""
    return [
        (m.step_seq, str(m.content.get("text")))
        for m in snapshot.messages
        if m.role == "user" and m.step_seq is not None
    ]
