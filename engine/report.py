"""Diagnostics out: text, JSON, GitHub workflow annotations and SARIF 2.1.0.

Shared by `toolfsm validate` and `toolfsm check` so both speak the same formats.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from engine.errors import Diagnostic, format_trace

FORMATS = ("text", "json", "github", "sarif")


def as_text(diagnostics: Sequence[Diagnostic]) -> str:
    lines = []
    for d in diagnostics:
        lines.append(f"{d.span}: {d.severity}[{d.code}]: {d.message}")
        if d.hint:
            lines.append(f"  hint: {d.hint}")
        if d.trace is not None:
            lines.append(f"  trace: {format_trace(d.trace)}")
    return "\n".join(lines)


def as_json(diagnostics: Sequence[Diagnostic]) -> str:
    return json.dumps([_record(d) for d in diagnostics], indent=2)


def _record(d: Diagnostic) -> dict[str, Any]:
    return {
        "file": d.span.path,
        "line": d.span.line,
        "column": d.span.column,
        "severity": str(d.severity),
        "code": d.code,
        "message": d.message,
        "hint": d.hint,
        "rule": d.rule,
        **({"trace": list(d.trace)} if d.trace is not None else {}),
    }


def _full_message(d: Diagnostic) -> str:
    text = d.message + (f" (hint: {d.hint})" if d.hint else "")
    if d.trace is not None:
        text += f" (trace: {format_trace(d.trace)})"
    return text


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def as_github(diagnostics: Sequence[Diagnostic]) -> str:
    """GitHub Actions workflow commands: `::error file=…,line=…,col=…,title=…::message`."""
    lines = []
    for d in diagnostics:
        message = _full_message(d)
        props = (
            f"file={_escape_property(d.span.path)},line={d.span.line},col={d.span.column},"
            f"title={_escape_property(d.code)}"
        )
        lines.append(f"::{d.severity}{' ' + props}::{_escape_data(message)}")
    return "\n".join(lines)


def as_sarif(diagnostics: Sequence[Diagnostic], *, tool_version: str = "0.1.0") -> str:
    codes = sorted({d.code for d in diagnostics})
    results = [
        {
            "ruleId": d.code,
            "level": "error" if d.is_error else "warning",
            "message": {"text": _full_message(d)},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": d.span.path},
                        "region": {"startLine": d.span.line, "startColumn": d.span.column},
                    }
                }
            ],
            **({"properties": {"trace": list(d.trace)}} if d.trace is not None else {}),
        }
        for d in diagnostics
    ]
    document = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "toolfsm",
                        "version": tool_version,
                        "informationUri": "https://github.com/toolfsm/toolfsm",
                        "rules": [{"id": code} for code in codes],
                    }
                },
                "results": results,
            }
        ],
    }
    return json.dumps(document, indent=2)


def render(diagnostics: Sequence[Diagnostic], fmt: str) -> str:
    match fmt:
        case "text":
            return as_text(diagnostics)
        case "json":
            return as_json(diagnostics)
        case "github":
            return as_github(diagnostics)
        case "sarif":
            return as_sarif(diagnostics)
    raise ValueError(f"unknown format {fmt!r}")  # pragma: no cover - the CLI checks choices
