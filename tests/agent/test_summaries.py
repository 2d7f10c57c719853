"""Audit summaries written by a small model through the real `anthropic` SDK against the local
Messages server: in batches, within a token budget, each a row of its own sealed by the chain,
and with secrets redacted before anything is sent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anthropic
import pytest
from sqlalchemy.engine import Engine

from operator_console.agent.summaries import AuditSummarizer, SummaryBudget
from operator_console.audit import AuditLog, register_secret
from operator_console.audit.log import SUMMARY_KIND
from tests.agent.conftest import API_KEY
from tests.agent.messages_server import MessagesServer, message, tool_use

SECRET = "sk-ant-planted-0123456789abcdef"


@pytest.fixture
async def client(server: MessagesServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    made = anthropic.AsyncAnthropic(api_key=API_KEY, base_url=server.url, max_retries=0)
    yield made
    await made.close()


def _steps(log: AuditLog) -> list[int]:
    """A short investigation as the agent loop writes it."""
    register_secret(SECRET)
    rows = [
        log.append(
            "agent_step",
            actor="agent:claude",
            run_id="r1",
            ticket_id=1,
            payload={"kind": "reasoning", "text": f"node-2 is down; the key {SECRET} is set"},
        ),
        log.append(
            "agent_step",
            actor="agent:claude",
            run_id="r1",
            ticket_id=1,
            payload={"kind": "tool_result", "tool": "node_detail", "text": '{"reachable": false}'},
        ),
        log.append(
            "diagnosis_ready",
            actor="agent:claude",
            run_id="r1",
            ticket_id=1,
            payload={"root_cause": "node-2's process died", "label": "process_died"},
        ),
    ]
    return [row.id for row in rows if row.id is not None]


def _answer(*lines: tuple[int, str], tokens: int = 100) -> object:
    summaries = [{"id": i, "summary": text} for i, text in lines]
    return message(
        tool_use("toolu_1", "write_summaries", {"summaries": summaries}),
        input_tokens=tokens,
        output_tokens=20,
    )


async def test_a_batch_of_rows_gets_a_line_each_sealed_in_the_chain(
    engine: Engine, server: MessagesServer, client: anthropic.AsyncAnthropic
) -> None:
    log = AuditLog(engine)
    ids = _steps(log)
    server.script_summaries(
        _answer(
            (ids[0], "Reasoned that node-2 is down."),
            (ids[1], "node_detail: node-2 does not answer."),
            (ids[2], "Diagnosed a dead node-2 process (process_died)."),
            (999, "a row it was never given"),
        )
    )
    summarizer = AuditSummarizer(log, client, model="claude-haiku-4-5", run_id="r1")
    assert await summarizer.flush() == 3
    assert log.model_summaries(ids) == {
        ids[0]: "Reasoned that node-2 is down.",
        ids[1]: "node_detail: node-2 does not answer.",
        ids[2]: "Diagnosed a dead node-2 process (process_died).",
    }
    written = log.list(kind=SUMMARY_KIND)
    assert {row.actor for row in written} == {"model:claude-haiku-4-5"}
    assert log.verify().ok
    # One request for the whole batch, forced to answer through the tool, with no secret in it.
    (request,) = server.summary_requests
    assert request.body["model"] == "claude-haiku-4-5"
    assert request.body["tool_choice"] == {"type": "tool", "name": "write_summaries"}
    sent = json.dumps(request.body)
    assert SECRET not in sent and "node-2 is down" in sent
    # Nothing new: no request.
    assert await summarizer.flush() == 0
    assert len(server.summary_requests) == 1


async def test_the_token_budget_stops_the_requests(
    engine: Engine, server: MessagesServer, client: anthropic.AsyncAnthropic
) -> None:
    log = AuditLog(engine)
    ids = _steps(log)
    server.script_summaries(_answer((ids[0], "first"), tokens=500))
    summarizer = AuditSummarizer(
        log, client, model="m", run_id="r1", budget=SummaryBudget(tokens=400, batch=1)
    )
    assert await summarizer.flush() == 1
    assert summarizer.exhausted and summarizer.stopped_because == "token budget of 400 spent"
    assert len(server.summary_requests) == 1  # the other rows keep their deterministic summaries
    assert log.model_summaries(ids) == {ids[0]: "first"}


async def test_a_failing_model_leaves_the_deterministic_summaries(
    engine: Engine, server: MessagesServer, client: anthropic.AsyncAnthropic
) -> None:
    from tests.agent.messages_server import server_error

    log = AuditLog(engine)
    ids = _steps(log)
    server.script_summaries(server_error())
    summarizer = AuditSummarizer(log, client, model="m", run_id="r1")
    assert await summarizer.flush() == 0
    assert log.model_summaries(ids) == {}
    assert all(row.summary for row in log.list(run_id="r1"))
