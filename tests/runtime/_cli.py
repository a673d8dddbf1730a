"""`toolfsm` (in this process, as tests/_inprocess.py runs it; in a subprocess with
`process=True`), in a work folder holding an agent, its tools, a ledger and the
SQLite store (tests/runtime/test_durability.py's payments agent unless told otherwise).

The tools append `name:arg` to the ledger before they do anything, so the ledger is the
ground truth of what ran (`BLOCK_AT=name:arg` makes that call hang, see test_durability).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from engine.store import open_store
from tests._inprocess import toolfsm as run_toolfsm

__all__ = [
    "copy_workdir",
    "env_for",
    "hinted_commands",
    "ledger",
    "make_workdir",
    "only_run",
    "run_and_kill",
    "toolfsm",
]


def make_workdir(path: Path, agent: str, tools: str, script: Any = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "agent.yaml").write_text(agent)
    (path / "tools.py").write_text(tools)
    (path / "ledger").write_text("")
    if script is not None:
        import json

        (path / "script.yaml").write_text(json.dumps({"replies": script}))
    return path


def env_for(workdir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    for name in ("BLOCK_AT", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        env.pop(name, None)
    env.update(
        LEDGER=str(workdir / "ledger"),
        BLOCKED=str(workdir / "blocked"),
        TOOLFSM_DB=f"sqlite:///{workdir / 'runs.db'}",
        COLUMNS="200",
        NO_COLOR="1",
        TERM="dumb",
    )
    env.update(extra)
    return env


def toolfsm(
    workdir: Path,
    *args: str,
    code: int | None = 0,
    env: dict[str, str] | None = None,
    process: bool = False,
) -> subprocess.CompletedProcess[str]:
    proc = run_toolfsm(args, env=env or env_for(workdir), cwd=workdir, process=process)
    if code is not None:
        assert proc.returncode == code, (
            f"toolfsm {' '.join(args)} exited {proc.returncode}, expected {code}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc


def ledger(workdir: Path) -> list[str]:
    return (workdir / "ledger").read_text().splitlines()


def only_run(workdir: Path) -> Any:
    with open_store(env_for(workdir)["TOOLFSM_DB"]) as store:
        (run,) = store.list_runs()
        return store.load_run(run.id)


# A hint line as run, resume, approve, deny and runs show print them: "WHAT:  toolfsm ...".
_HINT = re.compile(r"^(approve|deny|retry|give up|resume|details):\s+toolfsm (.+)$", re.MULTILINE)
# What would make a pasted hint line more than one command (or redirect its output).
_SHELL_OPERATORS = re.compile(r"[|;&<>`$]")


def hinted_commands(output: str) -> list[tuple[str, ...]]:
    """The commands hint lines name, as argument lists (`TEXT` is a placeholder for text).
    A hint is pasted into a shell as it stands, so it must be exactly one command."""
    commands: list[tuple[str, ...]] = []
    for match in _HINT.finditer(output):
        line = match.group(2)
        assert not _SHELL_OPERATORS.search(line), f"a hint that is not one command: {line}"
        commands.append(tuple("a reason" if w == "TEXT" else w for w in shlex.split(line)))
    return commands


def copy_workdir(workdir: Path, to: Path) -> Path:
    """A copy of the work folder (store files included) to follow one branch of hints in."""
    to.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(workdir, to)
    return to


def run_and_kill(workdir: Path, block: str) -> None:
    """`toolfsm run agent.yaml`, SIGKILLed while the tool call `block` (`name:arg`) runs."""
    import signal
    import time

    (workdir / "blocked").unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "run", "agent.yaml"],
        env=env_for(workdir, BLOCK_AT=block),
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        while not (workdir / "blocked").exists():  # the tool writes it, then hangs
            if proc.poll() is not None:
                raise AssertionError(f"the run ended early: {proc.stderr.read().decode()}")
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
