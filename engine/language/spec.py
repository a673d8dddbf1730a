"""The rule language: pydantic models of one agent's rule file (pure data, no I/O).

These models are the single source of truth for the vocabulary: `schemas/toolfsm.schema.json`
is generated from them (`python -m engine.language.spec > schemas/toolfsm.schema.json`) and a test fails
when the checked-in file is stale.

Every rule is a mapping with exactly one *kind key* naming the tool(s) it is about:

    init, after (+ allow | on_output), only_after, terminal, continue,
    max_calls, required_before_exit, requires_approval
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    Tag,
    WithJsonSchema,
)

from engine.language.agenttools import (
    BUILTIN_AGENT_TOOLS,
    MAX_CALLEES,
    NATIVE_PARAMETERS,
)
from engine.language.yamltree import TypedKey, plain_key

# What OpenAI and Anthropic both accept as a function name.
TOOL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ToolName = Annotated[str, StringConstraints(pattern=TOOL_NAME_PATTERN)]
ToolNames = Annotated[list[ToolName], Field(min_length=1)]


def _one_or_list(value: Any) -> str:
    return "list" if isinstance(value, list | tuple) else "one"


_TOOL_NAME_SCHEMA = {"type": "string", "pattern": TOOL_NAME_PATTERN}


def _typed_output_key(value: Any) -> TypedKey:
    """A wrapped output-case key, checked like the plain keys (bool, int, float, str)."""
    inner = value.value if isinstance(value, TypedKey) else None
    if not isinstance(inner, bool | int | float | str):
        raise ValueError("an output case key is a boolean, a number or a string")
    return TypedKey(inner)


# One tool, or a list of tools sharing the rule. Tagged, so an error names one branch only.
# The JSON Schema names both types beside the `oneOf` (the same language): without a type,
# yaml-language-server completes a bare `key` with no colon.
OneOrMoreTools = Annotated[
    Annotated[ToolName, Tag("one")] | Annotated[ToolNames, Tag("list")],
    Discriminator(_one_or_list),
    WithJsonSchema(
        {
            "type": ["string", "array"],
            "oneOf": [
                _TOOL_NAME_SCHEMA,
                {"type": "array", "items": _TOOL_NAME_SCHEMA, "minItems": 1},
            ],
        }
    ),
]
# A key Python's `==` would confuse with an earlier key of another type (`true` and `1` in one
# mapping): the YAML reader wraps it (`engine.language.yamltree.TypedKey`) so both cases are kept.
_TypedOutputKey = Annotated[
    TypedKey,
    PlainValidator(_typed_output_key),
    PlainSerializer(plain_key),
    WithJsonSchema({"type": ["boolean", "number", "string"]}),
]
OutputKey = StrictBool | StrictInt | StrictFloat | StrictStr | _TypedOutputKey
Args = dict[str, Any]


def as_tuple(tools: str | list[str]) -> tuple[str, ...]:
    """Normalise a `OneOrMoreTools` value to a tuple, keeping the author's order."""
    return (tools,) if isinstance(tools, str) else tuple(tools)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Rule(_Model):
    note: str | None = Field(
        default=None, description="Why the rule exists; shown by `toolfsm explain`."
    )


# What each rule kind means, written once: the description of the rule's kind key, shown on
# hover by editors (the JSON Schema and `toolfsm lsp`) and checked against README's table.
RULE_SEMANTICS: dict[str, str] = {
    "init": "At the start of a run only the `init` tools are allowed (all of them if several) "
    "and a call is forced. `args` prefill the first call (one init tool only).",
    "child": "Right after the `after` tool, only the `allow` tools are allowed and a call is "
    "forced. Per-child `args` prefill that child's call.",
    "conditional": "Right after the `after` tool, its output picks the next tool: the first "
    "matching `on_output` case allows exactly that tool (forced). No match: `default` if given; "
    "otherwise no tool when `strict: true` (a dead end), every tool when `strict: false`.",
    "parent": "The `tools` may only be called immediately after the `only_after` tool; right "
    "after it only they are allowed, and a call is forced.",
    "terminal": "Calling one of these tools ends the run (unless `required_before_exit` tools "
    "are still uncalled).",
    "continue": "After one of these tools the run always goes on.",
    "max_calls": "Each of the `tools` may be called at most `max_calls` times per run; after "
    "each call of one of them the run goes on.",
    "required_before_exit": "The run may not end until each of these tools has been called: a "
    "terminal call or a reply without a tool call then continues with a message naming the "
    "uncalled tools.",
    "requires_approval": "A call to one of these tools (when the rules allow it) is not "
    "executed until a human approves it; a denial sends the reason back to the model. With "
    "`when:`, only a call whose arguments match that JSON Schema needs approval.",
}


