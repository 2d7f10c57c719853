"""The audit log: append-only rows, each sealed by a hash over its contents and its predecessor."""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import json
import math
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import Enum
from pathlib import PurePath
from typing import Any

from sqlalchemy import Text, cast, text
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, StatementError
from sqlmodel import Session, col, select

from operator_console.audit.redact import redact, register_secrets_from_env
from operator_console.audit.summary import summarize
from operator_console.db.models import AuditRow
from operator_console.domain import utcnow

GENESIS_HASH = "0" * 64

# Key of the PostgreSQL advisory lock that serialises appends (b"oc-audit" as a bigint).
PG_APPEND_LOCK_KEY = 0x6F632D6175646974

# A concurrent writer on a database without a lock we know of loses the primary-key race; retry.
_APPEND_ATTEMPTS = 5
# A row a model wrote about an earlier row: {"of": id, "summary": text, "model": name}.
SUMMARY_KIND = "summary"
_VERIFY_CHUNK = 500


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Whether the chain is intact, how many rows were checked, and the first row that is not."""

    ok: bool
    rows: int
    first_bad_id: int | None = None
    reason: str = ""


def row_hash(
    *,
    id: int,
    at: datetime,
    kind: str,
    actor: str,
    run_id: str | None,
    ticket_id: int | None,
    action_id: int | None,
    payload: Any,
    prev_hash: str,
    summary: str = "",
) -> str:
    """The SHA-256 of a row's canonical JSON; any change to any field changes it. The summary
    is part of the document only when there is one, so rows written before summaries existed
    keep the hashes they were sealed with."""
    document = {
        "id": id,
        "at": at.astimezone(UTC).isoformat(),
        "kind": kind,
        "actor": actor,
        "run_id": run_id,
        "ticket_id": ticket_id,
        "action_id": action_id,
        "payload": payload,
        "prev_hash": prev_hash,
    }
    if summary:
        document["summary"] = summary
    canonical = json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def to_json_value(value: Any) -> Any:
    """Turn a payload into plain JSON values, so what is hashed is exactly what is stored."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json_value(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return to_json_value(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json_value(dataclasses.asdict(value))
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):
        return to_json_value(model_dump(mode="json"))
    return str(value)


