"""An incident's tickets in the order a person reads them: its cause first (a ticket whose
invariant is not a consequence of another member's), then the rest as they opened; incidents
newest first."""

from __future__ import annotations

from operator_console.db import TicketRow
from operator_console.db.tickets import cause_first, incident_groups
from operator_console.domain import utcnow

CAUSES = {"key_over_limit": ("store_dead",), "slow_answers": ("store_dead", "slow_answers")}


def _row(ticket_id: int, invariant: str, incident: int | None = None) -> TicketRow:
    return TicketRow(
        id=ticket_id,
        run_id="r",
        subject="s",
        dedup_key=f"{invariant}:{ticket_id}",
        invariant=invariant,
        target="t",
        severity="critical",
        state="open",
        message="m",
        first_seen=utcnow(),
        incident_id=incident if incident is not None else ticket_id,
    )


def _ids(rows: list[TicketRow]) -> list[int | None]:
    return [r.id for r in rows]


def test_the_cause_leads_its_incident_and_symptoms_follow_as_they_opened() -> None:
    members = [_row(4, "slow_answers", 1), _row(1, "key_over_limit"), _row(2, "store_dead", 1)]
    assert _ids(cause_first(members, CAUSES)) == [2, 1, 4]
    # Without the invariants' relations (or with the cause absent), the first ticket leads.
    assert _ids(cause_first(members)) == [1, 2, 4]
    assert _ids(cause_first([_row(4, "slow_answers", 1), _row(1, "key_over_limit")], CAUSES)) == [
        1,
        4,
    ]


def test_incidents_come_newest_first_each_with_its_cause_on_top() -> None:
    rows = [
        _row(5, "disk_full"),
        _row(4, "slow_answers", 1),
        _row(3, "disk_full"),
        _row(2, "store_dead", 1),
        _row(1, "key_over_limit"),
    ]
    groups = incident_groups(rows, CAUSES)
    assert [_ids(g) for g in groups] == [[5], [3], [2, 1, 4]]
