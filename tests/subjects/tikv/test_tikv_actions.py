"""The tikv actions driven through the real executor: each sends PD exactly the request its
handler reads (method, path, JSON body), PD's refusals end the action with PD's own words
and are not sent twice, and a drain is verified only once the store holds no leader.

PD cannot run here: the server is the wire-format double of pd_server.py, which moves to
the situation PD would leave once it accepts a request (`after`), as the cluster would.
Request bodies follow pkg/schedule/handler/handler.go HandleOperatorCreation,
server/api/scheduler.go CreateScheduler and server/api/store.go SetStoreWeight.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from operator_console.actions.decisions import Decisions
from operator_console.actions.executor import Executor, Verifier
from operator_console.actions.store import ActionRepository, ActionState, Controls
from operator_console.contract import Deployment
from operator_console.db import TicketRepository, create_db_engine, init_db
from operator_console.domain.bus import EventBus
from operator_console.domain.events import (
    ActionEvent,
    ActionFailed,
    ActionNotVerified,
    ActionSucceeded,
    ActionVerified,
    Event,
    Observed,
    TicketOpened,
)
from operator_console.monitor import Monitor
from operator_console.subjects.tikv import TikvKind
from tests.subjects.tikv.pd_server import PDDouble, RecordedRequest

API = "/pd/api/v1"
RUN = "tikv-actions"
Start = Callable[..., PDDouble]


@dataclass
class Loops:
    """One watch's monitor and executor over a PD double, with every event kept."""

    pd: PDDouble
    deployment: Deployment
    bus: EventBus
    actions: ActionRepository
    decisions: Decisions
    events: list[Event]

    async def next(self, kind: type[Event], timeout: float = 10.0, **fields: Any) -> Event:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            for event in self.events:
                if isinstance(event, kind) and all(
                    getattr(event, k) == v for k, v in fields.items()
                ):
                    return event
            await asyncio.sleep(0.05)  # the loops publish on their own ticks
        raise AssertionError(f"no {kind.__name__} {fields}: {[e.name for e in self.events]}")

    async def run(self, name: str, params: dict[str, Any], *, ticket: Any = None) -> ActionEvent:
        """Propose, approve and let the executor carry it out; its last event."""
        kit = self.deployment.agent
        assert kit is not None
        spec = kit.actions.get(name)
        valid = spec.validate(params).model_dump(mode="json")
        row = await asyncio.to_thread(
            self.actions.propose,
            spec,
            valid,
            proposed_by="test",
            reason="test",
            run_id=RUN,
            ticket_id=ticket.ticket_id if ticket else None,
            restores=f"{ticket.invariant}:{ticket.target}" if ticket else "",
        )
        assert row.id is not None
        self.pd.clear_requests()
        await asyncio.to_thread(self.decisions.approve, row.id, by="test")
        for _ in range(400):
            for event in self.events:
                if (
                    isinstance(event, ActionFailed | ActionVerified | ActionNotVerified)
                    and event.action_id == row.id
                ):
                    return event
            await asyncio.sleep(0.05)  # the executor and verifier publish as they go
        raise AssertionError(f"action {name} did not finish: {[e.name for e in self.events]}")

    def writes(self) -> list[tuple[str, str, Any]]:
        return [(r.method, r.path, r.json) for r in self.pd.requests if r.method != "GET"]

    def reads(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.pd.requests if r.method == "GET" and r.path == path]


@pytest_asyncio.fixture
async def loops(
    pd_doubles: Start, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[[str], Loops]]:
    started: list[tuple[Loops, list[asyncio.Task[None]]]] = []

    def start(situation: str) -> Loops:
        pd = pd_doubles(situation=situation)
        deployment = TikvKind().attach({"pd": pd.url}, tmp_path, lambda _s: None)
        engine = create_db_engine(f"sqlite:///{tmp_path / f'{len(started)}.db'}")
        init_db(engine)
        bus = EventBus()
        bus.bind_loop()
        events: list[Event] = []
        bus.add_listener(events.append)
        tickets, actions, controls = (
            TicketRepository(engine),
            ActionRepository(engine),
            Controls(engine),
        )
        assert deployment.agent is not None
        monitor = Monitor(
            deployment.subject, tickets, bus, run_id=RUN, interval=0.1, resolve_after=2
        )
        executor = Executor(
            actions,
            controls,
            tickets,
            deployment.agent.actions,
            bus,
            Verifier(bus, clean_ticks=2, timeout_s=8),
            run_id=RUN,
            poll_s=0.2,
        )
        tasks = [asyncio.create_task(monitor.run()), asyncio.create_task(executor.run())]
        made = Loops(pd, deployment, bus, actions, Decisions(actions, controls, bus), events)
        started.append((made, tasks))
        return made

    yield start
    for made, tasks in started:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await made.deployment.subject.close()