class AuditLog:
    """Append and read the audit chain; safe with several processes writing to one database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        register_secrets_from_env()

    def append(
        self,
        kind: str,
        *,
        actor: str,
        payload: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        ticket_id: int | None = None,
        action_id: int | None = None,
    ) -> AuditRow:
        clean = redact(to_json_value(dict(payload or {})))
        line = redact(summarize(kind, clean))
        for attempt in range(_APPEND_ATTEMPTS):
            try:
                return self._append_once(
                    kind,
                    actor=actor,
                    payload=clean,
                    summary=line,
                    run_id=run_id,
                    ticket_id=ticket_id,
                    action_id=action_id,
                )
            except IntegrityError:
                if attempt == _APPEND_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _append_once(
        self,
        kind: str,
        *,
        actor: str,
        payload: dict[str, Any],
        summary: str,
        run_id: str | None,
        ticket_id: int | None,
        action_id: int | None,
    ) -> AuditRow:
        with Session(self._engine, expire_on_commit=False) as session:
            self._lock_head(session)
            head = session.exec(
                select(AuditRow.id, AuditRow.hash).order_by(col(AuditRow.id).desc()).limit(1)
            ).first()
            next_id, prev_hash = (
                (1, GENESIS_HASH) if head is None else (int(head[0] or 0) + 1, head[1])
            )
            at = utcnow()
            digest = row_hash(
                id=next_id,
                at=at,
                kind=kind,
                actor=actor,
                run_id=run_id,
                ticket_id=ticket_id,
                action_id=action_id,
                payload=payload,
                prev_hash=prev_hash,
                summary=summary,
            )
            row = AuditRow(
                id=next_id,
                at=at,
                kind=kind,
                actor=actor,
                run_id=run_id,
                ticket_id=ticket_id,
                action_id=action_id,
                payload=payload,
                summary=summary,
                prev_hash=prev_hash,
                hash=digest,
            )
            session.add(row)
            session.commit()
        return row

    def _lock_head(self, session: Session) -> None:
        """Hold the database's write lock before reading the head, so appends form one chain."""
        connection = session.connection()
        dialect = connection.dialect.name
        if dialect == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        elif dialect == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_APPEND_LOCK_KEY}
            )

    def get(self, id: int) -> AuditRow | None:
        with Session(self._engine, expire_on_commit=False) as session:
            return session.get(AuditRow, id)

    def list(
        self,
        limit: int = 50,
        kind: str | None = None,
        ticket_id: int | None = None,
        run_id: str | None = None,
    ) -> builtins.list[AuditRow]:
        """Newest rows first."""
        with Session(self._engine, expire_on_commit=False) as session:
            query = select(AuditRow)
            if kind is not None:
                query = query.where(AuditRow.kind == kind)
            if ticket_id is not None:
                query = query.where(AuditRow.ticket_id == ticket_id)
            if run_id is not None:
                query = query.where(AuditRow.run_id == run_id)
            query = query.order_by(col(AuditRow.id).desc()).limit(limit)
            return builtins.list(session.exec(query))

    def since(
        self, after: int, kinds: Collection[str], *, run_id: str | None, limit: int = 50
    ) -> builtins.list[AuditRow]:
        """Rows of these kinds after row `after`, oldest first (what a summarizer has not
        read yet)."""
        with Session(self._engine, expire_on_commit=False) as session:
            query = select(AuditRow).where(
                col(AuditRow.id) > after, col(AuditRow.kind).in_(list(kinds))
            )
            if run_id is not None:
                query = query.where(AuditRow.run_id == run_id)
            query = query.order_by(col(AuditRow.id)).limit(limit)
            return builtins.list(session.exec(query))

    def model_summaries(self, ids: Collection[int]) -> dict[int, str]:
        """The newest `summary` row a model wrote for each of these rows, by the row's id."""
        wanted = set(ids)
        if not wanted:
            return {}
        found: dict[int, str] = {}
        with Session(self._engine, expire_on_commit=False) as session:
            rows = session.exec(
                select(AuditRow)
                .where(AuditRow.kind == SUMMARY_KIND, col(AuditRow.id) > min(wanted))
                .order_by(col(AuditRow.id))
            )
            for row in rows:
                of = row.payload.get("of") if isinstance(row.payload, dict) else None
                if isinstance(of, int) and of in wanted:
                    found[of] = str(row.payload.get("summary", ""))
        return found

    def verify(self) -> VerifyResult:
        """Recompute every hash in id order and check that each row points at the one before."""
        checked = 0
        prev_id = 0
        prev_hash = GENESIS_HASH
        for row in self._rows_for_verify():
            if isinstance(row, _Unreadable):
                return VerifyResult(False, checked, row.id, f"row {row.id}: {row.reason}")
            if row.id != prev_id + 1:
                missing = prev_id + 1
                if prev_id == 0:
                    reason = f"row {missing} missing (the log starts at row {row.id})"
                else:
                    reason = f"row {missing} missing (ids jump from {prev_id} to {row.id})"
                return VerifyResult(False, checked, missing, reason)
            if row.prev_hash != prev_hash:
                if prev_id == 0:
                    reason = f"row {row.id}: prev_hash is not the genesis hash"
                else:
                    reason = f"row {row.id}: prev_hash does not match row {prev_id}"
                return VerifyResult(False, checked, row.id, reason)
            try:
                expected = row_hash(
                    id=row.id,
                    at=row.at,
                    kind=row.kind,
                    actor=row.actor,
                    run_id=row.run_id,
                    ticket_id=row.ticket_id,
                    action_id=row.action_id,
                    payload=row.payload,
                    prev_hash=row.prev_hash,
                    summary=row.summary,
                )
            except (TypeError, ValueError, AttributeError) as exc:
                return VerifyResult(False, checked, row.id, f"row {row.id}: unreadable ({exc})")
            if expected != row.hash:
                return VerifyResult(
                    False, checked, row.id, f"row {row.id}: hash mismatch (contents changed)"
                )
            checked += 1
            prev_id = row.id
            prev_hash = row.hash
        return VerifyResult(True, checked, None, f"audit chain ok: {checked} rows")

    def _rows_for_verify(self) -> Iterator[_Stored | _Unreadable]:
        """Every row in id order, in chunks; an undecodable row is reported, not raised."""
        after = 0
        while True:
            try:
                chunk = self._fetch(after, _VERIFY_CHUNK)
            except (StatementError, ValueError, OperationalError):
                chunk = self._fetch_one_by_one(after, _VERIFY_CHUNK)
            if not chunk:
                return
            yield from chunk
            if isinstance(chunk[-1], _Unreadable):
                return
            after = chunk[-1].id

    def _fetch(self, after: int, limit: int) -> builtins.list[_Stored | _Unreadable]:
        # The payload is read as text and parsed here, so a hand-edited payload that is not JSON
        # is a finding of the verifier, not a crash.
        query = (
            sa_select(
                col(AuditRow.id),
                col(AuditRow.at),
                col(AuditRow.kind),
                col(AuditRow.actor),
                col(AuditRow.run_id),
                col(AuditRow.ticket_id),
                col(AuditRow.action_id),
                cast(col(AuditRow.payload), Text),
                col(AuditRow.prev_hash),
                col(AuditRow.hash),
                col(AuditRow.summary),
            )
            .where(col(AuditRow.id) > after)
            .order_by(col(AuditRow.id))
            .limit(limit)
        )
        out: builtins.list[_Stored | _Unreadable] = []
        with self._engine.connect() as conn:
            for r in conn.execute(query):
                row_id = r[0]
                assert row_id is not None  # primary key
                try:
                    payload = json.loads(r[7]) if r[7] is not None else None
                except ValueError as exc:
                    out.append(_Unreadable(row_id, f"payload is not JSON ({exc})"))
                    break
                out.append(
                    _Stored(
                        row_id, r[1], r[2], r[3], r[4], r[5], r[6], payload, r[8], r[9], r[10] or ""
                    )
                )
        return out

    def _fetch_one_by_one(self, after: int, limit: int) -> builtins.list[_Stored | _Unreadable]:
        with Session(self._engine) as session:
            ids = builtins.list(
                session.exec(
                    select(AuditRow.id)
                    .where(col(AuditRow.id) > after)
                    .order_by(col(AuditRow.id))
                    .limit(limit)
                )
            )
        out: builtins.list[_Stored | _Unreadable] = []
        for row_id in ids:
            assert row_id is not None
            try:
                out.extend(self._fetch(row_id - 1, 1))
            except (StatementError, ValueError, OperationalError) as exc:
                out.append(_Unreadable(row_id, f"unreadable ({_first_line(exc)})"))
                break
        return out


@dataclass(frozen=True, slots=True)
class _Stored:
    id: int
    at: datetime
    kind: str
    actor: str
    run_id: str | None
    ticket_id: int | None
    action_id: int | None
    payload: Any
    prev_hash: str
    hash: str
    summary: str = ""


@dataclass(frozen=True, slots=True)
class _Unreadable:
    id: int
    reason: str


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).splitlines()[0] if str(orig) else type(orig).__name__
