"""A real Prometheus (Debian's /usr/bin/prometheus) scraping the recorded /metrics doubles.

Each metrics set is one cluster to Prometheus: jobs "tikv" and "pd" as tiup names them,
`instance` set to the deployment's address ("tikv-0:20180", the status port), and a
`cluster` label naming the set, all through static_configs as a real config would.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from operator_console.lab.ports import free_port
from operator_console.lab.supervisor import ProcessStartError, Supervisor
from tests.subjects.tikv.pd_server import MetricsDouble

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
WINDOW_S = 5  # the rate window the tests use, covered by samples at every second


def prometheus_binary() -> str | None:
    path = Path(PROMETHEUS)
    return str(path) if path.is_file() else None


def scrape_config(sets: list[MetricsDouble]) -> str:
    """prometheus.yml: 1 s scrapes, one static target per instance, labelled as deployed."""
    jobs: dict[str, list[dict[str, object]]] = {"tikv": [], "pd": []}
    for metrics in sets:
        for target in metrics.targets:
            jobs[target.job].append(
                {
                    "targets": [f"127.0.0.1:{target.port}"],
                    "labels": {"instance": target.instance, "cluster": metrics.set_name},
                }
            )
    lines = ["global:", "  scrape_interval: 1s", "  scrape_timeout: 900ms", "scrape_configs:"]
    for job, static in jobs.items():
        lines += [f"  - job_name: {job}", "    honor_labels: true", "    static_configs:"]
        for entry in static:
            lines.append(f"      - targets: {json.dumps(entry['targets'])}")
            lines.append(f"        labels: {json.dumps(entry['labels'])}")
    return "\n".join(lines) + "\n"


@dataclass
class RunningPrometheus:
    url: str
    supervisor: Supervisor
    sets: list[MetricsDouble]
    eval_time: float = 0.0  # a second at which every live series has the whole window


async def start_prometheus(run_dir: Path, sets: list[MetricsDouble]) -> RunningPrometheus:
    binary = prometheus_binary()
    if binary is None:
        raise FileNotFoundError(PROMETHEUS)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "prometheus.yml"
    config.write_text(scrape_config(sets))
    supervisor = Supervisor(run_dir)
    for attempt in range(3):
        port = free_port()
        url = f"http://127.0.0.1:{port}"

        async def ready(url: str = url) -> bool:
            async with httpx.AsyncClient(timeout=1.0) as client:
                return (await client.get(f"{url}/-/ready")).status_code == 200

        try:
            await supervisor.start(
                "prometheus",
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={run_dir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                ready=ready,
                timeout=30,
            )
            break
        except ProcessStartError as exc:
            # The one failure worth a retry: the port was taken after it was chosen.
            if "address already in use" not in exc.log_tail or attempt == 2:
                raise
    return RunningPrometheus(url, supervisor, sets)


async def wait_for_window(prom: RunningPrometheus, timeout_s: float = 60.0) -> float:
    """A whole second T at which every live target has samples across [T-5 s, T]."""
    live = sum(1 for m in prom.sets for t in m.targets if t.up)
    started = min(m.started_s for m in prom.sets)
    coverage = (
        f"count_over_time(process_cpu_seconds_total[{WINDOW_S}s])"
        f" or count_over_time(process_resident_memory_bytes[{WINDOW_S}s])"
    )
    deadline = time.monotonic() + timeout_s
    last = ""
    async with httpx.AsyncClient(timeout=5.0) as client:
        while time.monotonic() < deadline:
            # The newest second every server has certainly reached, less one for the scrape.
            candidate = int(time.time()) - 2
            if candidate - started < WINDOW_S + 1:
                await _pause()
                continue
            answer = (
                await client.post(
                    f"{prom.url}/api/v1/query", data={"query": coverage, "time": str(candidate)}
                )
            ).json()
            result = answer.get("data", {}).get("result", [])
            counts = [float(r["value"][1]) for r in result]
            last = f"{len(counts)} of {live} series, counts {sorted(counts)[:3]}..."
            # 5 or more samples in 6 one-second slots: at most one missed scrape, which
            # rate()'s extrapolation covers exactly for series that grow linearly.
            if len(counts) == live and min(counts) >= WINDOW_S:
                prom.eval_time = float(candidate)
                return prom.eval_time
            await _pause()
    raise TimeoutError(f"Prometheus did not gather a {WINDOW_S}s window in time: {last}")


async def _pause() -> None:
    # Prometheus offers no event for "sample ingested"; its scrapes come once a second.
    await asyncio.sleep(0.25)
