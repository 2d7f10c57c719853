"""Every bundled scenario, three times with the rules brain and three times with none (the
no-agent baseline), scored: the campaign table, and time to detect per fault kind.

    python benchmarks/eval.py [--trials 3] [--parallel 1] [--brains rules,none]

It is `operator-console eval` over `scenarios/*.toml` (a fresh headless run per trial, real
labs), on a data folder of its own; the figures come from each run's own timeline.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from operator_console.scenarios.model import load_scenario_file

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--brains", default="rules,none")
    parser.add_argument("--subject", help="only the scenarios of this subject")
    args = parser.parse_args()
    scenarios = []
    for path in sorted((ROOT / "scenarios").glob("*.toml")):
        if args.subject is not None and not path.stem.startswith(f"{args.subject}-"):
            continue
        if load_scenario_file(path).placement != "local":
            # A compose stack's scenario needs its images (TiKV's cannot run here).
            print(f"skipped {path.stem}: runs only on its compose stack", file=sys.stderr)
            continue
        scenarios.append(path.stem)
    with tempfile.TemporaryDirectory() as data:
        command = [
            sys.executable,
            "-m",
            "operator_console",
            "eval",
            "--scenarios",
            ",".join(scenarios),
            "--brain",
            args.brains,
            "--trials",
            str(args.trials),
            "--parallel",
            str(args.parallel),
            "--no-charts",
        ]
        print(" ".join(command[2:]), file=sys.stderr)
        done = subprocess.run(
            command, env={**os.environ, "OPERATOR_CONSOLE_DATA_DIR": data}, check=False
        )
        sys.exit(done.returncode)


if __name__ == "__main__":
    main()
