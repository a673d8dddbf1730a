"""The folder tree shows the flow of data, and no module reaches back up it.

Each stage may import from its own stage and from earlier ones only. An import at function
level or under TYPE_CHECKING counts too: a lazy import that reaches back is still a cycle in
the design. The package's own `engine/__init__.py` is the public facade over every stage, so
it is the one module exempt, and no module inside the package imports from it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parent.parent / "engine"

# In the order data flows: YAML text -> rule set -> compiled machine -> run loop -> front ends.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    (
        "foundation",
        ("engine.errors", "engine.codes", "engine.files", "engine.meta", "engine._version"),
    ),
    ("language", ("engine.language",)),
    ("machine", ("engine.machine",)),
    ("providers and store", ("engine.providers", "engine.store")),
    ("tools", ("engine.tools",)),
    ("analysis, testing, letta", ("engine.analysis", "engine.testing", "engine.letta")),
    ("runtime", ("engine.runtime",)),
    ("scale-out engines", ("engine.temporal",)),
    ("front ends", ("engine.cli", "engine.lsp", "engine.ui")),
    ("entry points", ("engine.entry", "engine.__main__")),
]


def _stage_of(module: str) -> int | None:
    for index, (_, prefixes) in enumerate(STAGES):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    return None


def _module_name(path: Path) -> str:
    parts = path.relative_to(ENGINE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of an engine module in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}:{node.lineno}: use absolute imports (engine.x)"
            if node.module == "engine":  # `from engine import x`: the facade
                found.append((node.lineno, "engine"))
            else:
                found.append((node.lineno, node.module or ""))
    return [(line, module) for line, module in found if module.split(".")[0] == "engine"]


MODULES = sorted(
    p for p in ENGINE.rglob("*.py") if "migrations" not in p.parts and p != ENGINE / "__init__.py"
)


def test_every_module_has_a_stage() -> None:
    lost = [
        str(p.relative_to(ENGINE.parent)) for p in MODULES if _stage_of(_module_name(p)) is None
    ]
    assert not lost, f"add these modules to a stage in tests/test_layout.py: {lost}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ENGINE)))
def test_no_module_imports_from_a_later_stage(path: Path) -> None:
    own = _stage_of(_module_name(path))
    assert own is not None
    backwards = []
    for line, module in _imports(path):
        if module == "engine":
            backwards.append(f"line {line}: imports the package facade `engine`")
            continue
        stage = _stage_of(module)
        if stage is not None and stage > own:
            backwards.append(
                f"line {line}: {module} ({STAGES[stage][0]}) from the {STAGES[own][0]} stage"
            )
    assert not backwards, (
        f"{path.relative_to(ENGINE.parent)} reaches back up the flow:\n" + "\n".join(backwards)
    )


def test_the_check_sees_imports() -> None:
    """The parser finds module- and function-level imports (else the test above could pass by
    seeing nothing)."""
    assert "engine.language.yamltree" in {m for _, m in _imports(ENGINE / "language" / "spec.py")}
    # engine.analysis.simulate imports engine.tools inside a function.
    assert "engine.tools" in {m for _, m in _imports(ENGINE / "analysis" / "simulate.py")}
    cli, compiler = _stage_of("engine.cli.run"), _stage_of("engine.machine.compiler")
    assert cli is not None and compiler is not None and cli > compiler