def _kind_key(kind: str) -> Any:
    """The Field of a rule's kind key: titled by the rule kind, described by its semantics."""
    return Field(title=f"{kind} rule", description=RULE_SEMANTICS[kind])


class InitRule(_Rule):
    """Call these tools first: at the start of a run only they are allowed, and a call is forced."""

    model_config = ConfigDict(title="init rule")

    init: OneOrMoreTools = _kind_key("init")
    args: Args | None = Field(
        default=None,
        description="Prefilled arguments for the first call (one init tool only); they "
        "replace the model's values for the same keys.",
    )


class ChildRule(_Rule):
    """After `after`, only the tools in `allow` may be called, and a call is forced."""

    model_config = ConfigDict(title="child rule")

    after: ToolName = _kind_key("child")
    allow: OneOrMoreTools = Field(
        description="The only tools allowed right after `after`; one of them must be called."
    )
    args: dict[ToolName, Args] | None = Field(
        default=None,
        description="Per-child prefilled arguments, applied when the child is called right "
        "after `after`.",
    )


class ConditionalRule(_Rule):
    """After `after`, the next tool depends on its output: the first matching case wins."""

    model_config = ConfigDict(title="conditional rule")

    after: ToolName = _kind_key("conditional")
    on_output: dict[OutputKey, ToolName] = Field(
        description="Output case -> the only tool allowed next. Boolean keys match the output "
        "'true'/'false' in any case; number keys match an output that parses as an equal "
        "number; string keys match the output exactly."
    )
    default: ToolName | None = Field(
        default=None, description="The tool allowed when no case matches."
    )
    strict: bool = Field(
        default=False,
        description="When no case matches and there is no default: true = no tool is allowed "
        "(dead end), false = every tool is allowed.",
    )


class ParentRule(_Rule):
    """The tools in `tools` may only be called immediately after `only_after`."""

    model_config = ConfigDict(title="parent rule")

    only_after: ToolName = _kind_key("parent")
    tools: OneOrMoreTools = Field(
        description="The tools that may only be called immediately after `only_after`."
    )


class TerminalRule(_Rule):
    """Calling one of these tools ends the run."""

    model_config = ConfigDict(title="terminal rule")

    terminal: OneOrMoreTools = _kind_key("terminal")


class ContinueRule(_Rule):
    """After one of these tools the run always goes on (the model is asked again)."""

    model_config = ConfigDict(populate_by_name=True, title="continue rule")

    continue_: OneOrMoreTools = Field(
        alias="continue", title="continue rule", description=RULE_SEMANTICS["continue"]
    )


class MaxCallsRule(_Rule):
    """Each of these tools may be called at most `max_calls` times per run."""

    model_config = ConfigDict(title="max_calls rule")

    # (examples: an editor's snippet inserts the first example, not a 0 the minimum refuses)
    max_calls: Annotated[StrictInt, Field(ge=1, examples=[3])] = _kind_key("max_calls")
    tools: OneOrMoreTools = Field(description="The tools each limited to `max_calls` calls.")


class RequiredBeforeExitRule(_Rule):
    """The run may not end until each of these tools has been called."""

    model_config = ConfigDict(title="required_before_exit rule")

    required_before_exit: OneOrMoreTools = _kind_key("required_before_exit")


class RequiresApprovalRule(_Rule):
    """A call to one of these tools waits for a human's approval before it runs."""

    model_config = ConfigDict(title="requires_approval rule")

    requires_approval: OneOrMoreTools = _kind_key("requires_approval")
    when: dict[str, Any] | None = Field(
        default=None,
        description="A JSON Schema over the call's arguments: only a call whose arguments "
        "match it needs approval (e.g. {properties: {amount: {exclusiveMinimum: 100}}}); "
        "without it, every call does.",
        examples=[{"properties": {"amount": {"exclusiveMinimum": 100}}}],
    )


