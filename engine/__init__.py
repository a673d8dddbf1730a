"""toolfsm: tool rules for LLM agents, compiled to an explicit finite-state machine."""
