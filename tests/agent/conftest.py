"""A local Messages API server per test, and Claude brains pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from operator_console.agent.claude import ClaudeBrain
from tests.agent.messages_server import MessagesServer

API_KEY = "test-key"


@pytest.fixture
async def server() -> AsyncIterator[MessagesServer]:
    async with MessagesServer() as running:
        yield running


@pytest.fixture
async def make_brain(server: MessagesServer) -> AsyncIterator[Callable[..., ClaudeBrain]]:
    brains: list[ClaudeBrain] = []

    def make(**kwargs: Any) -> ClaudeBrain:
        options: dict[str, Any] = {
            "api_key": API_KEY,
            "base_url": server.url,
            "max_retries": 2,
            "timeout_s": 10.0,
        }
        options.update(kwargs)
        brain = ClaudeBrain(**options)
        brains.append(brain)
        return brain

    yield make
    for brain in brains:
        await brain.aclose()
