"""The actions' requests are what PD's handlers read, and PD's refusals become clear errors.

Bodies are checked against what PD decodes (pkg/schedule/handler/handler.go
HandleOperatorCreation, server/api/scheduler.go CreateScheduler, server/api/store.go
SetStoreWeight, server/api/config.go SetConfig). PD cannot run here: the server is
the wire-format double in pd_server.py.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from operator_console.subjects.tikv.pd import PDClient
from operator_console.subjects.tikv.pd_errors import (
    OperatorExistsError,
    OperatorNotFoundError,
    OperatorRejectedError,
    PDInvalidInputError,
    RegionNotFoundError,
    SchedulerNotFoundError,
    StoreNotFoundError,
    StoreUnhealthyError,
)
from tests.subjects.tikv.pd_server import PDDouble

Start = Callable[..., PDDouble]
Call = Callable[[PDClient], Awaitable[Any]]
API = "/pd/api/v1"

ACTIONS: list[tuple[str, Call, str, str, Any, str]] = [
    (
        "transfer-leader",
        lambda c: c.transfer_leader(14, 4),
        "POST",
        f"{API}/operators",
        {"name": "transfer-leader", "region_id": 14, "to_store_id": 4},
        "The operator is created.",
    ),
    (
        "transfer-peer",
        lambda c: c.transfer_peer(14, 5, 1),
        "POST",
        f"{API}/operators",
        {"name": "transfer-peer", "region_id": 14, "from_store_id": 5, "to_store_id": 1},
        "The operator is created.",
    ),
    (
        "remove-peer",
        lambda c: c.remove_peer(14, 5),
        "POST",
        f"{API}/operators",
        {"name": "remove-peer", "region_id": 14, "store_id": 5},
        "The operator is created.",
    ),
    (
        "add-peer",
        lambda c: c.add_peer(2, 5),
        "POST",
        f"{API}/operators",
        {"name": "add-peer", "region_id": 2, "store_id": 5},
        "The operator is created.",
    ),
    (
        "evict-leader",
        lambda c: c.add_evict_leader_scheduler(5),
        "POST",
        f"{API}/schedulers",
        {"name": "evict-leader-scheduler", "store_id": 5},
        "The scheduler is created.",
    ),
    (
        "store-weight",
        lambda c: c.set_store_weight(4, leader=2, region=0.5),
        "POST",
        f"{API}/store/4/weight",
        {"leader": 2.0, "region": 0.5},
        "The store's label is updated.",
    ),
    (
        "config",
        lambda c: c.set_config({"schedule.leader-schedule-limit": 8}),
        "POST",
        f"{API}/config",
        {"schedule.leader-schedule-limit": 8},
        "The config is updated.",
    ),
    (
        "cancel-operator",
        lambda c: c.cancel_operator(18),
        "DELETE",
        f"{API}/operators/18",
        None,
        "The pending operator is canceled.",
    ),
]


@pytest.mark.parametrize("release", ["v7.5.7", "v8.5.7", "v26.3.4"])
@pytest.mark.parametrize(
    ("name", "call", "method", "path", "body", "reply"), ACTIONS, ids=[a[0] for a in ACTIONS]
)
async def test_each_action_sends_the_request_pd_reads(
    pd_doubles: Start,
    release: str,
    name: str,
    call: Call,
    method: str,
    path: str,
    body: Any,
    reply: str,
) -> None:
    pd = pd_doubles(release=release, situation="store-down")
    async with PDClient(pd.url) as client:
        answer = await call(client)
    assert answer == reply
    (request,) = [r for r in pd.requests if r.path == path]
    assert request.method == method
    assert request.json == body
    if body is not None:
        assert request.headers["content-type"] == "application/json"
        # Ids go as JSON integers (PD reads them into float64, exact below 2**53).
        assert request.body == json.dumps(body).encode()


async def test_removing_evict_leader_sends_the_stores_scheduler_name(pd_doubles: Start) -> None:
    pd = pd_doubles(situation="leaders-evicted")
    async with PDClient(pd.url) as client:
        assert await client.remove_evict_leader_scheduler(5) is None
    (request,) = pd.requests
    assert (request.method, request.path) == (
        "DELETE",
        f"{API}/schedulers/evict-leader-scheduler-5",
    )
    assert request.body == b""


async def test_removing_an_evict_leader_entry_that_is_not_there_says_so(pd_doubles: Start) -> None:
    pd = pd_doubles()  # no evict-leader-scheduler: PD forwards, gets 404, answers `null`
    async with PDClient(pd.url) as client:
        with pytest.raises(SchedulerNotFoundError) as caught:
            await client.remove_evict_leader_scheduler(4)
    assert caught.value.status == 404
    assert "evict-leader-scheduler has no entry for store 4" in str(caught.value)


REFUSALS: list[tuple[str, str, Call, type[Exception], str]] = [
    (
        "unknown store (operator)",
        "healthy",
        lambda c: c.transfer_peer(14, 5, 7),
        StoreNotFoundError,
        "[PD:core:ErrStoreNotFound]store 7 not found",
    ),
    (
        "unknown store (scheduler)",
        "healthy",
        lambda c: c.add_evict_leader_scheduler(7),
        StoreNotFoundError,
        "[PD:core:ErrStoreNotFound]store 7 not found",
    ),
    (
        "unknown store (weight)",
        "healthy",
        lambda c: c.set_store_weight(7, leader=1, region=1),
        StoreNotFoundError,
        "[PD:core:ErrStoreNotFound]store 7 not found",
    ),
    (
        "store not healthy",
        "store-down",
        lambda c: c.transfer_peer(14, 1, 5),
        StoreUnhealthyError,
        "[PD:core:ErrStoreUnhealthy]store 5 is unhealthy",
    ),
    (
        "operator exists",
        "store-down",
        lambda c: c.transfer_leader(18, 1),
        OperatorExistsError,
        "[PD:operator:ErrAddOperator]failed to add operator, maybe already have one",
    ),
    (
        "region not found",
        "healthy",
        lambda c: c.transfer_leader(999999, 1),
        RegionNotFoundError,
        "[PD:region:ErrRegionNotFound]region 999999 not found",
    ),
    (
        "no voter there",
        "healthy",
        lambda c: c.transfer_leader(14, 7),
        OperatorRejectedError,
        "region has no voter in store 7",
    ),
    (
        "no such operator",
        "healthy",
        lambda c: c.cancel_operator(18),
        OperatorNotFoundError,
        "[PD:operator:ErrOperatorNotFound]operator not found",
    ),
    (
        "bad config item",
        "healthy",
        lambda c: c.set_config({"no-such-item": 1}),
        PDInvalidInputError,
        "config item no-such-item not found",
    ),
]


@pytest.mark.parametrize("release", ["v7.5.7", "v8.5.7"])
@pytest.mark.parametrize(
    ("case", "situation", "call", "error", "pd_text"), REFUSALS, ids=[r[0] for r in REFUSALS]
)
async def test_pd_refusals_become_typed_errors_naming_endpoint_and_pd_text(
    pd_doubles: Start,
    release: str,
    case: str,
    situation: str,
    call: Call,
    error: type[Exception],
    pd_text: str,
) -> None:
    pd = pd_doubles(release=release, situation=situation)
    async with PDClient(pd.url) as client:
        with pytest.raises(error) as caught:
            await call(client)
    request = pd.requests[-1]
    message = str(caught.value)
    assert message.startswith(f"PD {request.method} {request.path}: ")
    assert message.endswith(pd_text)
    assert caught.value.pd_text == pd_text  # type: ignore[attr-defined]


async def test_ids_pd_would_round_through_float64_are_refused_before_sending(
    pd_doubles: Start,
) -> None:
    pd = pd_doubles()
    async with PDClient(pd.url) as client:
        with pytest.raises(ValueError, match="float64"):
            await client.transfer_leader(2**53 + 1, 4)
        with pytest.raises(ValueError, match="float64"):
            await client.add_evict_leader_scheduler(2**60)
        with pytest.raises(ValueError, match="zero or more"):
            await client.set_store_weight(4, leader=-1, region=1)
        assert await client.transfer_leader(2**53, 4) == "The operator is created."
    assert [r.json["region_id"] for r in pd.requests] == [2**53]
