"""`toolfsm lsp` through a real LSP client: `python -m engine lsp` in a subprocess, spoken to
in JSON-RPC with Content-Length framing over its stdin and stdout (tests/lsp/client.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.analysis.check import check_rule_file
from engine.language import spec
from engine.language.loader import parse_rules
from tests.lsp.client import LspClient

pytest.importorskip(
    "pygls", reason="the language server needs the lsp extra (pip install -e '.[lsp]')"
)

ROOT = Path(__file__).resolve().parent.parent.parent

AGENT = """\
version: 1
agent: screener
tools:
  - name: retrieve_candidate
    description: Load a candidate's profile.
  - name: evaluate_candidate
    description: Score the profile.
  - send_email
  - reject
rules:
  - init: retrieve_candidate
  - after: retrieve_candidate
    allow: evaluate_candidte
  - after: evaluate_candidate
    on_output: {true: send_email, false: reject}
    nte: the verdict picks the next step
  - terminal: [send_email, reject]
"""


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LspClient]:
    """One server for the module; each test opens documents of its own (its tmp_path)."""
    with LspClient([sys.executable, "-m", "engine", "lsp"], cwd=ROOT) as lsp:
        capabilities = lsp.initialize(tmp_path_factory.mktemp("lsp"))["capabilities"]
        assert capabilities["hoverProvider"] and capabilities["definitionProvider"]
        assert capabilities["completionProvider"] and capabilities["codeActionProvider"]
        assert capabilities["textDocumentSync"]["save"] is not None
        yield lsp


def _text_in(text: str, where: dict[str, Any]) -> str:
    """The text a range covers (ASCII documents: UTF-16 units are characters)."""
    lines = text.split("\n")
    start, end = where["start"], where["end"]
    assert start["line"] == end["line"], where
    return lines[start["line"]][start["character"] : end["character"]]


def _at(text: str, needle: str, occurrence: int = 0, offset: int = 0) -> dict[str, int]:
    """The position of the `occurrence`-th `needle` in `text` (plus `offset` characters)."""
    index = -1
    for _ in range(occurrence + 1):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index)
    return {"line": line, "character": index - (text.rfind("\n", 0, index) + 1) + offset}


def test_diagnostics_on_open_carry_code_severity_and_the_exact_range(
    client: LspClient, tmp_path: Path
) -> None:
    uri = client.open(tmp_path / "agent.yaml", AGENT)
    found = client.diagnostics(uri, 1)
    by_code = {d["code"]: d for d in found}
    assert set(by_code) == {"E013", "E021"}
    typo = by_code["E021"]
    assert typo["severity"] == 1 and typo["source"] == "toolfsm"
    assert _text_in(AGENT, typo["range"]) == "evaluate_candidte"
    assert typo["range"]["start"] == _at(AGENT, "evaluate_candidte")
    assert "did you mean 'evaluate_candidate'?" in typo["message"]
    assert _text_in(AGENT, by_code["E013"]["range"]) == "nte"


def test_check_findings_come_too_and_follow_changes_and_saves(
    client: LspClient, tmp_path: Path
) -> None:
    # Valid, but `reject` can never be called: a `toolfsm check` finding (C102, a warning).
    text = AGENT.replace("evaluate_candidte", "evaluate_candidate")
    text = text.replace("    nte: the verdict picks the next step\n", "")
    text = text.replace("false: reject}", "false: send_email}\n    default: send_email")
    uri = client.open(tmp_path / "agent.yaml", AGENT)
    assert {d["code"] for d in client.diagnostics(uri, 1)} == {"E013", "E021"}
    client.change(uri, text, 2)
    found = client.diagnostics(uri, 2)
    assert [(d["code"], d["severity"]) for d in found] == [("C102", 2)], found
    assert "reject" in found[0]["message"]
    assert found[0]["range"]["start"]["line"] == _at(text, "- reject")["line"]
    client.notify("textDocument/didSave", {"textDocument": {"uri": uri}})
    assert [d["code"] for d in client.diagnostics(uri, 2)] == ["C102"]
    client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    assert client.diagnostics(uri) == []


UNICODE_LINE = '  - {note: "😀é", terminal: [send_email, rejec]}'


def _typo_range(lsp: LspClient, folder: Path) -> tuple[int, dict[str, Any]]:
    """The code-point column of the undeclared `rejec` after an emoji, and its range."""
    text = AGENT.replace("  - terminal: [send_email, reject]", UNICODE_LINE)
    uri = lsp.open(folder / "unicode.yaml", text)
    found = lsp.diagnostics(uri, 1)
    (typo,) = [d for d in found if d["code"] == "E021" and "rejec'" in d["message"]]
    return UNICODE_LINE.index("rejec]"), typo["range"]


def test_quick_successive_changes_end_with_the_newest_texts_diagnostics(
    client: LspClient, tmp_path: Path
) -> None:
    """Changes sent without waiting: whatever is published belongs to the version it names,
    and the newest version's diagnostics come last."""
    versions = {
        1: AGENT,
        2: AGENT.replace("evaluate_candidte", "send_emial"),
        3: AGENT.replace("evaluate_candidte", "rejet").replace("    nte: the", "    note: the"),
    }
    expected = {
        version: {
            (d.code, d.message) for d in check_rule_file(parse_rules(text, "x.yaml")).diagnostics
        }
        for version, text in versions.items()
    }
    uri = client.open(tmp_path / "agent.yaml", versions[1])
    client.change(uri, versions[2], 2)
    client.change(uri, versions[3], 3)
    while True:
        params = client.wait_for(
            "textDocument/publishDiagnostics", lambda m: m["params"]["uri"] == uri
        )["params"]
        published = {(d["code"], d["message"].split("\n")[0]) for d in params["diagnostics"]}
        assert published == expected[params["version"]], params["version"]
        if params["version"] == 3:
            break


