"""The live view of `toolfsm run` rendering streamed events on a real rich Console: the model's
text as it arrives, folded onto its `model:` line, and (in a terminal) a call's arguments as
they are written, on a line the call's own line replaces."""

from __future__ import annotations

import io

from rich.console import Console

from engine.cli.run import LiveView
from engine.runtime.events import (
    StepStarted,
    TextDelta,
    ToolCallDelta,
    ToolCallStarted,
)


def view(*, terminal: bool) -> tuple[LiveView, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, color_system=None, width=100_000)
    if not terminal:
        console.soft_wrap = True
    return LiveView(console), out


def test_streamed_text_is_printed_piece_by_piece_on_one_line() -> None:
    live, out = view(terminal=False)
    live(StepStarted(0, ("lookup",), False, None))
    seen = []
    for piece in ["Let", " me", "  look\n", "\n", "it up", " [now]."]:
        live(TextDelta(0, piece))
        seen.append(out.getvalue().splitlines()[-1])
    live(ToolCallStarted(0, "c1", "lookup", {"account": "a1"}))

    # Each piece shows as it arrives, whitespace folded as on every line of the view.
    assert seen == [
        "  model: Let",
        "  model: Let me",
        "  model: Let me look",
        "  model: Let me look",
        "  model: Let me look it up",
        "  model: Let me look it up [now].",
    ]
    assert out.getvalue().splitlines()[1:] == [
        "  model: Let me look it up [now].",
        '  → lookup(account="a1")',
    ]


def test_a_long_text_is_cut_in_a_terminal_and_kept_whole_in_a_log() -> None:
    pieces = ["word " * 50] * 4  # 1,000 characters
    for terminal, expected in ((True, 400), (False, 999)):
        live, out = view(terminal=terminal)
        live(StepStarted(0, ("lookup",), False, None))
        for piece in pieces:
            live(TextDelta(0, piece))
        live(ToolCallStarted(0, "c1", "lookup", {}))
        line = out.getvalue().splitlines()[1]
        assert len(line.removeprefix("  model: ")) == expected
        assert line.endswith("…") is terminal


def test_a_calls_arguments_stream_in_a_terminal_then_the_call_line_replaces_them() -> None:
    live, out = view(terminal=True)
    live(StepStarted(0, ("lookup",), False, None))
    live(ToolCallDelta(0, 0, "c1", "lookup", ""))
    live(ToolCallDelta(0, 0, None, "lookup", '{"account"'))
    shown = out.getvalue()
    live(ToolCallDelta(0, 0, None, "lookup", ': "a1"}'))
    live(ToolCallStarted(0, "c1", "lookup", {"account": "a1"}))

    assert shown.endswith('  … lookup {"account"')
    # The streamed line is erased (carriage return, erase line) before the call's own line.
    assert out.getvalue().endswith('\r\x1b[2K  → lookup(account="a1")\n')


def test_a_log_shows_the_call_once_complete_only() -> None:
    live, out = view(terminal=False)
    live(StepStarted(0, ("lookup",), False, None))
    live(TextDelta(0, "Looking."))
    live(ToolCallDelta(0, 0, "c1", "lookup", '{"account": "a1"}'))
    live(ToolCallStarted(0, "c1", "lookup", {"account": "a1"}))

    assert out.getvalue().splitlines()[1:] == ["  model: Looking.", '  → lookup(account="a1")']
