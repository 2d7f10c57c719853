"""Record one real run of ratelimiter-node-kill for the console's snapshot tests.

    python tests/tui/replay/record.py

A real cluster, the rules brain in approve mode and a person who approves what the agent
proposes. Every event on the bus and every database row of the run are written to
`node-kill.json` next to this file; the snapshot tests replay them into the console, so
their screens show real data with the clocks and the live numbers frozen.
"""

from __future__ import annotations

import asyncio
import functools
import json
import tempfile
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlmodel import SQLModel

from operator_console.actions.store import ActionRepository, Mode
from operator_console.db import create_db_engine, init_db
from operator_console.domain.events import ActionProposed, Event
from operator_console.runtime import Runtime
from operator_console.scenarios.catalog import find_scenario
from operator_console.scenarios.runner import ScenarioRunner
from operator_console.settings import Settings

HERE = Path(__file__).resolve().parent
OUT = HERE / "node-kill.json"


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


async def record() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        engine = create_db_engine(f"sqlite:///{tmp}/record.db")
        init_db(engine)
        scenario = find_scenario("ratelimiter-node-kill")
        runtime = Runtime(scenario.plan, settings, engine, brain="rules", mode=Mode.APPROVE)
        events: list[dict[str, Any]] = []
        actions = ActionRepository(engine)

        def listen(event: Event) -> None:
            events.append(event.to_dict())
            if isinstance(event, ActionProposed) and event.decision == "await_approval":
                # A person reads the proposal for a moment, then approves it.
                approve = functools.partial(actions.approve, event.action_id, by="person:cli")
                threading.Timer(2.0, approve).start()

        runtime.bus.add_listener(listen)
        outcome = await ScenarioRunner(runtime, scenario, pace=2.0, auto_advance=True).run()
        if not outcome.ok:
            raise SystemExit(f"the recorded run failed: {outcome}")
        tables: dict[str, list[dict[str, Any]]] = {}
        with engine.connect() as conn:
            for table in SQLModel.metadata.sorted_tables:
                rows = conn.execute(select(table)).mappings().all()
                tables[table.name] = [{k: _plain(v) for k, v in row.items()} for row in rows]
        return {"scenario": scenario.name, "events": events, "tables": tables}


def main() -> None:
    data = asyncio.run(record())
    OUT.write_text(json.dumps(data, default=str, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({len(data['events'])} events, {OUT.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
