"""The exception tree and the diagnostic record every phase reports problems with.

Library code raises only these classes, never a bare ValueError: a caller can catch
`ToolfsmError` for "anything toolfsm refused", or a phase's class for finer handling.

    ToolfsmError
    ├── RuleFileError        a rule file is unreadable or invalid (carries all diagnostics)
    ├── UnknownToolError     a gating call named a tool the agent does not have
    ├── PositionError        a serialised position does not fit the machine it is loaded into
    └── MissingExtraError    an optional part needs an extra that is not installed
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class SourceSpan:
    """Where something stands in a rule file: 1-based line and column, as editors count.

    `end_line`/`end_column` (1-based, the column just past the last character) give the
    extent of the key or value when it is known; they take no part in equality, so a span
    still names a place by where it starts.
    """

    path: str
    line: int
    column: int
    end_line: int | None = field(default=None, compare=False)
    end_column: int | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in a rule file.

    `rule` is the 0-based index of the rule it is about (None when it is about the file or
    the tool list); `code` is stable (tests and silences refer to it), `message` is for people.
    `trace` is the shortest counterexample of a `toolfsm check` finding: steps `tool` or
    `tool=OUTPUT` that replay through `toolfsm trace` (None when the finding has none).
    """

    severity: Severity
    code: str
    message: str
    span: SourceSpan
    rule: int | None = None
    hint: str | None = None
    trace: tuple[str, ...] | None = None

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def __str__(self) -> str:
        text = f"{self.span}: {self.severity}[{self.code}]: {self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        if self.trace is not None:
            text += f" (trace: {format_trace(self.trace)})"
        return text


def format_trace(trace: Iterable[str]) -> str:
    """A counterexample as one line: the steps separated by spaces, or `(start)` when empty."""
    steps = list(trace)
    return " ".join(_quote_step(s) for s in steps) if steps else "(start)"


def _quote_step(step: str) -> str:
    # Quote steps a shell would split or expand, so the line pastes into `toolfsm trace`.
    if step and all(c.isalnum() or c in "_-=.+:/,@%" for c in step):
        return step
    return "'" + step.replace("'", "'\\''") + "'"


class ToolfsmError(Exception):
    """Base class of every error toolfsm raises on purpose."""


@dataclass(eq=False)
class RuleFileError(ToolfsmError):
    """A rule file could not be loaded or compiled; `diagnostics` holds every problem found."""

    path: str
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self._summary())

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    def _summary(self) -> str:
        errors = self.errors or self.diagnostics
        lines = [str(d) for d in errors]
        head = f"{self.path}: {len(errors)} error(s) in rule file"
        return "\n".join([head, *lines])

    def __str__(self) -> str:
        return self._summary()


class UnknownToolError(ToolfsmError):
    """A tool name that the agent does not declare (e.g. a hallucinated tool call)."""

    def __init__(self, tool: str, known: Iterable[str]) -> None:
        self.tool = tool
        self.known = tuple(known)
        super().__init__(f"unknown tool {tool!r}; the agent has: {', '.join(self.known)}")


class PositionError(ToolfsmError):
    """A stored position cannot be restored into this machine (e.g. the rule file changed)."""


class MissingExtraError(ToolfsmError, ImportError):
    """An optional part of toolfsm (an LLM provider, the Hypothesis strategies) was used but
    its extra is not installed; the message says what to install, in one line.

    Also an ImportError, so `try: import ... except ImportError` around optional parts works.
    """

    def __init__(self, what: str, extra: str) -> None:
        self.extra = extra
        super().__init__(f"{what} needs: pip install 'toolfsm[{extra}]'")
