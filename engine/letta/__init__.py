"""Migration from and to Letta's tool rules: read (`reader`), translate (`translate`), write YAML
(`writer`). `import_letta` and `export_letta` are what `toolfsm import` / `toolfsm export` run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.letta.reader import (
    LettaAgent,
    LettaDocument,
    LettaFormatError,
    LettaTool,
    parse_letta,
    read_letta,
)
from engine.letta.translate import (
    Export,
    Skipped,
    Translation,
    TranslationError,
    letta_to_spec,
    spec_to_letta,
    spec_to_letta_agent,
)
from engine.letta.writer import render_rule_file


@dataclass(frozen=True)
class Imported:
    """One imported agent: the translation and the rule-file text written for it."""

    translation: Translation
    text: str

    @property
    def name(self) -> str:
        return self.translation.agent.name

    @property
    def lossy(self) -> bool:
        return self.translation.lossy


def import_document(document: LettaDocument) -> list[Imported]:
    """Translate and write every agent of a parsed Letta document."""
    out = []
    for agent in document.agents:
        translation = letta_to_spec(agent)
        if document.notes:
            translation = Translation(
                translation.agent,
                translation.spec,
                translation.origins,
                (*document.notes, *translation.notes),
                translation.skipped,
                translation.tools_derived,
            )
        out.append(Imported(translation, render_rule_file(translation, document.path)))
    return out


def import_letta(text: str, path: str = "<string>") -> list[Imported]:
    """Letta JSON text -> one toolfsm rule file per agent (`LettaFormatError` if unreadable)."""
    return import_document(parse_letta(text, path))


def import_letta_file(path: str | Path) -> list[Imported]:
    return import_document(read_letta(path))


__all__ = [
    "Export",
    "Imported",
    "LettaAgent",
    "LettaDocument",
    "LettaFormatError",
    "LettaTool",
    "Skipped",
    "Translation",
    "TranslationError",
    "import_document",
    "import_letta",
    "import_letta_file",
    "letta_to_spec",
    "parse_letta",
    "read_letta",
    "render_rule_file",
    "spec_to_letta",
    "spec_to_letta_agent",
]