def test_ranges_are_in_utf16_units_by_default(client: LspClient, tmp_path: Path) -> None:
    column, where = _typo_range(client, tmp_path)
    # 😀 is two UTF-16 code units, so the client's column is one more than the code points'.
    assert where["start"]["character"] == column + 1
    assert where["end"]["character"] == column + 1 + len("rejec")


def test_ranges_follow_the_negotiated_position_encoding(tmp_path: Path) -> None:
    with LspClient([sys.executable, "-m", "engine", "lsp"], cwd=ROOT) as lsp:
        capabilities = {"general": {"positionEncodings": ["utf-32"]}}
        assert (
            lsp.initialize(tmp_path, capabilities)["capabilities"]["positionEncoding"] == "utf-32"
        )
        column, where = _typo_range(lsp, tmp_path)
        assert (where["start"]["character"], where["end"]["character"]) == (column, column + 5)
        assert lsp.close() == 0  # shutdown, then exit: a clean exit


def _hover(client: LspClient, uri: str, position: dict[str, int]) -> str | None:
    result = client.request(
        "textDocument/hover", {"textDocument": {"uri": uri}, "position": position}
    )
    return None if result is None else result["contents"]["value"]  # type: ignore[no-any-return]


ALL_KINDS = """\
version: 1
agent: probe
tools: [a, b, c]
rules:
  - init: a
  - after: a
    allow: b
  - after: b
    on_output: {true: c}
  - only_after: a
    tools: c
  - terminal: c
  - continue: b
  - max_calls: 2
    tools: b
  - required_before_exit: c
  - requires_approval: c
    when: {properties: {n: {minimum: 1}}}
run:
  max_steps: 5
"""
KIND_KEYS = {
    "init": "init:",
    "child": "after: a",
    "conditional": "after: b",
    "parent": "only_after:",
    "terminal": "terminal:",
    "continue": "continue:",
    "max_calls": "max_calls:",
    "required_before_exit": "required_before_exit:",
    "requires_approval": "requires_approval:",
}


def test_hover_on_every_key_gives_its_meaning(client: LspClient, tmp_path: Path) -> None:
    uri = client.open(tmp_path / "kinds.yaml", ALL_KINDS)
    client.diagnostics(uri, 1)
    for kind, needle in KIND_KEYS.items():
        text = _hover(client, uri, _at(ALL_KINDS, needle, offset=1))
        assert text is not None, kind
        assert f"**{kind} rule**" in text and spec.RULE_SEMANTICS[kind] in text, text
    # Keys that are not kind keys: their field descriptions.
    allow = spec.ChildRule.model_fields["allow"].description
    assert allow is not None and allow in (_hover(client, uri, _at(ALL_KINDS, "allow")) or "")
    max_steps = spec.RunSettings.model_fields["max_steps"].description
    assert max_steps is not None and max_steps in (
        _hover(client, uri, _at(ALL_KINDS, "max_steps")) or ""
    )
    case = _hover(client, uri, _at(ALL_KINDS, "true: c", offset=1)) or ""
    assert "output case" in case and "Boolean keys match" in case, case
    tools = spec.AgentSpec.model_fields["tools"].description
    assert tools is not None and tools in (_hover(client, uri, _at(ALL_KINDS, "tools:")) or "")
    # Every key of the file (the parser's vocabulary) has a hover text.
    keys = [line.strip(" -").split(":")[0] for line in ALL_KINDS.splitlines() if ":" in line]
    for number, line in enumerate(ALL_KINDS.splitlines()):
        stripped = line.lstrip(" -{")
        if ":" in stripped and not stripped.startswith("{"):
            column = len(line) - len(stripped)
            assert _hover(client, uri, {"line": number, "character": column}), (number, line, keys)


