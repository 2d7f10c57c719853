"""Several processes on one database: every action runs exactly once, every ticket is
investigated exactly once, on SQLite and on the real PostgreSQL.

The competitors are real `Executor` and `AgentLoop` objects, each in its own process (spawned),
started together; each writes what it did to its own file and the test counts the lines.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from operator_console.actions.store import (
    ActionRepository,
    ActionState,
    ApprovalError,
    ClaimLost,
    Controls,
    Mode,
)
from operator_console.audit import AuditLog
from operator_console.db import TicketRepository, create_db_engine, init_db
from operator_console.db.models import ApprovalRow, TicketRow
from operator_console.domain import Severity, TicketState, Violation, utcnow
from tests.db import claimants

ACTIONS = 50
TICKETS = 50
WORKERS = 2


@pytest.fixture
def shared(shared_db_url: str) -> Any:
    engine = create_db_engine(shared_db_url)
    init_db(engine)
    yield shared_db_url, engine
    engine.dispose()


def _approved_actions(engine: Engine, n: int) -> list[int]:
    repo = ActionRepository(engine)
    spec = claimants.restart_spec(None)
    ids = []
    for i in range(n):
        row = repo.propose(
            spec,
            {"node": f"node-{i}"},
            proposed_by="agent:test",
            reason="down",
            run_id=claimants.RUN_ID,
            ticket_id=None,
            restores=f"node_down:node-{i}",
        )
        assert row.id is not None
        repo.approve(row.id, by="person:test")
        ids.append(row.id)
    return ids


def _open_tickets(engine: Engine, n: int) -> list[int]:
    repo = TicketRepository(engine)
    ids = []
    for i in range(n):
        violation = Violation("node_down", f"node-{i}", Severity.CRITICAL, f"node-{i} is down")
        row = repo.open(
            violation, subject="test", run_id=claimants.RUN_ID, observation={}, first_seen=utcnow()
        )
        assert row.id is not None
        ids.append(row.id)
    return ids


def _race(target: Any, url: str, out: Path) -> None:
    """Start WORKERS processes running `target` and let them go at the same moment."""
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=target, args=(url, str(out), w, start)) for w in range(WORKERS)]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(90)
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join()
    assert [p.exitcode for p in procs] == [0] * WORKERS


def _lines(out: Path, pattern: str) -> dict[int, list[list[str]]]:
    return {
        w: [line.split() for line in (out / pattern.format(w)).read_text().splitlines()]
        for w in range(WORKERS)
        if (out / pattern.format(w)).exists()
    }


def test_two_executor_processes_run_each_action_exactly_once(
    shared: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = shared
    Controls(engine).set_mode(Mode.AUTO, by="test")
    ids = _approved_actions(engine, ACTIONS)

    _race(claimants.run_executor, url, tmp_path)

    executions = _lines(tmp_path, "executions-{}.txt")
    ran = Counter(node for lines in executions.values() for _pid, node in lines)
    twice = sorted(node for node, n in ran.items() if n > 1)
    assert len(ran) == ACTIONS, f"{ACTIONS - len(ran)} of {ACTIONS} actions never ran"
    assert twice == [], f"ran twice: {twice}"
    claims = _lines(tmp_path, "claims-{}.txt")
    won = {w: sum(1 for kind, _ in lines if kind == "won") for w, lines in claims.items()}
    lost = {w: sum(1 for kind, _ in lines if kind == "lost") for w, lines in claims.items()}
    errors = [line for lines in claims.values() for line in lines if line[0] == "error"]
    assert errors == []
    assert sum(won.values()) == ACTIONS
    print(f"\n{engine.dialect.name}: executions per process {won}, claims lost {lost}")

    repo = ActionRepository(engine)
    for action_id in ids:
        row = repo.get(action_id)
        assert row is not None and row.state == ActionState.SUCCEEDED.value
    with Session(engine) as session:
        approvals = session.exec(select(ApprovalRow)).all()
    assert len(approvals) == ACTIONS and all(a.used_at is not None for a in approvals)
    executing = AuditLog(engine).list(limit=10 * ACTIONS, kind="action_executing")
    assert sorted(r.action_id for r in executing) == sorted(ids)  # one audit row each
    assert AuditLog(engine).verify().ok


def test_two_agent_processes_investigate_each_ticket_exactly_once(
    shared: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = shared
    ids = _open_tickets(engine, TICKETS)

    _race(claimants.run_agent, url, tmp_path)

    lines = _lines(tmp_path, "investigations-{}.txt")
    started = Counter(
        int(t) for rows in lines.values() for _pid, kind, t in rows if kind == "start"
    )
    assert sorted(started) == ids  # none left uninvestigated
    assert max(started.values()) == 1  # none investigated twice
    per_process = {
        w: sum(1 for _pid, kind, _t in rows if kind == "start") for w, rows in lines.items()
    }
    print(f"\n{engine.dialect.name}: investigations per process {per_process}")
    for ticket_id in ids:
        row = TicketRepository(engine).get(ticket_id)
        assert row is not None and row.state == TicketState.ESCALATED.value
    started_rows = AuditLog(engine).list(limit=10 * TICKETS, kind="agent_step")
    assert Counter(r.ticket_id for r in started_rows) == dict.fromkeys(ids, 1)


def test_a_claimed_approval_is_consumed_in_the_same_step(shared: tuple[str, Engine]) -> None:
    _, engine = shared
    Controls(engine).set_mode(Mode.AUTO, by="test")
    (action_id,) = _approved_actions(engine, 1)
    row = ActionRepository(engine).claim(action_id, Controls(engine))
    assert row.state == ActionState.EXECUTING.value
    with Session(engine) as session:
        approval = session.exec(select(ApprovalRow)).one()
    assert approval.used_at is not None
    with pytest.raises(ClaimLost, match="is executing, not approved"):
        ActionRepository(engine).claim(action_id, Controls(engine))


def test_an_action_another_transaction_holds_is_skipped_at_once(pg_url: str) -> None:
    """PostgreSQL: the claim does not queue behind another claimant's row lock."""
    engine = create_db_engine(pg_url)
    init_db(engine)
    Controls(engine).set_mode(Mode.AUTO, by="test")
    (action_id,) = _approved_actions(engine, 1)
    with engine.connect() as other:
        other.execute(text("SELECT id FROM actions WHERE id = :id FOR UPDATE"), {"id": action_id})
        with pytest.raises(ClaimLost, match="being claimed by another process"):
            ActionRepository(engine).claim(action_id, Controls(engine))
        other.rollback()
    row = ActionRepository(engine).claim(action_id, Controls(engine))
    assert row.state == ActionState.EXECUTING.value
    engine.dispose()


