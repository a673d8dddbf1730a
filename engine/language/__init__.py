"""The language stage: rule-file text -> checked rule set with source locations.

    yamltree     safe YAML 1.2 reading with the position of every value and key
    spec         the rule language as pydantic models (the JSON Schema comes from here)
    loader       text -> RuleFile (spec + diagnostics), schema errors mapped to lines
    checks       semantic checks the schema cannot express
    jsonschemas  a tool's `parameters` schema checked before use
    outputs      how a tool's output matches conditional cases
    prompt       one system-prompt line per rule
    report       diagnostics as text, JSON, GitHub annotations, SARIF

Nothing here imports from a later stage (the machine, the runtime, the CLI).
"""
