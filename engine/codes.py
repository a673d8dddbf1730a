"""Every diagnostic code toolfsm reports, described once: for SARIF's `rules[]` metadata (what
code-scanning shows beside a finding), and for anything else that explains a code.

    E0xx  the file cannot be read as YAML          E01x  schema
    E02x  semantic checks (validate)                W2xx  warnings of validate
    C1xx  findings of `toolfsm check`               A1xx  failed `expect:` assertions

Each code has a PascalCase name, a one-line summary, a fuller description, and the README
section that documents it.
"""

from __future__ import annotations

from dataclasses import dataclass

README_URL = "https://github.com/toolfsm/toolfsm/blob/main/README.md"


@dataclass(frozen=True, slots=True)
class CodeInfo:
    code: str
    name: str  # PascalCase, as SARIF's reportingDescriptor.name
    summary: str  # one sentence, no final period
    description: str  # what it means and what to do
    section: str  # the README anchor that documents it

    @property
    def help_uri(self) -> str:
        return f"{README_URL}#{self.section}"

    def help_markdown(self) -> str:
        return (
            f"**{self.code}: {self.summary}.**\n\n{self.description}\n\n"
            f"See [the README]({self.help_uri})."
        )


_LANGUAGE = "the-rule-language"
_CHECK = "checking-rule-files"
_EXPECT = "sequence-assertions-expect"
_SILENCES = "silences"

