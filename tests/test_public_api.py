"""The public API: `engine.__all__` is deliberate, documented and cheap to import, and the
README's "From Python" examples run end to end (issue 11)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import engine
import engine.providers
import engine.runtime

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _from_python() -> str:
    start = README.index("\n### From Python\n")
    return README[start : README.index("\n## ", start)]


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(PYTHONPATH=str(REPO), TOOLFSM_DB=f"sqlite:///{tmp_path / 'runs.db'}")
    return env


# -- engine.__all__ ------------------------------------------------------------------------


def test_all_is_sorted_small_and_every_name_resolves() -> None:
    names = engine.__all__
    assert names == sorted(names)
    assert len(names) == len(set(names)) < 70
    assert set(names) == set(engine._EXPORTS)  # one table says where each name lives
    for name in names:
        assert getattr(engine, name) is not None, name


def test_every_name_is_documented_in_the_module_docstring() -> None:
    doc = engine.__doc__ or ""
    words = set(re.findall(r"\b\w+\b", doc))
    assert [n for n in engine.__all__ if n not in words] == []


def test_nothing_private_leaks() -> None:
    assert [n for n in engine.__all__ if n.startswith("_")] == []
    for name in engine.__all__:
        value = getattr(engine, name)
        module = getattr(value, "__module__", None) or getattr(value, "__name__", "")
        if isinstance(value, types.UnionType):  # Event: the union of the event classes
            module = "engine.runtime.events"
        assert module.startswith("engine."), (name, module)
    # Once every name is loaded, the package holds those names and its own subpackages only.
    extra = [
        k
        for k, v in vars(engine).items()
        if k.isidentifier()  # (pytest's assertion rewriting adds '@py_builtins')
        and not k.startswith("_")
        and k not in engine.__all__
        and not (isinstance(v, types.ModuleType) and v.__name__ == f"engine.{k}")
    ]
    assert extra == []
    assert dir(engine) == engine.__all__
    with pytest.raises(AttributeError, match="has no attribute 'status_for'"):
        _ = engine.status_for  # type: ignore[attr-defined]


def test_the_subpackages_export_what_users_need_and_no_internals() -> None:
    assert set(engine.runtime.__all__) <= set(engine.__all__)
    for internal in ("status_for", "open_agent", "load_state", "provider_for_run"):
        assert not hasattr(engine.runtime, internal) or internal not in engine.runtime.__all__
    for internal in ("PROVIDER_KINDS", "reply_violation", "frozen_builder"):
        assert internal not in engine.providers.__all__


def test_import_engine_loads_none_of_the_heavy_libraries() -> None:
    code = (
        "import sys, engine; "
        "print(sorted(m for m in ('pydantic', 'sqlalchemy', 'openai', 'anthropic', 'yaml', "
        "'jsonschema', 'asyncio') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"


# -- README, "From Python" ----------------------------------------------------------------


def test_the_readme_names_only_public_names() -> None:
    used = set(re.findall(r"\bengine\.([a-zA-Z]\w*)", _from_python()))
    assert used and used <= set(engine.__all__), used - set(engine.__all__)
    for block in _blocks(_from_python(), "python"):  # valid Python (top-level await allowed)
        compile(block, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_the_readme_first_example_runs_verbatim(tmp_path: Path) -> None:
    first = _blocks(_from_python(), "python")[0]
    done = subprocess.run(
        [sys.executable, "-c", first],
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "terminal_tool 3 All requirements are met; inviting the candidate.\n"


def _triage(folder: Path) -> tuple[str, str]:
    """The README's triage example written into `folder`: (agent file, script)."""
    block = _from_python()
    (agent,) = [b for b in _blocks(block, "yaml") if b.startswith("# triage.yaml")]
    (script,) = [b for b in _blocks(block, "python") if b.startswith("# triage.py")]
    (folder / "triage.yaml").write_text(agent, encoding="utf-8")
    (folder / "script.yaml").write_text(
        "replies:\n"
        "  - {call: lookup_ticket, args: {ticket_id: T-7}}\n"
        "  - {text: Answering., call: reply, args: {ticket_id: T-7, text: On it.}}\n",
        encoding="utf-8",
    )
    # Offline: the scripted model instead of the real one.
    assert '"openai:gpt-4.1-mini"' in script
    return agent, script.replace('"openai:gpt-4.1-mini"', '"scripted:script.yaml"')


def test_the_readme_triage_script_binds_its_own_functions_and_runs(tmp_path: Path) -> None:
    _, script = _triage(tmp_path)
    (tmp_path / "triage.py").write_text(script, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "triage.py"],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "terminal_tool Answering.\n"


def test_the_readme_missing_tool_error_is_what_a_script_gets(tmp_path: Path) -> None:
    folder = tmp_path / "triage"
    folder.mkdir()
    _, script = _triage(folder)
    start = script.index("@engine.tool\ndef reply")
    script = script[:start] + script[script.index("if __name__") :]  # `reply` left out
    (folder / "triage.py").write_text(script, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "triage.py"],
        cwd=folder,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    (expected,) = _blocks(_from_python(), "text")
    expected = expected.strip().replace("/work/triage", str(folder.resolve()))
    assert done.stderr.strip().splitlines()[-1] == f"engine.tools.MissingToolsError: {expected}"
