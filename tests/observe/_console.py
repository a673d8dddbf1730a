"""`toolfsm ui` as a real server in a subprocess, on a port of 8765-8799, over a store the
test fills with the CLI (run in the test process)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests._inprocess import toolfsm_in_process

REPO = Path(__file__).resolve().parents[2]


def cli_env(db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(TOOLFSM_DB=f"sqlite:///{db}", COLUMNS="200", NO_COLOR="1", TERM="dumb")
    return {k: v for k, v in env.items() if not k.startswith("OTEL_")}


def toolfsm(db: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    """`toolfsm ARGS` on the store at `db`, in this process (tests/_inprocess.py)."""
    proc = toolfsm_in_process(args, env=cli_env(db), cwd=REPO)
    assert proc.returncode == code, proc.stdout + proc.stderr
    return proc


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def console(db: Path, port: int, *args: str) -> Iterator[str]:
    """The console's base URL while it runs (stopped, by its pid, afterwards)."""
    assert 8765 <= port <= 8799 and not _answers(port), f"port {port} is taken"
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "ui", "--port", str(port), *args],
        cwd=REPO,
        env=cli_env(db),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _answers(port):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the console did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
