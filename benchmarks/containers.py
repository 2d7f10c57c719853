"""etcd-leader-kill as local processes and on the compose stack (compose/etcd/host), side by
side: detection (fault_injected -> ticket_opened) and recovery (fault_injected -> the ticket
resolved by the agent's verified restart_member), rules brain in auto mode.

    DOCKER_HOST=unix:///path/docker.sock python benchmarks/containers.py [--runs 5]

Needs a Docker engine and the stack's image (compose/etcd/host/build-image.sh). Each run is a
real `operator-console run ... --headless` process; figures come from its own timeline
(monotonic `t`). The stack's ports are picked free for each run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from operator_console.lab.ports import free_ports

ROOT = Path(__file__).resolve().parents[1]
STACK = ROOT / "compose" / "etcd" / "host"
SCENARIO = "etcd-leader-kill"


def one_run(extra: list[str], env: dict[str, str]) -> tuple[float, float] | None:
    pace = f"{random.uniform(0.9, 1.1):.3f}"  # the fault lands anywhere in the monitor's tick
    with tempfile.TemporaryDirectory() as data_dir:
        proc = subprocess.run(
            [
                *(sys.executable, "-m", "operator_console", "run", SCENARIO),
                *("--headless", "--quiet", "--mode", "auto", "--brain", "rules"),
                *("--pace", pace, *extra),
            ],
            env={**os.environ, **env, "OPERATOR_CONSOLE_DATA_DIR": data_dir},
            capture_output=True,
            text=True,
            timeout=300,
        )
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    injected = next((e["t"] for e in events if e["event"] == "fault_injected"), None)
    opened = next((e for e in events if e["event"] == "ticket_opened"), None)
    resolved = next(
        (
            e["t"]
            for e in events
            if opened is not None
            and e["event"] == "ticket_resolved"
            and e.get("ticket_id") == opened["ticket_id"]
        ),
        None,
    )
    if proc.returncode != 0 or injected is None or opened is None or resolved is None:
        sys.stderr.write(proc.stderr[-2000:])
        return None
    return opened["t"] - injected, resolved - injected


def stack_env() -> dict[str, str]:
    ports = free_ports(6, "127.0.0.1")
    env = {f"OC_ETCD_CLIENT_{i}": str(ports[i - 1]) for i in (1, 2, 3)}
    env |= {f"OC_ETCD_PEER_{i}": str(ports[i + 2]) for i in (1, 2, 3)}
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    placements = {
        "local processes": ([], lambda: {}),
        "compose (containers)": (["--compose", str(STACK)], stack_env),
    }
    results: dict[str, list[tuple[float, float]]] = {}
    for label, (extra, env) in placements.items():
        results[label] = []
        for i in range(1, args.runs + 1):
            got = one_run(extra, env())
            shown = f"detect {got[0]:.2f} s, recover {got[1]:.2f} s" if got else "FAILED"
            print(f"{label} run {i}: {shown}", flush=True)
            if got:
                results[label].append(got)
    print()
    print(f"{'placement':<22} {'detect median':>14} {'max':>6} {'recover median':>15} {'max':>6}")
    for label, got in results.items():
        if not got:
            print(f"{label:<22} no run recovered")
            continue
        detect, recover = [g[0] for g in got], [g[1] for g in got]
        print(
            f"{label:<22} {statistics.median(detect):12.2f} s {max(detect):5.2f} "
            f"{statistics.median(recover):13.2f} s {max(recover):5.2f}   "
            f"({len(got)}/{args.runs} runs)"
        )
    if any(len(got) < args.runs for got in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
