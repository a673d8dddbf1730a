"""Static analysis of compiled machines: exploration, findings, assertions, simulation.

explore(machine) -> Graph                every reachable position, BFS (explore.py)
find(graph, source) -> [Finding]         dead ends, traps, unreachable tools (findings.py)
check_assertions(graph, source)          `expect:` assertions, proved or refuted (assertions.py)
check_rule_file / check_path -> CheckResult   all of the above plus silences (check.py)
simulate(machine, runs=N, seed=S)        random-policy runs and coverage (simulate.py)
"""

from engine.analysis.assertions import check_assertions
from engine.analysis.check import CheckResult, check_machine, check_path, check_rule_file
from engine.analysis.explore import Graph, Step, case_outputs, explore
from engine.analysis.findings import DEAD_END_CODES, TRAP_CODES, Finding, find

__all__ = [
    "DEAD_END_CODES",
    "TRAP_CODES",
    "CheckResult",
    "Finding",
    "Graph",
    "Step",
    "case_outputs",
    "check_assertions",
    "check_machine",
    "check_path",
    "check_rule_file",
    "explore",
    "find",
]
