"""The backend reviewer's tool."""

from __future__ import annotations

import time


def read_diff(pr: int) -> str:
    """The backend part of pull request `pr`'s diff."""
    time.sleep(0.2)  # a slow code host: the two reviewers read at the same time
    return "+ @limit('5/minute')\n  def login(request): ..."