def test_a_ticket_the_monitor_is_updating_is_waited_for_not_skipped(pg_url: str) -> None:
    """PostgreSQL: an agent's hold waits for the monitor's short update of the same ticket."""
    engine = create_db_engine(pg_url)
    init_db(engine)
    (ticket_id,) = _open_tickets(engine, 1)
    held: list[bool] = []
    with engine.connect() as monitor:
        monitor.execute(
            text("UPDATE tickets SET occurrences = occurrences + 1 WHERE id = :id"),
            {"id": ticket_id},
        )
        agent = threading.Thread(
            target=lambda: held.append(TicketRepository(engine).hold(ticket_id, by="rules"))
        )
        agent.start()
        _wait_for_a_lock_wait(engine)
        assert held == []
        monitor.commit()
        agent.join(10)
    assert held == [True]
    row = TicketRepository(engine).get(ticket_id)
    assert row is not None and row.held_by == "rules" and row.occurrences == 2
    assert TicketRepository(engine).hold(ticket_id, by="claude") is False
    engine.dispose()


def _wait_for_a_lock_wait(engine: Engine, timeout_s: float = 10.0) -> None:
    """Until some backend of this database waits on a lock (the server shows no event for it)."""
    deadline = time.monotonic() + timeout_s
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock'"
    )
    # Autocommit: inside one transaction the server would show the same snapshot every time.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as watcher:
        while time.monotonic() < deadline:
            if watcher.execute(query).scalar_one():
                return
            time.sleep(0.02)
    raise AssertionError("the hold never waited for the monitor's row lock")


def test_a_refused_approval_rejects_in_the_claiming_transaction(
    shared: tuple[str, Engine],
) -> None:
    _, engine = shared
    Controls(engine).set_mode(Mode.AUTO, by="test")
    (action_id,) = _approved_actions(engine, 1)
    with Session(engine) as session:
        approval = session.exec(select(ApprovalRow)).one()
        approval.used_at = utcnow()  # consumed by someone, outside any claim
        session.add(approval)
        session.commit()
    with pytest.raises(ApprovalError, match="approval was already used"):
        ActionRepository(engine).claim(action_id, Controls(engine))
    row = ActionRepository(engine).get(action_id)
    assert row is not None and row.state == ActionState.REJECTED.value
    refused = AuditLog(engine).list(kind="action_refused")
    assert [r.action_id for r in refused] == [action_id]


def test_hold_is_refused_for_a_held_or_closed_ticket(shared: tuple[str, Engine]) -> None:
    _, engine = shared
    first, second = _open_tickets(engine, 2)
    repo = TicketRepository(engine)
    assert repo.hold(first, by="rules") is True
    assert repo.hold(first, by="claude") is False
    repo.set_state(second, TicketState.RESOLVED)
    assert repo.hold(second, by="rules") is False
    assert repo.hold(10_000, by="rules") is False
    with Session(engine) as session:
        row = session.get(TicketRow, first)
        assert row is not None and row.held_by == "rules" and row.brain == "rules"
