"""Starting runs on Temporal, deciding on them, and waiting for their ends."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from engine.errors import ToolfsmError
from engine.temporal.wire import WORKFLOW, Decision, RunLocation, RunSpec

__all__ = ["TemporalError", "connect", "decide", "start_run"]

# A workflow task a killed worker held is given to another after this long (Temporal: 10 s).
TASK_TIMEOUT = timedelta(seconds=3)


class TemporalError(ToolfsmError):
    """The Temporal server could not be reached, or refused a request."""


async def connect(address: str, namespace: str = "default") -> Client:
    try:
        return await Client.connect(address, namespace=namespace)
    except RuntimeError as exc:  # the SDK's connection failure
        raise TemporalError(f"cannot reach the Temporal server at {address}: {exc}") from None


async def start_run(location: RunLocation, spec: RunSpec) -> WorkflowHandle[Any, Any]:
    """Start `spec` as a workflow (its id: the run's)."""
    client = await connect(location.address, location.namespace)
    try:
        return await client.start_workflow(
            WORKFLOW,
            spec,
            id=location.workflow_id,
            task_queue=location.task_queue,
            task_timeout=TASK_TIMEOUT,
        )
    except RPCError as exc:
        raise TemporalError(f"Temporal refused to start run {spec.run_id}: {exc}") from None


async def decide(location: RunLocation, decision: Decision) -> dict[str, Any]:
    """Send the `decide` update: the call's record once the decision is recorded, or a
    `TemporalError` saying why it was refused (the run keeps waiting)."""
    client = await connect(location.address, location.namespace)
    handle = client.get_workflow_handle(location.workflow_id)
    try:
        result: dict[str, Any] = await handle.execute_update(
            "decide", decision, rpc_timeout=timedelta(seconds=30)
        )
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(cause or exc)
        raise TemporalError(message) from None
    except RPCError as exc:
        raise TemporalError(
            f"Temporal could not deliver the decision to run {location.workflow_id}: {exc}"
        ) from None
    return result
