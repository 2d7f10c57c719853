"""Whatever is in a scenario file, loading it ends in a scenario or one ScenarioError: never a
traceback. Property-based: arbitrary bytes, arbitrary TOML, and real scenarios with arbitrary
parts replaced."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from operator_console.scenarios import ScenarioError
from operator_console.scenarios.model import Scenario, load_scenario_file

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
EXAMPLES = 300
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = ("title", "description", "subject", "topology", "workload", "chapters", "expect")
documents = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), values, max_size=7)


def _load(path: Path, data: bytes) -> Scenario | None:
    path.write_bytes(data)
    try:
        return load_scenario_file(path)
    except ScenarioError as exc:
        assert str(exc).startswith(str(path)), exc  # the message names the file
        return None


@PROPERTY
@given(raw=st.binary(max_size=400))
def test_arbitrary_bytes_load_or_raise_a_scenario_error(tmp_path: Path, raw: bytes) -> None:
    _load(tmp_path / "fuzz.toml", raw)


@PROPERTY
@given(document=documents)
def test_arbitrary_toml_loads_or_raises_a_scenario_error(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    _load(tmp_path / "fuzz.toml", tomli_w.dumps(document).encode())


def _replace(data: Any, path: list[Any], value: Any) -> Any:
    """`data` with the part at `path` replaced by `value` (the path stops where it can)."""
    if not path or not isinstance(data, dict | list):
        return value
    head, rest = path[0], path[1:]
    if isinstance(data, dict):
        keys = sorted(data)
        if not keys:
            return value
        key = keys[head % len(keys)]
        return {**data, key: _replace(data[key], rest, value)}
    if not data:
        return value
    index = head % len(data)
    return [*data[:index], _replace(data[index], rest, value), *data[index + 1 :]]


@PROPERTY
@given(
    name=st.sampled_from(sorted(p.name for p in SCENARIOS.glob("*.toml"))),
    path=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=5),
    value=values,
)
def test_real_scenarios_with_any_part_replaced_load_or_raise_a_scenario_error(
    tmp_path: Path, name: str, path: list[int], value: Any
) -> None:
    data = tomllib.loads((SCENARIOS / name).read_text())
    mutated = _replace(data, path, value)
    if not isinstance(mutated, dict):
        mutated = {"title": mutated}
    _load(tmp_path / name, tomli_w.dumps(mutated).encode())


def test_a_file_that_is_not_utf8_is_named_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(b'title = "ok"\n\xff\xfe\x00junk')
    try:
        load_scenario_file(path)
    except ScenarioError as exc:
        assert str(exc) == f"{path}: not UTF-8 text (byte 13); a scenario is a TOML text file"
    else:
        raise AssertionError("a file that is not UTF-8 loaded")
