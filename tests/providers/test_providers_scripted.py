"""ScriptedProvider: replay from YAML/JSON/memory, deterministic ids, exhaustion, divergence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _provider_fakes import request

from engine.providers import (
    ProviderConfigError,
    ScriptError,
    ToolCall,
    Usage,
    make_provider,
)
from engine.providers.scripted import ScriptedProvider, load_script

pytestmark = pytest.mark.anyio

SCRIPT = """\
replies:
  - call: search                      # one tool call
    args: {q: "lamp"}
    expect_allowed: [search, fetch]
    expect_force: true
  - calls:                            # parallel calls
      - {call: fetch, args: {id: 7}}
      - {call: fetch, raw_args: '{"id": '}
    text: "Fetching two."
  - call: finish
    expect_forced_tool: finish
    expect_parallel: false
    usage: {input_tokens: 12, output_tokens: 3}
  - text: "All done."
"""


@pytest.fixture
def script_file(tmp_path: Path) -> Path:
    path = tmp_path / "demo.yaml"
    path.write_text(SCRIPT, encoding="utf-8")
    return path


async def test_replays_a_yaml_script_in_order(script_file: Path) -> None:
    p = ScriptedProvider.from_file(script_file)
    assert p.name == f"scripted:{script_file}" and p.remaining == 4

    r1 = await p.complete(request(("search", "fetch"), force=True))
    assert r1.tool_calls == (ToolCall("call_1", "search", '{"q": "lamp"}'),)
    assert r1.text is None and r1.tool_choice_sent is None

    r2 = await p.complete(request())
    assert r2.text == "Fetching two."
    assert r2.tool_calls == (
        ToolCall("call_2", "fetch", '{"id": 7}'),
        ToolCall("call_3", "fetch", '{"id": '),  # malformed on purpose, verbatim
    )

    r3 = await p.complete(request(("finish",), force=True, parallel=False))
    assert r3.tool_calls == (ToolCall("call_4", "finish", "{}"),)
    assert r3.usage == Usage(12, 3)

    r4 = await p.complete(request())
    assert r4.text == "All done." and r4.tool_calls == ()
    assert p.remaining == 0


async def test_exhausted_script_names_file_and_index(script_file: Path) -> None:
    p = ScriptedProvider.from_file(script_file)
    p._next = 4  # skip to the end without replaying
    with pytest.raises(ScriptError) as info:
        await p.complete(request())
    err = info.value
    assert err.kind == "script_exhausted" and not err.retryable
    assert err.script == str(script_file) and err.index == 4
    assert str(script_file) in str(err) and "#4" in str(err)


async def test_start_skips_used_replies_and_numbers_calls_on(script_file: Path) -> None:
    # A resumed run starts after the replies it used; its call ids must not restart at call_1.
    entries = load_script(script_file)
    p = ScriptedProvider(entries, source=str(script_file), start=2)
    assert p.remaining == 2
    r3 = await p.complete(request(("finish",), force=True, parallel=False))
    assert r3.tool_calls == (ToolCall("call_4", "finish", "{}"),)
    await p.complete(request())
    with pytest.raises(ScriptError) as info:
        await p.complete(request())
    assert info.value.index == 4  # numbered as in the file
    with pytest.raises(ProviderConfigError, match="cannot start at reply #5 of 4"):
        ScriptedProvider(entries, start=5)


async def test_divergence_names_file_index_and_difference(script_file: Path) -> None:
    p = ScriptedProvider.from_file(script_file)
    with pytest.raises(ScriptError) as info:
        await p.complete(request(("search",), force=False))
    err = info.value
    assert err.kind == "script_diverged" and err.index == 0
    assert "expected allowed ['fetch', 'search'], got ['search']" in str(err)
    assert "expected force=True, got force=False" in str(err)
    assert str(script_file) in str(err)
    # The failed entry is not consumed.
    assert p.remaining == 4


async def test_expect_forced_tool_checks_the_named_tool() -> None:
    p = ScriptedProvider([{"call": "finish", "expect_forced_tool": None}])
    with pytest.raises(ScriptError, match="expected forced tool None, got 'finish'"):
        await p.complete(request(("finish",), force=True))


async def test_in_memory_script_and_explicit_ids() -> None:
    p = ScriptedProvider(
        [
            {"call": "search", "args": {"q": "x"}, "id": "my-id"},
            {"call": "finish"},
        ]
    )
    assert p.name == "scripted:<memory>"
    assert (await p.complete(request())).tool_calls[0].id == "my-id"
    assert (await p.complete(request())).tool_calls[0] == ToolCall("call_2", "finish", "{}")
    with pytest.raises(ScriptError, match="<memory> is exhausted"):
        await p.complete(request())


async def test_json_script_as_a_top_level_list(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps([{"call": "fetch", "args": {"id": 1}}, {"text": "bye"}]))
    p = make_provider(f"scripted:{path}")
    assert (await p.complete(request())).tool_calls[0].arguments == '{"id": 1}'
    assert (await p.complete(request())).text == "bye"


async def test_script_does_not_police_the_rules() -> None:
    # A script may call a tool that is not allowed (to test the run loop's rejection).
    p = ScriptedProvider([{"call": "teleport", "args": {}}])
    reply = await p.complete(request(("search",), force=True))
    assert reply.tool_calls[0].name == "teleport"


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"call": "a", "calls": [{"call": "b"}]}], "either 'call' or 'calls'"),
        ([{"cal": "a"}], "unknown keys ['cal']"),
        ([{"args": {}}], "need 'call'"),
        ([{}], "needs 'call', 'calls' or 'text'"),
        ([{"call": "a", "args": {}, "raw_args": "{}"}], "either 'args' or 'raw_args'"),
        ([{"call": "a", "args": [1]}], "'args' must be a mapping"),
        ([{"calls": []}], "non-empty list"),
        ([{"calls": [{"call": "a", "bogus": 1}]}], "calls[0]"),
        ([{"text": "x", "expect_force": "yes"}], "'expect_force' must be true or false"),
        (["just a string"], "expected a mapping"),
    ],
)
def test_bad_entries_are_config_errors_with_index(entries: list[object], message: str) -> None:
    with pytest.raises(ProviderConfigError) as info:
        ScriptedProvider(entries)  # type: ignore[arg-type]
    assert message in str(info.value) and "reply #0" in str(info.value)


def test_bad_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ProviderConfigError, match="cannot read script"):
        ScriptedProvider.from_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("replies: [", encoding="utf-8")
    with pytest.raises(ProviderConfigError, match="not valid YAML") as info:
        ScriptedProvider.from_file(bad)
    assert str(info.value).count(str(bad)) == 1  # the path is said once, not twice
    other = tmp_path / "other.yaml"
    other.write_text("steps: []", encoding="utf-8")
    with pytest.raises(ProviderConfigError, match="'replies'"):
        ScriptedProvider.from_file(other)
