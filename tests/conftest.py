from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from operator_console.db import create_db_engine, init_db
from operator_console.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", interval=0.5)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'test.db'}")
    init_db(engine)
    return engine
