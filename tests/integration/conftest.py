from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Timeline:
    returncode: int
    events: list[dict[str, Any]]
    stderr: str

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == name]

    def first(self, name: str, **fields: Any) -> dict[str, Any]:
        for event in self.named(name):
            if all(event.get(k) == v for k, v in fields.items()):
                return event
        raise AssertionError(f"no {name} {fields} in timeline; stderr:\n{self.stderr}")

    def story(self) -> str:
        """The run in one line per event (no per-second samples): for failure messages."""
        keys = ("invariant", "target", "action", "params", "state", "by", "reason", "error")
        keys += ("label", "recommended")  # a diagnosis: what it concluded and proposed
        lines = []
        for e in self.events:
            if e["event"] in ("workload_sample", "agent_step"):
                continue
            fields = " ".join(f"{k}={e[k]}" for k in keys if e.get(k) not in (None, ""))
            if e["event"] == "diagnosis_ready":
                ruled_out = "; ".join(a["rejected_because"] for a in e.get("alternatives", []))
                fields += f" ruled_out={ruled_out}"
            limit = 600 if e["event"] == "diagnosis_ready" else 240
            lines.append(f"{e['t']:7.2f} {e['event']} {fields}"[:limit])
        return "\n".join(lines)

    def pids(self) -> list[int]:
        endpoints = self.first("cluster_ready")["endpoints"]
        pids = [endpoints["store"]["pid"]]
        pids += [node["pid"] for node in endpoints["nodes"].values()]
        return [p for p in pids if p]


def console_argv(*args: str) -> list[str]:
    """The command line of `operator-console ARGS...` run by this interpreter."""
    return [sys.executable, "-m", "operator_console", *args]


def console_env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["OPERATOR_CONSOLE_DATA_DIR"] = str(data_dir)
    env.pop("OPERATOR_CONSOLE_DB", None)
    env.pop("ANTHROPIC_API_KEY", None)
    return env


def parse_timeline(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.fixture
def run_console(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Run `operator-console ARGS...` as a real process and parse its timeline."""

    def run(*args: str, timeout: float = 120) -> Timeline:
        proc = subprocess.run(
            console_argv(*args),
            env=console_env(tmp_path / "data"),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Timeline(proc.returncode, parse_timeline(proc.stdout), proc.stderr)

    return run
