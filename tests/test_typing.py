"""The modules listed under [tool.mypy] in pyproject.toml type-check with `mypy --strict`."""

from __future__ import annotations

import importlib.util

import pytest

from tests import _mypy_background


@pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None,
    reason="mypy is not installed (it is in the dev extra: pip install -e '.[dev]')",
)
def test_core_modules_type_check_strictly(request: pytest.FixtureRequest) -> None:
    # Started by tests/conftest.py when collection finished (tests/_mypy_background.py).
    returncode, output = _mypy_background.verdict(request.config)
    assert returncode == 0, output
