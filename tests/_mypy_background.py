"""tests/test_typing.py's `mypy --strict`, started early so it runs beside the other tests.

Without its cache (a fresh clone, CI) mypy takes about a minute of one core. When that test
is selected, tests/conftest.py starts mypy as soon as collection is done; it checks on the
other core while the rest of the suite runs, and the test then waits for its verdict (the
same command, the same exit code and output).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parents[1]
STARTED = pytest.StashKey[tuple[subprocess.Popen[bytes], IO[bytes]]]()
COMMAND = [sys.executable, "-m", "mypy", "--no-error-summary"]  # files and flags: pyproject


def start(session: pytest.Session) -> None:
    """Start mypy when test_typing.py's test is among the selected ones (and mypy exists)."""
    if not any(item.nodeid.startswith("tests/test_typing.py::") for item in session.items):
        return
    try:
        import mypy  # noqa: F401
    except ImportError:
        return  # the test skips, naming the dev extra
    output = tempfile.TemporaryFile()  # noqa: SIM115  # read by the test, closed at the end
    proc = subprocess.Popen(COMMAND, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    session.config.stash[STARTED] = (proc, output)


def verdict(config: pytest.Config) -> tuple[int, str]:
    """mypy's exit code and output: the started process's, or a run made now."""
    started = config.stash.get(STARTED, None)
    if started is None:
        done = subprocess.run(COMMAND, cwd=ROOT, capture_output=True, text=True, timeout=600)
        return done.returncode, done.stdout + done.stderr
    proc, output = started
    code = proc.wait(timeout=600)
    output.seek(0)
    return code, output.read().decode(errors="replace")


def stop(session: pytest.Session) -> None:
    """At the session's end: a mypy still running (the run stopped early) is killed."""
    started = session.config.stash.get(STARTED, None)
    if started is None:
        return
    proc, output = started
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    output.close()
