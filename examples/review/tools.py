"""The supervisor's two decisions (ask_reviewers is an agent tool: no function)."""

from __future__ import annotations


def merge(pr: int) -> str:
    """Merge the pull request `pr`."""
    return f"pull request {pr} merged"


def request_changes(pr: int, changes: str) -> str:
    """Ask the author of pull request `pr` for `changes`."""
    return f"changes requested on pull request {pr}: {changes}"
