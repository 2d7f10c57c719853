"""Finding scenarios: the project's `scenarios/` folder, or the copy shipped inside the wheel."""

from __future__ import annotations

import os
from pathlib import Path

from operator_console.scenarios.model import Scenario, ScenarioError, load_scenario_file

_PACKAGE = Path(__file__).resolve().parent.parent


def scenario_dirs() -> list[Path]:
    """Folders searched in order: $OPERATOR_CONSOLE_SCENARIOS, the source tree, the wheel's copy."""
    dirs: list[Path] = []
    extra = os.environ.get("OPERATOR_CONSOLE_SCENARIOS")
    if extra:
        dirs.extend(Path(p) for p in extra.split(os.pathsep) if p)
    source_tree = _PACKAGE.parent.parent / "scenarios"
    bundled = _PACKAGE / "bundled_scenarios"
    dirs.extend(d for d in (source_tree, bundled) if d.is_dir())
    return dirs


def scenario_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in scenario_dirs():
        for path in sorted(folder.glob("*.toml")):
            found.setdefault(path.stem, path)
    return found


def find_scenario(name_or_path: str) -> Scenario:
    """Load a scenario by name, or from a path to a .toml file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.is_file():
        if not candidate.is_file():
            raise ScenarioError(candidate, "", "no such file")
        return load_scenario_file(candidate)
    files = scenario_files()
    if name_or_path not in files:
        known = ", ".join(sorted(files)) or "none found"
        raise ScenarioError(
            name_or_path,
            "",
            f"no scenario by that name (known: {known}); see `operator-console scenarios list`",
        )
    return load_scenario_file(files[name_or_path])


def list_scenarios() -> tuple[list[Scenario], list[ScenarioError]]:
    """Every scenario that loads, and the errors of those that do not."""
    good: list[Scenario] = []
    bad: list[ScenarioError] = []
    for path in scenario_files().values():
        try:
            good.append(load_scenario_file(path))
        except ScenarioError as exc:
            bad.append(exc)
    return good, bad
