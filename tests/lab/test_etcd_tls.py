"""A TLS etcd cluster with client-certificate auth, certificates made by trustme."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psutil
import pytest
import pytest_asyncio
import trustme

from operator_console.lab.etcd.binary import EtcdBinaryError, find_etcd
from operator_console.lab.etcd.client import ClientTLS, EtcdClient, EtcdUnavailableError
from operator_console.lab.etcd.cluster import EtcdCluster, EtcdTLS

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


def write_certificates(directory: Path) -> EtcdTLS:
    """A private CA, a server certificate for 127.0.0.1 and a client certificate, on disk."""
    directory.mkdir()
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("operator-console-client")
    paths = {
        name: directory / name
        for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")
    }
    ca.cert_pem.write_to_path(paths["ca.pem"])
    server.cert_chain_pems[0].write_to_path(paths["server.pem"])
    server.private_key_pem.write_to_path(paths["server.key"])
    client.cert_chain_pems[0].write_to_path(paths["client.pem"])
    client.private_key_pem.write_to_path(paths["client.key"])
    return EtcdTLS(
        ca_file=str(paths["ca.pem"]),
        cert_file=str(paths["server.pem"]),
        key_file=str(paths["server.key"]),
        client_cert_file=str(paths["client.pem"]),
        client_key_file=str(paths["client.key"]),
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EtcdCluster]:
    try:
        binary = find_etcd()
    except EtcdBinaryError as exc:
        pytest.skip(str(exc))
    run_dir = tmp_path_factory.mktemp("etcd-tls")
    tls = write_certificates(run_dir / "certs")
    lab = EtcdCluster(run_dir, members=3, binary=binary, tls=tls)
    await lab.start()
    try:
        yield lab
    finally:
        pids = [p for p in (lab.endpoints()["members"][n]["pid"] for n in lab.member_names) if p]
        await lab.stop()
        assert [pid for pid in pids if psutil.pid_exists(pid)] == []


async def test_members_serve_https_and_answer_the_client_certificate(tls_cluster: EtcdCluster):
    tls = tls_cluster.tls
    assert tls is not None
    ends = tls_cluster.endpoints()
    assert ends["tls"] == tls.to_dict()
    assert "BEGIN" not in str(ends)  # paths only, never the keys themselves
    for name in tls_cluster.member_names:
        url = ends["members"][name]["client_url"]
        assert url.startswith("https://127.0.0.1:")
        async with EtcdClient(url, tls=tls.client_tls()) as client:
            revision = (await client.put(f"tls/{name}", "secure")).revision
            got = await client.get(f"tls/{name}")
            assert got is not None and got.mod_revision == revision
            assert (await client.health()).healthy
    assert await tls_cluster.leader() in tls_cluster.member_names


async def test_without_a_client_certificate_the_member_refuses(tls_cluster: EtcdCluster):
    tls = tls_cluster.tls
    assert tls is not None
    url = tls_cluster.client_url("member-1")
    async with EtcdClient(url, tls=ClientTLS(ca_file=tls.ca_file), timeout=2.0) as anonymous:
        with pytest.raises(EtcdUnavailableError, match="require a client certificate") as info:
            await anonymous.put("tls/anonymous", "no")
    assert url in str(info.value)
    # Without the lab's CA the server's certificate is not trusted at all.
    async with EtcdClient(url, timeout=2.0) as untrusting:
        with pytest.raises(EtcdUnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusting.status()
    # Plain HTTP to a TLS port gets nothing useful either.
    plain = url.replace("https://", "http://")
    async with EtcdClient(plain, timeout=2.0) as cleartext:
        with pytest.raises(EtcdUnavailableError, match="does it serve https") as info:
            await cleartext.status()
        assert plain in str(info.value)
    # The anonymous write never happened.
    async with EtcdClient(url, tls=tls.client_tls()) as client:
        assert await client.get("tls/anonymous") is None


async def test_client_cert_auth_without_a_client_pair_is_refused_up_front(tmp_path: Path):
    with pytest.raises(ValueError, match="client_cert_auth needs client_cert_file"):
        EtcdTLS(ca_file="ca", cert_file="c", key_file="k")


async def test_the_clients_process_drives_the_tls_cluster_with_the_client_certificate(
    tls_cluster: EtcdCluster,
):
    url = await tls_cluster.start_clients(
        rate=40.0,
        mix=None,
        keys=20,
        prefix="tls-clients/",
        timeout_s=1.0,
        check_every_s=0.5,
        warm_up_s=0.0,
    )
    try:
        tls = tls_cluster.tls
        assert tls is not None and tls.client_cert_file is not None
        pid = tls_cluster.endpoints()["clients"]["pid"]
        argv = psutil.Process(pid).cmdline()
        assert argv[argv.index("--cert-file") + 1] == tls.client_cert_file
        async with httpx.AsyncClient(timeout=30.0, trust_env=False) as api:
            deadline = time.monotonic() + 15
            health: dict = {}
            while time.monotonic() < deadline:
                health = (await api.get(f"{url}/api/health")).json()
                if health["acknowledged"] >= 20:
                    break
                await asyncio.sleep(0.1)
            assert health["acknowledged"] >= 20, health
            final = (await api.post(f"{url}/api/stop")).json()
        assert final["error"] is None and final["lost"] == [] and final["checked"] > 0
    finally:
        await tls_cluster.stop_clients()