def test_hover_on_a_tool_name_shows_its_declaration(client: LspClient, tmp_path: Path) -> None:
    uri = client.open(tmp_path / "agent.yaml", AGENT)
    client.diagnostics(uri, 1)
    text = _hover(client, uri, _at(AGENT, "init: retrieve_candidate", offset=8))
    assert (
        text is not None and "declared on line 4" in text and "Load a candidate's profile." in text
    )
    # The keys of a tool declaration are described too.
    for key, needle in [("name", "- name:"), ("description", "    description:")]:
        wanted = spec.ToolDecl.model_fields[key].description
        at = _at(AGENT, needle, offset=needle.index(key))
        assert wanted and wanted in (_hover(client, uri, at) or ""), key


def test_definition_jumps_from_a_rule_to_the_tool_declaration(
    client: LspClient, tmp_path: Path
) -> None:
    uri = client.open(tmp_path / "agent.yaml", AGENT)
    client.diagnostics(uri, 1)
    for needle, tool in [
        ("after: evaluate_candidate", "evaluate_candidate"),
        ("[send_email", "send_email"),
        ("false: reject", "reject"),
    ]:
        position = _at(AGENT, needle, offset=len(needle) - 2)
        location = client.request(
            "textDocument/definition", {"textDocument": {"uri": uri}, "position": position}
        )
        assert location["uri"] == uri
        assert _text_in(AGENT, location["range"]) == tool
        assert location["range"]["start"]["line"] < _at(AGENT, "rules:")["line"]
    # Not a tool name: no definition.
    nowhere = client.request(
        "textDocument/definition",
        {"textDocument": {"uri": uri}, "position": _at(AGENT, "agent: screener", offset=9)},
    )
    assert nowhere is None


def _complete(client: LspClient, tmp_path: Path, text: str, position: dict[str, int]) -> list[Any]:
    uri = client.open(tmp_path / f"complete-{position['line']}-{position['character']}.yaml", text)
    client.diagnostics(uri, 1)
    result = client.request(
        "textDocument/completion", {"textDocument": {"uri": uri}, "position": position}
    )
    return result["items"]  # type: ignore[no-any-return]


TOOLS = ["retrieve_candidate", "evaluate_candidate", "send_email", "reject"]


@pytest.mark.parametrize(
    ("where", "line"),
    [
        ("a child rule's allow", "  - after: reject\n    allow: "),
        ("a flow list being typed", "  - requires_approval: [send_email, "),
        ("a block list item", "  - required_before_exit:\n      - "),
        ("a word being typed", "  - continue: re"),
        ("a conditional case", "  - after: reject\n    on_output: {true: "),
        (
            "a conditional default",
            "  - after: reject\n    on_output: {true: reject}\n    default: ",
        ),
        ("a child rule's args", "  - after: reject\n    allow: send_email\n    args:\n      "),
        ("an assertion", "expect:\n  - never: "),
        ("an assertion's tools", "expect:\n  - never_after: reject\n    tools: ["),
    ],
)
def test_completion_offers_the_declared_tools_where_a_rule_takes_tools(
    client: LspClient, tmp_path: Path, where: str, line: str
) -> None:
    text = AGENT + line
    last = text.split("\n")[-1]
    items = _complete(client, tmp_path, text, {"line": text.count("\n"), "character": len(last)})
    labels = [item["label"] for item in items]
    assert labels == TOOLS, where
    typed = len(last) - len(last.rstrip("abcdefghijklmnopqrstuvwxyz_"))
    edit = items[0]["textEdit"]
    assert edit["range"]["end"]["character"] - edit["range"]["start"]["character"] == typed
    described = next(item for item in items if item["label"] == "retrieve_candidate")
    assert described["documentation"]["value"] == "Load a candidate's profile."


def test_completion_offers_the_keys_that_fit(client: LspClient, tmp_path: Path) -> None:
    new_rule = AGENT + "  - "
    items = _complete(client, tmp_path, new_rule, {"line": new_rule.count("\n"), "character": 4})
    assert [i["label"] for i in items] == list(spec.KIND_KEYS)
    assert all(i["textEdit"]["newText"] == i["label"] + ": " for i in items)
    after = next(i for i in items if i["label"] == "after")
    assert after["documentation"]["value"] == spec.RULE_SEMANTICS["child"]
    # Inside a child rule: the keys it may still take (not those it has).
    child = AGENT.replace("    allow: evaluate_candidte\n", "    allow: evaluate_candidate\n    \n")
    row = child.split("\n").index("    ")
    labels = [i["label"] for i in _complete(client, tmp_path, child, {"line": row, "character": 4})]
    assert labels == ["note", "args"]
    # An approval rule takes a `when:` condition.
    approval = AGENT + "  - requires_approval: evaluate_candidate\n    "
    row = approval.count("\n")
    items = _complete(client, tmp_path, approval, {"line": row, "character": 4})
    assert [i["label"] for i in items] == ["note", "when"]
    when = spec.RequiresApprovalRule.model_fields["when"].description
    assert items[1]["documentation"]["value"] == when
    # At the top level: the file's keys it does not have yet.
    top = "version: 1\nag"
    labels = [i["label"] for i in _complete(client, tmp_path, top, {"line": 1, "character": 2})]
    assert labels == [
        k for k in ("agent", "description", "tags", "tools", "rules", "expect", "silence", "run")
    ]


