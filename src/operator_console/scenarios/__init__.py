"""Scenario files, the chapter runner and the headless runner."""

from operator_console.scenarios.catalog import find_scenario, list_scenarios, scenario_dirs
from operator_console.scenarios.model import Chapter, FaultSpec, Scenario, ScenarioError

__all__ = [
    "Chapter",
    "FaultSpec",
    "Scenario",
    "ScenarioError",
    "find_scenario",
    "list_scenarios",
    "scenario_dirs",
]
