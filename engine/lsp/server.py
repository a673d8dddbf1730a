"""`toolfsm lsp`: the language server for rule files, on pygls, over stdio.

It imports pygls, so it is imported only when the server starts (`engine.cli.lsp` checks that
the `lsp` extra is installed first). Every answer comes from `engine.lsp.features`; this module
converts between LSP's types and positions (in the client's units: UTF-16 by default) and the
features' plain data (0-based lines, columns in code points).
"""

from __future__ import annotations

import asyncio
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path
from pygls.workspace import TextDocument
from pygls.workspace.position_codec import ServerTextPosition, ServerTextRange

from engine.errors import Severity
from engine.lsp import features
from engine.lsp.document import Position, RuleDocument

_SEVERITY = {
    Severity.ERROR: types.DiagnosticSeverity.Error,
    Severity.WARNING: types.DiagnosticSeverity.Warning,
}


def _version() -> str:
    try:
        return version("toolfsm")
    except PackageNotFoundError:  # pragma: no cover - running from a plain checkout
        return "0"


server = LanguageServer(
    "toolfsm", _version(), text_document_sync_kind=types.TextDocumentSyncKind.Full
)


def _client_range(document: TextDocument, where: features.Range) -> types.Range:
    start, end = where
    server_range = ServerTextRange(ServerTextPosition(*start), ServerTextPosition(*end))
    return document.range_to_client_units(server_range)


def _server_position(document: TextDocument, position: types.Position) -> Position:
    converted = document.position_from_client_units(position)
    return converted.line, converted.character


class _Checker:
    """Validates and checks documents off the event loop, newest text only.

    A check can take a second on a large state space; meanwhile hover and completion keep
    answering. A change that arrives while a document is being checked marks it dirty: when
    the running check ends, its result is published only if the text is still the one it
    checked, and the newest text is checked next. So typing never queues up stale checks,
    and what is published always belongs to the version it names. All state lives on the
    event loop; the worker thread runs only `features.diagnostics`, a pure function.
    """

    def __init__(self) -> None:
        self.running: set[str] = set()
        self.dirty: set[str] = set()

    async def request(self, ls: LanguageServer, uri: str) -> None:
        if uri in self.running:
            self.dirty.add(uri)
            return
        self.running.add(uri)
        try:
            while True:
                self.dirty.discard(uri)
                await self._check(ls, uri)
                if uri not in self.dirty:
                    break
        finally:
            self.running.discard(uri)

    async def _check(self, ls: LanguageServer, uri: str) -> None:
        document = ls.workspace.get_text_document(uri)
        text, checked = document.source, document.version
        path = to_fs_path(uri) or uri
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(None, features.diagnostics, text, path)
        current = ls.workspace.text_documents.get(uri)
        if current is None or current.version != checked or current.source != text:
            return  # closed meanwhile, or changed: the newer text is checked next
        ls.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(
                uri=uri,
                version=checked,
                diagnostics=[_diagnostic(current, item) for item in found],
            )
        )


_checker = _Checker()


def _diagnostic(document: TextDocument, item: features.EditorDiagnostic) -> types.Diagnostic:
    data: dict[str, Any] | None = None
    if item.fix is not None:
        where, replacement = item.fix
        client = _client_range(document, where)
        data = {"replacement": replacement, "range": _range_json(client)}
    return types.Diagnostic(
        range=_client_range(document, item.range),
        message=item.message,
        severity=_SEVERITY[item.diagnostic.severity],
        code=item.diagnostic.code,
        source="toolfsm",
        data=data,
    )


def _range_json(where: types.Range) -> dict[str, Any]:
    return {
        "start": {"line": where.start.line, "character": where.start.character},
        "end": {"line": where.end.line, "character": where.end.character},
    }


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
async def did_open(ls: LanguageServer, params: types.DidOpenTextDocumentParams) -> None:
    await _checker.request(ls, params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
async def did_change(ls: LanguageServer, params: types.DidChangeTextDocumentParams) -> None:
    await _checker.request(ls, params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_SAVE, types.SaveOptions(include_text=False))
async def did_save(ls: LanguageServer, params: types.DidSaveTextDocumentParams) -> None:
    await _checker.request(ls, params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: LanguageServer, params: types.DidCloseTextDocumentParams) -> None:
    ls.text_document_publish_diagnostics(
        types.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[])
    )


@server.feature(types.TEXT_DOCUMENT_HOVER)
def hover(ls: LanguageServer, params: types.HoverParams) -> types.Hover | None:
    document = ls.workspace.get_text_document(params.text_document.uri)
    found = features.hover(
        RuleDocument.parse(document.source), _server_position(document, params.position)
    )
    if found is None:
        return None
    markdown, where = found
    return types.Hover(
        contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=markdown),
        range=_client_range(document, where),
    )


@server.feature(types.TEXT_DOCUMENT_DEFINITION)
def definition(ls: LanguageServer, params: types.DefinitionParams) -> types.Location | None:
    document = ls.workspace.get_text_document(params.text_document.uri)
    found = features.definition(
        RuleDocument.parse(document.source), _server_position(document, params.position)
    )
    if found is None:
        return None
    return types.Location(uri=params.text_document.uri, range=_client_range(document, found))


@server.feature(
    types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[" ", "[", ","])
)
def completion(ls: LanguageServer, params: types.CompletionParams) -> types.CompletionList:
    document = ls.workspace.get_text_document(params.text_document.uri)
    found = features.complete(document.source, _server_position(document, params.position))
    items = [
        types.CompletionItem(
            label=item.label,
            kind=types.CompletionItemKind.Property
            if item.is_key
            else types.CompletionItemKind.Value,
            detail=item.detail,
            documentation=types.MarkupContent(
                kind=types.MarkupKind.Markdown, value=item.documentation
            )
            if item.documentation
            else None,
            text_edit=types.TextEdit(
                range=_client_range(document, item.replace), new_text=item.insert
            ),
        )
        for item in found
    ]
    return types.CompletionList(is_incomplete=False, items=items)


@server.feature(
    types.TEXT_DOCUMENT_CODE_ACTION,
    types.CodeActionOptions(code_action_kinds=[types.CodeActionKind.QuickFix]),
)
def code_action(ls: LanguageServer, params: types.CodeActionParams) -> list[types.CodeAction]:
    """A quick fix per "did you mean" diagnostic in the request's range."""
    actions = []
    for diagnostic in params.context.diagnostics:
        data = diagnostic.data if isinstance(diagnostic.data, dict) else {}
        replacement, where = data.get("replacement"), data.get("range")
        if diagnostic.source != "toolfsm" or not isinstance(replacement, str) or where is None:
            continue
        edit_range = types.Range(
            start=types.Position(**where["start"]), end=types.Position(**where["end"])
        )
        edit = types.TextEdit(range=edit_range, new_text=replacement)
        actions.append(
            types.CodeAction(
                title=f"Change to '{replacement}'",
                kind=types.CodeActionKind.QuickFix,
                diagnostics=[diagnostic],
                is_preferred=True,
                edit=types.WorkspaceEdit(changes={params.text_document.uri: [edit]}),
            )
        )
    return actions


def serve() -> None:
    """Serve one client over standard input and output until it exits."""
    server.start_io()
