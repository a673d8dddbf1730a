"""Diagnostics out: text, JSON, GitHub workflow annotations and SARIF 2.1.0.

Shared by `toolfsm validate` and `toolfsm check` so both speak the same formats.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from engine.codes import describe
from engine.errors import Diagnostic, format_trace

FORMATS = ("text", "json", "github", "sarif")


# A line a CI runner would take as a workflow command (GitHub's `::warning::...`, Azure's
# `##vso[...]`); `::` also stops and restarts command processing. User text never starts one.
_WORKFLOW_COMMAND = re.compile(r"^(\s*)(::|##\[|##vso\[)", re.MULTILINE)


def neutralise_commands(text: str) -> str:
    """`text` with a space put before any line start a CI runner reads as a command."""
    return _WORKFLOW_COMMAND.sub(lambda m: f"{m.group(1)} {m.group(2)}", text)


def as_text(diagnostics: Sequence[Diagnostic]) -> str:
    lines = []
    for d in diagnostics:
        lines.append(f"{d.span}: {d.severity}[{d.code}]: {d.message}")
        if d.hint:
            lines.append(f"  hint: {d.hint}")
        if d.trace is not None:
            lines.append(f"  trace: {format_trace(d.trace)}")
    return neutralise_commands("\n".join(lines))


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
    """GitHub Actions workflow commands:
    `::error file=…,line=…,col=…,endLine=…,endColumn=…,title=toolfsm (E021)::message`."""
    lines = []
    for d in diagnostics:
        message = _full_message(d)
        span = d.span
        props = f"file={_escape_property(span.path)},line={span.line},col={span.column}"
        if span.end_line is not None and span.end_column is not None:
            props += f",endLine={span.end_line},endColumn={span.end_column}"
        props += f",title={_escape_property(f'toolfsm ({d.code})')}"
        lines.append(f"::{d.severity} {props}::{_escape_data(message)}")
    return "\n".join(lines)


def _uri(path: str) -> str:
    """A file path as a SARIF artifact URI: relative paths percent-encoded (`with%20space.yaml`),
    absolute ones as `file:` URIs."""
    if path.startswith("<"):  # <stdin>, <string>: not a file
        return quote(path, safe="")
    native = Path(path)
    if native.is_absolute():
        return native.as_uri()
    return quote(native.as_posix(), safe="/")


def _region(d: Diagnostic) -> dict[str, int]:
    region = {"startLine": d.span.line, "startColumn": d.span.column}
    if d.span.end_line is not None and d.span.end_column is not None:
        region |= {"endLine": d.span.end_line, "endColumn": d.span.end_column}
    return region


def _rule(code: str, level: str) -> dict[str, Any]:
    """SARIF's `reportingDescriptor` for a code: what code scanning shows beside a result."""
    info = describe(code)
    return {
        "id": code,
        "name": info.name,
        "shortDescription": {"text": f"{info.summary[0].upper()}{info.summary[1:]}."},
        "fullDescription": {"text": info.description},
        "help": {
            "text": f"{info.description} See {info.help_uri}",
            "markdown": info.help_markdown(),
        },
        "helpUri": info.help_uri,
        "defaultConfiguration": {"level": level},
    }


def as_sarif(diagnostics: Sequence[Diagnostic], *, tool_version: str | None = None) -> str:
    from engine.meta import version

    levels = {d.code: "error" if d.is_error else "warning" for d in diagnostics}
    codes = sorted(levels)
    index = {code: i for i, code in enumerate(codes)}
    results = [
        {
            "ruleId": d.code,
            "ruleIndex": index[d.code],
            "level": "error" if d.is_error else "warning",
            "message": {"text": _full_message(d)},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": _uri(d.span.path)},
                        "region": _region(d),
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
                        "version": tool_version or version(),
                        "informationUri": "https://github.com/toolfsm/toolfsm",
                        "rules": [_rule(code, levels[code]) for code in codes],
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
