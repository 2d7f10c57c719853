"""Eval campaigns and their scored runs, kept so campaigns can be compared and shown."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from operator_console.db.models import EvalCampaignRow, EvalRunRow
from operator_console.domain import utcnow


@dataclass(frozen=True, slots=True)
class CampaignSummary:
    """One line of a campaign list: what it ran, when, and how many of its runs won so far."""

    id: str
    name: str
    started_at: datetime
    finished_at: datetime | None
    interrupted: bool
    scenarios: tuple[str, ...]
    brains: tuple[str, ...]
    trials: int
    mode: str
    runs: int
    wins: int

    @property
    def win_rate(self) -> float | None:
        return self.wins / self.runs if self.runs else None

    @property
    def state(self) -> str:
        if self.finished_at is None:
            return "running"
        return "interrupted" if self.interrupted else "finished"

    @classmethod
    def of(cls, row: EvalCampaignRow, runs: int, wins: int) -> CampaignSummary:
        spec = row.spec or {}
        return cls(
            id=row.id,
            name=row.name,
            started_at=row.started_at,
            finished_at=row.finished_at,
            interrupted=row.interrupted,
            scenarios=tuple(str(s) for s in spec.get("scenarios") or ()),
            brains=tuple(str(b) for b in spec.get("brains") or ()),
            trials=int(spec.get("trials") or 0),
            mode=str(spec.get("mode") or ""),
            runs=runs,
            wins=wins,
        )


class EvalRepository:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, campaign_id: str, name: str, spec: dict[str, Any]) -> EvalCampaignRow:
        row = EvalCampaignRow(id=campaign_id, name=name, spec=spec)
        with Session(self._engine, expire_on_commit=False) as session:
            session.add(row)
            session.commit()
        return row

    def add_run(self, campaign_id: str, score: dict[str, Any]) -> None:
        row = EvalRunRow(
            campaign_id=campaign_id,
            scenario=str(score["scenario"]),
            brain=str(score["brain"]),
            trial=int(score["trial"]),
            run_id=str(score["run_id"]),
            win=bool(score["win"]),
            score=score,
        )
        with Session(self._engine) as session:
            session.add(row)
            session.commit()

    def finish(self, campaign_id: str, cells: list[dict[str, Any]], *, interrupted: bool) -> None:
        with Session(self._engine) as session:
            row = session.get(EvalCampaignRow, campaign_id)
            if row is None:
                return
            row.cells = cells
            row.finished_at = utcnow()
            row.interrupted = interrupted
            session.add(row)
            session.commit()

    def get(self, campaign_id: str) -> EvalCampaignRow | None:
        with Session(self._engine, expire_on_commit=False) as session:
            return session.get(EvalCampaignRow, campaign_id)

    def find(self, id_or_name: str) -> EvalCampaignRow | None:
        """A campaign by id, or the newest one with that name."""
        found = self.get(id_or_name)
        if found is not None:
            return found
        with Session(self._engine, expire_on_commit=False) as session:
            return session.exec(
                select(EvalCampaignRow)
                .where(EvalCampaignRow.name == id_or_name)
                .order_by(col(EvalCampaignRow.started_at).desc())
            ).first()

    def campaigns(self, limit: int = 50) -> list[EvalCampaignRow]:
        with Session(self._engine, expire_on_commit=False) as session:
            query = (
                select(EvalCampaignRow)
                .order_by(col(EvalCampaignRow.started_at).desc())
                .limit(limit)
            )
            return list(session.exec(query))

    def _tallies(self, ids: list[str]) -> dict[str, tuple[int, int]]:
        """Runs scored and won per campaign, from the runs themselves (a campaign still running
        has no table yet)."""
        if not ids:
            return {}
        wins = func.sum(case((col(EvalRunRow.win), 1), else_=0))
        with Session(self._engine) as session:
            query = (
                select(EvalRunRow.campaign_id, func.count(), wins)
                .where(col(EvalRunRow.campaign_id).in_(ids))
                .group_by(col(EvalRunRow.campaign_id))
            )
            return {cid: (int(n), int(w or 0)) for cid, n, w in session.exec(query)}

    def summaries(self, limit: int = 50) -> list[CampaignSummary]:
        """Campaigns, newest first, each with its runs and wins so far."""
        rows = self.campaigns(limit=limit)
        tallies = self._tallies([row.id for row in rows])
        return [CampaignSummary.of(row, *tallies.get(row.id, (0, 0))) for row in rows]

    def summary(self, campaign_id: str) -> CampaignSummary | None:
        row = self.get(campaign_id)
        if row is None:
            return None
        return CampaignSummary.of(row, *self._tallies([row.id]).get(row.id, (0, 0)))

    def runs(self, campaign_id: str) -> list[EvalRunRow]:
        with Session(self._engine, expire_on_commit=False) as session:
            query = select(EvalRunRow).where(EvalRunRow.campaign_id == campaign_id)
            return list(session.exec(query.order_by(col(EvalRunRow.id))))

    def latest_cells(self) -> dict[str, list[dict[str, Any]]]:
        """Per scenario, the cells of the newest finished campaign that ran it."""
        out: dict[str, list[dict[str, Any]]] = {}
        for campaign in self.campaigns(limit=200):
            if campaign.finished_at is None:
                continue
            for cell in campaign.cells:
                scenario = str(cell.get("scenario"))
                if scenario not in out:
                    out[scenario] = [c for c in campaign.cells if c.get("scenario") == scenario]
        return out
