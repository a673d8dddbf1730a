"""The docs reviewer's tool."""

from __future__ import annotations


def read_diff(pr: int) -> str:
    """The documentation part of pull request `pr`'s diff."""
    return "(no documentation changed)"
