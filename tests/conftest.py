"""Suite-wide settings.

Hypothesis explores new random examples on every local run (that is how the property tests
find bugs), but CI must be deterministic: with CI set, the `ci` profile derandomizes the
search, so a given commit always runs the same examples. Any profile can still be chosen with
`--hypothesis-profile`.
"""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import settings

from tests import _mypy_background

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def _forget_server_quirks() -> None:
    """Every test starts without what an earlier one taught the OpenAI provider about a
    server (it is kept per base URL for the life of the process)."""
    module = sys.modules.get("engine.providers.openai")
    if module is not None:
        module.forget_server_quirks()


def pytest_collection_finish(session: pytest.Session) -> None:
    _mypy_background.start(session)  # tests/test_typing.py's mypy, beside the other tests


def pytest_sessionfinish(session: pytest.Session) -> None:
    _mypy_background.stop(session)
