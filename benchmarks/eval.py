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

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--brains", default="rules,none")
    parser.add_argument("--subject", help="only the scenarios of this subject")
    args = parser.parse_args()
    scenarios = sorted(
        p.stem
        for p in (ROOT / "scenarios").glob("*.toml")
        if args.subject is None or p.stem.startswith(f"{args.subject}-")
    )
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
