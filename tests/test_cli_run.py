"""`toolfsm run` and `toolfsm runs ...` refusing what they cannot do as given, through the
CLI as a user runs it (in this process, tests/_inprocess.py): the model spec, the store's location."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tests._inprocess import toolfsm_in_process

ROOT = Path(__file__).parent.parent


def toolfsm(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`toolfsm ARGS` in this process (tests/_inprocess.py), in `cwd` when given."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    result = toolfsm_in_process(
        [str(a) for a in args], env={**env, "NO_COLOR": "1", "TERM": "dumb"}, cwd=cwd or os.getcwd()
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def support_copy(tmp_path: Path) -> Path:
    """The support example (agent, tools, script.yaml) in a folder of its own."""
    return Path(shutil.copytree(ROOT / "examples" / "support", tmp_path / "support"))


def test_model_scripted_without_a_path_replays_the_script_beside_the_agent(
    tmp_path: Path,
) -> None:
    folder = support_copy(tmp_path)
    db = tmp_path / "runs.db"
    for model in ("scripted", "scripted:"):
        done = toolfsm("run", folder / "agent.yaml", "--model", model, "--db", db)
        assert done.returncode == 0, done.stderr
    listed = json.loads(toolfsm("runs", "list", "--db", db, "--json").stdout)
    script = (folder / "script.yaml").resolve()
    assert [run["model"] for run in listed] == [f"scripted:{script}"] * 2
    # The run resumes (and is approved) with that same script.
    approved = toolfsm("runs", "approve", listed[0]["run_id"], "--db", db)
    assert approved.returncode == 0, approved.stderr
    assert "stopped: terminal_tool" in approved.stdout


def test_model_scripted_without_a_script_beside_the_agent_says_what_to_give(
    tmp_path: Path,
) -> None:
    folder = support_copy(tmp_path)
    (folder / "script.yaml").unlink()
    result = toolfsm("run", folder / "agent.yaml", "--model", "scripted", "--db", tmp_path / "x.db")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "toolfsm: error: --model scripted replays the script.yaml beside the agent file, and "
        f"there is none beside {folder / 'agent.yaml'}; name the script: --model "
        "scripted:PATH\n"
    )


def test_db_in_a_folder_that_does_not_exist_is_refused_and_creates_nothing(
    tmp_path: Path,
) -> None:
    folder = support_copy(tmp_path)
    missing = tmp_path / "no" / "such"
    commands = [
        ("run", folder / "agent.yaml"),
        ("runs", "list"),
        ("runs", "show"),
        ("runs", "resume", "abc"),
        ("runs", "approve", "abc"),
        ("runs", "deny", "abc", "--reason", "no"),
    ]
    as_url = f"sqlite:///{missing / 'runs.db'}"
    for args, db in [*((args, missing / "runs.db") for args in commands), (commands[1], as_url)]:
        result = toolfsm(*args, "--db", db)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stdout == ""
        assert result.stderr == (
            f"toolfsm: error: --db {db}: the folder {missing} does not exist (toolfsm creates "
            "the database file, not its folder); create the folder first, or name a file in an "
            "existing one\n"
        ), args
    assert not (tmp_path / "no").exists()
    # A file in an existing folder is created as before.
    done = toolfsm("run", folder / "agent.yaml", "--db", tmp_path / "runs.db")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "runs.db").is_file()


def test_base_url_with_the_scripted_model_is_refused_as_with_random(tmp_path: Path) -> None:
    folder = support_copy(tmp_path)
    for model in ("scripted", "random:1"):
        url = ("--base-url", "http://127.0.0.1:9/v1")
        result = toolfsm(
            "run", folder / "agent.yaml", "--model", model, *url, "--db", tmp_path / "runs.db"
        )
        assert result.returncode == 2, result.stdout
        assert result.stdout == ""
        assert result.stderr.endswith(
            f"config: base_url does not apply to the {model.partition(':')[0]} provider\n"
        )
    assert not (tmp_path / "runs.db").exists()  # nothing was run, nothing stored


def test_an_empty_input_is_refused_as_empty_not_as_missing(tmp_path: Path) -> None:
    folder = support_copy(tmp_path)
    for text in ("", "  "):
        result = toolfsm("run", folder / "agent.yaml", "--input", text, "--db", tmp_path / "x.db")
        assert result.returncode == 2
        assert result.stderr == (
            "toolfsm: error: --input is empty: give the user message the run starts with\n"
        )
    assert not (tmp_path / "x.db").exists()
