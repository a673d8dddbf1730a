"""The hostile-input campaign of issue 10, kept as a test: seeded mutants of every shipped rule
file (rules/, examples/) and Letta fixture (tests/letta/fixtures), through every command.

The mutations are structural (a value replaced by a hostile one: a 5,000-digit integer, NaN,
a malformed or remote JSON Schema, a deep list, a surrogate escape; a key dropped or renamed,
a list element repeated) and textual (a line deleted, repeated or cut, a character changed).
Each mutant goes through the real command line in-process (typer's runner), and the contract
is the process's: no traceback, no "internal" error, an exit code the README documents for
that command, and with `--format json` one JSON document. A watchdog turns a hang into a
failure naming the mutant.

The mutants are drawn from a fixed seed, so every run tries the same ones (CI included);
TOOLFSM_FUZZ_ROUNDS raises the number of mutants per file for a longer campaign.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from engine.cli import app
from engine.language.yamltree import parse_yaml

REPO = Path(__file__).resolve().parents[1]
RULE_FILES = sorted([*(REPO / "rules").glob("*.yaml"), *(REPO / "examples").glob("*/agent.yaml")])
LETTA_FILES = sorted((REPO / "tests" / "letta" / "fixtures").glob("*"))
ROUNDS = int(os.environ.get("TOOLFSM_FUZZ_ROUNDS", "12"))
HANG_SECONDS = 120  # a watchdog against hangs, far above any mutant's cost; not a timing check

runner = CliRunner()

DEEP: Any = 1
for _ in range(70):  # deeper than a rule file may nest
    DEEP = [DEEP]

HOSTILE: list[Any] = [
    "9" * 5000,  # as text: the YAML integer Python cannot print
    "0x" + "f" * 4000,
    float("nan"),
    2.5,
    -1,
    0,
    True,
    None,
    [],
    {},
    "",
    "x" * 70,
    "\U0001f680",
    DEEP,
    {"type": 3.5},
    {"type": "object", "properties": {"x": " "}},
    {"$ref": "#"},
    {"$ref": "http://127.0.0.1:1/x.json"},
    {"type": "yes"},
    {"after": "nope", "allow": []},
    {"max_calls": 10_000_000, "tools": "x"},
    {"at_most": 10_000_000, "tools": "x"},
]
KIND_KEYS = ["init", "after", "only_after", "terminal", "continue", "max_calls", "tools"]
KIND_KEYS += ["required_before_exit", "requires_approval", "on_output", "allow", "default"]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


def _parent(root: Any, path: tuple[Any, ...]) -> Any:
    for element in path[:-1]:
        root = root[element]
    return root


def mutate_structure(data: Any, rng: random.Random, tools: list[str]) -> Any:
    """One structural change to a copy of `data` (a JSON-shaped document)."""
    data = json.loads(json.dumps(data))
    paths = [p for p in _paths(data) if p]
    if not paths:
        return rng.choice(HOSTILE)
    path = rng.choice(paths)
    parent, last = _parent(data, path), path[-1]
    move = rng.randrange(6)
    if move == 0:  # a hostile value
        parent[last] = json.loads(json.dumps(rng.choice(HOSTILE)))
    elif move == 1:  # a name in the wrong place, or a tool the agent lacks
        parent[last] = rng.choice([*tools, "nope", "evaluate_candidte"])
    elif move == 2:  # a key (or an element) dropped
        del parent[last]
    elif move == 3 and isinstance(parent, dict):  # a key renamed, often to another kind key
        parent[rng.choice([*KIND_KEYS, "x"])] = parent.pop(last)
    elif move == 4 and isinstance(parent, list):  # an element repeated
        parent.insert(last, json.loads(json.dumps(parent[last])))
    else:  # a value swapped in from elsewhere in the document
        other = rng.choice(paths)
        with contextlib.suppress(KeyError, IndexError, TypeError):
            parent[last] = json.loads(json.dumps(_parent(data, other)[other[-1]]))
    return data


def mutate_text(text: str, rng: random.Random) -> str:
    """One textual change: a line deleted, repeated, cut or changed by one character."""
    lines = text.splitlines(keepends=True) or [""]
    index = rng.randrange(len(lines))
    move = rng.randrange(5)
    if move == 0:
        del lines[index]
    elif move == 1:
        lines.insert(index, lines[index])
    elif move == 2:
        return "".join(lines[:index]) + lines[index][: rng.randrange(len(lines[index]) + 1)]
    elif move == 3 and lines[index]:
        at = rng.randrange(len(lines[index]))
        char = rng.choice(
            ['"', "'", ":", "-", "[", "{", "&a", "*a", "!!python/object", "\t", "\\ud83d", "#"]
        )
        lines[index] = lines[index][:at] + char + lines[index][at + 1 :]
    else:
        lines.insert(index, rng.choice(["  - {after: a, allow: []}\n", "expect: 5\n", "? [a]\n"]))
    return "".join(lines)


def _dump_yaml(data: Any) -> str:
    # Integers past 4,300 digits and NaN keep their YAML spelling (hostile as text).
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10_000)
    return text.replace("'" + "9" * 5000 + "'", "9" * 5000).replace(
        "'0x" + "f" * 4000 + "'", "0x" + "f" * 4000
    )


@contextlib.contextmanager
def watchdog(what: str) -> Iterator[None]:
    if not hasattr(signal, "SIGALRM"):  # pragma: no cover - POSIX only
        yield
        return

    def hung(signum: int, frame: object) -> None:
        raise AssertionError(f"no answer within {HANG_SECONDS} s (a hang?): {what}")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(HANG_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# Documented exit codes per command (README, "Commands and exit codes").
EXITS = {
    "validate": {0, 1, 2},
    "check": {0, 1, 2},
    "graph": {0, 1, 2},
    "trace": {0, 1, 2},
    "explain": {0, 1, 2},
    "simulate": {0, 1, 2},
    "export": {0, 1, 2},
    "import": {0, 1, 2},
}


def run(what: str, *args: str) -> str:
    """Run `toolfsm ARGS...` in-process and check the process-level contract; its stdout."""
    with watchdog(f"toolfsm {' '.join(args)} on {what}"):
        result = runner.invoke(app, list(args))
    context = f"toolfsm {' '.join(args)} on {what}:\n{result.output[-2000:]}"
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{context}\n{result.exception!r}"
    )
    assert "Traceback" not in result.output, context
    assert "internal:" not in result.output, context
    assert result.exit_code in EXITS[args[0]], context
    if "--format" in args and args[args.index("--format") + 1] == "json":
        json.loads(result.stdout)  # one JSON document, whatever happened
    return result.stdout


def _commands(path: Path, tools: list[str], rng: random.Random) -> list[tuple[str, ...]]:
    p = str(path)
    some = [rng.choice(tools or ["t"]) for _ in range(3)]
    return [
        ("validate", p, "--format", "json"),
        ("check", p, "--max-states", "3000", "--format", "json"),
        ("graph", p, "--format", rng.choice(["mermaid", "dot"])),
        ("trace", p, some[0], f"{some[1]}=true", f"3*{some[2]}"),
        ("explain", p, some[0], some[1]),
        ("simulate", p, "--runs", "5", "--seed", str(rng.randrange(100)), "--json"),
        ("export", p, "--letta"),
    ]


def _tool_names(data: Any) -> list[str]:
    tools = data.get("tools") if isinstance(data, dict) else None
    names = []
    for entry in tools if isinstance(tools, list) else []:
        name = entry.get("name") if isinstance(entry, dict) else entry
        if isinstance(name, str):
            names.append(name)
    return names


def _mutants(
    original: str, parse: Callable[[str], Any], dump: Callable[[Any], str], seed: str
) -> Iterator[tuple[str, str]]:
    rng = random.Random(seed)
    data = parse(original)
    tools = _tool_names(data) or ["t"]
    for round_ in range(ROUNDS):
        if round_ % 3 == 2:
            yield f"text mutant {round_}", mutate_text(original, rng)
        else:
            mutant = data
            for _ in range(1 + rng.randrange(3)):
                mutant = mutate_structure(mutant, rng, tools)
            yield f"structural mutant {round_}", dump(mutant)


@pytest.mark.parametrize("source", RULE_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_mutated_rule_files_through_every_command(source: Path, tmp_path: Path) -> None:
    rng = random.Random(f"commands:{source.name}")
    original = source.read_text(encoding="utf-8")
    for number, (kind, text) in enumerate(
        _mutants(original, yaml.safe_load, _dump_yaml, f"rules:{source}")
    ):
        path = tmp_path / f"mutant-{number}.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        (tmp_path / "tools.py").write_text("", encoding="utf-8")  # no real tools run
        commands = _commands(path, _tool_names(parse_yaml(text, str(path))[0]), rng)
        # Every mutant is validated; two more commands each, in turn, cover all of them.
        for args in [commands[0], commands[1 + number % 6], commands[1 + (number + 3) % 6]]:
            run(f"{kind} of {source.name} (saved as {path})", *args)


@pytest.mark.parametrize("source", LETTA_FILES, ids=lambda p: p.name)
def test_mutated_letta_files_through_import_and_back(source: Path, tmp_path: Path) -> None:
    original = source.read_text(encoding="utf-8")

    def dump(data: Any) -> str:
        return json.dumps(data, ensure_ascii=bool(len(original) % 2)).replace(
            '"' + "9" * 5000 + '"', "9" * 5000
        )

    for number, (kind, text) in enumerate(_mutants(original, json.loads, dump, f"letta:{source}")):
        path = tmp_path / f"mutant-{number}{source.suffix}"
        path.write_text(text, encoding="utf-8")
        what = f"{kind} of {source.name} (saved as {path})"
        run(what, "import", str(path), "-o", f"{tmp_path}/imported-{number}-{{agent}}.yaml")
        for imported in sorted(tmp_path.glob(f"imported-{number}-*.yaml"))[:1]:
            run(f"the import of {what}", "validate", str(imported), "--format", "json")
            run(f"the import of {what}", "export", str(imported), "--letta", "--agent-json")
