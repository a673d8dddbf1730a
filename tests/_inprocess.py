"""`toolfsm ARGS...` run inside the test process, as a fresh process would run it.

A `python -m engine` subprocess costs 0.4-1.5 s (the interpreter, then typer, SQLAlchemy and
alembic imported again); the same command run here through `engine.cli.run_cli` (what
`toolfsm` itself calls with sys.argv[1:]) costs a few milliseconds once those are imported.
Tests that are about the command's behaviour (output, exit code, what it stores) use this;
tests that are about the process (kill -9, Ctrl-C, two live processes, the console script,
`--version` before any import) keep a real subprocess.

What a fresh process would not carry over is reset around every call: the environment and
the working directory are exactly the ones given, standard input is what `input` holds (empty
by default, as under a pipe), standard output and error are captured as bytes and decoded as
UTF-8, the CLI's verbosity and its lazily made rich consoles start anew, what the OpenAI
provider learned about servers is forgotten, and tools modules imported from rule files'
folders are dropped again, so an edited tools.py is read afresh by the next command.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["toolfsm", "toolfsm_in_process"]

_ENGINE = Path(__file__).resolve().parents[1] / "engine"


def _fresh_process_state() -> None:
    from engine.cli import common, run

    common.set_verbosity(0)
    run._out._console = None  # made on first use from the standard output of that moment
    run._err._console = None
    module = sys.modules.get("engine.providers.openai")
    if module is not None:
        module.forget_server_quirks()


def _imported_from_outside(name: str, before: set[str]) -> bool:
    """A module this call imported from a user's folder (a tools module), not a library."""
    if name in before:
        return False
    if name.startswith("toolfsm_tools_"):
        return True
    path = getattr(sys.modules.get(name), "__file__", None)
    if not path:
        return False
    resolved = Path(path).resolve()
    prefixes = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    return not any(resolved.is_relative_to(p) for p in (*prefixes, _ENGINE))


def toolfsm_in_process(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | os.PathLike[str],
    input: bytes = b"",
) -> subprocess.CompletedProcess[str]:
    """Run `toolfsm ARGS` with exactly `env` as its environment, in `cwd`; the result is what
    `subprocess.run(..., capture_output=True, text=True)` would return."""
    from engine.cli import run_cli

    saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    modules_before = set(sys.modules)
    out, err = io.BytesIO(), io.BytesIO()
    # Kept in locals: a wrapper that is collected closes the buffer under it.
    streams = (
        io.TextIOWrapper(io.BytesIO(input), encoding="utf-8"),
        io.TextIOWrapper(out, encoding="utf-8", write_through=True),
        io.TextIOWrapper(err, encoding="utf-8", write_through=True),
    )
    sys.stdin, sys.stdout, sys.stderr = streams
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.argv = ["toolfsm", *args]
    _fresh_process_state()
    try:
        code = run_cli(list(args))
    except SystemExit as exc:  # what the interpreter would make of it
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    finally:
        for stream in streams[1:]:
            stream.flush()
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        for name in [n for n in sys.modules if _imported_from_outside(n, modules_before)]:
            del sys.modules[name]
        _fresh_process_state()
    return subprocess.CompletedProcess(
        ["toolfsm", *args], code, out.getvalue().decode("utf-8"), err.getvalue().decode("utf-8")
    )


def toolfsm(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | os.PathLike[str],
    process: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`toolfsm ARGS` in this process, or with `process` in a real `python -m engine`
    subprocess (for tests about the process), with the same result either way."""
    if not process:
        return toolfsm_in_process(args, env=env, cwd=cwd)
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
    )
