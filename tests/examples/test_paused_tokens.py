"""Token figures at an approval pause agree, or say what differs (issue 10, section 5).

The live line of `toolfsm run` counts every reply the model was paid for, the paused step's
included; the store (what `runs show` and `runs list` print) has the finished steps only until
the step finishes. Both must be labelled so a reader can reconcile them.
"""

from __future__ import annotations

import re

from _example_cli import Cli


def test_the_live_line_and_the_store_reconcile_at_an_approval_pause(cli: Cli) -> None:
    run = cli("run", "examples/support/agent.yaml").stdout
    live = re.search(r"stopped: awaiting_approval .* tokens (\d+) in / (\d+) out", run)
    paused = re.search(r"of which step 2 \(paused\): (\d+) in / (\d+) out, stored when", run)
    assert live and paused, run
    stored = cli.last_run().run
    assert int(live[1]) == stored.input_tokens + int(paused[1])
    assert int(live[2]) == stored.output_tokens + int(paused[2])

    show = cli("runs", "show").stdout
    assert (
        f"tokens {stored.input_tokens} in / {stored.output_tokens} out (finished steps; "
        "the paused step's are added when it finishes)"
    ) in show
    listing = cli("runs", "list").stdout
    assert f"{stored.input_tokens}/{stored.output_tokens}" in listing
    assert "tokens: of the finished steps; a paused step's are added when it finishes" in listing

    # Once the step finishes, the store has every reply, and no label is printed.
    done = cli("runs", "approve", stored.id).stdout
    final = re.search(r"stopped: terminal_tool .* tokens (\d+) in / (\d+) out", done)
    assert final, done
    finished = cli.last_run().run
    assert (finished.input_tokens, finished.output_tokens) == (int(final[1]), int(final[2]))
    assert "paused" not in cli("runs", "show").stdout.splitlines()[1]
