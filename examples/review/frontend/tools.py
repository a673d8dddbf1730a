"""The frontend reviewer's tool."""

from __future__ import annotations

import time


def read_diff(pr: int) -> str:
    """The frontend part of pull request `pr`'s diff."""
    time.sleep(0.2)  # a slow code host: the two reviewers read at the same time
    return "+ if (res.status === 429) return;"
