"""Write tests/subjects/tikv/payloads/ from the situations in cluster.py.

    python -m tests.subjects.tikv.wire.write_payloads

The files are committed; this is how they were made, and how to change them: edit a
situation or an encoder, run this, and review the diff of the payloads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.subjects.tikv.wire.cassettes import cassette
from tests.subjects.tikv.wire.cluster import MEMBERS, SITUATIONS, situation
from tests.subjects.tikv.wire.metrics_wire import INTERVAL_S, pd_metrics, tikv_metrics
from tests.subjects.tikv.wire.pd_wire import RELEASES

PAYLOADS = Path(__file__).resolve().parent.parent / "payloads"
# Which captures of /metrics exist: (set name, situation, TiKV release, PD release).
METRIC_SETS = (
    ("healthy", "healthy", "8.5.7", "v8.5.7"),
    ("healthy-v7.5", "healthy", "7.5.7", "v7.5.7"),
    ("store-disconnected", "store-disconnected", "8.5.7", "v8.5.7"),
    ("store-down", "store-down", "8.5.7", "v8.5.7"),
    ("pd-member-down", "pd-member-down", "8.5.7", "v8.5.7"),
    ("store-disk-85", "store-disk-85", "8.5.7", "v8.5.7"),
)
DEAD_STORE_STATES = ("Disconnected", "Down")  # their TiKV process is gone: nothing to scrape


def write_cassettes(root: Path = PAYLOADS) -> int:
    written = 0
    for tag, release in RELEASES.items():
        folder = root / f"pd-{tag}"
        folder.mkdir(parents=True, exist_ok=True)
        for name in SITUATIONS:
            data = cassette(situation(name), release)
            (folder / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
            written += 1
    return written


def write_metrics(root: Path = PAYLOADS) -> int:
    written = 0
    for set_name, situation_name, tikv_version, pd_version in METRIC_SETS:
        s = situation(situation_name)
        folder = root / "metrics" / set_name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        targets = []
        for store in s.stores:
            up = store.state_name not in DEAD_STORE_STATES
            targets.append(
                {
                    "name": store.name,
                    "job": "tikv",
                    "instance": f"{store.name}:20180",
                    "store_id": store.id,
                    "up": up,
                }
            )
            if up:
                for at in (0, INTERVAL_S):
                    text = tikv_metrics(s, store, tikv_version, at)
                    (folder / f"{store.name}.{at}s.prom").write_text(text)
                    written += 1
        for member in MEMBERS:
            up = member.name not in s.down_members
            targets.append(
                {"name": member.name, "job": "pd", "instance": f"{member.name}:2379", "up": up}
            )
            if up:
                for at in (0, INTERVAL_S):
                    text = pd_metrics(s, member.name, pd_version, at)
                    (folder / f"{member.name}.{at}s.prom").write_text(text)
                    written += 1
        manifest = {
            "situation": situation_name,
            "tikv_version": tikv_version,
            "pd_version": pd_version,
            "interval_s": INTERVAL_S,
            "written_from": "metric definitions of tikv/tikv v"
            + tikv_version
            + " and tikv/pd "
            + pd_version
            + " applied to the situation; not scraped from a"
            " running cluster",
            "targets": targets,
        }
        (folder / "targets.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return written


def main() -> None:
    cassettes = write_cassettes()
    metrics = write_metrics()
    print(f"wrote {cassettes} PD cassettes and {metrics} /metrics captures under {PAYLOADS}")


if __name__ == "__main__":
    main()
