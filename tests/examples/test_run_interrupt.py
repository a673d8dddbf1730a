"""Ctrl-C during `toolfsm run`: exit 130, the run is stored as cancelled, and the user is told
how to resume it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from _example_cli import Cli

AGENT = """\
version: 1
agent: slow
tools: [wait, done]
rules:
  - terminal: done
run:
  input: go
"""

TOOLS = '''\
import asyncio


async def wait(seconds: int) -> str:
    """Wait a while."""
    await asyncio.sleep(seconds)
    return "waited"


def done() -> str:
    """Finish."""
    return "ok"
'''

SCRIPT = """\
- call: wait
  args: {seconds: 600}
- call: done
"""


def test_ctrl_c_cancels_the_run_and_says_how_to_resume(tmp_path: Path) -> None:
    for name, text in {"agent.yaml": AGENT, "tools.py": TOOLS, "script.yaml": SCRIPT}.items():
        (tmp_path / name).write_text(textwrap.dedent(text), encoding="utf-8")
    cli = Cli(tmp_path / "runs.db")
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "run", str(tmp_path / "agent.yaml")],
        env=cli.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A child started from a non-interactive shell may inherit SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # wait until the tool is running
            if line.startswith("  → wait("):
                break
        else:
            raise AssertionError(
                f"the run ended early: {proc.stderr.read() if proc.stderr else ''}"
            )
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    run = cli.last_run().run
    assert (run.status, run.stop_reason) == ("cancelled", "cancelled")
    assert err.splitlines() == ["cancelled", f"resume:  toolfsm runs resume {run.id[:12]}"]
    assert "Traceback" not in err and "stopped:" not in out
    # The hint works: the resume stops at once for a decision on the cut-off wait call.
    resumed = cli("runs", "resume", run.id[:12])
    assert "stopped: awaiting_decision" in resumed.stdout
    # One command a line (pasted as it stands, `A | B` would run A piped into B).
    lines = resumed.stdout.splitlines()
    assert f"retry:   toolfsm runs resume {run.id[:12]} --retry" in lines
    assert f"give up: toolfsm runs resume {run.id[:12]} --mark-failed" in lines
