"""Parameter descriptions come from the docstring in any of the three common styles."""

from __future__ import annotations

import pytest

from engine.tools import Tool


def google(query: str, limit: int = 5) -> list[str]:
    """Search the catalogue.

    Args:
        query: What to look for,
            in plain words.
        limit (int): How many hits at most.
    """
    return []


def sphinx(query: str, limit: int = 5) -> list[str]:
    """Search the catalogue.

    :param query: What to look for,
        in plain words.
    :param int limit: How many hits at most.
    :returns: the hits
    """
    return []


def numpy(query: str, limit: int = 5) -> list[str]:
    """Search the catalogue.

    Parameters
    ----------
    query : str
        What to look for,
        in plain words.
    limit : int, optional
        How many hits at most.

    Returns
    -------
    list of str
    """
    return []


@pytest.mark.parametrize("fn", [google, sphinx, numpy], ids=["google", "sphinx", "numpy"])
def test_parameter_docs_in_every_style(fn: object) -> None:
    t = Tool.from_function(fn)  # type: ignore[arg-type]
    assert t.description == "Search the catalogue."
    properties = t.parameters["properties"]
    assert properties["query"]["description"] == "What to look for, in plain words."
    assert properties["limit"]["description"] == "How many hits at most."


def test_a_docstring_of_parameters_only_gives_no_description() -> None:
    def bare(query: str) -> str:
        """:param query: What to look for."""
        return query

    t = Tool.from_function(bare)
    assert t.description == ""
    assert t.parameters["properties"]["query"]["description"] == "What to look for."
