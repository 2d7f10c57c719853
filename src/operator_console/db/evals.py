"""Eval campaigns and their scored runs, kept so campaigns can be compared and shown."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from operator_console.db.models import EvalCampaignRow, EvalRunRow
from operator_console.domain import utcnow


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
