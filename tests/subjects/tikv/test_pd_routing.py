"""Which PD member answers: followers forwarding to the leader, refusals, dead endpoints, TLS.

PD cannot run here: the members are doubles of PD's wire format (pd_server.py) whose
followers do what PD's redirector does in each release
(pkg/utils/apiutil/serverapi/middleware.go).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from operator_console.lab.ports import free_port
from operator_console.subjects.tikv.connection import (
    ConnectionConfigError,
    Credentials,
    TLSFiles,
)
from operator_console.subjects.tikv.pd import PDClient
from operator_console.subjects.tikv.pd_errors import (
    PDAuthError,
    PDRedirectFailedError,
    PDUnavailableError,
)
from tests.subjects.tikv.conftest import TLSMaterial
from tests.subjects.tikv.pd_server import PDDouble

Start = Callable[..., PDDouble]


@pytest.mark.parametrize("release", ["v7.5.7", "v8.5.7"])
async def test_a_follower_forwards_to_the_leader_with_a_redirector_header(
    pd_doubles: Start, release: str
) -> None:
    leader = pd_doubles("pd-0", release=release, situation="store-down")
    follower = pd_doubles("pd-1", release=release, situation="store-down")
    follower.follow(leader)
    async with PDClient(follower.url) as client:
        stores = await client.stores()
        await client.transfer_leader(14, 4)
    assert [s.state_name for s in stores] == ["Up", "Up", "Down"]
    forwarded = leader.requests_to("GET", "/pd/api/v1/stores")
    assert len(forwarded) == 1 and forwarded[0].headers["pd-redirector"] == "pd-1"
    posted = leader.requests_to("POST", "/pd/api/v1/operators")
    assert posted[0].json == {"name": "transfer-leader", "region_id": 14, "to_store_id": 4}


@pytest.mark.parametrize(("release", "proxied"), [("v7.5.7", True), ("v8.5.7", False)])
async def test_health_is_answered_locally_from_v8_5_on(
    pd_doubles: Start, release: str, proxied: bool
) -> None:
    leader = pd_doubles("pd-0", release=release)
    follower = pd_doubles("pd-1", release=release)
    follower.follow(leader)
    async with PDClient(follower.url) as client:
        health = await client.health()
    assert len(health) == 3
    assert bool(leader.requests_to("GET", "/pd/api/v1/health")) is proxied


@pytest.mark.parametrize(
    ("release", "text"),
    [
        ("v7.5.7", "no leader"),
        ("v8.5.7", "[PD:apiutil:ErrRedirectNoLeader]redirect finds no leader"),
    ],
)
async def test_without_a_leader_the_client_tries_the_next_member(
    pd_doubles: Start, release: str, text: str
) -> None:
    electing = pd_doubles("pd-1", release=release)
    electing.follow(None)
    async with PDClient(electing.url) as alone:
        with pytest.raises(PDUnavailableError) as caught:
            await alone.stores()
    assert text in str(caught.value) and electing.url in str(caught.value)
    leader = pd_doubles("pd-0", release=release)
    async with PDClient([electing.url, leader.url]) as client:
        assert len(await client.stores()) == 3
        assert client.endpoint_in_use == leader.url
        await client.members()
    # The member that answered is tried first from then on.
    assert len(electing.requests_to("GET", "/pd/api/v1/members")) == 0


async def test_a_request_forwarded_to_another_follower_is_refused_and_retried(
    pd_doubles: Start,
) -> None:
    leader = pd_doubles("pd-0")
    stale = pd_doubles("pd-2")
    stale.follow(leader)
    first = pd_doubles("pd-1")
    first.follow(stale)  # pd-1 still thinks pd-2 leads
    async with PDClient([first.url, leader.url]) as client:
        stores = await client.stores()
    assert len(stores) == 3
    refused = stale.requests_to("GET", "/pd/api/v1/stores")
    assert refused and refused[0].headers["pd-redirector"] == "pd-1"
    assert len(leader.requests_to("GET", "/pd/api/v1/stores")) == 1  # only the client's retry


async def test_an_unreachable_leader_fails_reads_over_but_not_writes(pd_doubles: Start) -> None:
    leader = pd_doubles("pd-0")
    follower = pd_doubles("pd-1")
    follower.follow(leader)
    leader.stop()
    other = pd_doubles("pd-2")
    async with PDClient([follower.url, other.url]) as client:
        assert len(await client.stores()) == 3  # read: taken by the next member
    async with PDClient(follower.url) as client:
        with pytest.raises(PDRedirectFailedError, match=r"\[PD:apiutil:ErrRedirect\]") as caught:
            await client.transfer_leader(14, 4)
    assert caught.value.status == 500
    assert other.requests_to("POST", "/pd/api/v1/operators") == []


async def test_a_dead_endpoint_is_skipped_and_all_dead_names_each(pd_doubles: Start) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    pd = pd_doubles()
    async with PDClient([dead, pd.url]) as client:
        assert (await client.members()).cluster_id == 7381573483094745213
        assert client.endpoint_in_use == pd.url
    other_dead = f"http://127.0.0.1:{free_port()}"
    async with PDClient([dead, other_dead], timeout=1) as client:
        with pytest.raises(PDUnavailableError) as caught:
            await client.members()
    message = str(caught.value)
    assert dead in message and other_dead in message and "cannot connect" in message
    assert "port 2379" in message


async def test_a_stopped_member_then_restarted_is_found_again(pd_doubles: Start) -> None:
    pd = pd_doubles(situation="pd-member-down")
    async with PDClient(pd.url, timeout=1) as client:
        assert len(await client.health()) == 3
        pd.stop()
        with pytest.raises(PDUnavailableError):
            await client.health()
        pd.start()
        assert len(await client.health()) == 3


async def test_mutual_tls_with_the_clusters_ca(pd_doubles: Start, tls: TLSMaterial) -> None:
    pd = pd_doubles(tls=tls.server_context())
    files = TLSFiles(ca_file=tls.ca, cert_file=tls.client_cert, key_file=tls.client_key)
    async with PDClient(pd.url, tls=files) as client:
        assert len(await client.stores()) == 3
    async with PDClient(pd.url, tls=TLSFiles(ca_file=tls.ca), timeout=2) as client:
        with pytest.raises(PDUnavailableError):  # PD asks for a client certificate
            await client.stores()
    async with PDClient(pd.url, tls=TLSFiles(ca_file=tls.other_ca), timeout=2) as client:
        with pytest.raises(PDUnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.stores()


async def test_a_follower_forwards_over_tls(pd_doubles: Start, tls: TLSMaterial) -> None:
    leader = pd_doubles("pd-0", tls=tls.server_context())
    follower = pd_doubles("pd-1", tls=tls.server_context(), client_tls=tls.client_context())
    follower.follow(leader)
    files = TLSFiles(ca_file=tls.ca, cert_file=tls.client_cert, key_file=tls.client_key)
    async with PDClient(follower.url, tls=files) as client:
        assert len(await client.stores()) == 3
    assert leader.requests_to("GET", "/pd/api/v1/stores")


def test_bad_tls_files_are_named_before_any_request(tls: TLSMaterial) -> None:
    with pytest.raises(ConnectionConfigError, match="does not exist"):
        PDClient("https://pd:2379", tls=TLSFiles(ca_file=tls.ca.with_name("missing.pem")))
    with pytest.raises(ConnectionConfigError, match="give both cert_file and key_file"):
        PDClient("https://pd:2379", tls=TLSFiles(ca_file=tls.ca, cert_file=tls.client_cert))
    with pytest.raises(ConnectionConfigError, match="cannot be loaded"):
        PDClient(
            "https://pd:2379", tls=TLSFiles(cert_file=tls.client_cert, key_file=tls.server_key)
        )


async def test_basic_credentials_are_sent_and_never_shown(
    pd_doubles: Start, caplog: pytest.LogCaptureFixture
) -> None:
    pd = pd_doubles()
    pd.require_basic_auth("operator", "s3cret-pass")
    caplog.set_level(logging.DEBUG)
    async with PDClient(pd.url, credentials=Credentials("operator", "s3cret-pass")) as client:
        assert len(await client.stores()) == 3
    url_with_secret = pd.url.replace("http://", "http://operator:s3cret-pass@")
    async with PDClient(url_with_secret) as client:
        assert len(await client.stores()) == 3
        assert "s3cret" not in repr(client) and "s3cret" not in client.endpoint_in_use
    wrong = url_with_secret.replace("s3cret-pass", "wrong-pass")
    async with PDClient(wrong) as client:
        with pytest.raises(PDAuthError) as caught:
            await client.stores()
    assert caught.value.status == 401
    shown = str(caught.value) + repr(Credentials("operator", "s3cret-pass"))
    assert "s3cret" not in shown and "wrong-pass" not in shown
    assert "s3cret" not in caplog.text and "wrong-pass" not in caplog.text


def test_an_endpoint_that_is_no_url_is_refused_clearly() -> None:
    with pytest.raises(ConnectionConfigError, match="not an http"):
        PDClient("ftp://pd:2379")
    with pytest.raises(ConnectionConfigError, match="bad port"):
        PDClient("http://user:pw@pd:99999999")
    with pytest.raises(ValueError, match="at least one PD endpoint"):
        PDClient([])
    assert PDClient("pd-0:2379").endpoints == ("http://pd-0:2379",)
