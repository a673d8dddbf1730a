"""Ctrl-C during `toolfsm run`: exit 130, the run is stored as cancelled, and the user is told
how to resume it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import IO

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


SYNC_TOOLS = '''\
import os
import time


def send(marker: str) -> str:
    """A sync side effect that blocks until the file `marker` exists.

    Args:
        marker: the file to wait for
    """
    with open(os.path.join(os.path.dirname(marker), "ledger"), "a") as ledger:
        ledger.write("send\\n")
    while not os.path.exists(marker):
        time.sleep(0.05)
    return "sent"


def done() -> str:
    """Finish."""
    return "ok"
'''


def _sync_agent(tmp_path: Path) -> tuple[Cli, Path]:
    marker = tmp_path / "release"
    script = f"- call: send\n  args: {{marker: {str(marker)!r}}}\n- call: done\n"
    agent = AGENT.replace("[wait, done]", "[send, done]")
    for name, text in {"agent.yaml": agent, "tools.py": SYNC_TOOLS, "script.yaml": script}.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return Cli(tmp_path / "runs.db"), marker


def _start(cli: Cli, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine", *args],
        env=cli.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _until_line(stream: IO[str], start: str) -> None:
    for line in stream:
        if line.startswith(start):
            return
    raise AssertionError(f"no line starting {start!r}")


def test_ctrl_c_during_a_sync_tool_reports_at_once_and_a_second_one_quits(
    tmp_path: Path,
) -> None:
    # A sync tool runs in a worker thread, which cannot be stopped. The first Ctrl-C cancels
    # the run and says so without waiting for the tool; a second one quits: exit 130, no
    # traceback from the interpreter's wait for the thread.
    cli, marker = _sync_agent(tmp_path)
    proc = _start(cli, "run", str(tmp_path / "agent.yaml"))
    try:
        assert proc.stdout is not None and proc.stderr is not None
        _until_line(proc.stdout, "  → send(")
        proc.send_signal(signal.SIGINT)
        first = [proc.stderr.readline() for _ in range(3)]  # blocks until they are printed
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        marker.touch()  # lets the worker thread of a process that did not quit finish
    run = cli.last_run().run
    assert proc.returncode == 130, "".join(first) + err
    assert (run.status, run.stop_reason) == ("cancelled", "cancelled")
    assert [line.rstrip("\n") for line in first] == [
        "cancelled",
        f"resume:  toolfsm runs resume {run.id[:12]}",
        "toolfsm: waiting for a tool call that is still running (send); Ctrl-C again to quit now",
    ]
    assert err == "" and "Traceback" not in out


def test_ctrl_c_during_a_resume_reports_the_cancel_and_the_next_step(tmp_path: Path) -> None:
    # `runs resume` (as approve and deny) reports a Ctrl-C as `run` does, instead of leaving
    # silently; once the tool returns, the process ends by itself.
    cli, marker = _sync_agent(tmp_path)
    started = _start(cli, "run", str(tmp_path / "agent.yaml"))
    try:
        assert started.stdout is not None
        _until_line(started.stdout, "  → send(")
        started.kill()  # the side-effect call is cut off
        started.communicate(timeout=60)
    finally:
        if started.poll() is None:
            started.kill()
    run_id = cli.last_run().run.id
    proc = _start(cli, "runs", "resume", run_id, "--retry")
    try:
        assert proc.stdout is not None and proc.stderr is not None
        _until_line(proc.stdout, "  → send(")
        proc.send_signal(signal.SIGINT)
        first = [proc.stderr.readline() for _ in range(3)]
        marker.touch()  # the tool returns: the process ends without a second Ctrl-C
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, "".join(first) + err
    assert [line.rstrip("\n") for line in first] == [
        "cancelled",
        f"resume:  toolfsm runs resume {run_id[:12]}",
        "toolfsm: waiting for a tool call that is still running (send); Ctrl-C again to quit now",
    ]
    assert "Traceback" not in err + out
    # The retried call ran again at most once (the Ctrl-C may come before its thread starts).
    assert (tmp_path / "ledger").read_text().splitlines() in (["send"], ["send", "send"])
