"""run_shell's mechanics on real processes: output and exit status, the run folder as working
directory, a clean environment, the output cap and a timeout that kills the whole group."""

from __future__ import annotations

import uuid
from pathlib import Path

import psutil
import pytest

from operator_console.actions.policy import Decision, decide
from operator_console.actions.shell import run_command, shell_action
from operator_console.actions.store import Mode


async def test_output_exit_status_and_the_run_folder(tmp_path: Path) -> None:
    out = await run_command("pwd; echo hi; exit 3", cwd=tmp_path, timeout_s=5, output_cap=1000)
    assert out.startswith("exit 3 in ")
    assert str(tmp_path) in out and "hi" in out


async def test_the_console_environment_does_not_reach_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-not-for-commands")
    monkeypatch.setenv("OPERATOR_CONSOLE_DB", "postgresql://user:pw@db/console")
    out = await run_command("env", cwd=tmp_path, timeout_s=5, output_cap=5000)
    assert "sk-ant-not-for-commands" not in out and "postgresql" not in out
    assert "PATH=" in out and f"HOME={tmp_path}" in out


async def test_output_is_capped_and_its_full_size_noted(tmp_path: Path) -> None:
    out = await run_command(
        "head -c 20000 /dev/zero | tr '\\0' x", cwd=tmp_path, timeout_s=5, output_cap=1000
    )
    assert "20000 bytes, first 1000 shown" in out
    assert out.split("\n", 1)[1] == "x" * 1000


async def test_a_timeout_kills_the_command_and_its_children(tmp_path: Path) -> None:
    marker = f"oc-shell-{uuid.uuid4().hex[:8]}"
    out = await run_command(
        f"sh -c 'exec -a {marker} sleep 30' & sleep 30",
        cwd=tmp_path,
        timeout_s=0.5,
        output_cap=1000,
    )
    assert out.startswith("timed out after 0.5 s and was killed")
    left = [
        p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])
    ]
    _, alive = psutil.wait_procs(left, timeout=3)
    assert alive == []


def test_run_shell_is_high_risk_never_retried_or_verified_and_always_needs_a_person(
    tmp_path: Path,
) -> None:
    spec = shell_action(tmp_path, timeout_s=5, output_cap=1000)
    assert (spec.name, spec.risk, spec.retry, spec.verify) == ("run_shell", "high", False, False)
    for mode in Mode:
        assert decide(spec.risk, mode, kill_switch=False) is not Decision.EXECUTE
