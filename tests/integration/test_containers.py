"""The container backend, compose stacks, the `compose` placement and the shell sandbox,
against a real Docker engine (a private dockerd when none runs: tests/docker_engine.py).

The etcd stack is compose/etcd/host: three members on the host's network from an image built
here from the local etcd binary (nothing can be pulled), on free ports."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from operator_console.lab.compose import ComposeStack, StackError
from operator_console.lab.containers import (
    PROJECT_LABEL,
    SERVICE_LABEL,
    ContainerBackend,
    ContainerGoneError,
    DockerEngine,
    EngineUnreachableError,
)
from operator_console.lab.etcd.binary import EtcdBinaryError, find_etcd
from operator_console.lab.ports import free_ports
from tests.docker_engine import Engine, docker_engine
from tests.integration.conftest import Timeline, console_argv, console_env, parse_timeline

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
HOST_STACK = ROOT / "compose" / "etcd" / "host"
ETCD_IMAGE = "operator-console/etcd:local"


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    with docker_engine() as found:
        if isinstance(found, str):
            pytest.skip(found)
        yield found


@pytest.fixture(autouse=True)
def _docker_host(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", engine.address)


@pytest.fixture(scope="session")
def etcd_image(engine: Engine) -> str:
    """operator-console/etcd:local, built by the stack's own script from the local etcd."""
    if shutil.which("docker") is None:
        pytest.skip("the docker command line is not installed (apt-get install docker.io)")
    try:
        binary = find_etcd()
    except EtcdBinaryError as exc:
        pytest.skip(str(exc))
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "DOCKER_HOST": engine.address}
    env["ETCD_BIN"] = binary.path
    done = subprocess.run(
        [str(HOST_STACK / "build-image.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{ETCD_IMAGE}: etcd Version: {binary.version}")
    return ETCD_IMAGE


@pytest.fixture
def stack_ports(monkeypatch: pytest.MonkeyPatch, etcd_image: str) -> dict[str, str]:
    """Free ports for the host stack's members, through its variables (as a person would)."""
    ports = free_ports(6, "127.0.0.1")
    env = {f"OC_ETCD_CLIENT_{i}": str(ports[i - 1]) for i in (1, 2, 3)}
    env |= {f"OC_ETCD_PEER_{i}": str(ports[i + 2]) for i in (1, 2, 3)}
    env["OC_ETCD_TOKEN"] = f"oc-test-{uuid.uuid4().hex[:8]}"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def client(engine: Engine) -> Any:
    import docker

    return docker.DockerClient(base_url=engine.address, timeout=10)


def leftovers(engine: Engine, project: str) -> dict[str, list[str]]:
    """Whatever of a compose project the engine still holds."""
    docker_client = client(engine)
    label = {"label": f"{PROJECT_LABEL}={project}"}
    try:
        return {
            "containers": [c.name for c in docker_client.containers.list(all=True, filters=label)],
            "networks": [n.name for n in docker_client.networks.list(filters=label)],
            "volumes": [v.name for v in docker_client.volumes.list(filters=label)],
        }
    finally:
        docker_client.close()


def engine_state(engine: Engine, project: str, service: str) -> dict[str, Any]:
    """The container's state as the engine itself reports it (not through the backend)."""
    docker_client = client(engine)
    try:
        (found,) = docker_client.containers.list(
            all=True,
            filters={"label": [f"{PROJECT_LABEL}={project}", f"{SERVICE_LABEL}={service}"]},
        )
        return dict(found.attrs["State"])
    finally:
        docker_client.close()


# ------------------------------------------------------------------ the backend


async def test_each_container_action_changes_the_container_as_the_engine_reports_it(
    engine: Engine, stack_ports: dict[str, str]
) -> None:
    project = f"oc-test-{uuid.uuid4().hex[:8]}"
    stack = ComposeStack(HOST_STACK, DockerEngine(), project=project)
    await stack.up()
    try:
        backend = stack.backend()
        await backend.refresh()
        assert {n: backend.status(n) for n in backend.names()} == dict.fromkeys(
            ("member-1", "member-2", "member-3"), "running"
        )
        await backend.pause("member-1")
        assert engine_state(engine, project, "member-1")["Paused"] is True
        assert backend.status("member-1") == "paused"
        await backend.resume("member-1")
        assert engine_state(engine, project, "member-1")["Paused"] is False

        await backend.kill("member-2")
        killed = engine_state(engine, project, "member-2")
        assert (killed["Running"], killed["ExitCode"]) == (False, 137)
        assert backend.status("member-2") == "killed"
        await backend.start("member-2")
        assert engine_state(engine, project, "member-2")["Running"] is True

        await backend.stop("member-3")
        stopped = engine_state(engine, project, "member-3")
        assert stopped["Running"] is False
        # etcd ends on SIGTERM with 0 (stopped) or, mid-election, an error code (exited).
        expected = "stopped" if stopped["ExitCode"] in (0, 143) else "exited"
        assert backend.status("member-3") == expected
        before = engine_state(engine, project, "member-3")["StartedAt"]
        await backend.restart("member-3")
        after = engine_state(engine, project, "member-3")
        assert after["Running"] is True and after["StartedAt"] != before

        where, text = await backend.logs("member-1", 50)
        assert where == f"docker logs {project}-member-1-1"
        lines = text.splitlines()
        assert 10 <= len(lines) <= 50
        assert all(json.loads(line)["msg"] for line in lines)  # etcd's own zap lines
        with pytest.raises(StackError, match="already has containers"):
            await stack.up()  # a second `up` never adopts (or later removes) what runs
    finally:
        await stack.down()
    assert leftovers(engine, project) == {"containers": [], "networks": [], "volumes": []}


async def test_a_gone_container_and_an_unreachable_engine_are_each_one_clear_line(
    engine: Engine, tmp_path: Path
) -> None:
    gone = ContainerBackend(DockerEngine(), f"oc-none-{uuid.uuid4().hex[:8]}")
    with pytest.raises(ContainerGoneError) as caught:
        await gone.kill("member-1")
    assert "has no container" in str(caught.value) and "\n" not in str(caught.value)

    address = f"unix://{tmp_path}/no-engine.sock"
    silent = ContainerBackend(DockerEngine(address, timeout_s=2), "p")
    with pytest.raises(EngineUnreachableError) as unreachable:
        await silent.restart("member-1")
    text = str(unreachable.value)
    assert text.startswith(f"no Docker engine answers at {address}") and "DOCKER_HOST" in text
    assert "\n" not in text
    await silent.refresh()  # never raises: the states are unknown, and why is kept
    assert silent.status("member-1") is None and silent.last_error == text


async def test_network_disconnect_and_connect_move_the_container_between_networks(
    engine: Engine, etcd_image: str
) -> None:
    project = f"oc-test-{uuid.uuid4().hex[:8]}"
    docker_client = client(engine)
    network = docker_client.networks.create(
        f"{project}_default", internal=True, labels={PROJECT_LABEL: project}
    )
    container = docker_client.containers.create(
        etcd_image,
        ["--version"],
        name=f"{project}-member-1-1",
        labels={PROJECT_LABEL: project, SERVICE_LABEL: "member-1"},
        network=network.name,
    )
    try:
        backend = ContainerBackend(DockerEngine(), project)
        assert await backend.networks("member-1") == [network.name]
        await backend.disconnect("member-1", network.name)
        assert await backend.networks("member-1") == []
        await backend.connect("member-1", network.name)
        assert await backend.networks("member-1") == [network.name]
    finally:
        container.remove(force=True)
        network.remove()
        docker_client.close()


# ------------------------------------------------------------ the compose placement


def run_on_stack(data_dir: Path, env: dict[str, str], *args: str) -> Timeline:
    argv = console_argv(*args)
    full = console_env(data_dir) | env
    proc = subprocess.run(argv, env=full, capture_output=True, text=True, timeout=240)
    return Timeline(proc.returncode, parse_timeline(proc.stdout), proc.stderr)


def test_a_killed_leaders_container_is_detected_restarted_through_the_backend_and_verified(
    engine: Engine, stack_ports: dict[str, str], tmp_path: Path
) -> None:
    """etcd-leader-kill on the stack: up, the leader's container killed, member_down, the
    rules brain's restart_member through the container backend, verified, down; nothing of
    the project is left on the engine."""
    timeline = run_on_stack(
        tmp_path,
        {**stack_ports, "DOCKER_HOST": engine.address},
        "run",
        "etcd-leader-kill",
        "--compose",
        str(HOST_STACK),
        "--headless",
        "--quiet",
        "--mode",
        "auto",
        "--brain",
        "rules",
    )
    story = timeline.story() + "\n" + timeline.stderr[-2000:]
    assert timeline.returncode == 0, story
    assert timeline.first("run_started")["placement"] == "compose"
    ready = timeline.first("cluster_ready")
    assert "compose project oc-etcd-host" in ready["about"], ready["about"]
    fault = timeline.first("fault_injected", kind="leader_kill")
    killed = fault["target"]
    assert killed in ("member-1", "member-2", "member-3"), story
    assert "container" in fault["description"]
    opened = timeline.first("ticket_opened", invariant="member_down", target=killed)
    assert "killed" in opened["message"], opened["message"]
    executed = timeline.first("action_succeeded", action="restart_member")
    assert executed["params"] == {"member": killed}
    assert "container" in executed["result"] and "was killed" in executed["result"]
    timeline.first("action_verified", action="restart_member")
    timeline.first("ticket_resolved", ticket_id=opened["ticket_id"], by="agent")
    finished = timeline.first("run_finished")
    assert finished["ok"] is True and finished["summary"]["problems"] == [], story
    assert "lost_writes" not in finished["summary"]["fired"]
    assert leftovers(engine, "oc-etcd-host") == {"containers": [], "networks": [], "volumes": []}


async def test_watching_a_stack_gives_the_agent_container_actions_and_logs_and_no_faults(
    engine: Engine, stack_ports: dict[str, str], tmp_path: Path
) -> None:
    from operator_console.db import create_db_engine, init_db
    from operator_console.runtime import Runtime
    from operator_console.scenarios.watch import watch_plan
    from operator_console.settings import Settings

    stack = ComposeStack(HOST_STACK, DockerEngine())
    await stack.up()
    try:
        settings = Settings(data_dir=tmp_path / "data", shell_enabled=True)
        db = create_db_engine(f"sqlite:///{tmp_path / 'console.db'}")
        init_db(db)
        plan = watch_plan("etcd", stack.endpoints(), compose=str(HOST_STACK))
        runtime = Runtime(plan, settings, db, brain="rules")
        await runtime.start()
        try:
            assert runtime.deployment is not None and runtime.deployment.agent is not None
            assert runtime.fault_kinds() == []  # someone else's stack: no fault injection
            kit = runtime.deployment.agent
            assert {"restart_member", "resume_member"} <= set(kit.actions.names())
            assert kit.actions.unavailable == {}
            assert runtime.agent is not None
            shell = runtime.agent.catalog.get("run_shell")
            assert shell is not None and "throwaway container" in shell.description
            logs = await kit.toolbox().call("tail_log", {"member": "member-1", "lines": 20})
            assert not logs.is_error and "docker logs oc-etcd-host-member-1-1" in logs.content

            # A container killed from outside: the monitor's observation names it killed,
            # and the agent's action restarts it through the engine.
            docker_client = client(engine)
            try:
                docker_client.containers.get("oc-etcd-host-member-2-1").kill()
            finally:
                docker_client.close()
            observation = await runtime.deployment.subject.observe()
            down = [
                v
                for inv in runtime.deployment.subject.invariants
                for v in inv.check(observation)
                if v.invariant == "member_down"
            ]
            assert [(v.target, v.details.get("process")) for v in down] == [("member-2", "killed")]
            restart = kit.actions.get("restart_member")
            assert restart is not None
            result = await restart.run(restart.validate({"member": "member-2"}))
            assert "restarted member-2 (was killed)" in result, result
            assert engine_state(engine, "oc-etcd-host", "member-2")["Running"] is True
        finally:
            await runtime.stop()
        # Stopping the watch leaves the stack running: it was not the console's to remove.
        assert len(leftovers(engine, "oc-etcd-host")["containers"]) == 3
    finally:
        await stack.down()
    assert leftovers(engine, "oc-etcd-host")["containers"] == []


# ---------------------------------------------------------------- the shell sandbox


@pytest.fixture
def sandbox_engine(engine: Engine) -> DockerEngine:
    if shutil.which("busybox") is None:
        pytest.skip("the shell sandbox's image needs busybox (apt-get install busybox-static)")
    return DockerEngine()


async def test_a_sandboxed_command_has_no_socket_no_capabilities_a_read_only_root_no_network(
    sandbox_engine: DockerEngine, tmp_path: Path
) -> None:
    from operator_console.lab.sandbox import ShellSandbox

    tmp_path.chmod(0o755)  # as the console makes a run's folder (pytest's are private)
    (tmp_path / "member-1.log").write_text("a line of the run's folder\n")
    sandbox = ShellSandbox(sandbox_engine, workdir=tmp_path)
    done = await sandbox.run(
        "id -u; pwd; cat member-1.log; ls /var/run/docker.sock /run/docker.sock 2>&1; "
        "touch /x 2>/dev/null || echo root-is-read-only; "
        "touch member-1.log 2>/dev/null || echo run-dir-is-read-only; "
        "grep CapEff /proc/self/status; cat /proc/net/dev | tail -n +3 | cut -d: -f1",
        timeout_s=30,
        output_cap=4000,
    )
    out = done.kept.decode()
    assert done.status == "exit 0", out
    lines = [line.strip() for line in out.splitlines()]
    assert lines[:3] == ["65534", "/run-dir", "a line of the run's folder"], out
    assert out.count("No such file or directory") == 2, out  # no docker.sock inside
    assert "root-is-read-only" in lines and "run-dir-is-read-only" in lines
    assert "CapEff:\t0000000000000000" in out
    assert lines[-1] == "lo"  # no network but its own loopback


async def test_a_sandboxed_command_is_killed_at_its_timeout_capped_and_leaves_no_container(
    engine: Engine, sandbox_engine: DockerEngine
) -> None:
    from operator_console.actions.shell import run_sandboxed
    from operator_console.lab.sandbox import SANDBOX_LABEL, ShellSandbox

    sandbox = ShellSandbox(sandbox_engine)
    slow = await run_sandboxed(sandbox, "sleep 30", timeout_s=1, output_cap=1000)
    assert slow.startswith("timed out after 1 s and was killed"), slow
    big = await run_sandboxed(sandbox, "yes x | head -c 20000", timeout_s=30, output_cap=1000)
    assert big.startswith("exit 0") and "20000 bytes, first 1000 shown" in big
    assert big.split("\n", 1)[1] == "x\n" * 500
    docker_client = client(engine)
    try:
        left = docker_client.containers.list(all=True, filters={"label": SANDBOX_LABEL})
    finally:
        docker_client.close()
    assert left == []


async def test_on_a_stacks_network_the_sandbox_joins_that_network_and_no_other(
    engine: Engine, sandbox_engine: DockerEngine
) -> None:
    from operator_console.lab.sandbox import ShellSandbox

    docker_client = client(engine)
    name = f"oc-test-{uuid.uuid4().hex[:8]}_default"
    network = docker_client.networks.create(name, internal=True)
    try:
        sandbox = ShellSandbox(sandbox_engine, network=name)
        done = await sandbox.run(
            "cat /proc/net/dev | tail -n +3 | cut -d: -f1; hostname -i",
            timeout_s=30,
            output_cap=4000,
        )
        interfaces = [line.strip() for line in done.kept.decode().splitlines()]
        network.reload()
        subnet = network.attrs["IPAM"]["Config"][0]["Subnet"]
    finally:
        network.remove()
        docker_client.close()
    assert sorted(interfaces[:-1]) == ["eth0", "lo"], interfaces
    prefix = subnet.split(".")[:2]
    assert interfaces[-1].split(".")[:2] == prefix, (interfaces, subnet)


# -------------------------------------------- TiKV's faults and actions on containers


@pytest.fixture
def tikv_stand_ins(engine: Engine, etcd_image: str, tmp_path: Path) -> Iterator[ComposeStack]:
    """Containers from the etcd image named like the PD double's stores and PD members
    (tikv-0..2, pd-0..2), each an etcd of its own with no network: what TiKV's faults and
    actions do to containers, checked where TiKV cannot run."""
    services = [*(f"tikv-{i}" for i in range(3)), *(f"pd-{i}" for i in range(3))]
    lines = ["services:"]
    for name in services:
        lines += [
            f"  {name}:",
            f"    image: {etcd_image}",
            "    network_mode: none",
            f"    command: [--name={name}, --data-dir=/data/{name}]",
        ]
    (tmp_path / "compose.yaml").write_text("\n".join(lines) + "\n")
    stack = ComposeStack(tmp_path, DockerEngine(), project=f"oc-tikv-{uuid.uuid4().hex[:8]}")
    asyncio.run(stack.up())
    try:
        yield stack
    finally:
        asyncio.run(stack.down())
        assert leftovers(engine, stack.project)["containers"] == []


async def test_tikv_faults_and_process_actions_act_on_the_stores_and_pd_members_containers(
    engine: Engine, tikv_stand_ins: ComposeStack
) -> None:
    from operator_console.subjects.tikv.actions import build_catalog
    from operator_console.subjects.tikv.pd import PDClient
    from operator_console.subjects.tikv.stack import make_stack_fault
    from tests.subjects.tikv.pd_server import PDDouble

    project = tikv_stand_ins.project
    backend = tikv_stand_ins.backend()
    with PDDouble("pd-0") as pd_double:  # healthy v8.5.7: store 1 is tikv-0, pd-0 leads
        pd = PDClient([pd_double.url], timeout=2.0)
        try:
            stores = {host: s.id for s in await pd.stores() for host in [s.address.split(":")[0]]}
            catalog = build_catalog(pd, backend)
            assert catalog.unavailable == {}

            kill = make_stack_fault(pd, backend, "store_kill", "tikv-1", {})
            await kill.inject()
            assert kill.target == f"store-{stores['tikv-1']}"
            assert engine_state(engine, project, "tikv-1")["ExitCode"] == 137
            restart = catalog.get("restart_store")
            assert restart is not None
            said = await restart.run(restart.validate({"store": stores["tikv-1"]}))
            assert f"store-{stores['tikv-1']}" in said and "was killed" in said, said
            assert engine_state(engine, project, "tikv-1")["Running"] is True

            pause = make_stack_fault(pd, backend, "store_pause", "tikv-2", {})
            await pause.inject()
            assert engine_state(engine, project, "tikv-2")["Paused"] is True
            resume = catalog.get("resume_store")
            assert resume is not None
            await resume.run(resume.validate({"store": f"store-{stores['tikv-2']}"}))
            assert engine_state(engine, project, "tikv-2")["Paused"] is False

            leader = make_stack_fault(pd, backend, "pd_leader_kill", None, {})
            await leader.inject()
            assert leader.target == "pd-0"
            assert engine_state(engine, project, "pd-0")["Running"] is False
            await leader.clear()
            assert engine_state(engine, project, "pd-0")["Running"] is True
            restart_pd = catalog.get("restart_pd_member")
            assert restart_pd is not None
            await restart_pd.run(restart_pd.validate({"member": "pd-1"}))
            assert engine_state(engine, project, "pd-1")["Running"] is True

            # Leader imbalance is PD's evict-leader scheduler on the service's store, and
            # clearing it removes that store's entry.
            schedulers = "/pd/api/v1/schedulers"
            pd_double.after("POST", schedulers, "leaders-evicted")
            imbalance = make_stack_fault(pd, backend, "leader_imbalance", "tikv-2", {})
            await imbalance.inject()
            assert imbalance.target == f"store-{stores['tikv-2']}"
            (added,) = pd_double.requests_to("POST", schedulers)
            assert added.json == {"name": "evict-leader-scheduler", "store_id": stores["tikv-2"]}
            await imbalance.clear()
            entry = f"{schedulers}/evict-leader-scheduler-{stores['tikv-2']}"
            assert len(pd_double.requests_to("DELETE", entry)) == 1
        finally:
            await pd.aclose()


@pytest.mark.parametrize(
    ("fault", "hypothesis", "action"),
    [
        ("store_pause", "store_process_paused", "resume_store"),
        ("store_kill", "store_process_died", "restart_store"),
    ],
)
async def test_the_rules_brain_tells_a_paused_store_container_from_a_dead_one(
    engine: Engine,
    tikv_stand_ins: ComposeStack,
    tmp_path: Path,
    fault: str,
    hypothesis: str,
    action: str,
) -> None:
    """PD says store-5 (tikv-2) is Disconnected either way; its container's state, read
    through the backend, decides between unpausing and restarting it."""
    from operator_console.subjects.tikv import TikvKind
    from tests.subjects.tikv.pd_server import PDDouble
    from tests.subjects.tikv.test_tikv_runbook import investigate

    backend = tikv_stand_ins.backend()
    with PDDouble("pd-0", situation="store-disconnected") as pd_double:
        deployment = TikvKind().attach(
            {"pd": pd_double.url}, tmp_path, lambda _sample: None, processes=backend
        )
        try:
            injected = deployment.lab.make_fault(fault, "tikv-2", {})
            await injected.inject()
            assert injected.target == "store-5"
            result, _ = await investigate(deployment, "store_disconnected", "store-5")
        finally:
            await deployment.subject.close()
    assert result.diagnosis is not None
    assert result.diagnosis.label == hypothesis, result.diagnosis
    (recommended,) = result.diagnosis.recommended
    assert (recommended.action, recommended.params) == (action, {"store": "store-5"})
