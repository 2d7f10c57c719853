"""Whatever a person types after a command, the CLI answers with its own message and exit code,
never a traceback. Property-based over every command that returns by itself (the console, `run`
of a real scenario, `lab up` and `serve` keep running, so only their argument errors are fed)."""

from __future__ import annotations

import os
import tempfile

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from operator_console.cli import main

EXAMPLES = 300
COMMANDS = [
    ["tickets", "list"],
    ["tickets", "show"],
    ["actions", "list"],
    ["actions", "show"],
    ["actions", "approve"],
    ["actions", "reject"],
    ["kill-switch", "on"],
    ["kill-switch", "off"],
    ["kill-switch", "status"],
    ["audit", "list"],
    ["audit", "show"],
    ["audit", "verify"],
    ["scenarios", "list"],
    ["lab", "status"],
    ["lab", "down"],
    ["watch", "nope-subject"],
    ["watch", "ratelimiter", "--headless", "--endpoints"],
    ["run", "no-such-scenario", "--headless"],
    ["mode", "set"],
    ["mode", "show"],
]
WORDS = [
    "--db",
    "--json",
    "--limit",
    "--state",
    "--run",
    "--reason",
    "--kind",
    "--ticket",
    "--mode",
    "--brain",
    "--interval",
    "--pace",
    "--duration",
    "--endpoints",
    "--quiet",
    "-h",
    "--help",
    "1",
    "0",
    "-1",
    "999999999999999999999",
    "nan",
    "auto",
    "approve",
    "sqlite:///",
    "sqlite:////proc/x/y.db",
    "postgresql://nobody@127.0.0.1:1/x",
    "nodb://",
    "",
    " ",
    "ü",
    "\x00x",
    "../",
    "/dev/null",
]
arguments = st.lists(st.sampled_from(WORDS) | st.text(max_size=12), max_size=6)


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> CliRunner:
    data = tmp_path_factory.mktemp("cli-fuzz")
    return CliRunner(env={"OPERATOR_CONSOLE_DATA_DIR": str(data), "OPERATOR_CONSOLE_DB": None})


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(command=st.sampled_from(COMMANDS), extra=arguments)
def test_any_arguments_end_in_a_message_never_a_traceback(
    runner: CliRunner, command: list[str], extra: list[str]
) -> None:
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:  # a relative --db lands here
        os.chdir(scratch)
        try:
            result = runner.invoke(main, [*command, *extra], catch_exceptions=True)
        finally:
            os.chdir(cwd)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(
            f"{[*command, *extra]!r} raised {type(result.exception).__name__}: "
            f"{result.exception}\n{result.output}"
        ) from result.exception
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 1, 2), (command, extra, result.exit_code, result.output)


def test_the_fuzzed_commands_are_real_commands() -> None:
    """Each command path above exists, so the property exercises real handlers."""
    for command in COMMANDS:
        result = CliRunner().invoke(main, [*command[:2], "--help"])
        assert result.exit_code == 0, (command, result.output)
        assert "Usage:" in result.output