def flag_tools(rule: object) -> tuple[str, ...]:
    """The tools a rule of a flag kind (init, terminal, continue, required_before_exit,
    requires_approval) names; () for the kinds that relate tools to each other."""
    match rule:
        case InitRule():
            return as_tuple(rule.init)
        case TerminalRule():
            return as_tuple(rule.terminal)
        case ContinueRule():
            return as_tuple(rule.continue_)
        case RequiredBeforeExitRule():
            return as_tuple(rule.required_before_exit)
        case RequiresApprovalRule():
            return as_tuple(rule.requires_approval)
    return ()


# Kind key -> rule kind. `after` is shared by child and conditional rules.
KIND_KEYS: dict[str, str] = {
    "init": "init",
    "after": "child",
    "only_after": "parent",
    "terminal": "terminal",
    "continue": "continue",
    "max_calls": "max_calls",
    "required_before_exit": "required_before_exit",
    "requires_approval": "requires_approval",
}


def rule_kind(value: Any) -> str | None:
    """The kind of a raw rule mapping (or a rule model), None when it has no single kind key."""
    if isinstance(value, _Rule):
        return RULE_KINDS_BY_CLASS[type(value)]
    if not isinstance(value, dict):
        return None
    present = [key for key in KIND_KEYS if key in value]
    if len(present) != 1:
        return None
    kind = KIND_KEYS[present[0]]
    if kind == "child" and "on_output" in value:
        return "conditional"
    return kind


Rule = Annotated[
    Annotated[InitRule, Tag("init")]
    | Annotated[ChildRule, Tag("child")]
    | Annotated[ConditionalRule, Tag("conditional")]
    | Annotated[ParentRule, Tag("parent")]
    | Annotated[TerminalRule, Tag("terminal")]
    | Annotated[ContinueRule, Tag("continue")]
    | Annotated[MaxCallsRule, Tag("max_calls")]
    | Annotated[RequiredBeforeExitRule, Tag("required_before_exit")]
    | Annotated[RequiresApprovalRule, Tag("requires_approval")],
    Discriminator(
        rule_kind,
        custom_error_type="rule_kind",
        custom_error_message="a rule needs exactly one kind key: " + ", ".join(KIND_KEYS),
    ),
]

RULE_KINDS_BY_CLASS: dict[type[_Rule], str] = {
    InitRule: "init",
    ChildRule: "child",
    ConditionalRule: "conditional",
    ParentRule: "parent",
    TerminalRule: "terminal",
    ContinueRule: "continue",
    MaxCallsRule: "max_calls",
    RequiredBeforeExitRule: "required_before_exit",
    RequiresApprovalRule: "requires_approval",
}


Tags = Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field()]


class AgentCall(_Model):
    """A tool that messages other agents: every agent (the caller and its callers excepted)
    with all the `match_all` tags and at least one of the `match_some` tags (an empty list
    sets no constraint), at most `max_callees` of them, ordered by name. Each runs its own
    loop under its own rules; they run concurrently (at most `concurrency` at once) and the
    tool's result lists their replies."""

    model_config = ConfigDict(title="agent call")

    match_all: Tags = Field(default_factory=list, description="Tags a callee must all have.")
    match_some: Tags = Field(
        default_factory=list, description="Tags a callee must have at least one of."
    )
    max_callees: Annotated[StrictInt, Field(ge=1, le=MAX_CALLEES)] = Field(
        default=MAX_CALLEES,
        description=f"At most this many agents are messaged (1 to {MAX_CALLEES}); "
        "`toolfsm check` warns when more match.",
    )
    concurrency: Annotated[StrictInt, Field(ge=1)] | None = Field(
        default=None, description="At most this many callees run at once (default: all)."
    )


