"""The ticket dossier: one read of everything on record about a ticket, and only that ticket."""

from __future__ import annotations

import secrets

from sqlalchemy.engine import Engine

from operator_console.audit import AuditLog, register_secret
from operator_console.audit.redact import REDACTED
from operator_console.dossier import TicketDossier
from tests.dossier_data import DIAGNOSIS, RUN_ID, STEPS, seed_ticket


def test_load_returns_none_for_a_ticket_that_is_not_there(engine: Engine) -> None:
    assert TicketDossier.load(engine, 999) is None
    seed_ticket(engine)
    assert TicketDossier.load(engine, 999) is None


def test_load_gathers_the_ticket_its_transcript_actions_and_audit_rows_oldest_first(
    engine: Engine,
) -> None:
    ticket_id = seed_ticket(engine)
    other_id = seed_ticket(engine)
    dossier = TicketDossier.load(engine, ticket_id)
    assert dossier is not None
    assert dossier.ticket.id == ticket_id
    assert dossier.ticket.diagnosis == DIAGNOSIS.model_dump()
    assert [(s.seq, s.kind) for s in dossier.transcript] == [
        (seq, step.kind.value) for seq, step in enumerate(STEPS, start=1)
    ]
    assert [(a.params["node"], a.state) for a in dossier.actions] == [
        ("node-2", "approved"),
        ("node-1", "rejected"),
    ]
    assert {a.ticket_id for a in dossier.actions} == {ticket_id}
    assert [r.kind for r in dossier.audit] == [
        "ticket_opened",
        "diagnosis_ready",
        "action_proposed",
        "action_approved",
        "action_proposed",
        "action_rejected",
    ]
    assert {r.ticket_id for r in dossier.audit} == {ticket_id}
    assert [r.id for r in dossier.audit] == sorted(r.id for r in dossier.audit if r.id)
    other = TicketDossier.load(engine, other_id)
    assert other is not None and not {r.id for r in other.audit} & {r.id for r in dossier.audit}


def test_audit_payloads_are_redacted_for_secrets_registered_after_they_were_written(
    engine: Engine,
) -> None:
    ticket_id = seed_ticket(engine)
    late_secret = f"late-{secrets.token_hex(8)}"
    AuditLog(engine).append(
        "note", actor="person:test", run_id=RUN_ID, ticket_id=ticket_id, payload={"x": late_secret}
    )
    register_secret(late_secret)
    dossier = TicketDossier.load(engine, ticket_id)
    assert dossier is not None
    assert dossier.audit[-1].payload == {"x": REDACTED}
    stored = AuditLog(engine).get(dossier.audit[-1].id or 0)
    assert stored is not None and stored.payload == {"x": late_secret}, "nothing written back"
    assert AuditLog(engine).verify().ok