def test_quick_fix_applies_the_did_you_mean(client: LspClient, tmp_path: Path) -> None:
    text = AGENT.replace(
        "  - terminal: [send_email, reject]",
        "  - note: both end the run\n    terminl: [send_email, reject]",
    )
    uri = client.open(tmp_path / "agent.yaml", text)
    found = client.diagnostics(uri, 1)
    # An undeclared tool, an unknown key, a misspelt kind key (which is not the rule's first).
    assert {d["code"] for d in found} == {"E011", "E013", "E021"}
    for diagnostic in found:
        actions = client.request(
            "textDocument/codeAction",
            {
                "textDocument": {"uri": uri},
                "range": diagnostic["range"],
                "context": {"diagnostics": [diagnostic]},
            },
        )
        (action,) = actions
        assert action["kind"] == "quickfix" and action["isPreferred"] is True
        (edit,) = action["edit"]["changes"][uri]
        text = _apply(text, edit)
    assert "allow: evaluate_candidate\n" in text and "    terminal: [send_email, reject]" in text
    assert "    note: the verdict picks the next step\n" in text
    client.change(uri, text, 2)
    assert client.diagnostics(uri, 2) == []


def _apply(text: str, edit: dict[str, Any]) -> str:
    lines = text.split("\n")
    start, end = edit["range"]["start"], edit["range"]["end"]
    assert start["line"] == end["line"]
    line = lines[start["line"]]
    lines[start["line"]] = line[: start["character"]] + edit["newText"] + line[end["character"] :]
    return "\n".join(lines)


def test_a_missing_extra_is_one_line_naming_it() -> None:
    # pygls made unimportable, as in an install without the `lsp` extra.
    code = (
        "import runpy, sys; sys.modules['pygls'] = None; sys.argv = ['toolfsm', 'lsp']; "
        "runpy.run_module('engine', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert done.stderr == "toolfsm: error: the language server needs: pip install 'toolfsm[lsp]'\n"
    assert done.stdout == ""


BROKEN = sorted(p for p in (ROOT / "tests" / "broken").glob("*.yaml") if p.name != "not_utf8.yaml")


def test_every_broken_file_shows_what_toolfsm_check_finds(
    client: LspClient, tmp_path: Path
) -> None:
    """The editor shows every problem `toolfsm check` reports (schema, semantic and check
    codes alike), each with a range inside the document."""
    from engine.analysis.check import check_path

    for path in BROKEN:
        text = path.read_text()
        if not re.search(r"^(version|agent|tools|rules):", text, re.M):
            # No top-level rule key: only its schema line makes it a rule file for the server.
            text += "# yaml-language-server: $schema=../../schemas/toolfsm.schema.json\n"
        uri = client.open(tmp_path / path.name, text)
        found = client.diagnostics(uri, 1)
        expected = check_path(path).diagnostics
        assert found, path.name
        assert [d["code"] for d in found] == [d.code for d in expected], path.name
        lines = text.split("\n")
        for diagnostic, wanted in zip(found, expected, strict=True):
            start, end = diagnostic["range"]["start"], diagnostic["range"]["end"]
            assert start["line"] == wanted.span.line - 1, (path.name, diagnostic)
            if text.isascii():  # (UTF-16 units are then characters)
                assert start["character"] == wanted.span.column - 1, (path.name, diagnostic)
            assert (start["line"], start["character"]) <= (end["line"], end["character"])
            assert end["line"] < len(lines), (path.name, diagnostic)


def test_yaml_files_that_are_not_rule_files_are_left_alone(
    client: LspClient, tmp_path: Path
) -> None:
    for path in [ROOT / "examples" / "support" / "script.yaml", ROOT / ".pre-commit-hooks.yaml"]:
        uri = client.open(tmp_path / path.name, path.read_text())
        assert client.diagnostics(uri, 1) == [], path.name


def test_only_the_server_imports_pygls() -> None:
    """The CLI and the features load without pygls; starting the server is what imports it."""
    code = (
        "import sys, engine.cli, engine.lsp.features; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pygls', 'lsprotocol')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout == "[]\n"
