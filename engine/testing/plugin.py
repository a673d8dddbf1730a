"""pytest plugin `toolfsm`: rule files as test items, and fixtures that load machines.

`pytest --toolfsm rules/` collects every rule file (`.yaml`/`.yml` with a top-level
version/agent/tools/rules key) among the collected paths and turns each into test items:

    rules/support.yaml::validate      the file is a valid rule file (errors fail it)
    rules/support.yaml::check         `toolfsm check` finds no error (C1xx)
    rules/support.yaml::expect[0]     each `expect:` assertion holds (A1xx)

Errors fail an item. Warnings (W2xx on the validate item, C1xx warnings on the check item)
are reported as pytest warnings, shown in the warnings summary; `--toolfsm-strict` makes them
fail the item too. Diagnostics name files relative to the directory pytest was started in.

Fixtures: `toolfsm_machine(path)` compiles a rule file (cached per session) and raises
`RuleFileError` for an invalid one; `toolfsm_check(path)` returns a `CheckResult`.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_RULE_FILE_HINT = re.compile(r"^(?:version|agent|tools|rules)\s*:", re.MULTILINE)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("toolfsm", "toolfsm rule files")
    group.addoption(
        "--toolfsm",
        action="store_true",
        default=False,
        help="collect rule files (.yaml/.yml) as tests: validate, check, each expect: assertion",
    )
    group.addoption(
        "--toolfsm-strict",
        action="store_true",
        default=False,
        help="warnings in rule files (W2xx, C1xx warnings) fail their item too",
    )
    group.addoption(
        "--toolfsm-max-states",
        type=int,
        default=200_000,
        help="bound on explored positions per rule file (default 200000)",
    )


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if not parent.config.getoption("toolfsm") or file_path.suffix not in (".yaml", ".yml"):
        return None
    try:
        text = file_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if not _RULE_FILE_HINT.search(text):
        return None
    return RuleFileTests.from_parent(parent, path=file_path)


class RuleFileFailure(Exception):
    """A rule-file test item failed: the diagnostics say why."""


class RuleFileWarning(pytest.PytestWarning):
    """A rule file has warnings (W2xx, C1xx warnings): shown in pytest's warnings summary, an
    item failure under `--toolfsm-strict`."""


class RuleFileTests(pytest.File):
    """One rule file: a validate item, a check item, and one item per assertion."""

    _result: Any = None

    _rule_file: Any = None

    @property
    def shown_path(self) -> str:
        """The file as diagnostics name it: relative to where pytest was started."""
        return os.path.relpath(self.path, self.config.invocation_params.dir)

    def rule_file(self) -> Any:
        if self._rule_file is None:
            from engine.language.loader import parse_rules, read_rule_file

            on_disk = read_rule_file(self.path)
            # Parsed again under the relative name, so every diagnostic carries it.
            self._rule_file = (
                parse_rules(on_disk.text, self.shown_path) if on_disk.text else on_disk
            )
        return self._rule_file

    def result(self) -> Any:
        if self._result is None:
            from engine.analysis.check import check_rule_file

            self._result = check_rule_file(
                self.rule_file(), max_states=self.config.getoption("toolfsm_max_states")
            )
        return self._result

    def collect(self) -> Iterator[pytest.Item]:
        yield RuleFileItem.from_parent(self, name="validate", select=_validation)
        yield RuleFileItem.from_parent(self, name="check", select=_check)
        rule_file = self.rule_file()
        if rule_file.spec is not None:
            for index in range(len(rule_file.spec.expect)):
                yield RuleFileItem.from_parent(
                    self, name=f"expect[{index}]", select=_assertion(index)
                )


def _validation(result: Any, rule_file: Any) -> list[Any]:
    return [d for d in result.diagnostics if d.code[0] in "EW"]


def _check(result: Any, rule_file: Any) -> list[Any]:
    return [d for d in result.diagnostics if d.code.startswith("C")]


def _assertion(index: int) -> Callable[[Any, Any], list[Any]]:
    def select(result: Any, rule_file: Any) -> list[Any]:
        span = rule_file.source.span(("expect", index))
        return [d for d in result.diagnostics if d.code.startswith("A") and d.span == span]

    return select


class RuleFileItem(pytest.Item):
    def __init__(self, *, select: Callable[[Any, Any], list[Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.select = select

    def runtest(self) -> None:
        from engine.language.report import as_text

        parent = self.parent
        assert isinstance(parent, RuleFileTests)
        result = parent.result()
        rule_file = parent.rule_file()
        if self.name != "validate" and not rule_file.ok:
            pytest.skip("the rule file is invalid (see its validate item)")
        found = self.select(result, rule_file)
        errors = [d for d in found if d.is_error]
        if errors or (found and self.config.getoption("toolfsm_strict")):
            raise RuleFileFailure(as_text(errors or found))
        for warning in found:  # shown in the warnings summary, at the rule file's line
            warnings.warn_explicit(
                RuleFileWarning(as_text([warning])),
                RuleFileWarning,
                filename=warning.span.path,
                lineno=warning.span.line,
            )

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, RuleFileFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style=style))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        # The domain heads the item's failure report: it names the file. (Not `FILE::NAME`:
        # pytest would rewrite that in -v lines, taking the dot of `.yaml` for a class.)
        parent = self.parent
        shown = parent.shown_path if isinstance(parent, RuleFileTests) else str(self.path)
        return self.path, None, f"{shown}: {self.name}"


@pytest.fixture(scope="session")
def toolfsm_machine() -> Callable[[str | Path], Any]:
    """Compile a rule file (cached per session); `RuleFileError` when it is invalid."""
    from engine.language.loader import load_rules
    from engine.machine.compiler import compile_rules

    cache: dict[Path, Any] = {}

    def load(path: str | Path) -> Any:
        key = Path(path).resolve()
        if key not in cache:
            cache[key] = compile_rules(load_rules(key))
        return cache[key]

    return load


@pytest.fixture
def toolfsm_check() -> Callable[..., Any]:
    """Check a rule file as `toolfsm check` does; returns the `CheckResult`."""
    from engine.analysis.check import check_path

    return check_path