class ToolDecl(_Model):
    """A tool the agent has, with optional documentation and argument schema."""

    model_config = ConfigDict(title="tool")

    name: ToolName = Field(
        description="The tool's name, as the model calls it (letters, digits, `_` and `-`, "
        "1 to 64 characters)."
    )
    description: str = Field(default="", description="What the tool does, as the model sees it.")
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="JSON Schema of the arguments (an object schema); prefilled arguments "
        "are checked against it.",
    )
    idempotent: bool = Field(
        default=False,
        description="Safe to run twice: a call interrupted by a crash is re-executed on resume "
        "instead of waiting for a decision.",
    )
    agents: AgentCall | None = Field(
        default=None,
        description="This tool messages other agents (chosen by tags) and returns their "
        "replies; no Python function. Its parameters default to one string, `message`.",
    )


def _name_or_decl(value: Any) -> str:
    return "name" if isinstance(value, str) else "decl"


ToolEntry = Annotated[
    Annotated[ToolName, Tag("name")] | Annotated[ToolDecl, Tag("decl")],
    Discriminator(_name_or_decl),
]


# -- sequence assertions (`expect:`) and silences (`silence:`), checked by `toolfsm check` --------
#
# An assertion is a statement about every possible run of the machine; `toolfsm check` proves
# it by exhaustive exploration or prints the shortest run that breaks it. A run *ends* when it
# stops for a terminal tool or for a reply without a tool call (dead ends are findings of their
# own, C101). "Called" means a call the rules accepted (a violating call never enters a run).


class _Expect(_Model):
    note: str | None = Field(default=None, description="Why the assertion holds; shown on failure.")


class NeverExpect(_Expect):
    """None of these tools is ever called, in any run."""

    model_config = ConfigDict(title="never assertion")

    never: OneOrMoreTools = Field(
        description="A101: none of these tools is ever called, in any run."
    )


class NeverAfterExpect(_Expect):
    """Once `never_after` has been called (anywhere earlier in the run), `tools` are never called."""

    model_config = ConfigDict(title="never_after assertion")

    never_after: ToolName = Field(
        description="A102: once this tool has been called (anywhere earlier in the run), "
        "the `tools` are never called."
    )
    tools: OneOrMoreTools = Field(description="The tools never called after `never_after`.")


class OnlyAfterExpect(_Expect):
    """`tools` are only called once `only_after` has been called, anywhere earlier in the run.

    Unlike the parent rule of the same key, the earlier call need not be the previous one.
    """

    model_config = ConfigDict(title="only_after assertion")

    only_after: ToolName = Field(
        description="A103: the `tools` are only called once this tool has been called, anywhere "
        "earlier in the run (unlike the parent rule, not necessarily just before)."
    )
    tools: OneOrMoreTools = Field(description="The tools only called once `only_after` was.")


class AlwaysBeforeExpect(_Expect):
    """Every run that ends has called each of these tools before its final step.

    The final step is the terminal call (which does not count) or the reply without a tool call.
    """

    model_config = ConfigDict(title="always_before assertion")

    always_before: OneOrMoreTools = Field(
        description="A104: every run that ends has called each of these tools before its final "
        "step (a terminal call does not count itself)."
    )


class AtMostExpect(_Expect):
    """Each of `tools` is called at most `at_most` times per run."""

    model_config = ConfigDict(title="at_most assertion")

    at_most: Annotated[StrictInt, Field(ge=0, examples=[1])] = Field(
        description="A105: each of the `tools` is called at most this many times per run."
    )
    tools: OneOrMoreTools = Field(description="The tools each called at most `at_most` times.")


class EventuallyExpect(_Expect):
    """Every run that ends has called each of these tools (the final call counts)."""

    model_config = ConfigDict(title="eventually assertion")

    eventually: OneOrMoreTools = Field(
        description="A106: every run that ends has called each of these tools (the final call "
        "counts)."
    )


class EndsWithExpect(_Expect):
    """Every run that ends has one of these tools as its last call."""

    model_config = ConfigDict(title="ends_with assertion")

    ends_with: OneOrMoreTools = Field(
        description="A107: every run that ends has one of these tools as its last call."
    )


EXPECT_KEYS: dict[str, type[_Expect]] = {
    "never": NeverExpect,
    "never_after": NeverAfterExpect,
    "only_after": OnlyAfterExpect,
    "always_before": AlwaysBeforeExpect,
    "at_most": AtMostExpect,
    "eventually": EventuallyExpect,
    "ends_with": EndsWithExpect,
}


