"""Every stack in compose/ is a valid compose file (the Compose Specification's JSON schema,
since no compose CLI runs here), one the console's own `up` can run, with pinned images and an
endpoints file its subject accepts; TiKV's Prometheus scrapes what the stack runs, its Grafana
dashboard loads, and its scenarios name only what the stack has."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from operator_console.contract import get_subject_kind
from operator_console.lab.compose import ComposeStack
from operator_console.lab.compose_file import ComposeError, find_compose_file, interpolate
from operator_console.lab.containers import DockerEngine
from operator_console.scenarios import find_scenario

ROOT = Path(__file__).resolve().parents[2]
STACKS = {
    "etcd": ROOT / "compose" / "etcd",
    "etcd-host": ROOT / "compose" / "etcd" / "host",
    "ratelimiter": ROOT / "compose" / "ratelimiter",
    "tikv": ROOT / "compose" / "tikv",
}
SUBJECT = {"etcd": "etcd", "etcd-host": "etcd", "ratelimiter": "ratelimiter", "tikv": "tikv"}
SCHEMA = json.loads((Path(__file__).parent / "data" / "compose-spec.json").read_text())


def document(folder: Path) -> dict[str, Any]:
    raw = yaml.safe_load(find_compose_file(folder).read_text())
    parsed: dict[str, Any] = interpolate(raw, os.environ)
    return parsed


def schema_errors(doc: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA)
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]


@pytest.mark.parametrize("name", sorted(STACKS))
def test_each_stack_follows_the_compose_specification(name: str) -> None:
    assert schema_errors(document(STACKS[name])) == []


def test_the_schema_check_catches_a_misspelt_key() -> None:
    doc = document(STACKS["etcd"])
    doc["services"]["member-1"]["comand"] = ["etcd"]
    assert any("comand" in error for error in schema_errors(doc))


@pytest.mark.parametrize("name", sorted(STACKS))
def test_each_stack_loads_for_the_consoles_own_up_with_an_endpoints_file_its_subject_takes(
    name: str,
) -> None:
    stack = ComposeStack(STACKS[name], DockerEngine("unix:///nowhere"))
    assert stack.project.startswith("oc-")
    assert stack.file.order()  # dependencies resolve
    get_subject_kind(SUBJECT[name]).validate_endpoints(stack.endpoints())


@pytest.mark.parametrize("name", sorted(STACKS))
def test_every_image_is_pinned_to_a_version(name: str) -> None:
    stack = ComposeStack(STACKS[name], DockerEngine("unix:///nowhere"))
    for service in stack.file.services.values():
        image = stack.file.image_of(service.name)
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        assert tag and tag != "latest", f"{name}/{service.name}: {image} is not pinned"


def test_the_host_stacks_ports_move_with_its_variables_in_both_files(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OC_ETCD_CLIENT_2", "41002")
    stack = ComposeStack(STACKS["etcd-host"], DockerEngine("unix:///nowhere"))
    assert stack.endpoints()["members"]["member-2"]["client_url"] == "http://127.0.0.1:41002"
    command = stack.file.services["member-2"].command
    assert isinstance(command, list)
    assert "--listen-client-urls=http://127.0.0.1:41002" in command


def test_a_key_the_consoles_up_cannot_run_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(
        "services:\n  member-1:\n    image: etcd:3.5\n    deploy: {replicas: 2}\n"
    )
    with pytest.raises(ComposeError) as caught:
        ComposeStack(tmp_path, DockerEngine("unix:///nowhere"))
    text = str(caught.value)
    assert "services.member-1.deploy" in text and "docker compose up -d" in text
    assert "\n" not in text


def test_tikv_prometheus_scrapes_every_pd_client_port_and_tikv_status_port() -> None:
    stack = ComposeStack(STACKS["tikv"], DockerEngine("unix:///nowhere"))
    config = yaml.safe_load((STACKS["tikv"] / "prometheus" / "prometheus.yml").read_text())
    jobs = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    pds = [s for s in stack.services if s.startswith("pd-")]
    stores = [s for s in stack.services if s.startswith("tikv-")]
    assert sorted(jobs["pd"]) == [f"{pd}:2379" for pd in pds]
    assert sorted(jobs["tikv"]) == [f"{store}:20180" for store in stores]
    for store in stores:  # the instance label is the status address PD reports
        command = stack.file.services[store].command
        assert isinstance(command, list)
        assert f"--advertise-status-addr={store}:20180" in command
        assert f"--advertise-addr={store}:20160" in command
    promtool = shutil.which("promtool")
    if promtool is not None:
        done = subprocess.run(
            [promtool, "check", "config", str(STACKS["tikv"] / "prometheus" / "prometheus.yml")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_tikv_grafana_is_provisioned_with_the_stacks_prometheus_and_its_dashboard() -> None:
    grafana = STACKS["tikv"] / "grafana"
    source = yaml.safe_load((grafana / "provisioning/datasources/prometheus.yml").read_text())
    (datasource,) = source["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((grafana / "provisioning/dashboards/dashboards.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboard = json.loads((grafana / "dashboards" / "tikv-overview.json").read_text())
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"]
        assert all(t["expr"] for t in panel["targets"])


@pytest.mark.parametrize(
    "name", ["tikv-store-kill", "tikv-store-pause", "tikv-pd-leader-kill", "tikv-leader-imbalance"]
)
def test_tikv_scenarios_run_on_the_stack_and_aim_at_its_services(name: str) -> None:
    scenario = find_scenario(name)
    assert (scenario.placement, scenario.compose) == ("compose", "compose/tikv")
    stack = ComposeStack(ROOT / scenario.compose, DockerEngine("unix:///nowhere"))
    for fault in scenario.faults:
        assert fault.target in (*stack.services, "pd-leader")
    assert scenario.expect.action in get_subject_kind("tikv").action_names()
