"""The agents a worker serves, by name, each pinned by the sha256 of its rule text.

A run's workflow input names its agent and the hash of the rules it started with; a worker
whose file for that agent holds other rules refuses the run (`RulesMismatch`) instead of
replaying a different machine. The refusal fails the workflow task, not the workflow:
Temporal retries the task, so a worker with the run's rules can still pick it up.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from engine.errors import ToolfsmError
from engine.runtime.agent import Agent, load_agent
from engine.store.ids import rules_hash

__all__ = ["AgentShelf", "RulesMismatch", "UnknownAgent", "serve", "shelf_for"]


class UnknownAgent(ToolfsmError):
    """A run names an agent the worker does not serve."""


class RulesMismatch(ToolfsmError):
    """The worker's rule file for a run's agent is not the one the run was pinned to."""


class AgentShelf:
    """Agents by name (names are unique), with the hash of each one's rule text."""

    def __init__(self, agents: Iterable[Agent]) -> None:
        self.agents: dict[str, Agent] = {}
        self.hashes: dict[str, str] = {}
        for agent in agents:
            if agent.name in self.agents:
                raise ToolfsmError(
                    f"two agent files name agent {agent.name!r}: "
                    f"{self.agents[agent.name].rules_path} and {agent.rules_path}"
                )
            self.agents[agent.name] = agent
            self.hashes[agent.name] = rules_hash(agent.rules_text)

    @classmethod
    def from_paths(cls, paths: Iterable[str | Path]) -> AgentShelf:
        """The agent files among `paths` (files, or folders searched for agent files)."""
        from engine.runtime.agents import AgentDirectory

        found = AgentDirectory.from_paths(list(paths)).callees.values()
        if not found:
            shown = ", ".join(str(p) for p in paths)
            raise ToolfsmError(f"no agent files under {shown}")
        return cls(load_agent(callee.path) for callee in found)

    def find(self, name: str, sha256: str) -> Agent:
        """The agent `name`, when its rules hash to `sha256`."""
        agent = self.agents.get(name)
        if agent is None:
            served = ", ".join(sorted(self.agents)) or "none"
            raise UnknownAgent(f"this worker does not serve agent {name!r} (it serves: {served})")
        if self.hashes[name] != sha256:
            raise RulesMismatch(
                f"agent {name!r}: the run was started with rules {sha256[:12]}, but this "
                f"worker's {agent.rules_path} holds rules {self.hashes[name][:12]}; it refuses "
                "the run rather than replay another machine (serve the run's rule file)"
            )
        return agent

    def __len__(self) -> int:
        return len(self.agents)


# The shelf each task queue of this process serves (a workflow finds its agent by its
# task queue: two workers of one process may serve different files).
_SHELVES: dict[str, AgentShelf] = {}


def serve(task_queue: str, shelf: AgentShelf) -> None:
    _SHELVES[task_queue] = shelf


def shelf_for(task_queue: str) -> AgentShelf:
    shelf = _SHELVES.get(task_queue)
    if shelf is None:
        raise UnknownAgent(f"no agents are served on task queue {task_queue!r} in this process")
    return shelf
