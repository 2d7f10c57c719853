"""One PD observation of a large TiKV cluster: time, bytes read and memory per tick.

    python benchmarks/tikv_scale.py [--ticks 5] [--sizes 100,300,1000] [--regions-per-store 1000]
                                    [--down 1]

A separate process serves synthetic PD payloads in PD v8.5's wire format for N stores
and 1,000 regions per store (1,000 stores: 1,000,000 regions), one store Down so the
region checks list its ~3,000 regions. Regions are reachable only through the check
lists, /stats/region, /regions/key pages and /region/id: `/regions` answers an error and
is counted. Each tick is `observe_cluster` (members, health, stores, region stats and
four region checks) plus, where a check lists regions, two of them fetched by id.
Goal at 1,000 stores: under 1 s and 200 MB a tick, growing no faster than the stores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psutil

from operator_console.lab.ports import free_port
from operator_console.lab.supervisor import Supervisor
from operator_console.subjects.tikv.pd import PDClient
from operator_console.subjects.tikv.snapshot import observe_cluster, regions_pointed_at

API = "/pd/api/v1"
CLUSTER_ID = 7381573483094745213
GIB = 2**30


# ------------------------------------------------------------------ the synthetic PD


class SyntheticCluster:
    """N stores, M regions of 3 peers placed round the ring; the last `down` stores are Down."""

    def __init__(self, stores: int, regions: int, down: int = 1) -> None:
        self.n = stores
        self.m = regions
        self.down_stores = set(range(stores - down + 1, stores + 1))  # store ids are 1..N
        self.requests: dict[str, int] = {}
        self.bodies = self._encode()

    def peers(self, index: int) -> tuple[int, int, int]:
        n = self.n
        return (1 + index % n, 1 + (index + n // 3) % n, 1 + (index + 2 * n // 3) % n)

    def leader(self, index: int) -> int:
        alive = [s for s in self.peers(index) if s not in self.down_stores]
        return alive[0] if alive else self.peers(index)[0]

    @staticmethod
    def key(index: int) -> bytes:
        return b"" if index == 0 else b"t" + index.to_bytes(8, "big") + b"_r"

    def region(self, index: int, *, missing: bool = False, pending: bool = False) -> str:
        region_id = 2 + 4 * index
        dropped = next((s for s in self.peers(index) if s in self.down_stores), None)
        stores = [s for s in self.peers(index) if not (missing and s == dropped)]
        peers = [
            {"role_name": "Voter", "id": region_id + 1 + j, "store_id": s}
            for j, s in enumerate(stores)
        ]
        leader = next(p for p in peers if p["store_id"] == self.leader(index))
        out: dict[str, Any] = {
            "id": region_id,
            "start_key": self.key(index).hex().upper(),
            "end_key": self.key(index + 1).hex().upper() if index + 1 < self.m else "",
            "epoch": {"conf_ver": 5, "version": 31},
            "peers": peers,
            "leader": leader,
        }
        down = [p for p in peers if p["store_id"] in self.down_stores]
        if down:
            out["down_peers"] = [{"peer": p, "down_seconds": 2112} for p in down]
            if pending:
                out["pending_peers"] = down
        out.update(
            cpu_usage=0,
            written_bytes=131072,
            read_bytes=262144,
            written_keys=1024,
            read_keys=2048,
            approximate_size=96,
            approximate_keys=983040,
        )
        return json.dumps(out, separators=(",", ":"))

    def _listing(self, parts: list[str]) -> bytes:
        return f'{{"count":{len(parts)},"regions":[{",".join(parts)}]}}'.encode()

    def _encode(self) -> dict[str, bytes]:
        n, m = self.n, self.m
        on_down = [i for i in range(m) if self.down_stores.intersection(self.peers(i))]
        missing = set(on_down[:50])
        pending = set(on_down[50:1050])
        down_listed = [i for i in on_down if i not in missing]
        leaders = dict.fromkeys(range(1, n + 1), 0)
        peers = dict.fromkeys(range(1, n + 1), 0)
        for i in range(m):
            leaders[self.leader(i)] += 1
            dropped = next((s for s in self.peers(i) if s in self.down_stores), None)
            for s in self.peers(i):
                if not (i in missing and s == dropped):
                    peers[s] += 1

        def indented(value: Any) -> bytes:
            return (json.dumps(value, indent=2) + "\n").encode()

        members = [
            {
                "name": f"pd-{k}",
                "member_id": 3474484975246189105 + k * 7919,
                "peer_urls": [f"http://pd-{k}:2380"],
                "client_urls": [f"http://pd-{k}:2379"],
                "deploy_path": "/tidb-deploy/pd-2379/bin",
                "binary_version": "v8.5.7",
                "git_hash": "6dce4a68e3e93b523657bd05cba89a86d64de117",
            }
            for k in range(3)
        ]
        stores = []
        for s in range(1, n + 1):
            down = s in self.down_stores
            stores.append(
                {
                    "store": {
                        "id": s,
                        "address": f"tikv-{s}:20160",
                        "labels": [
                            {"key": "zone", "value": f"z{s % 3}"},
                            {"key": "host", "value": f"tikv-{s}"},
                        ],
                        "version": "8.5.7",
                        "peer_address": f"tikv-{s}:20160",
                        "status_address": f"tikv-{s}:20180",
                        "git_hash": "3f446cfa9eb1d5c653031d261e185911495d0359",
                        "start_timestamp": 1748553480,
                        "deploy_path": "/tidb-deploy/tikv-20160/bin",
                        "last_heartbeat": 1748827792705666391 - (2112 * 10**9 if down else 0),
                        "node_state": 1,
                        "state_name": "Down" if down else "Up",
                    },
                    "status": {
                        "capacity": "3.5TiB",
                        "available": "1.873TiB",
                        "used_size": "1.402TiB",
                        "leader_count": 0 if down else leaders[s],
                        "leader_weight": 1,
                        "leader_score": 0 if down else leaders[s],
                        "leader_size": 96 * leaders[s],
                        "region_count": peers[s],
                        "region_weight": 1,
                        "region_score": 96.25 * peers[s],
                        "region_size": 96 * peers[s],
                        "slow_score": 1,
                        "slow_trend": {
                            "cause_value": 250000.5,
                            "cause_rate": 0,
                            "result_value": 900,
                            "result_rate": 0,
                        },
                        "start_ts": "2025-05-30T05:18:00+08:00",
                        "last_heartbeat_ts": "2025-06-02T09:29:52.705666391+08:00",
                        "uptime": "76h11m52.705666391s",
                    },
                }
            )
        per_store = {str(s): v for s, v in sorted(leaders.items()) if v}
        stats = {
            "count": m,
            "empty_count": 0,
            "storage_size": 96 * m,
            "user_storage_size": 92 * m,
            "storage_keys": 983040 * m,
            "store_leader_count": per_store,
            "store_peer_count": {str(s): v for s, v in sorted(peers.items())},
            "store_leader_size": {k: 96 * v for k, v in per_store.items()},
            "store_leader_keys": {k: 983040 * v for k, v in per_store.items()},
            "store_peer_size": {str(s): 96 * v for s, v in sorted(peers.items())},
            "store_peer_keys": {str(s): 983040 * v for s, v in sorted(peers.items())},
        }
        return {
            f"{API}/members": indented(
                {
                    "header": {"cluster_id": CLUSTER_ID},
                    "members": members,
                    "leader": members[0],
                    "etcd_leader": members[0],
                }
            ),
            f"{API}/health": indented(
                [
                    {
                        "name": x["name"],
                        "member_id": x["member_id"],
                        "client_urls": x["client_urls"],
                        "health": True,
                    }
                    for x in members
                ]
            ),
            f"{API}/stores": indented({"count": n, "stores": stores}),
            f"{API}/stats/region": indented(stats),
            f"{API}/version": indented({"version": "v8.5.7"}),
            f"{API}/regions/check/miss-peer": self._listing(
                [self.region(i, missing=True) for i in sorted(missing)]
            ),
            f"{API}/regions/check/down-peer": self._listing(
                [self.region(i, pending=i in pending) for i in down_listed]
            ),
            f"{API}/regions/check/pending-peer": self._listing(
                [self.region(i, pending=True) for i in sorted(pending)]
            ),
            f"{API}/regions/check/offline-peer": self._listing([]),
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, *args: object) -> None:
        return

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response_only(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        cluster = self.server.cluster
        split = urlsplit(self.path)
        path = split.path
        cluster.requests[path] = cluster.requests.get(path, 0) + 1
        if path == "/_requests":
            self._send(200, json.dumps(cluster.requests).encode(), "application/json")
        elif path in cluster.bodies:
            kind = (
                "application/octet-stream"
                if "/regions/check/" in path
                else "application/json; charset=UTF-8"
            )
            self._send(200, cluster.bodies[path], kind)
        elif path.startswith(f"{API}/region/id/"):
            index = (int(path.rsplit("/", 1)[1]) - 2) // 4
            if 0 <= index < cluster.m:
                body = cluster.region(index).encode()
            else:
                body = b'{"id":0,"start_key":"","end_key":"","leader":{"role_name":""}}'
            self._send(200, body, "application/octet-stream")
        elif path == f"{API}/regions/key":
            query = parse_qs(split.query, keep_blank_values=True, encoding="latin-1")
            key = query.get("key", [""])[0].encode("latin-1")
            limit = min(int(query.get("limit", ["16"])[0]), 10240)
            start = 0 if not key else int.from_bytes(key[1:9], "big")
            parts = [cluster.region(i) for i in range(start, min(start + limit, cluster.m))]
            self._send(200, cluster._listing(parts), "application/octet-stream")
        elif path == f"{API}/regions":
            self._send(
                500,
                b'"the benchmark forbids listing every region"\n',
                "application/json; charset=UTF-8",
            )
        else:
            self._send(404, b"404 page not found\n", "text/plain; charset=utf-8")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, port: int, cluster: SyntheticCluster) -> None:
        self.cluster = cluster
        super().__init__(("127.0.0.1", port), _Handler)


def serve(port: int, stores: int, regions: int, down: int) -> None:
    cluster = SyntheticCluster(stores, regions, down)
    _Server(port, cluster).serve_forever()


# ----------------------------------------------------------------- the measurement


async def one_tick(pd: PDClient) -> tuple[float, int, int, dict[str, int]]:
    started = time.perf_counter()
    before = pd.bytes_read
    snapshot = await observe_cluster(pd)
    detail = await regions_pointed_at(pd, snapshot)
    elapsed = time.perf_counter() - started
    if snapshot.failures:
        raise SystemExit(f"observation failed: {snapshot.failures}")
    return (
        elapsed,
        pd.bytes_read - before,
        sum(len(v) for v in detail.values()),
        snapshot.check_counts,
    )


async def measure(url: str, ticks: int) -> dict[str, Any]:
    process = psutil.Process()
    async with PDClient(url, timeout=30) as pd:
        await one_tick(pd)  # warm: connections, imports
        times, sizes = [], []
        rss_before = process.memory_info().rss
        for _ in range(ticks):
            elapsed, size, fetched, checks = await one_tick(pd)
            times.append(elapsed)
            sizes.append(size)
        rss_after = process.memory_info().rss
        tracemalloc.start()
        peaks = []
        for _ in range(max(1, ticks // 2)):
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            await one_tick(pd)
            peaks.append(tracemalloc.get_traced_memory()[1] - base)
        tracemalloc.stop()
        async with httpx.AsyncClient() as plain:
            requests = (await plain.get(f"{url}/_requests")).json()
    return {
        "median_s": statistics.median(times),
        "max_s": max(times),
        "bytes": statistics.median(sizes),
        "peak_bytes": max(peaks),
        "rss_growth": rss_after - rss_before,
        "checks": checks,
        "fetched": fetched,
        "requests": requests,
    }


async def run(sizes: list[int], per_store: int, ticks: int, down: int) -> None:
    print(
        f"{'stores':>7} {'regions':>10} {'tick median':>12} {'tick max':>9} {'read/tick':>10}"
        f" {'peak mem':>9} {'rss +':>7}  checks (miss/down/pending/offline)"
    )
    rows = []
    with tempfile.TemporaryDirectory() as run_dir:
        supervisor = Supervisor(Path(run_dir))
        try:
            for stores in sizes:
                regions = stores * per_store
                port = free_port()
                url = f"http://127.0.0.1:{port}"

                async def ready(url: str = url) -> bool:
                    async with httpx.AsyncClient(timeout=1) as plain:
                        return (await plain.get(f"{url}{API}/version")).status_code == 200

                name = f"pd-{stores}"
                await supervisor.start(
                    name,
                    [
                        sys.executable,
                        __file__,
                        "--serve",
                        str(port),
                        "--stores",
                        str(stores),
                        "--regions",
                        str(regions),
                        "--down",
                        str(down),
                    ],
                    env={"PYTHONPATH": os.pathsep.join(sys.path)},
                    ready=ready,
                    timeout=300,
                )
                result = await measure(url, ticks)
                await supervisor.stop(name)
                if result["requests"].get(f"{API}/regions"):
                    raise SystemExit("the observation listed /regions in full")
                c = result["checks"]
                print(
                    f"{stores:>7,} {regions:>10,} {result['median_s'] * 1000:>9.0f} ms"
                    f" {result['max_s'] * 1000:>6.0f} ms {result['bytes'] / 2**20:>7.2f} MB"
                    f" {result['peak_bytes'] / 2**20:>6.1f} MB"
                    f" {result['rss_growth'] / 2**20:>4.0f} MB  {c['miss-peer']}/"
                    f"{c['down-peer']}/{c['pending-peer']}/{c['offline-peer']},"
                    f" {result['fetched']} regions fetched by id",
                    flush=True,
                )
                rows.append((stores, result))
        finally:
            await supervisor.stop_all()
    small, large = rows[0], rows[-1]
    scale = large[0] / small[0]
    print(
        f"\nfrom {small[0]:,} to {large[0]:,} stores ({scale:.0f}x): tick time x"
        f"{large[1]['median_s'] / small[1]['median_s']:.1f}, bytes x"
        f"{large[1]['bytes'] / small[1]['bytes']:.1f}, peak memory x"
        f"{large[1]['peak_bytes'] / small[1]['peak_bytes']:.1f}"
    )
    paths = json.dumps(large[1]["requests"], sort_keys=True)
    print(f"requests per path at the largest size (whole run): {paths}")
    top = large[1]
    ok = top["max_s"] < 1.0 and top["peak_bytes"] < 200 * 2**20
    if down != 1:
        print(f"{down} stores down: a stress case beyond the goal's one Down store")
        return
    print(f"goal (< 1 s and < 200 MB a tick at {large[0]:,} stores): {'met' if ok else 'MISSED'}")
    if not ok:
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--sizes", default="100,300,1000", help="store counts, comma-separated")
    parser.add_argument("--regions-per-store", type=int, default=1000)
    parser.add_argument("--down", type=int, default=1, help="stores Down (their regions listed)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stores", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--regions", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.stores, args.regions, args.down)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    asyncio.run(run(sizes, args.regions_per_store, args.ticks, args.down))


if __name__ == "__main__":
    main()
