"""Issue 11's code targets, kept: cyclomatic complexity as radon counts it.

No function in engine/ above complexity 25, and at most 15 at 15 or more. A function that
grows past them is split into named steps (the failure message lists the ones at 15 or more).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from radon.complexity import cc_visit
from radon.visitors import Class, Function

ENGINE = Path(__file__).resolve().parent.parent / "engine"
MAX_COMPLEXITY = 25
HIGH = 15
MAX_HIGH = 15


def _functions(block: Function | Class) -> Iterator[Function]:
    # radon lists a class's methods beside the class itself: the class is not a function.
    if isinstance(block, Class):
        return
    yield block
    for closure in block.closures:
        yield from _functions(closure)


def _complexities() -> list[tuple[int, str]]:
    found = []
    for path in sorted(ENGINE.rglob("*.py")):
        for block in cc_visit(path.read_text(encoding="utf-8")):
            for function in _functions(block):
                name = f"{path.relative_to(ENGINE.parent)}:{function.lineno} {function.fullname}"
                found.append((function.complexity, name))
    return sorted(found, reverse=True)


def test_no_function_is_too_complex() -> None:
    found = _complexities()
    assert len(found) > 500  # radon saw the package
    too_complex = [f"{name} ({cc})" for cc, name in found if cc > MAX_COMPLEXITY]
    assert not too_complex, (
        f"split these into named steps (complexity > {MAX_COMPLEXITY}): {too_complex}"
    )


def test_few_functions_are_complex() -> None:
    high = [f"{name} ({cc})" for cc, name in _complexities() if cc >= HIGH]
    assert len(high) <= MAX_HIGH, f"{len(high)} functions at complexity >= {HIGH}: {high}"
