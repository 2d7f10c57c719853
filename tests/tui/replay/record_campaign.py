"""Record one real eval campaign for the console's Evals screen tests.

    python tests/tui/replay/record_campaign.py

Three scenarios (a node killed, a store link cut, a healthy surge), each run twice with the
rules brain and twice with none (the no-agent baseline), every trial a fresh headless run on
its own real lab. The campaign's stored rows (`eval_campaigns`, `eval_runs`) are written to
`campaign.json` next to this file; the Evals screen tests load them into a fresh database, so
the screen shows real scores with nothing left to chance.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from operator_console.db import create_db_engine, init_db
from operator_console.db.models import EvalCampaignRow, EvalRunRow
from operator_console.scenarios.campaign import CampaignRunner, campaign_from
from operator_console.scenarios.scoring import render_table, table
from operator_console.settings import Settings

HERE = Path(__file__).resolve().parent
OUT = HERE / "campaign.json"
SCENARIOS = ["ratelimiter-node-kill", "ratelimiter-link-cut", "ratelimiter-healthy-burst"]


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


async def record() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), anthropic_api_key=None, anthropic_base_url=None)
        engine = create_db_engine(f"sqlite:///{tmp}/record.db")
        init_db(engine)
        campaign = campaign_from(
            {
                "name": "recorded",
                "scenarios": SCENARIOS,
                "brains": ["rules", "none"],
                "trials": 2,
                "seed": 7,
            }
        )
        runner = CampaignRunner(campaign, settings, engine)
        result = await runner.run()
        print(render_table(table(result.scores)))
        tables: dict[str, list[dict[str, Any]]] = {}
        with engine.connect() as conn:
            for model in (EvalCampaignRow, EvalRunRow):
                name = str(model.__tablename__)
                rows = conn.execute(select(model.__table__)).mappings().all()  # type: ignore[attr-defined]
                tables[name] = [{k: _plain(v) for k, v in row.items()} for row in rows]
        return {"campaign_id": result.campaign_id, "tables": tables}


def main() -> None:
    data = asyncio.run(record())
    OUT.write_text(json.dumps(data, default=str, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
