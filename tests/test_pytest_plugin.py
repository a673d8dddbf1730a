"""The pytest plugin in a user's project, through a real pytest subprocess: warnings are
reported (and fail under --toolfsm-strict), paths are relative, item reports name the file."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

WARNINGS_ONLY = """\
version: 1
agent: warned
tools: [search, answer]
rules:
  - terminal: answer
  - terminal: [answer]
"""
FAILING_EXPECT = """\
version: 1
agent: searcher
tools: [search, answer]
rules:
  - terminal: answer
expect:
  - at_most: 1
    tools: [search]
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    rules = pytester.mkdir("rules")
    (rules / "warned.yaml").write_text(WARNINGS_ONLY, encoding="utf-8")
    (rules / "searcher.yaml").write_text(FAILING_EXPECT, encoding="utf-8")
    return pytester


def test_warnings_are_shown_in_the_summary(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess("--toolfsm", "rules/warned.yaml", "-rA")
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*warnings summary*",
            "rules/warned.yaml::validate",
            "*rules/warned.yaml:6: RuleFileWarning: rules/warned.yaml:6:5: warning[[]W201[]]: *",
        ]
    )


def test_strict_makes_warnings_fail(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess("--toolfsm", "--toolfsm-strict", "rules/warned.yaml")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["FAILED rules/warned.yaml::validate - rules/warned.yaml:6:5: warning[[]W201[]]: *"]
    )


def test_failures_name_their_file_with_relative_paths(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess("--toolfsm", "rules/searcher.yaml", "-v")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "rules/searcher.yaml::expect[[]0[]] FAILED*",
            "*_ rules/searcher.yaml: expect[[]0[]] _*",  # the failure report's header
            "rules/searcher.yaml:7:5: error[[]A105[]]: *",
            "FAILED rules/searcher.yaml::expect[[]0[]] - rules/searcher.yaml:7:5: error[[]A105[]]*",
        ]
    )
    after_header = result.stdout.str().split("collected", 1)[1]  # the header names rootdir
    assert str(project.path) not in after_header
