"""Recovery time for a killed node: fault_injected -> the ticket resolved, with the agent in auto
mode (rules brain) next to the baseline without an agent (the scenario clears its own fault).

    python benchmarks/recovery.py [--runs 5] [--scenario ratelimiter-node-kill]

Each run is a real `operator-console run SCENARIO --headless` process; figures come from its
own timeline (monotonic `t`).
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


def recovery(scenario: str, extra: list[str], data_dir: str) -> float | None:
    # A random pace puts the fault at a random point of the monitor's one-second tick.
    pace = f"{random.uniform(0.9, 1.1):.3f}"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "operator_console", "run", scenario),
            *("--headless", "--quiet", "--pace", pace, *extra),
        ],
        env={**os.environ, "OPERATOR_CONSOLE_DATA_DIR": data_dir},
        capture_output=True,
        text=True,
        timeout=300,
    )
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    injected = next((e["t"] for e in events if e["event"] == "fault_injected"), None)
    opened = next((e for e in events if e["event"] == "ticket_opened"), None)
    if proc.returncode != 0 or injected is None or opened is None:
        sys.stderr.write(proc.stderr[-2000:])
        return None
    resolved = next(
        (
            e["t"]
            for e in events
            if e["event"] == "ticket_resolved" and e.get("ticket_id") == opened["ticket_id"]
        ),
        None,
    )
    return None if resolved is None else resolved - injected


def series(label: str, scenario: str, extra: list[str], runs: int) -> list[float]:
    times: list[float] = []
    with tempfile.TemporaryDirectory() as data_dir:
        for i in range(1, runs + 1):
            value = recovery(scenario, extra, data_dir)
            shown = f"{value:.2f} s" if value is not None else "FAILED"
            print(f"{label} run {i}: fault -> resolved {shown}", flush=True)
            if value is not None:
                times.append(value)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scenario", default="ratelimiter-node-kill")
    args = parser.parse_args()
    agent = series("agent (auto, rules)", args.scenario, ["--mode", "auto"], args.runs)
    baseline = series("no agent", args.scenario, ["--no-agent"], args.runs)
    for label, times in (("agent (auto, rules)", agent), ("no agent (scenario cleanup)", baseline)):
        if times:
            print(
                f"{label:<28} median {statistics.median(times):6.2f} s   "
                f"max {max(times):6.2f} s   ({len(times)}/{args.runs} runs)"
            )
        else:
            print(f"{label:<28} no run recovered")
    if len(agent) < args.runs or len(baseline) < args.runs:
        sys.exit(1)


if __name__ == "__main__":
    main()
