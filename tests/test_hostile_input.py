"""Hostile input (issue 10, section 3): malformed schemas, absurd numbers and nesting, special
files, and files within the size limit that are built to be expensive. Each gets a located
error or a bounded result, never a traceback, a hang, a network request or a memory blow-up.

Every case goes through the real command line (typer's runner, in-process).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from engine.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # one error, one line


def invoke(*args: str | Path) -> Result:
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result


def tool_with_parameters(tmp_path: Path, parameters: str, args: str = "{x: 1}") -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "version: 1\nagent: a\ntools:\n  - name: t\n"
        f"    parameters: {parameters}\n"
        f"rules:\n  - init: t\n    args: {args}\n",
        encoding="utf-8",
    )
    return path


# -- a tool's parameters: the schema is checked before it is used ----------------------------


@pytest.mark.parametrize(
    ("parameters", "column", "fragment"),
    [
        ('{type: object, properties: {x: " "}}', 48, "' ' is not of type 'object', 'boolean'"),
        ("{type: 3.5}", 24, "3.5 is not valid"),
        ('{type: "yes"}', 24, "'yes' is not valid"),
        ("{$ref: '#'}", 24, "refers to itself in a loop"),
        (
            "{type: object, properties: {x: {anyOf: [{type: string}, {$ref: '#/properties/x'}]}}}",
            80,
            "refers to itself in a loop",
        ),
        ("{$ref: '#/$defs/missing'}", 24, "points to nothing in this schema"),
        ("{$ref: '#/required', required: [x]}", 24, "points to something that is not a schema"),
        ("{$ref: '#/const', const: {type: 3.5}}", 24, "the schema it refers to is not valid"),
        ("{$schema: [1]}", 27, "$schema must be a string"),
        ("{$schema: 'http://example.invalid/s'}", 27, "unknown JSON Schema dialect"),
        ("{$ref: 'other.json'}", 24, "refers outside the schema"),
    ],
)
def test_a_malformed_parameter_schema_is_e028_at_the_bad_part(
    tmp_path: Path, parameters: str, column: int, fragment: str
) -> None:
    path = tool_with_parameters(tmp_path, parameters)
    for command in ("validate", "check"):
        result = invoke(command, path)
        assert result.exit_code == 1, result.output
        assert f"{path}:5:{column}: error[E028]: parameters of 't' are not a valid JSON Schema" in (
            result.output
        ), result.output
        assert fragment in result.output


def test_local_references_still_work(tmp_path: Path) -> None:
    defs = "$defs: {n: {$anchor: num, type: integer}}"
    good = tool_with_parameters(
        tmp_path, f"{{type: object, properties: {{x: {{$ref: '#num'}}}}, {defs}}}"
    )
    assert invoke("validate", good).exit_code == 0
    bad = tool_with_parameters(
        tmp_path, f"{{type: object, properties: {{x: {{$ref: '#/$defs/n'}}}}, {defs}}}", "{x: a}"
    )
    result = invoke("validate", bad)
    assert result.exit_code == 1
    assert "error[E027]: prefilled arguments for 't' do not fit its parameters" in result.output


def test_a_remote_reference_is_refused_without_any_connection(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        path = tool_with_parameters(tmp_path, f"{{$ref: 'http://127.0.0.1:{port}/x.json'}}")
        for command in ("validate", "check"):
            result = invoke(command, path)
            assert result.exit_code == 1
            assert f"{path}:5:24: error[E028]" in result.output
            assert "refers outside the schema" in result.output
        # A connect completes in the kernel (the backlog) before the client could go on, so a
        # connection attempted above would be waiting here.
        with pytest.raises(BlockingIOError):
            listener.accept()


# -- absurd numbers and nesting --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("rules:\n  - max_calls: " + "9" * 4301 + "\n    tools: t\n", "5:16"),
        ("expect:\n  - at_most: 0x" + "f" * 4000 + "\n    tools: t\n", "5:14"),
        ("rules:\n  - after: t\n    on_output: {" + "1" * 1000 + ": t}\n", "6:17"),
    ],
)
def test_an_integer_too_long_to_print_is_a_located_error(
    tmp_path: Path, text: str, where: str
) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("version: 1\nagent: a\ntools: [t]\n" + text, encoding="utf-8")
    for command in ("validate", "check", "graph"):
        result = invoke(command, path)
        assert result.exit_code == 1, result.output
        assert f"{path}:{where}: error[E003]: integer of" in result.output, result.output


def letta_error(result: Result, message: str) -> None:
    """Exit 2 with one `toolfsm: error: ...` line, exactly `message`."""
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"toolfsm: error: {message}", result.stderr


def test_import_of_json_nested_100000_deep_is_located(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"tool_rules": ' + "[" * 100_000 + "]" * 100_000 + "}", encoding="utf-8")
    letta_error(invoke("import", path), f"{path}:1:515: JSON nests deeper than 500 levels")


def test_import_of_an_integer_too_long_to_read_is_located(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    path.write_text('{"tool_rules": [\n  {"x": ' + "7" * 5000 + "}]}", encoding="utf-8")
    letta_error(
        invoke("import", path), f"{path}:2:9: an integer of 5000 digits; Python reads at most 4300"
    )


def test_import_of_a_json_syntax_error_says_file_line_column(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    path.write_text('{"tool_rules": [\n  {"tool_name": "a",, "type": "x"}]}', encoding="utf-8")
    letta_error(
        invoke("import", path),
        f"{path}:2:21: not JSON: Expecting property name enclosed in double quotes",
    )


@pytest.mark.parametrize(("limit", "shown"), [("NaN", "NaN"), ("2.5", "2.5"), ('"3"', '"3"')])
def test_import_of_a_max_count_limit_that_is_no_count_names_it(
    tmp_path: Path, limit: str, shown: str
) -> None:
    path = tmp_path / "agent.json"
    rule = f'{{"tool_name": "a", "type": "max_count_per_step", "max_count_limit": {limit}}}'
    path.write_text(f'{{"tool_rules": [{rule}]}}', encoding="utf-8")
    result = invoke("import", path)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"toolfsm: error: {path}: agent 'agent' has no tools (and no rule names one); rules "
        f"that could not be read: tool_rules[0]: `max_count_limit` must be a whole number, "
        f"got {shown}"
    )
    # Beside a readable rule, the unreadable one is a lossy NOT TRANSLATED comment.
    path.write_text(
        f'{{"tool_rules": [{rule}, {{"tool_name": "a", "type": "exit_loop"}}]}}', encoding="utf-8"
    )
    result = invoke("import", path)
    assert result.exit_code == 1
    assert f"`max_count_limit` must be a whole number, got {shown}" in result.stdout


def test_import_too_large_for_a_rule_file_says_so_and_names_the_input(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    tools = [{"name": f"t{i}", "description": "x" * 2000} for i in range(600)]
    path.write_text(json.dumps({"name": "big", "tools": tools}), encoding="utf-8")
    result = invoke("import", path, "-o", tmp_path / "out.yaml")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"toolfsm: error: {path}: agent 'big' is too large to import: its rule file would be "
        "larger than 1000000 bytes, the limit of a rule file (its tools' descriptions and "
        "parameter schemas take too much room)"
    )
    assert not (tmp_path / "out.yaml").exists()


# -- special files ---------------------------------------------------------------------------


def special_files(tmp_path: Path) -> list[tuple[Path, str]]:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    sparse = tmp_path / "sparse.yaml"
    with sparse.open("wb") as handle:
        handle.truncate(3 * 1024**3)  # 3 GB of holes: nothing is written to disk
    return [
        (Path("/dev/zero"), "E000]: not a regular file (a character device); only files are read"),
        (fifo, "E000]: not a regular file (a named pipe (FIFO)); only files are read"),
        (sparse, "E003]: file is larger than 1000000 bytes; a rule file should be small"),
    ]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_special_files_as_rule_files_are_refused_without_reading_them(tmp_path: Path) -> None:
    for path, message in special_files(tmp_path):
        for command in ("validate", "check", "graph", "trace", "explain", "simulate"):
            args = [command, path, "t"] if command == "explain" else [command, path]
            result = invoke(*args)
            assert result.exit_code == 1, (command, result.output)
            assert f"{path}:1:1: error[{message}" in result.output, (command, result.output)
    # In a folder, a FIFO is reported, not waited for.
    result = invoke("validate", tmp_path, "--only-rule-files")
    assert result.exit_code == 1
    assert "pipe.yaml:1:1: error[E000]: not a regular file" in result.output


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_special_files_as_letta_files_are_refused_without_reading_them(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.af"
    os.mkfifo(fifo)
    sparse = tmp_path / "sparse.af"
    with sparse.open("wb") as handle:
        handle.truncate(3 * 1024**3)
    cases = [
        (Path("/dev/zero"), "not a regular file (a character device); only files are read"),
        (fifo, "not a regular file (a named pipe (FIFO)); only files are read"),
        (sparse, "file is larger than 64000000 bytes"),
    ]
    for path, message in cases:
        letta_error(invoke("import", path), f"{path}: {message}")


# -- files within the size limit, built to be expensive ------------------------------------


def rule_file(tmp_path: Path, tools: list[str], rules: str = "", extra: str = "") -> Path:
    path = tmp_path / "agent.yaml"
    text = f"version: 1\nagent: a\ntools: [{', '.join(tools)}]\nrules:\n{rules}{extra}"
    path.write_text(text, encoding="utf-8")
    assert len(text) < 1_000_000
    return path


def check_json(*args: str | Path) -> list[dict[str, object]]:
    result = invoke("check", *args, "-f", "json")
    assert result.exit_code in (0, 1), result.output
    records: list[dict[str, object]] = json.loads(result.stdout)
    return records


def test_validate_is_linear_in_tools_and_rules(tmp_path: Path) -> None:
    # 8,000 tools, each with its own max_calls rule: compiling built a set of every tool at
    # every node (quadratic: minutes for 30,000 tools).
    tools = [f"t{i}" for i in range(8000)]
    path = rule_file(tmp_path, tools, "".join(f"- {{max_calls: 1, tools: {t}}}\n" for t in tools))
    result = invoke("validate", path)
    assert result.exit_code == 0, result.output


def test_check_of_many_counters_stops_at_its_bound(tmp_path: Path) -> None:
    # 3,000 tools called at most once each: 2^3000 positions of 6,000-bit keys.
    tools = [f"t{i}" for i in range(3000)]
    path = rule_file(tmp_path, tools, "".join(f"- {{max_calls: 1, tools: {t}}}\n" for t in tools))
    records = check_json(path)
    assert [r["code"] for r in records] == ["C190"]


def test_check_of_one_child_rule_allowing_every_tool_stops_at_its_bound(tmp_path: Path) -> None:
    from engine.analysis.check import check_path
    from engine.analysis.explore import EDGES_PER_STATE

    tools = [f"t{i}" for i in range(3000)]  # 3,000 x 3,001 = 9 million transitions
    path = rule_file(tmp_path, tools, f"  - after: t0\n    allow: [{', '.join(tools)}]\n")
    assert [r["code"] for r in check_json(path)] == ["C190"]
    result = check_path(path, max_states=1000)
    assert result.codes() == ["C190"] and result.graph is not None
    # Only fully explored positions are kept, and the transitions stay within the bound.
    assert result.graph.edge_count <= 1000 * EDGES_PER_STATE + len(tools)
    assert len(result.graph) < len(tools)


def test_a_conditional_with_5000_cases_is_checked_and_its_graph_is_bounded(
    tmp_path: Path,
) -> None:
    cases = ", ".join(f"k{i}: d" for i in range(5000))
    path = rule_file(tmp_path, ["c", "d"], f"  - after: c\n    on_output: {{{cases}}}\n")
    assert check_json(path) == []
    result = invoke("graph", path)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"toolfsm: error: {path}: the diagram has more than 10000 transitions (at least 10001, "
        "between 5003 states); it is not drawn; raise the bound with --max-transitions"
    )
    drawn = invoke("graph", path, "--max-transitions", "50000")
    assert drawn.exit_code == 0
    assert drawn.stdout.count(" --> ") > 10_000


def test_an_at_most_of_ten_million_is_refuted_by_a_counted_loop(tmp_path: Path) -> None:
    path = rule_file(
        tmp_path, ["s", "e"], "  - terminal: e\n", "expect:\n  - at_most: 10000000\n    tools: s\n"
    )
    (record,) = check_json(path)
    assert record["code"] == "A105" and record["trace"] == ["10000001*s"]
    assert "the run 10000001*s calls it 10000001 times" in str(record["message"])


def test_a_counted_loop_of_several_steps_replays_through_trace(tmp_path: Path) -> None:
    rules = "  - after: a\n    allow: b\n  - terminal: e\n"
    path = rule_file(
        tmp_path, ["a", "b", "e"], rules, "expect:\n  - at_most: 5000000\n    tools: a\n"
    )
    (record,) = check_json(path)
    assert record["code"] == "A105"
    assert record["trace"] == ["b", "5000000*(a b)", "a"]
    small = rule_file(tmp_path, ["a", "b", "e"], rules, "expect:\n  - at_most: 3\n    tools: a\n")
    replayed = invoke("trace", small, "b", "2*(a b)", "a", "--json")
    assert replayed.exit_code == 0
    assert [row["after"] for row in json.loads(replayed.stdout)][1:] == [
        "b",
        "a",
        "b",
        "a",
        "b",
        "a",
    ]
    too_long = invoke("trace", small, "5000000*(a b)")
    assert too_long.exit_code == 2
    assert "the steps expand to more than 100000 calls" in too_long.stderr


# -- --format json is always one JSON document ----------------------------------------------


def test_format_json_prints_a_document_on_usage_errors(tmp_path: Path) -> None:
    for command in ("validate", "check"):
        result = invoke(command, tmp_path / "missing.yaml", "-f", "json")
        assert result.exit_code == 2
        (record,) = json.loads(result.stdout)
        assert record["code"] == "usage" and record["severity"] == "error"
        assert record["message"] == f"no such file or folder: {tmp_path / 'missing.yaml'}"


def test_format_json_prints_a_document_when_a_command_fails_internally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every known crash is fixed; a stand-in bug shows the contract holds for the next one.
    import engine.analysis.check
    import engine.language.loader

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("stand-in bug")

    monkeypatch.setattr(engine.language.loader, "read_rule_file", broken)
    monkeypatch.setattr(engine.analysis.check, "check_path", broken)
    path = rule_file(tmp_path, ["a"])
    for command in ("validate", "check"):
        result = runner.invoke(app, [command, str(path), "-f", "json"])
        assert result.exit_code == 1, result.output
        (record,) = json.loads(result.stdout)
        assert record["code"] == "internal"
        assert record["message"] == "internal: unexpected RuntimeError: stand-in bug"
        assert "Traceback" not in result.output


def test_an_internal_error_is_one_line_at_the_process_level(tmp_path: Path) -> None:
    import subprocess
    import sys

    # A bug is simulated in the child process only; the entry point is the real one.
    code = (
        "import engine.language.loader, engine.cli\n"
        "def broken(*a, **k): raise RuntimeError('stand-in bug')\n"
        "engine.language.loader.read_rule_file = broken\n"
        "import sys; sys.argv = ['toolfsm', 'validate', sys.argv[1]]\n"
        "engine.cli.main()\n"
    )
    path = rule_file(tmp_path, ["a"])
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "toolfsm: error: internal: unexpected RuntimeError: stand-in bug (a bug in toolfsm; "
        "TOOLFSM_DEBUG=1 shows where)"
    )


def test_simulate_of_one_child_rule_allowing_every_tool_lists_no_millions(tmp_path: Path) -> None:
    # 3,000 x 3,001 = 9 million possible transitions: the report counts the reached ones and
    # says the rest are too many to list, instead of building them all.
    tools = [f"t{i}" for i in range(3000)]
    path = rule_file(tmp_path, tools, f"  - after: t0\n    allow: [{', '.join(tools)}]\n")
    result = invoke("simulate", path, "--runs", "20", "--json")
    assert result.exit_code == 0, result.output
    transitions = json.loads(result.stdout)["transitions"]
    assert transitions["total"] is None and transitions["never"] == []
    assert transitions["reached"] > 0
    text = invoke("simulate", path, "--runs", "5", "--no-progress")
    assert text.exit_code == 0
    assert "of more than 10000 (not listed)" in text.stdout