def expect_kind(value: Any) -> str | None:
    """The kind of a raw assertion mapping (or model): its one kind key, else None."""
    if isinstance(value, _Expect):
        return next(k for k, cls in EXPECT_KEYS.items() if type(value) is cls)
    if not isinstance(value, dict):
        return None
    present = [key for key in EXPECT_KEYS if key in value]
    return present[0] if len(present) == 1 else None


Expect = Annotated[
    Annotated[NeverExpect, Tag("never")]
    | Annotated[NeverAfterExpect, Tag("never_after")]
    | Annotated[OnlyAfterExpect, Tag("only_after")]
    | Annotated[AlwaysBeforeExpect, Tag("always_before")]
    | Annotated[AtMostExpect, Tag("at_most")]
    | Annotated[EventuallyExpect, Tag("eventually")]
    | Annotated[EndsWithExpect, Tag("ends_with")],
    Discriminator(
        expect_kind,
        custom_error_type="expect_kind",
        custom_error_message="an assertion needs exactly one kind key: " + ", ".join(EXPECT_KEYS),
    ),
]


class Silence(_Model):
    """Silence a warning of `toolfsm check` for this file, with the reason it is acceptable."""

    model_config = ConfigDict(title="silence")

    code: Annotated[str, StringConstraints(pattern=r"^[A-Z][0-9]{3}$")] = Field(
        description="The warning code, e.g. C120. Errors cannot be silenced."
    )
    reason: Annotated[str, StringConstraints(min_length=1)] = Field(
        description="Why the warning does not apply; shown by `toolfsm check --show-silenced`."
    )


class RunSettings(_Model):
    """How the agent runs: its instructions, step limit, continuation mode and tools module."""

    model_config = ConfigDict(title="run settings")

    instructions: str = Field(
        default="",
        description="The system prompt's text; the rules are appended to it, one line each.",
    )
    input: str | None = Field(
        default=None, description="The user message used when `toolfsm run` gets no --input."
    )
    max_steps: Annotated[StrictInt, Field(ge=1)] = Field(
        default=50, description="Model calls per run before it stops with step_limit."
    )
    max_agent_depth: Annotated[StrictInt, Field(ge=0)] = Field(
        default=3,
        description="How deep agent calls may nest below this agent's run (a callee is one "
        "deeper than its caller); a call that would nest deeper gets an error result.",
    )
    continuation: Literal["default", "heartbeat"] = Field(
        default="default",
        description="default: any tool call continues and a reply without one ends the run. "
        "heartbeat: every tool gets a `request_heartbeat` parameter and a call without a rule "
        "that continues ends the run unless it is true.",
    )
    parallel_tool_calls: bool = Field(
        default=True, description="Whether the model may make several tool calls in one reply."
    )
    tools_module: str | None = Field(
        default=None,
        description="Where the tool functions live: a .py file relative to this file, or a "
        "dotted module name. Default: tools.py beside this file.",
    )
    output_text: Literal["json", "python"] = Field(
        default="json",
        description="How a tool's return value becomes the text output cases match. json: a "
        "string as it is, True/False as true/false, None as null, anything else as JSON. "
        "python: Python's str(), as Letta does (True, None, {'a': 1}, [1, 2]); `toolfsm "
        "import` writes it.",
    )
    max_argument_bytes: Annotated[int, Field(ge=1)] = Field(
        default=1024 * 1024,
        description="The largest raw arguments text of one tool call, in UTF-8 bytes. A larger "
        "call is refused as a violation (the model is told the cap) and stored truncated.",
    )
    max_tokens: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        examples=[1024],
        description="Most tokens the model may write per reply (`--max-tokens`); sent as "
        "max_tokens to OpenAI-compatible servers and Anthropic, max_completion_tokens to "
        "OpenAI. Default: the server's (Anthropic: 4096).",
    )
    timeout: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        examples=[60],
        description="Seconds to wait for one model request (`--timeout`). Default: 60 "
        "(OpenAI and compatible servers), 120 (Anthropic).",
    )
    retries: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        examples=[3],
        description="How often a failed model request (timeout, connection, rate limit, "
        "server error) is tried again before the run stops (`--retries`). Default: 3.",
    )
    gating: Literal["auto", "allowed_tools", "filter"] | None = Field(
        default=None,
        examples=["auto"],
        description="How OpenAI and compatible servers are told which tools are allowed "
        "(`--gating`). auto (default): tool_choice allowed_tools with the full tool list, "
        "falling back to filtering the tool list on a server that refuses it; allowed_tools: "
        "never fall back; filter: send only the allowed tools.",
    )


