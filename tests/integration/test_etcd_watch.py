"""`watch etcd`: a console attached to etcd clusters it did not start. One started by `lab up` in
another process, with a member SIGKILLed from outside; one on TLS (trustme certificates) with
etcd's own authentication, whose password must never reach a file, the log or the timeline."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_asyncio

from operator_console.lab.etcd.client import EtcdClient
from operator_console.lab.etcd.cluster import EtcdCluster
from operator_console.subjects.etcd import EtcdKind
from operator_console.subjects.etcd.state import EtcdState
from tests.integration.conftest import Timeline, console_argv, console_env, parse_timeline
from tests.lab.test_etcd_tls import write_certificates
from tests.subjects.etcd.conftest import etcd_or_skip

pytestmark = pytest.mark.integration
in_module_loop = pytest.mark.asyncio(loop_scope="module")

PASSWORD = "pw-7f3c1a9e5b2d-etcd"  # distinctive, so a grep cannot miss it


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _watch_argv(endpoints_file: Path, duration: int) -> list[str]:
    return console_argv(
        *("watch", "etcd", "--endpoints", str(endpoints_file), "--headless", "--quiet"),
        *("--duration", str(duration), "--mode", "auto", "--brain", "rules"),
    )


def _read_until_samples(process: subprocess.Popen[str], count: int) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    samples = 0
    for line in process.stdout:
        lines.append(line)
        samples += json.loads(line)["event"] == "workload_sample"
        if samples == count:
            break
    return lines


def test_watch_etcd_sees_a_member_killed_from_outside_a_lab_up_cluster(tmp_path: Path) -> None:
    etcd_or_skip()
    env = console_env(tmp_path / "data")
    lab = subprocess.Popen(
        console_argv("lab", "up", "--subject", "etcd", "--size", "3", "--json"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watcher: subprocess.Popen[str] | None = None
    try:
        assert lab.stdout is not None
        line = lab.stdout.readline()
        assert line, lab.stderr.read() if lab.stderr else ""
        endpoints = json.loads(line)
        assert sorted(endpoints["members"]) == ["member-1", "member-2", "member-3"]
        endpoints_file = tmp_path / "endpoints.json"
        endpoints_file.write_text(line)
        watcher = subprocess.Popen(
            _watch_argv(endpoints_file, 12), env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        lines = _read_until_samples(watcher, 2)  # a healthy cluster first
        victim = int(endpoints["members"]["member-2"]["pid"])
        killed_at = datetime.now(UTC)
        os.kill(victim, signal.SIGKILL)
        rest, errors = watcher.communicate(timeout=60)
        lines.append(rest)
    finally:
        if watcher is not None and watcher.poll() is None:
            watcher.kill()
        _stop(lab)

    timeline = Timeline(watcher.returncode, parse_timeline("".join(lines)), errors)
    assert watcher.returncode == 0, errors
    started = timeline.first("run_started")
    assert started["placement"] == "attach" and started["subject"] == "etcd"
    assert "attached to 3 etcd members (plain http)" in timeline.first("cluster_ready")["about"]
    assert timeline.named("fault_injected") == []
    opened = timeline.first("ticket_opened", invariant="member_down", target="member-2")
    detected = (datetime.fromisoformat(opened["at"]) - killed_at).total_seconds()
    assert detected < 2.0, detected
    diagnosis = timeline.first("diagnosis_ready", ticket_id=opened["ticket_id"])
    assert "process" in diagnosis["root_cause"]
    # Restarting needs a process backend this console does not have: a person is told so.
    escalated = timeline.first("ticket_escalated", ticket_id=opened["ticket_id"])
    assert "restart_member" in escalated["reason"] and "not available here" in escalated["reason"]
    assert timeline.named("action_executing") == []
    # The two survivors keep the quorum: no quorum ticket, and the members' counters still move.
    assert not [e for e in timeline.named("ticket_opened") if e["invariant"] == "quorum_lost"]
    assert any(e.get("puts") is not None for e in timeline.named("workload_sample"))
    finished = timeline.first("run_finished")
    assert finished["ok"] is True and 11.0 <= finished["summary"]["duration_s"] <= 25.0
    pids = [int(m["pid"]) for m in endpoints["members"].values()]
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert alive == []


# ------------------------------------------------------------------ TLS and credentials


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secure(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EtcdCluster]:
    """Three members on TLS with client-certificate auth, and etcd's own auth enabled."""
    etcd_or_skip()
    run_dir = tmp_path_factory.mktemp("etcd-secure")
    cluster = EtcdCluster(run_dir, members=3, tls=write_certificates(run_dir / "certs"))
    await cluster.start()
    try:
        async with EtcdClient(cluster.client_url("member-1"), tls=cluster.client_tls()) as admin:
            await admin.call("/auth/role/add", {"name": "root"})
            await admin.call("/auth/user/add", {"name": "root", "password": PASSWORD})
            await admin.call("/auth/user/grant", {"user": "root", "role": "root"})
            await admin.call("/auth/enable", {})
        yield cluster
    finally:
        await cluster.stop()


def _endpoints(cluster: EtcdCluster, password: str) -> dict[str, Any]:
    assert cluster.tls is not None
    lab_up = cluster.endpoints()
    return {
        "members": lab_up["members"],
        "tls": lab_up["tls"],
        "auth": {"username": "root", "password": password},
    }


