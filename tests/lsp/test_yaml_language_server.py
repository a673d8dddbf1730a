"""The JSON Schema as an editor shows it: the real yaml-language-server, driven over LSP stdio.

yaml-language-server is an npm package. `.ci/run` installs it under `.ci/node/`; elsewhere set
`TOOLFSM_YAML_LANGUAGE_SERVER` to its executable, or have `yaml-language-server` on PATH.
Without it (or without node) these tests skip and say why.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.language import spec
from tests.lsp.client import LspClient

ROOT = Path(__file__).resolve().parent.parent.parent
SCHEMA_URI = (ROOT / "schemas" / "toolfsm.schema.json").as_uri()
SETTINGS = {"yaml": {"validate": True, "hover": True, "completion": True}}


def _server_command() -> list[str]:
    candidates = [
        os.environ.get("TOOLFSM_YAML_LANGUAGE_SERVER"),
        str(ROOT / ".ci" / "node" / "node_modules" / ".bin" / "yaml-language-server"),
        shutil.which("yaml-language-server"),
    ]
    found = next((c for c in candidates if c and Path(c).is_file()), None)
    if shutil.which("node") is None:
        pytest.skip("node is not installed: cannot run yaml-language-server")
    if found is None:
        pytest.skip(
            "yaml-language-server is not installed (`npm install --prefix .ci/node "
            "yaml-language-server@2`, or set TOOLFSM_YAML_LANGUAGE_SERVER)"
        )
    return [found, "--stdio"]


# One rule of each kind, and an empty rule item to complete in (line 17, after `  - `).
DOCUMENT = f"""\
# yaml-language-server: $schema={SCHEMA_URI}
version: 1
agent: probe
tools: [a, b, c]
rules:
  - init: a
  - after: a
    allow: b
  - after: b
    on_output: {{true: c}}
  - only_after: a
    tools: c
  - terminal: c
  - continue: b
  - max_calls: 2
    tools: b
  - required_before_exit: c
  - requires_approval: c
"""
KIND_KEY_LINES = {
    "init": 5,
    "child": 6,
    "conditional": 8,
    "parent": 10,
    "terminal": 12,
    "continue": 13,
    "max_calls": 14,
    "required_before_exit": 16,
    "requires_approval": 17,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LspClient, Path]]:
    command = _server_command()
    folder = tmp_path_factory.mktemp("yls")
    with LspClient(command, cwd=folder, settings=SETTINGS) as client:
        client.initialize(
            folder,
            {
                "textDocument": {
                    "hover": {"contentFormat": ["markdown"]},
                    "completion": {"completionItem": {"snippetSupport": True}},
                }
            },
        )
        client.notify("workspace/didChangeConfiguration", {"settings": SETTINGS})
        yield client, folder


def _open(server: tuple[LspClient, Path], name: str, text: str) -> str:
    client, folder = server
    uri = client.open(folder / name, text)
    client.diagnostics(uri)  # the schema is loaded once the first diagnostics are out
    return uri


def _unescape(markdown: str) -> str:
    return re.sub(r"\\([\\`_*])", r"\1", markdown)


@pytest.mark.parametrize("kind", list(KIND_KEY_LINES))
def test_hover_on_each_rule_kind_key_shows_its_semantics(
    server: tuple[LspClient, Path], kind: str
) -> None:
    client, _ = server
    uri = _open(server, f"hover-{kind}.yaml", DOCUMENT)
    position = {"line": KIND_KEY_LINES[kind], "character": 4}
    hover = client.request(
        "textDocument/hover", {"textDocument": {"uri": uri}, "position": position}
    )
    text = _unescape(hover["contents"]["value"])
    assert text.startswith(f"#### {kind} rule\n\n{spec.RULE_SEMANTICS[kind]}\n"), text
    assert "||" not in text


def _complete(server: tuple[LspClient, Path], name: str, text: str, line: int) -> list[Any]:
    client, _ = server
    uri = _open(server, name, text)
    result = client.request(
        "textDocument/completion",
        {"textDocument": {"uri": uri}, "position": {"line": line, "character": 4}},
    )
    return result["items"] if isinstance(result, dict) else result  # type: ignore[no-any-return]


def _documentation(item: dict[str, Any]) -> str:
    doc = item.get("documentation") or ""
    return doc["value"] if isinstance(doc, dict) else doc


@pytest.mark.parametrize(
    ("where", "text", "line"),
    [
        ("a new rule", DOCUMENT + "  - \n", 18),
        ("a child rule", DOCUMENT + "  - after: c\n    \n", 19),
        ("a tool", DOCUMENT.replace("tools: [a, b, c]", "tools:\n  - name: a\n    \n"), 5),
        ("an assertion", DOCUMENT + "expect:\n  - \n", 19),
        ("run settings", DOCUMENT + "run:\n  \n", 19),
    ],
)
def test_completion_items_are_documented_unique_and_insert_valid_values(
    server: tuple[LspClient, Path], where: str, text: str, line: int
) -> None:
    items = _complete(server, f"complete-{where.replace(' ', '-')}.yaml", text, line)
    assert items, where
    labels = [item["label"] for item in items]
    assert len(labels) == len(set(labels)), f"{where}: duplicated items {labels}"
    assert [item["label"] for item in items if not _documentation(item)] == [], where
    for item in items:
        inserted = item["insertText"]
        # A key is completed with its colon, never with a null or a number below its minimum.
        assert re.match(r"^[a-z_]+:", inserted), (where, item)
        assert "null" not in inserted and "${1:0}" not in inserted, (where, item)
    if where == "a new rule":
        kinds = {f"{kind} rule" for kind in spec.RULE_SEMANTICS}
        assert kinds <= set(labels)
        max_calls = next(i for i in items if i["label"] == "max_calls")
        assert max_calls["insertText"] == "max_calls: ${1:3}"