ACCEPTED: list[tuple[str, str, dict[str, Any], list[tuple[str, str, Any]], str]] = [
    (
        "healthy",
        "transfer_leader",
        {"region": 14, "to_store": "store-4"},
        [
            (
                "POST",
                f"{API}/operators",
                {"name": "transfer-leader", "region_id": 14, "to_store_id": 4},
            )
        ],
        "PD: The operator is created. transfer-leader of region-14 to store-4",
    ),
    (
        "healthy",
        "transfer_peer",
        {"region": "region-14", "from_store": 5, "to_store": 1},
        [
            (
                "POST",
                f"{API}/operators",
                {"name": "transfer-peer", "region_id": 14, "from_store_id": 5, "to_store_id": 1},
            )
        ],
        "transfer-peer of region-14 from store-5 to store-1",
    ),
    (
        "store-down",
        "remove_peer",
        {"region": 14, "store": 5},
        [("POST", f"{API}/operators", {"name": "remove-peer", "region_id": 14, "store_id": 5})],
        "remove-peer of region-14 on store-5",
    ),
    (
        "slow-store",
        "drain_store",
        {"store": 5},
        [("POST", f"{API}/schedulers", {"name": "evict-leader-scheduler", "store_id": 5})],
        "evict-leader-scheduler now holds leaders off store-5",
    ),
    (
        "leaders-evicted",
        "undrain_store",
        {"store": 5},
        [("DELETE", f"{API}/schedulers/evict-leader-scheduler-5", None)],
        "PD removed store-5 from the evict-leader-scheduler",
    ),
    (
        "healthy",
        "set_store_weight",
        {"store": 4, "leader_weight": 2, "region_weight": 0.5},
        [("POST", f"{API}/store/4/weight", {"leader": 2.0, "region": 0.5})],
        "store-4 now weighs 2 for leaders and 0.5 for regions",
    ),
]


@pytest.mark.parametrize(
    ("situation", "action", "params", "writes", "result"), ACCEPTED, ids=[a[1] for a in ACCEPTED]
)
async def test_each_action_sends_pd_the_request_it_reads(
    loops: Callable[[str], Loops],
    situation: str,
    action: str,
    params: dict[str, Any],
    writes: list[tuple[str, str, Any]],
    result: str,
) -> None:
    watch = loops(situation)
    if action == "drain_store":  # PD now lists the store under evict-leader
        watch.pd.after("POST", f"{API}/schedulers", "slow-store-draining")
    await watch.next(Observed)
    done = await watch.run(action, params)
    assert watch.writes() == writes
    succeeded = await watch.next(ActionSucceeded, action_id=done.action_id)
    assert result in succeeded.result  # type: ignore[attr-defined]
    assert isinstance(done, ActionVerified), done
    for request in watch.pd.requests:
        if request.json is not None:
            assert request.headers["content-type"] == "application/json"


REFUSED: list[tuple[str, str, dict[str, Any], int, str]] = [
    (
        "store-down",
        "transfer_peer",
        {"region": 14, "from_store": 1, "to_store": 5},
        1,
        "[PD:core:ErrStoreUnhealthy]store 5 is unhealthy",
    ),
    (
        "store-down",
        "transfer_leader",
        {"region": 18, "to_store": 1},
        1,
        "[PD:operator:ErrAddOperator]failed to add operator, maybe already have one",
    ),
    (
        "healthy",
        "transfer_peer",
        {"region": 14, "from_store": 5, "to_store": 7},
        1,
        "[PD:core:ErrStoreNotFound]store 7 not found",
    ),
    ("healthy", "drain_store", {"store": 7}, 1, "[PD:core:ErrStoreNotFound]store 7 not found"),
    (
        "healthy",
        "set_store_weight",
        {"store": 7, "leader_weight": 1, "region_weight": 1},
        1,
        "[PD:core:ErrStoreNotFound]store 7 not found",
    ),
    (
        "healthy",
        "transfer_leader",
        {"region": 999999, "to_store": 1},
        1,
        "[PD:region:ErrRegionNotFound]region 999999 not found",
    ),
    # Removing a healthy peer while another is down would leave no raft majority.
    (
        "store-down",
        "remove_peer",
        {"region": 14, "store": 1},
        0,
        "refusing to remove region-14's peer on store-1: 1 of the 2 voters left would be healthy",
    ),
]


@pytest.mark.parametrize(
    ("situation", "action", "params", "sent", "error"),
    REFUSED,
    ids=[f"{r[1]}:{r[4][:28]}" for r in REFUSED],
)
async def test_pd_refusals_fail_the_action_with_pd_words_and_are_not_resent(
    loops: Callable[[str], Loops],
    situation: str,
    action: str,
    params: dict[str, Any],
    sent: int,
    error: str,
) -> None:
    watch = loops(situation)
    await watch.next(Observed)
    done = await watch.run(action, params)
    assert isinstance(done, ActionFailed)
    assert error in done.error and done.attempts == 1  # type: ignore[attr-defined]
    assert len(watch.writes()) == sent
    row = watch.actions.get(done.action_id)
    assert row is not None and row.state == ActionState.FAILED.value


async def test_a_drain_is_verified_only_once_the_store_holds_no_leader(
    loops: Callable[[str], Loops],
) -> None:
    watch = loops("slow-store")
    watch.pd.after("POST", f"{API}/schedulers", "slow-store-draining")
    ticket = await watch.next(TicketOpened, invariant="leader_imbalance", target="store-5")
    task = asyncio.create_task(watch.run("drain_store", {"store": "store-5"}, ticket=ticket))
    succeeded = await watch.next(ActionSucceeded)
    ticks = sum(isinstance(e, Observed) for e in watch.events)
    while sum(isinstance(e, Observed) for e in watch.events) < ticks + 6:
        await asyncio.sleep(0.05)
    assert not task.done()  # 4 leaders still on store-5: the ticket's invariant still fails
    watch.pd.set_situation("leaders-evicted")  # PD has moved the last of them
    done = await task
    assert isinstance(done, ActionVerified), done
    assert done.action_id == succeeded.action_id  # type: ignore[attr-defined]
    assert "leader_imbalance:store-5 clear" in done.detail  # type: ignore[attr-defined]
    assert watch.writes() == [
        ("POST", f"{API}/schedulers", {"name": "evict-leader-scheduler", "store_id": 5})
    ]
    assert len(watch.reads(f"{API}/scheduler-config/evict-leader-scheduler/list")) >= 2
