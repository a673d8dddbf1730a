"""Agent tools: the three built-ins agents message agents with, as Letta has them.

Declaring one of `BUILTIN_AGENT_TOOLS` by name under `tools:` gives the agent that tool, with
the parameters and description below (no Python function); a tool declared with `agents:`
(the YAML-native form, `ToolDecl.agents`) messages the agents its tag query matches. The run
loop executes both (`engine.runtime.agents`); the texts a callee receives are Letta's.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "ASYNC_PREFIX",
    "BUILTIN_AGENT_TOOLS",
    "MAX_CALLEES",
    "ONE_PREFIX",
    "SENT",
    "TAGS_PREFIX",
    "builtin_parameters",
]

# At most this many agents match one tag query (Letta's limit), ordered by id.
MAX_CALLEES: Final = 50

# What each callee receives, as one system-role message: the prefix, a space, the message.
TAGS_PREFIX: Final = (
    "[Incoming message from external Letta agent - to reply to this message, make sure to use "
    "the 'send_message' at the end, and the system will notify the sender of your response]"
)
ONE_PREFIX: Final = (
    "[Incoming message from agent with ID '{sender}' - to reply to this message, make sure to "
    "use the 'send_message' at the end, and the system will notify the sender of your response]"
)
ASYNC_PREFIX: Final = (
    "[Incoming message from agent with ID '{sender}' - to reply to this message, make sure to "
    "use the 'send_message_to_agent_async' tool, or the agent will not receive your message]"
)
# What `send_message_to_agent_async` returns at once.
SENT: Final = "Successfully sent message"

_MESSAGE = {"type": "string", "description": "The message to send."}
_AGENT_ID = {
    "type": "string",
    "description": "The id (the agent file's `agent:` name) of the agent to message.",
}
_TAGS = {"type": "array", "items": {"type": "string"}}

BUILTIN_AGENT_TOOLS: Final[dict[str, tuple[str, dict[str, Any]]]] = {
    "send_message_to_agents_matching_tags": (
        "Send a message to every other agent that has all the tags in match_all and at least "
        "one of the tags in match_some (an empty list sets no constraint), and wait for their "
        "replies: one entry per agent, in the order of their ids.",
        {
            "type": "object",
            "properties": {
                "message": _MESSAGE,
                "match_all": {**_TAGS, "description": "Tags a callee must all have."},
                "match_some": {**_TAGS, "description": "Tags a callee must have one of."},
            },
            "required": ["message", "match_all", "match_some"],
            "additionalProperties": False,
        },
    ),
    "send_message_to_agent_and_wait_for_reply": (
        "Send a message to one other agent and wait for its reply; your identity is included "
        "for it.",
        {
            "type": "object",
            "properties": {"message": _MESSAGE, "other_agent_id": _AGENT_ID},
            "required": ["message", "other_agent_id"],
            "additionalProperties": False,
        },
    ),
    "send_message_to_agent_async": (
        "Send a message to one other agent without waiting for a reply (a notification); "
        "your identity is included for it.",
        {
            "type": "object",
            "properties": {"message": _MESSAGE, "other_agent_id": _AGENT_ID},
            "required": ["message", "other_agent_id"],
            "additionalProperties": False,
        },
    ),
}

# The parameters of a YAML-native agent tool that declares none.
NATIVE_PARAMETERS: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {"message": _MESSAGE},
    "required": ["message"],
    "additionalProperties": False,
}


def builtin_parameters(name: str) -> dict[str, Any] | None:
    """The parameters of the built-in agent tool `name` (None: not a built-in)."""
    builtin = BUILTIN_AGENT_TOOLS.get(name)
    return None if builtin is None else builtin[1]
