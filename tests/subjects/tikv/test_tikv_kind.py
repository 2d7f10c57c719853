"""The tikv kind: its endpoints file (each mistake one error naming the field), what it shows
of the file (never a password), and that it says plainly it cannot start TiKV."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from operator_console.contract import SpecError, get_subject_kind
from operator_console.subjects.tikv import NO_LAB, TikvKind
from operator_console.subjects.tikv.spec import parse_endpoints
from tests.subjects.tikv.conftest import TLSMaterial

SECRET = "pa55-w0rd-never-shown"


def test_the_kind_is_registered_and_knows_its_catalog() -> None:
    kind = get_subject_kind("tikv")
    assert isinstance(kind, TikvKind)
    assert list(kind.invariant_names()) == [
        "store_disconnected",
        "store_down",
        "store_offline_stuck",
        "regions_miss_peer",
        "regions_down_peer",
        "regions_pending_peer",
        "leader_imbalance",
        "no_pd_leader",
        "pd_member_unhealthy",
        "store_disk_low",
        "latency_slo",
        "observation_failed",
    ]
    assert list(kind.action_names()) == [
        "transfer_leader",
        "transfer_peer",
        "remove_peer",
        "drain_store",
        "undrain_store",
        "set_store_weight",
        "restart_store",
        "resume_store",
        "restart_pd_member",
    ]
    # Faults exist only on a compose stack's containers (and PD's scheduler there).
    assert list(kind.fault_kinds()) == [
        "store_kill",
        "store_pause",
        "pd_leader_kill",
        "leader_imbalance",
    ]
    assert "recorded payloads" in kind.description and "live TiKV" in kind.description


def test_deploy_and_sizes_say_tikv_runs_only_on_a_stack_or_attached(tmp_path: Path) -> None:
    kind = TikvKind()
    for call in (
        lambda: kind.deploy({}, None, tmp_path, print),
        lambda: kind.sized(3),
    ):
        with pytest.raises(SpecError) as caught:
            call()
        assert str(caught.value).endswith(NO_LAB)
        assert "watch tikv --endpoints FILE" in str(caught.value)
        assert "--placement compose --compose compose/tikv" in str(caught.value)


def test_a_scenario_topology_is_the_stacks_shape_and_its_traffic_is_the_stacks_own() -> None:
    kind = TikvKind()
    kind.validate({}, {})
    kind.validate({"pd": 3, "stores": 3}, {})
    assert kind.targets({"stores": 2, "pd": 1}) == ["tikv-1", "tikv-2", "pd-1", "pd-leader"]
    with pytest.raises(SpecError, match=r"topology\.members"):
        kind.validate({"members": 3}, {})
    with pytest.raises(SpecError, match="go-ycsb"):
        kind.validate({}, {"rate": 10})


@pytest.mark.parametrize(
    ("endpoints", "pd", "prometheus"),
    [
        ({"pd": "http://pd:2379"}, ["http://pd:2379"], None),
        (
            {"pd": ["http://pd-0:2379", "pd-1:2379/"], "prometheus": "http://prom:9090"},
            ["http://pd-0:2379", "http://pd-1:2379"],
            "http://prom:9090",
        ),
        (
            {
                "pd": {"endpoints": ["http://pd:2379"]},
                "prometheus": {"url": "http://prom:9090", "window": "30s"},
            },
            ["http://pd:2379"],
            "http://prom:9090",
        ),
    ],
)
def test_endpoints_take_a_url_a_list_or_an_object(
    endpoints: dict[str, object], pd: list[str], prometheus: str | None
) -> None:
    spec = parse_endpoints(endpoints)
    assert spec.pd_endpoints() == pd
    assert spec.prometheus_url() == prometheus


@pytest.mark.parametrize(
    ("endpoints", "field", "needle"),
    [
        ({}, "pd", "give PD's client URL"),
        ({"pd": []}, "pd.endpoints", "at least 1"),
        ({"pd": "ftp://pd:2379"}, "pd", "not an http(s) URL"),
        ({"pd": "http://pd:2379", "prometheus": "gopher://p"}, "prometheus", "not an http(s)"),
        ({"pd": "http://pd:99999"}, "pd", "bad port"),
        ({"pd": "http://pd:2379", "prom": "x"}, "prom", "not a field of a TiKV endpoints"),
        (
            {"pd": {"endpoints": ["http://pd:2379"], "password": "x"}},
            "pd",
            "a password needs a username",
        ),
        (
            {"pd": "http://pd:2379", "prometheus": {"url": "http://p:9090", "window": "5"}},
            "prometheus.window",
            "not a PromQL duration",
        ),
        (
            {"pd": "http://pd:2379", "thresholds": {"disk_available_ratio": 2}},
            "thresholds.disk_available_ratio",
            "less than 1",
        ),
        (
            {"pd": {"endpoints": ["https://pd:2379"], "tls": {"ca_file": "/no/such/ca.pem"}}},
            "pd.tls",
            "does not exist",
        ),
    ],
)
def test_each_mistake_is_one_error_naming_its_field(
    endpoints: dict[str, object], field: str, needle: str
) -> None:
    with pytest.raises(SpecError) as caught:
        TikvKind().validate_endpoints(endpoints)
    assert caught.value.field.startswith(field), caught.value
    assert needle in caught.value.problem, caught.value


def test_an_unreadable_password_file_is_named(tmp_path: Path) -> None:
    endpoints = {
        "pd": {
            "endpoints": ["http://pd:2379"],
            "username": "ops",
            "password_file": str(tmp_path / "missing"),
        }
    }
    with pytest.raises(SpecError, match=r"pd\.password_file: cannot read it"):
        TikvKind().validate_endpoints(endpoints)


def test_what_is_shown_of_the_endpoints_never_holds_a_password(
    tmp_path: Path, tls: TLSMaterial
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    endpoints = {
        "pd": {
            "endpoints": ["https://127.0.0.1:2379"],
            "username": "ops",
            "password_file": str(secret_file),
            "tls": {
                "ca_file": str(tls.ca),
                "cert_file": str(tls.client_cert),
                "key_file": str(tls.client_key),
            },
        },
        "prometheus": f"http://viewer:{SECRET}@prom:9090",
    }
    spec = parse_endpoints(endpoints)
    assert spec.pd.credentials("pd") is not None
    assert spec.pd.credentials("pd").password == SECRET  # type: ignore[union-attr]
    shown = json.dumps(spec.redacted())
    assert SECRET not in shown and "viewer" not in shown and "ops" not in shown
    assert spec.redacted()["prometheus"]["url"] == "http://prom:9090"
    assert "not shown" in spec.redacted()["pd"]["auth"]
    assert SECRET not in repr(spec) and SECRET not in str(spec)
    inline = parse_endpoints(
        {"pd": {"endpoints": ["http://pd:2379"], "username": "ops", "password": SECRET}}
    )
    assert SECRET not in repr(inline) and SECRET not in json.dumps(inline.redacted())