@in_module_loop
async def test_attached_over_tls_with_credentials_every_source_answers(
    secure: EtcdCluster, tmp_path: Path
) -> None:
    deployment = EtcdKind().attach(_endpoints(secure, PASSWORD), tmp_path, lambda _s: None)
    try:
        # The first reads log in (etcd checks the password with bcrypt); then the token serves.
        for _ in range(20):
            observation = await deployment.subject.observe()
            if observation.all_sources_ok:
                break
            await asyncio.sleep(0.3)
        assert observation.all_sources_ok, observation.failed_sources
        state = observation.state
        assert isinstance(state, EtcdState) and state.leader in secure.member_names
        assert all(m.url.startswith("https://") for m in state.members.values())
        assert deployment.placement == "attach"
        assert "TLS, as etcd user root" in deployment.lab.about()
        shown = json.dumps(deployment.lab.endpoints())
        assert PASSWORD not in shown and '"username": "root"' in shown
        # Cluster-wide reads go through auth too: the alarm list answers with the token.
        assert deployment.agent is not None
        alarms = await deployment.agent.toolbox().call("alarms", {})
        assert not alarms.is_error and alarms.data["alarms"] == []
    finally:
        await deployment.subject.close()
        await deployment.lab.stop()


@in_module_loop
async def test_a_wrong_password_is_observation_failed_not_a_dead_member(
    secure: EtcdCluster, tmp_path: Path
) -> None:
    deployment = EtcdKind().attach(
        _endpoints(secure, "not-the-password"), tmp_path, lambda _s: None
    )
    try:
        observation = await deployment.subject.observe()
        failed = {s.name for s in observation.failed_sources}
        assert {f"status:{n}" for n in secure.member_names} <= failed
        checks = {inv.name: inv for inv in deployment.subject.invariants}
        assert checks["member_down"].check(observation) == []  # /metrics still answers
        # No member's status can be read: one violation for the console's view, not nine.
        [found] = checks["observation_failed"].check(observation)
        assert found.target == "observer"
        # Each read logs in again with the wrong password (etcd checks it with bcrypt): some
        # may time out on a busy machine, the others say why.
        assert "authentication failed" in found.message
        assert deployment.agent is not None
        from operator_console.agent.rules import RulesBrain
        from operator_console.contract import TicketContext

        ticket = TicketContext(
            ticket_id=1, subject="etcd", invariant="observation_failed", target="observer",
            severity="warning", message="", details={}, runbook="", subject_context="",
        )  # fmt: skip
        result = await RulesBrain(deployment.agent.hypotheses).investigate(
            ticket, deployment.agent.toolbox(), lambda _step: None
        )
        assert result.diagnosis is not None and result.diagnosis.label == "credentials_refused"
    finally:
        await deployment.subject.close()
        await deployment.lab.stop()


@in_module_loop
async def test_watch_over_tls_with_a_password_never_writes_it_anywhere(
    secure: EtcdCluster, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    endpoints_file = tmp_path / "endpoints.json"  # the person's own file, outside the console's
    endpoints_file.write_text(json.dumps(_endpoints(secure, PASSWORD)))
    watcher = await asyncio.create_subprocess_exec(
        *_watch_argv(endpoints_file, 9),
        env=console_env(data_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    victim = int(secure.endpoints()["members"]["member-3"]["pid"])
    out: list[bytes] = []
    paused = False
    try:
        assert watcher.stdout is not None
        samples = 0
        while samples < 2:
            line = await asyncio.wait_for(watcher.stdout.readline(), 30)
            assert line, "the watch ended before its first samples"
            out.append(line)
            samples += json.loads(line)["event"] == "workload_sample"
        os.kill(victim, signal.SIGSTOP)  # from outside: the console has no process of it
        paused = True
        rest, errors = await asyncio.wait_for(watcher.communicate(), 60)
        out.append(rest)
    finally:
        if paused:
            os.kill(victim, signal.SIGCONT)
        if watcher.returncode is None:
            watcher.kill()
            await watcher.wait()
    stdout = b"".join(out).decode()
    timeline = Timeline(watcher.returncode or 0, parse_timeline(stdout), errors.decode())
    assert watcher.returncode == 0, timeline.stderr
    ready = timeline.first("cluster_ready")
    assert "TLS, as etcd user root" in ready["about"]
    assert ready["endpoints"]["auth"] == {"username": "root"}
    assert ready["endpoints"]["tls"]["ca_file"] == secure.tls.ca_file  # type: ignore[union-attr]
    timeline.first("ticket_opened", invariant="member_down", target="member-3")
    opened = {e["invariant"] for e in timeline.named("ticket_opened")}
    assert "observation_failed" not in opened, timeline.story()
    # The password is nowhere: not on stdout, stderr, in any file the console wrote (database,
    # its WAL, logs, run folders), and not in the timeline's events.
    secret = PASSWORD.encode()
    assert PASSWORD not in stdout and PASSWORD not in timeline.stderr
    written = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in written) and any(p.suffix == ".log" for p in written)
    leaks = [str(p) for p in written if secret in p.read_bytes()]
    assert leaks == []
