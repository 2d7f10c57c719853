from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from operator_console.actions.store import Controls, Mode
from operator_console.db import create_db_engine, init_db
from operator_console.settings import Settings


@pytest.fixture
def console_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Offline brain, a tmp data dir, a half-second monitor tick."""
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "OPERATOR_CONSOLE_DB"):
        monkeypatch.delenv(name, raising=False)
    return Settings(data_dir=tmp_path / "data", interval=0.5)


@pytest.fixture
def console_engine(console_settings: Settings) -> Iterator[Engine]:
    console_settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_db_engine(console_settings.db_url)
    init_db(engine)
    Controls(engine).set_mode(Mode.APPROVE, by="test")
    yield engine
    engine.dispose()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Textual's own driver must not inherit a terminal size from the test runner.
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)
