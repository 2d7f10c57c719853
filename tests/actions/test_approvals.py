"""Approvals across processes on one database: single use, bound to the parameters, expiring,
re-checked at execution; the kill switch and interrupted executions.

The CLI is run as real separate processes against the same SQLite file the test reads; the
action here is a small real coroutine (a counter) so the test can see exactly how often it ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict
from sqlalchemy import text
from sqlalchemy.engine import Engine

from operator_console.actions.executor import Executor, Verifier
from operator_console.actions.policy import Decision, decide
from operator_console.actions.store import (
    ActionRepository,
    ActionState,
    ApprovalError,
    Controls,
    Mode,
)
from operator_console.contract import ActionCatalog, ActionSpec
from operator_console.db import TicketRepository, create_db_engine, init_db
from operator_console.domain.bus import EventBus
from operator_console.domain.events import Event


class NodeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    node: str


class Counter:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def run(self, params: NodeParams) -> str:
        self.calls.append(params.node)
        return f"restarted {params.node}"


@pytest.fixture
def db(tmp_path: Path) -> tuple[str, Engine]:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    engine = create_db_engine(url)
    init_db(engine)
    return url, engine


def spec(counter: Counter, risk: str = "medium") -> ActionSpec:
    return ActionSpec(
        name="restart_node",
        description="restart a node",
        params=NodeParams,
        risk=risk,  # type: ignore[arg-type]
        restores=("node_down",),
        timeout_s=5,
        run=counter.run,
    )


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPERATOR_CONSOLE_DB": url}
    return subprocess.run(
        [sys.executable, "-m", "operator_console", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def propose(engine: Engine, counter: Counter, node: str = "node-2") -> int:
    row = ActionRepository(engine).propose(
        spec(counter),
        {"node": node},
        proposed_by="agent:rules",
        reason="node-2 is down",
        run_id="r1",
        ticket_id=None,
        restores="node_down:node-2",
    )
    assert row.id is not None
    return row.id


def test_policy_gate_by_mode_and_risk() -> None:
    assert decide("low", Mode.AUTO, kill_switch=False).decision is Decision.EXECUTE
    assert decide("medium", Mode.AUTO, kill_switch=False).decision is Decision.EXECUTE
    assert decide("high", Mode.AUTO, kill_switch=False).decision is Decision.AWAIT_APPROVAL
    assert decide("low", Mode.APPROVE, kill_switch=False).decision is Decision.AWAIT_APPROVAL
    assert decide("low", Mode.OBSERVE, kill_switch=False).decision is Decision.PROPOSE_ONLY
    assert decide("low", Mode.AUTO, kill_switch=True).decision is Decision.PROPOSE_ONLY


def test_cli_approve_twice_and_executor_runs_once(db: tuple[str, Engine]) -> None:
    url, engine = db
    counter = Counter()
    action_id = propose(engine, counter)
    listed = cli(url, "actions", "list", "--state", "proposed")
    assert listed.returncode == 0 and "restart_node" in listed.stdout
    first = cli(url, "actions", "approve", str(action_id), "--reason", "go")
    assert first.returncode == 0, first.stderr
    second = cli(url, "actions", "approve", str(action_id))
    assert second.returncode == 1
    assert "is approved, not proposed" in second.stderr
    assert "Traceback" not in second.stderr

    events: list[Event] = []
    bus = EventBus()
    bus.add_listener(events.append)

    async def drive() -> None:
        executor = Executor(
            ActionRepository(engine),
            Controls(engine),
            TicketRepository(engine),
            ActionCatalog([spec(counter)]),
            bus,
            Verifier(bus, clean_ticks=1, timeout_s=0.2),
            run_id="r1",
        )
        for _ in range(3):
            await executor.poll()
            await asyncio.sleep(0.3)
        await executor.stop()

    asyncio.run(drive())
    assert counter.calls == ["node-2"]
    row = ActionRepository(engine).get(action_id)
    assert row is not None and row.state == ActionState.NOT_VERIFIED.value  # nothing observed
    names = [e.name for e in events if e.name.startswith("action_")]
    assert names[:3] == ["action_approved", "action_executing", "action_succeeded"]
    with pytest.raises(ApprovalError, match="not approved"):
        ActionRepository(engine).claim(action_id, Controls(engine))


def test_cli_reject_needs_a_reason_and_blocks_execution(db: tuple[str, Engine]) -> None:
    url, engine = db
    action_id = propose(engine, Counter())
    missing = cli(url, "actions", "reject", str(action_id))
    assert missing.returncode == 2 and "--reason" in missing.stderr
    done = cli(url, "actions", "reject", str(action_id), "--reason", "wrong node")
    assert done.returncode == 0, done.stderr
    row = ActionRepository(engine).get(action_id)
    assert row is not None and row.state == "rejected" and row.decision_reason == "wrong node"
    late = cli(url, "actions", "approve", str(action_id))
    assert late.returncode == 1 and "rejected" in late.stderr


def test_expired_approval_is_refused_at_execution(db: tuple[str, Engine]) -> None:
    _, engine = db
    repo = ActionRepository(engine)
    action_id = propose(engine, Counter())
    repo.approve(action_id, by="person:test", ttl_s=0.05)
    time.sleep(0.1)
    with pytest.raises(ApprovalError, match="expired"):
        repo.claim(action_id, Controls(engine))
    row = repo.get(action_id)
    assert row is not None and row.state == "rejected"


def test_changed_parameters_invalidate_the_approval(db: tuple[str, Engine]) -> None:
    _, engine = db
    repo = ActionRepository(engine)
    action_id = propose(engine, Counter())
    repo.approve(action_id, by="person:test")
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE actions SET params = :p WHERE id = :id"),
            {"p": '{"node": "node-3"}', "id": action_id},
        )
    with pytest.raises(ApprovalError, match="parameters changed"):
        repo.claim(action_id, Controls(engine))


def test_kill_switch_from_cli_cancels_pending_and_forces_observe(db: tuple[str, Engine]) -> None:
    url, engine = db
    pending = propose(engine, Counter())
    approved = propose(engine, Counter(), node="node-3")
    Controls(engine).set_mode(Mode.AUTO, by="test")
    ActionRepository(engine).approve(approved, by="person:test")
    on = cli(url, "kill-switch", "on")
    assert on.returncode == 0 and "2 pending" in on.stdout
    controls = Controls(engine)
    assert controls.kill_switch() and controls.mode() is Mode.OBSERVE
    for action_id in (pending, approved):
        row = ActionRepository(engine).get(action_id)
        assert row is not None and row.state == "cancelled"
    with pytest.raises(ApprovalError, match="kill switch"):
        ActionRepository(engine).approve(propose(engine, Counter()), by="person:test")
    with pytest.raises(ApprovalError, match="kill switch"):
        controls.set_mode(Mode.AUTO, by="test")
    status = cli(url, "kill-switch", "status")
    assert "kill switch ON" in status.stdout
    assert cli(url, "kill-switch", "off").returncode == 0
    assert not Controls(engine).kill_switch()


def test_interrupted_execution_is_never_rerun(db: tuple[str, Engine]) -> None:
    _, engine = db
    repo = ActionRepository(engine)
    counter = Counter()
    action_id = propose(engine, counter)
    repo.approve(action_id, by="person:test")
    repo.claim(action_id, Controls(engine))  # the process "crashes" here, mid-execution
    assert [r.id for r in repo.mark_interrupted()] == [action_id]
    row = repo.get(action_id)
    assert row is not None and row.state == "interrupted"
    with pytest.raises(ApprovalError):
        repo.claim(action_id, Controls(engine))
    assert counter.calls == []


def test_an_approved_action_is_never_seen_without_its_approval(db: tuple[str, Engine]) -> None:
    """The executor polls from another thread; it must never find an action approved whose
    approval row is not there yet (it would refuse it as 'approval already used')."""
    import threading

    from sqlmodel import Session, select

    from operator_console.db.models import ActionRow, ApprovalRow

    _, engine = db
    ids = [propose(engine, Counter(), node=f"node-{i}") for i in range(40)]
    done = threading.Event()
    torn: list[int] = []

    def watch() -> None:
        while not done.is_set():
            with Session(engine) as session:
                approved = session.exec(
                    select(ActionRow.id).where(ActionRow.state == ActionState.APPROVED.value)
                ).all()
                with_approval = set(session.exec(select(ApprovalRow.action_id)).all())
            torn.extend(i for i in approved if i not in with_approval)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for action_id in ids:
            ActionRepository(engine).approve(action_id, by="person:test")
    finally:
        done.set()
        watcher.join()
    assert torn == []


async def test_an_approval_in_this_process_runs_at_once_without_waiting_for_a_poll(
    db: tuple[str, Engine],
) -> None:
    """The executor reacts to this process's approval event; the database poll (an hour apart
    here) is only for decisions made elsewhere."""
    from operator_console.actions.decisions import Decisions
    from operator_console.domain.events import ActionSucceeded

    _url, engine = db
    counter = Counter()
    bus = EventBus()
    bus.bind_loop()
    controls = Controls(engine)
    actions = ActionRepository(engine)
    executor = Executor(
        actions,
        controls,
        TicketRepository(engine),
        ActionCatalog([spec(counter)]),
        bus,
        Verifier(bus, clean_ticks=1, timeout_s=0.2),
        run_id="r1",
        poll_s=3600.0,
    )
    loop = asyncio.create_task(executor.run())
    try:
        async with bus.subscribe() as queue:
            await asyncio.sleep(0)  # the loop's first poll (of nothing) happens now
            action_id = propose(engine, counter)
            await asyncio.to_thread(
                Decisions(actions, controls, bus).approve, action_id, by="person:test"
            )
            async with asyncio.timeout(10):
                while not isinstance(event := await queue.get(), ActionSucceeded):
                    pass
        assert event.action_id == action_id
        assert counter.calls == ["node-2"]
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        await executor.stop()


def test_a_run_mode_holds_for_that_run_only(db: tuple[str, Engine]) -> None:
    """`run --mode auto` does not change the mode the next console starts in; a person's
    choice (`m`, `mode set`) and the kill switch end the run's own mode."""
    url, engine = db
    run = Controls(engine, run_mode=Mode.AUTO)
    assert run.mode() is Mode.AUTO
    assert Controls(engine).mode() is Mode.APPROVE  # another console, or the next one
    shown = cli(url, "mode", "show")
    assert shown.returncode == 0 and shown.stdout.strip() == "mode approve"
    run.set_mode(Mode.OBSERVE, by="person:test")
    assert run.mode() is Mode.OBSERVE and run.run_mode is None
    assert cli(url, "mode", "set", "auto").stdout.strip() == "mode auto (was observe)"
    assert run.mode() is Mode.AUTO
    again = Controls(engine, run_mode=Mode.APPROVE)
    again.set_kill_switch(True, by="person:test")
    assert again.mode() is Mode.OBSERVE and again.run_mode is None
    refused = cli(url, "mode", "set", "auto")
    assert refused.returncode == 1 and "the kill switch is on" in refused.stderr
    assert cli(url, "mode", "set", "fast").returncode == 2
