"""Hostile input (issue 10, section 3): malformed schemas, absurd numbers and nesting, special
files, and files within the size limit that are built to be expensive. Each gets a located
error or a bounded result, never a traceback, a hang, a network request or a memory blow-up.

Every case goes through the real command line (typer's runner, in-process).
"""

from __future__ import annotations

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