class AgentSpec(_Model):
    """One agent's tools and tool rules."""

    version: Literal[1] = Field(description="Version of the rule language; always 1 for now.")
    agent: Annotated[str, StringConstraints(min_length=1)] = Field(description="Agent name.")
    description: str = Field(default="", description="What the agent is for (free text).")
    tags: Tags = Field(
        default_factory=list,
        description="Tags other agents find this one by (`send_message_to_agents_matching_tags`, "
        "a tool's `agents:` query).",
    )
    tools: Annotated[list[ToolEntry], Field(min_length=1)] = Field(
        description="The tools the agent has, in the order they are offered to the model: a "
        "name, or a mapping with `name`, `description`, `parameters` and `idempotent`."
    )
    rules: list[Rule] = Field(
        default_factory=list,
        description="The tool rules; each rule has exactly one kind key (init, after, "
        "only_after, terminal, continue, max_calls, required_before_exit, requires_approval), "
        "plus an optional `note` saying why.",
    )
    expect: list[Expect] = Field(
        default_factory=list,
        description="Assertions about every possible run, proved by `toolfsm check`.",
    )
    silence: list[Silence] = Field(
        default_factory=list,
        description="Warnings of `toolfsm check` that do not apply to this file, with reasons.",
    )
    run: RunSettings = Field(
        default_factory=RunSettings, description="How `toolfsm run` runs the agent."
    )

    def tool_decls(self) -> tuple[ToolDecl, ...]:
        """Every tool as a `ToolDecl`, in declaration order; a built-in agent tool (named
        only) and a YAML-native one (`agents:`) with their parameters filled in."""
        return tuple(_filled(ToolDecl(name=t) if isinstance(t, str) else t) for t in self.tools)

    def tool_names(self) -> tuple[str, ...]:
        return tuple(t if isinstance(t, str) else t.name for t in self.tools)


def _filled(decl: ToolDecl) -> ToolDecl:
    """`decl` with the parameters and description an agent tool has when none are given."""
    if decl.parameters is not None:
        return decl
    builtin = BUILTIN_AGENT_TOOLS.get(decl.name) if decl.agents is None else None
    if builtin is not None:
        return decl.model_copy(
            update={"parameters": builtin[1], "description": decl.description or builtin[0]}
        )
    if decl.agents is not None:
        return decl.model_copy(update={"parameters": NATIVE_PARAMETERS})
    return decl


SCHEMA_ID = "https://toolfsm.dev/schemas/toolfsm.schema.json"


def _for_editors(schema: Any) -> Any:
    """The same language, written the way editors (yaml-language-server) present it well.

    - no `"default": null` (absent already means None): completion would insert `null`;
    - `anyOf: [X, {type: null}]` becomes X with `type: [X's type, "null"]`: hover would show
      the title twice, joined by `||`.
    """
    if isinstance(schema, list):
        return [_for_editors(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _for_editors(value) for key, value in schema.items()}
    if out.get("default", ...) is None:
        del out["default"]
    branches = out.get("anyOf")
    if isinstance(branches, list) and len(branches) == 2 and {"type": "null"} in branches:
        (other,) = [b for b in branches if b != {"type": "null"}]
        if isinstance(other.get("type"), str) and not {"anyOf", "oneOf", "$ref"} & set(other):
            del out["anyOf"]
            out = {**other, **out, "type": [other["type"], "null"]}
    return out


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a rule file, as checked in under `schemas/`."""
    schema = _for_editors(AgentSpec.model_json_schema(by_alias=True))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
        "title": "toolfsm rule file",
    }


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":  # pragma: no cover - `python -m engine.language.spec > schemas/...`
    print(json_schema_text(), end="")
