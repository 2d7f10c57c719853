"""`operator-console watch tikv` as real processes, one per recorded cluster situation, side by
side: each opens exactly the tickets its situation calls for, diagnoses them offline, acts
on nothing (observe mode), and never lets a credential out.

TiKV and PD cannot run here: PD is the wire-format double of tests/subjects/tikv/pd_server.py
(PD v8.5.7 payloads, one double per situation, one of them over mutual TLS with basic
auth), and a real Prometheus (Debian's 2.42) scrapes the recorded TiKV and PD /metrics.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Timeline, console_argv, console_env, parse_timeline
from tests.subjects.tikv.conftest import TLSMaterial, make_tls
from tests.subjects.tikv.pd_server import MetricsDouble, PDDouble
from tests.subjects.tikv.prometheus_harness import (
    WINDOW_S,
    prometheus_binary,
    start_prometheus,
    wait_for_window,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        prometheus_binary() is None, reason="no prometheus binary at /usr/bin/prometheus"
    ),
]

DURATION_S = 20
PASSWORD = "tls-and-basic-s3cret-pw"  # the healthy run's PD password, in the endpoints file
URL_PASSWORD = "in-the-url-s3cret-pw"  # the disk run's, written into PD's URL
SITUATIONS = {
    "healthy": set(),
    "store-disconnected": {"store_disconnected:store-5"},
    "store-down": {"store_down:store-5", "regions_miss_peer:regions"},
    "pd-member-down": {"pd_member_unhealthy:pd-2"},
    "store-disk-85": {"store_disk_low:store-4"},
}


@dataclass
class Run:
    situation: str
    data_dir: Path
    timeline: Timeline
    stdout: str


def _endpoints(pd: PDDouble, prom_url: str, situation: str, tls: TLSMaterial) -> dict[str, Any]:
    prometheus = {"url": prom_url, "labels": f'cluster="{situation}"', "window": f"{WINDOW_S}s"}
    if situation == "healthy":
        return {
            "pd": {
                "endpoints": [pd.url],
                "username": "ops",
                "password": PASSWORD,
                "tls": {
                    "ca_file": str(tls.ca),
                    "cert_file": str(tls.client_cert),
                    "key_file": str(tls.client_key),
                },
            },
            "prometheus": prometheus,
        }
    if situation == "store-disk-85":
        return {
            "pd": pd.url.replace("http://", f"http://ops:{URL_PASSWORD}@"),
            "prometheus": prometheus,
        }
    return {"pd": pd.url, "prometheus": prometheus}


def _double(situation: str, tls: TLSMaterial) -> PDDouble:
    context = tls.server_context() if situation == "healthy" else None
    pd = PDDouble("pd-0", situation=situation, tls=context).start()
    pd.advertise({"pd-0": pd.url})
    if situation == "healthy":
        pd.require_basic_auth("ops", PASSWORD)
    if situation == "store-disk-85":
        pd.require_basic_auth("ops", URL_PASSWORD)
    return pd


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    """Every situation watched by its own console process, side by side, for 20 s each."""
    root = tmp_path_factory.mktemp("tikv-watch")
    tls = make_tls(root)
    metrics = [MetricsDouble(name).start() for name in SITUATIONS]
    doubles = {name: _double(name, tls) for name in SITUATIONS}
    prom = None
    try:

        async def up() -> Any:
            running = await start_prometheus(root / "prometheus", metrics)
            await wait_for_window(running)
            return running

        loop = asyncio.new_event_loop()
        prom = loop.run_until_complete(up())
        started = {}
        for name, pd in doubles.items():
            data_dir = root / name
            endpoints = root / f"{name}.json"
            endpoints.write_text(json.dumps(_endpoints(pd, prom.url, name, tls)))
            process = subprocess.Popen(
                console_argv(
                    "watch",
                    "tikv",
                    "--endpoints",
                    str(endpoints),
                    "--headless",
                    "--duration",
                    str(DURATION_S),
                    "--mode",
                    "observe",
                    "--brain",
                    "rules",
                ),
                env=console_env(data_dir),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            # The next run starts once this one watches: their start-ups (imports, the
            # database) do not all land on a 2-core machine at once.
            assert process.stdout is not None
            head = []
            for line in process.stdout:
                head.append(line)
                if json.loads(line)["event"] == "cluster_ready":
                    break
            started[name] = (data_dir, process, "".join(head))
        out = {}
        for name, (data_dir, process, head) in started.items():
            try:
                rest, stderr = process.communicate(timeout=DURATION_S + 60)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            stdout = head + rest
            timeline = Timeline(process.returncode, parse_timeline(stdout), stderr)
            out[name] = Run(name, data_dir, timeline, stdout)
        yield out
    finally:
        if prom is not None:
            loop.run_until_complete(prom.supervisor.stop_all())
            loop.close()
        for pd in doubles.values():
            pd.stop()
        for double in metrics:
            double.stop()


def opened(run: Run) -> set[str]:
    return {f"{e['invariant']}:{e['target']}" for e in run.timeline.named("ticket_opened")}


@pytest.mark.parametrize("situation", list(SITUATIONS))
def test_each_situation_opens_exactly_its_tickets(runs: dict[str, Run], situation: str) -> None:
    run = runs[situation]
    timeline = run.timeline
    assert timeline.returncode == 0, timeline.stderr
    assert opened(run) == SITUATIONS[situation], timeline.story()
    finished = timeline.first("run_finished")
    assert finished["ok"] is True
    assert DURATION_S - 1 <= finished["summary"]["duration_s"] <= DURATION_S + 15
    started = timeline.first("run_started")
    assert (started["subject"], started["placement"]) == ("tikv", "attach")
    ready = timeline.first("cluster_ready")
    assert "recorded payloads" in ready["about"] and "live TiKV" in ready["about"]
    assert [s["key"] for s in ready["series"]] == ["qps", "grpc_p99_ms"]
    samples = [e for e in timeline.named("workload_sample") if e.get("qps")]
    assert len(samples) >= DURATION_S // 2, "Prometheus's QPS every second"
    assert timeline.named("action_executing") == []  # observe mode: nothing runs


def test_the_tickets_are_diagnosed_from_the_evidence(runs: dict[str, Run]) -> None:
    def diagnosis(situation: str, invariant: str) -> dict[str, Any]:
        timeline = runs[situation].timeline
        ticket = timeline.first("ticket_opened", invariant=invariant)
        return timeline.first("diagnosis_ready", ticket_id=ticket["ticket_id"])

    died = diagnosis("store-disconnected", "store_disconnected")
    assert died["root_cause"].startswith("the store's TiKV process died")
    assert any("cannot scrape store-5's status port" in e["claim"] for e in died["evidence"])
    escalated = runs["store-disconnected"].timeline.first("ticket_escalated")
    assert "restart_store" in escalated["reason"] and "not available here" in escalated["reason"]
    # A peer missing because its store is down is one incident with that store's ticket, and
    # is worked there, not investigated again.
    down = runs["store-down"].timeline
    store = down.first("ticket_opened", invariant="store_down")
    missing = down.first("ticket_opened", invariant="regions_miss_peer")
    assert missing["incident_id"] == store["ticket_id"]
    assert [
        e for e in down.named("diagnosis_ready") if e["ticket_id"] == missing["ticket_id"]
    ] == []
    worked = [
        e
        for e in down.named("ticket_updated")
        if e["ticket_id"] == missing["ticket_id"] and "part of incident" in (e.get("reason") or "")
    ]
    assert worked, down.story()
    member = diagnosis("pd-member-down", "pd_member_unhealthy")
    assert member["root_cause"].startswith("the PD member's process is down")
    assert diagnosis("store-disk-85", "store_disk_low")["root_cause"].startswith(
        "this store's disk fills"
    )


def test_no_credential_reaches_a_file_the_timeline_or_the_screen(runs: dict[str, Run]) -> None:
    for situation, secret in (("healthy", PASSWORD), ("store-disk-85", URL_PASSWORD)):
        run = runs[situation]
        assert run.timeline.named("ticket_opened") or situation == "healthy"
        assert secret not in run.stdout and secret not in run.timeline.stderr
        files = [p for p in run.data_dir.rglob("*") if p.is_file()]
        assert any(p.suffix == ".db" for p in files) and any(p.suffix == ".log" for p in files)
        for path in files:
            assert secret.encode() not in path.read_bytes(), path
        ready = run.timeline.first("cluster_ready")
        assert "not shown" in ready["endpoints"]["pd"]["auth"]
    # The TLS run really went over TLS with its client certificate, and was let in.
    healthy = runs["healthy"].timeline
    assert healthy.named("ticket_opened") == [] and not any(
        e["event"] == "ticket_opened" for e in healthy.events
    )
    assert healthy.first("cluster_ready")["endpoints"]["pd"]["endpoints"][0].startswith("https://")


def test_a_broken_tikv_endpoints_file_is_one_clear_line(tmp_path: Path) -> None:
    env = console_env(tmp_path / "data")
    bad = tmp_path / "bad.json"
    for content, needle in {
        json.dumps({"prometheus": "http://prom:9090"}): "pd: missing",
        json.dumps({"pd": "ftp://pd"}): "not an http(s) URL",
        json.dumps({"pd": "http://pd:2379", "nodes": {}}): "nodes: not a field",
        json.dumps({"pd": {"endpoints": ["https://pd:2379"], "tls": {"ca_file": "/nope"}}}): (
            "pd.tls: TLS CA file /nope does not exist"
        ),
    }.items():
        bad.write_text(content)
        result = subprocess.run(
            console_argv("watch", "tikv", "--endpoints", str(bad), "--headless"),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0
        assert needle in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
