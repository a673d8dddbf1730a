"""The language server for rule files (`toolfsm lsp`, extra `toolfsm[lsp]`).

`document` indexes a rule-file text by path with exact ranges; `features` answers diagnostics,
hover, completion, go-to-definition and quick fixes as plain data; `server` speaks LSP over
stdio with pygls. Only `server` imports pygls.
"""
