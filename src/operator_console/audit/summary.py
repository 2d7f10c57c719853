"""One line per audit row, written when the row is: what happened, in words, from its payload.

These summaries are deterministic (the same row always reads the same) and are sealed by the
row's hash. A model may add better ones later, as rows of their own (`summary` rows that name
the row they summarize), so nothing already in the chain ever changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from operator_console.audit.redact import redact

if TYPE_CHECKING:
    from operator_console.audit.log import AuditLog, AuditRow

LINE = 160


def _short(text: Any, limit: int = 90) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _action(p: Mapping[str, Any]) -> str:
    params = p.get("params") or {}
    shown = json.dumps(params, separators=(",", ":"), sort_keys=True) if params else ""
    return f"{p.get('action', '?')}{' ' + shown if shown else ''}"


def _why(p: Mapping[str, Any], key: str = "reason") -> str:
    value = p.get(key)
    return f": {_short(value)}" if value else ""


def _step(p: Mapping[str, Any]) -> str:
    kind = p.get("kind")
    if kind == "tool_call":
        return f"called {p.get('tool')} {json.dumps(p.get('input') or {}, separators=(',', ':'))}"
    if kind == "tool_result":
        flag = "error from" if p.get("is_error") else "result of"
        return f"{flag} {p.get('tool')}: {_short(p.get('text', ''), 100)}"
    return f"reasoned: {_short(p.get('text', ''), 120)}"


SUMMARIES: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "ticket_opened": lambda p: f"opened {p.get('invariant')} on {p.get('target')}",
    "agent_step": _step,
    "diagnosis_ready": lambda p: (
        f"diagnosed: {_short(p.get('root_cause', ''))}"
        + (f" (label {p['label']})" if p.get("label") else "")
        + f", confidence {float(p.get('confidence') or 0):.0%}"
    ),
    "agent_escalated": lambda p: f"gave the ticket to a person{_why(p)}",
    "policy_decision": lambda p: f"policy: {p.get('decision')}{_why(p, 'why')}",
    "action_invalid": lambda p: f"refused a recommendation {p.get('action')}{_why(p, 'error')}",
    "action_proposed": lambda p: f"proposed {_action(p)} ({p.get('risk')} risk){_why(p)}",
    "action_approved": lambda p: f"approved {_action(p)}{_why(p)}",
    "action_scheduled": lambda p: f"scheduled {_action(p)} for {p.get('at')}{_why(p)}",
    "action_rejected": lambda p: f"rejected {_action(p)}{_why(p)}",
    "action_refused": lambda p: f"refused to run {_action(p)}{_why(p)}",
    "action_expired": lambda p: f"{_action(p)} expired undecided",
    "action_cancelled": lambda p: f"cancelled {_action(p)}{_why(p)}",
    "action_executing": lambda p: f"started {_action(p)}",
    "action_succeeded": lambda p: f"{_action(p)} succeeded{_why(p, 'result')}",
    "action_failed": lambda p: f"{_action(p)} failed{_why(p, 'error')}",
    "action_verified": lambda p: f"{_action(p)} verified{_why(p, 'result')}",
    "action_not_verified": lambda p: f"{_action(p)} did not fix it{_why(p, 'result')}",
    "action_interrupted": lambda p: f"{_action(p)} was cut off when its console stopped",
    "action_step": lambda p: (
        f"step {p.get('index')} {p.get('step')} {p.get('step_state')}{_why(p, 'detail')}"
    ),
    "mode_changed": lambda p: f"mode {p.get('from')} -> {p.get('to')}",
    "kill_switch": lambda p: f"kill switch {'ON' if p.get('on') else 'off'}",
    "summary": lambda p: f"summary of row {p.get('of')}: {_short(p.get('summary', ''), 120)}",
}


def summarize(kind: str, payload: Mapping[str, Any]) -> str:
    """The row's one line; an unknown kind falls back to its payload's first fields."""
    try:
        maker = SUMMARIES.get(kind)
        text = maker(payload) if maker is not None else ""
    except (TypeError, ValueError, KeyError):
        text = ""
    if not text:
        text = f"{kind}: {_short(json.dumps(payload, sort_keys=True, default=str), 120)}"
    return _short(text, LINE)


def row_summaries(log: AuditLog, rows: Sequence[AuditRow]) -> dict[int, str]:
    """The line to show for each row: a model's summary where one was written, else the row's
    own (rows sealed before summaries existed get theirs made now)."""
    better = log.model_summaries([row.id for row in rows if row.id is not None])
    lines: dict[int, str] = {}
    for row in rows:
        if row.id is None:
            continue
        payload = row.payload if isinstance(row.payload, dict) else {}
        own = row.summary or summarize(row.kind, redact(payload))
        lines[row.id] = better.get(row.id, own)
    return lines