_TABLE: tuple[tuple[str, str, str, str, str], ...] = (
    # code, name, summary, description, README section
    ("E000", "UnreadableFile", "the file cannot be read", "The file could not be opened, or it is not UTF-8 text.", _LANGUAGE),
    ("E001", "MalformedYaml", "the file is not well-formed YAML", "A YAML syntax error, or a mapping key that is not a plain value. Fix the YAML at the position shown.", _LANGUAGE),
    ("E002", "YamlTag", "a YAML tag is used", "Tags such as `!!python/object` are refused: a rule file is plain data.", _LANGUAGE),
    ("E003", "YamlLimits", "the document is too large or too deep", "The document expands to too many nodes (an alias bomb) or nests too deeply.", _LANGUAGE),
    ("E004", "DuplicateKey", "a mapping has the same key twice", "YAML would silently keep the last value; toolfsm refuses the file instead. Remove one of the keys.", _LANGUAGE),
    ("E010", "WrongType", "a value has the wrong type", "A value does not have the type the rule language expects at that key (for example a number where a tool name belongs).", _LANGUAGE),
    ("E011", "RuleWithoutKind", "a rule has no kind key", "Each rule needs exactly one kind key: init, after, only_after, terminal, continue, max_calls, required_before_exit or requires_approval.", _LANGUAGE),
    ("E012", "RuleWithSeveralKinds", "a rule has several kind keys", "A rule mixes kinds; write one rule per kind.", _LANGUAGE),
    ("E013", "UnknownKey", "an unknown key", "The key is not part of the rule language at that place; the hint names the key that was probably meant.", _LANGUAGE),
    ("E014", "MissingKey", "a required key is missing", "A key the rule language requires at that place is missing.", _LANGUAGE),
    ("E015", "InvalidToolName", "an invalid tool name", "Tool names are letters, digits, `_` and `-`, 1 to 64 characters, as the LLM APIs require.", _LANGUAGE),
    ("E020", "ToolDeclaredTwice", "a tool is declared twice", "The agent's tool list names the same tool twice.", _LANGUAGE),
    ("E021", "UndeclaredTool", "a rule names a tool the agent does not have", "Every tool a rule names must be in the agent's `tools` list; the hint names the closest declared tool.", _LANGUAGE),
    ("E022", "DuplicateRule", "a rule is written twice", "The same rule appears twice; remove one.", _LANGUAGE),
    ("E023", "TerminalAndContinue", "a tool is both terminal and continue", "The run cannot both stop and go on after the tool: keep one of the two rules.", _LANGUAGE),
    ("E024", "NothingAllowedAfter", "the rules leave nothing to call after a tool", "The rules on one tool have no tool in common, so every run reaching it would dead-end.", _LANGUAGE),
    ("E025", "ChildOfTwoParents", "a tool is the child of two parent rules", "A tool that may only be called right after two different tools can never be called.", _LANGUAGE),
    ("E026", "ForbiddenCase", "an output case leads to a forbidden tool", "A conditional case leads to a tool that other rules forbid after this tool: that output would always dead-end.", _LANGUAGE),
    ("E027", "BadPrefilledArgs", "prefilled arguments do not fit the tool", "A prefilled argument is not a parameter of the tool, or its value does not fit the parameter's JSON Schema.", _LANGUAGE),
    ("E028", "InvalidParameterSchema", "a tool's parameter schema is invalid", "A tool's `parameters` is not a valid JSON Schema.", _LANGUAGE),
    ("E029", "ArgsOnSeveralInitTools", "`args` on an init rule with several tools", "Prefilled `args` need exactly one init tool; write one init rule per tool.", _LANGUAGE),
    ("E030", "ArgsForToolNotAllowed", "`args` for a tool the child rule does not allow", "Per-child `args` must name tools of the rule's `allow` list.", _LANGUAGE),
    ("E031", "ConditionalWithoutCases", "a conditional rule has no cases", "`on_output` needs at least one case.", _LANGUAGE),
    ("E032", "TwoConditionalRules", "two conditional rules on one tool", "Only one conditional rule may read a tool's output; merge the cases into one rule.", _LANGUAGE),
    ("E033", "BadApprovalCondition", "a `when:` that is no usable condition", "A `requires_approval` rule's `when:` must be a valid JSON Schema over the call's arguments, naming only parameters of the tools it covers.", _LANGUAGE),
    ("W201", "RedundantRule", "a rule repeats what another rule says", "The rule has no effect beside an earlier one; remove it.", _LANGUAGE),
    ("W203", "StrictBesideDefault", "`strict` beside a `default`", "`strict` only matters when no case matches and there is no `default`; with a `default` it has no effect.", _LANGUAGE),
    ("C101", "DeadEnd", "a reachable dead end", "After a reachable call no tool is allowed, so the run stops as a dead end. The trace shows the shortest way there.", _CHECK),
    ("C102", "UnreachableTool", "a tool that can never be called", "No reachable position allows the tool.", _CHECK),
    ("C103", "RuleNeverFires", "a rule that never fires", "A max_calls limit is never reached, or a required tool is never pending when the run tries to stop.", _CHECK),
    ("C104", "CaseNeverChosen", "a conditional case no output can choose", "An earlier key matches every output this case matches.", _CHECK),
    ("C105", "RequiredToolUnreachable", "a required tool cannot be called before the end", "A required-before-exit tool cannot be called before the run could end, so the run is trapped.", _CHECK),
    ("C106", "ChildNeverCallable", "a child rule allows a tool that cannot be called there", "The child rule allows a tool that other rules forbid right after its tool.", _CHECK),
    ("C107", "MaxCallsConflict", "a max_calls limit leaves nothing allowed", "A used-up max_calls limit leaves no tool allowed where a rule needs one: a dead end.", _CHECK),
    ("C108", "StrictDeadEnd", "a strict conditional dead-ends on an unmatched output", "You asked for it with `strict: true`; silence it when the tool's outputs are exhaustive.", _CHECK),
    ("C110", "NoWayToFinish", "no way to finish", "A reachable loop has no terminal tool and no point where a reply is allowed.", _CHECK),
    ("C120", "ApprovalEveryTime", "a forced position where every tool needs approval", "The run pauses for a human there every time.", _CHECK),
    ("C121", "TerminalNeverEnds", "a terminal tool that never ends a run", "A required-before-exit tool is always pending when it is called.", _CHECK),
    ("C130", "AgentQueryMatchesNone", "an agent tool's tag query matches no agent", "No agent checked with it has the tags the `agents:` query asks for; the call would always return an empty list.", _CHECK),
    ("C131", "MoreMatchesThanMaxCallees", "more agents match than `max_callees`", "The agents past `max_callees` (in the order of their names) are never messaged.", _CHECK),
    ("C132", "AgentCallCycle", "agent calls go round in a cycle", "An agent's call tree reaches the agent again; at run time the call back into a caller is refused.", _CHECK),
    ("C133", "AgentCallTooDeep", "agent calls nest deeper than `run.max_agent_depth`", "The call would run past the caller's nesting limit and is refused at run time.", _CHECK),
    ("C134", "CalleeNeedsApproval", "a callee can pause for approval", "The caller then waits (`awaiting_agents`) until a human decides on the callee's call.", _CHECK),
    ("C190", "CheckIncomplete", "the exploration bound was hit", "The check explored `--max-states` positions without finishing: it is incomplete. Raise the bound.", _CHECK),
    ("C198", "SilencedError", "a silence names an error code", "Errors cannot be silenced; fix the rule instead.", _SILENCES),
    ("C199", "UselessSilence", "a silence that hides nothing", "No finding matches the silence; remove it.", _SILENCES),
    ("A100", "AssertionUnknownTool", "an assertion names a tool the agent does not have", "Every tool an `expect:` assertion names must be declared.", _EXPECT),
    ("A101", "NeverViolated", "a `never` assertion fails", "Some run calls the tool; the trace shows the shortest.", _EXPECT),
    ("A102", "NeverAfterViolated", "a `never_after` assertion fails", "Some run calls the tool after the other; the trace shows the shortest.", _EXPECT),
    ("A103", "OnlyAfterViolated", "an `only_after` assertion fails", "Some run calls the tool before the other was called; the trace shows the shortest.", _EXPECT),
    ("A104", "AlwaysBeforeViolated", "an `always_before` assertion fails", "Some run ends without having called the tool before; the trace shows the shortest.", _EXPECT),
    ("A105", "AtMostViolated", "an `at_most` assertion fails", "Some run calls the tool more often than allowed; the trace shows the shortest.", _EXPECT),
    ("A106", "EventuallyViolated", "an `eventually` assertion fails", "Some run ends without calling the tool; the trace shows the shortest.", _EXPECT),
    ("A107", "EndsWithViolated", "an `ends_with` assertion fails", "Some run ends with another last call; the trace shows the shortest.", _EXPECT),
)  # fmt: skip

CODES: dict[str, CodeInfo] = {row[0]: CodeInfo(*row) for row in _TABLE}


def describe(code: str) -> CodeInfo:
    """The description of `code` (a generic one for a code this table does not know)."""
    known = CODES.get(code)
    if known is not None:
        return known
    return CodeInfo(code, f"Toolfsm{code}", f"toolfsm {code}", f"toolfsm reported {code}.", "")
