"""A local HTTP server speaking the Anthropic Messages API, replaying scripted replies.

It checks requests the way the real API would reject them (roles, tool_use / tool_result pairing,
cache breakpoints, auth headers), records every request, and answers from a queue of scripted
messages and errors, so the real `anthropic` SDK can be driven end to end without a network.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MAX_CACHE_BREAKPOINTS = 4


@dataclass
class Reply:
    """A scripted assistant message."""

    content: list[dict[str, Any]]
    stop_reason: str = "end_turn"
    usage: dict[str, Any] = field(
        default_factory=lambda: {"input_tokens": 100, "output_tokens": 20}
    )
    delay_s: float = 0.0


@dataclass
class ErrorReply:
    """A scripted API error, in the Anthropic error JSON shape."""

    status: int
    error_type: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RecordedRequest:
    body: dict[str, Any]
    headers: dict[str, str]
    at: float  # time.monotonic() when it arrived


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(tool_use_id: str, name: str, tool_input: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_use_id, "name": name, "input": tool_input}


def message(
    *blocks: dict[str, Any],
    stop_reason: str | None = None,
    input_tokens: int = 100,
    output_tokens: int = 20,
    cache_read: int | None = None,
    cache_write: int | None = None,
    delay_s: float = 0.0,
) -> Reply:
    """A reply whose stop_reason follows its content unless given."""
    if stop_reason is None:
        stop_reason = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
    usage: dict[str, Any] = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    usage["cache_read_input_tokens"] = cache_read
    usage["cache_creation_input_tokens"] = cache_write
    return Reply(list(blocks), stop_reason, usage, delay_s)


def rate_limited(retry_after: str = "0.3", *, header: str = "retry-after") -> ErrorReply:
    return ErrorReply(
        429,
        "rate_limit_error",
        "Number of requests has exceeded your rate limit",
        {header: retry_after},
    )


def overloaded(**headers: str) -> ErrorReply:
    return ErrorReply(529, "overloaded_error", "Overloaded", _headers(headers))


def server_error(**headers: str) -> ErrorReply:
    return ErrorReply(500, "api_error", "Internal server error", _headers(headers))


def unauthorized() -> ErrorReply:
    return ErrorReply(401, "authentication_error", "invalid x-api-key")


def _headers(kwargs: dict[str, str]) -> dict[str, str]:
    return {key.replace("_", "-"): value for key, value in kwargs.items()}


class MessagesServer:
    """`POST /v1/messages` on a free local port, answering from `script(...)`ed replies."""

    def __init__(self) -> None:
        self.replies: deque[Reply | ErrorReply] = deque()
        self.requests: list[RecordedRequest] = []
        # The audit summarizer asks concurrently with the brain; it has its own script.
        self.summary_replies: deque[Reply | ErrorReply] = deque()
        self.summary_requests: list[RecordedRequest] = []
        self.url = ""
        self._ids = itertools.count(1)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self._responder: Callable[[dict[str, Any]], Reply | ErrorReply] | None = None

    def script(self, *replies: Reply | ErrorReply) -> None:
        self.replies.extend(replies)

    def script_summaries(self, *replies: Reply | ErrorReply) -> None:
        """Replies to the audit summarizer's requests (without any, each gets a line per row
        it sent: `summary of row N`), kept apart from the brain's script."""
        self.summary_replies.extend(replies)

    def respond_with(self, responder: Callable[[dict[str, Any]], Reply | ErrorReply]) -> None:
        """Answer each request (once the scripted replies are used up) from what it asks: a
        model that reads the ticket, for runs where more tickets may open than were foreseen."""
        self._responder = responder

    async def start(self) -> None:
        app = Starlette(routes=[Route("/v1/messages", self._messages, methods=["POST"])])
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        deadline = time.monotonic() + 5.0
        while not self._server.started:
            if self._task.done():
                raise RuntimeError("messages server failed to start")
            if time.monotonic() > deadline:
                raise RuntimeError("messages server did not start within 5 s")
            await asyncio.sleep(0.01)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, timeout=5.0)
        if self._sock is not None:
            self._sock.close()

    async def __aenter__(self) -> MessagesServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _messages(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "invalid_request_error", "body is not JSON")
        headers = {key.lower(): value for key, value in request.headers.items()}
        summarizing = (body.get("tool_choice") or {}).get("name") == SUMMARY_TOOL
        recorded = self.summary_requests if summarizing else self.requests
        recorded.append(RecordedRequest(body, headers, time.monotonic()))
        if not (headers.get("x-api-key") or headers.get("authorization")):
            return _error(401, "authentication_error", "x-api-key header is required")
        if "anthropic-version" not in headers:
            return _error(400, "invalid_request_error", "anthropic-version header is required")
        problem = validate(body)
        if problem:
            return _error(400, "invalid_request_error", problem)
        if summarizing:
            reply = self.summary_replies.popleft() if self.summary_replies else _lines(body)
        elif self.replies:
            reply = self.replies.popleft()
        elif self._responder is not None:
            reply = self._responder(body)
        else:
            return _error(400, "invalid_request_error", "no scripted reply left")
        if isinstance(reply, ErrorReply):
            return _error(reply.status, reply.error_type, reply.message, reply.headers)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        return JSONResponse(
            {
                "id": f"msg_{next(self._ids):04d}",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": reply.content,
                "stop_reason": reply.stop_reason,
                "stop_sequence": None,
                "usage": reply.usage,
            },
            headers={"request-id": f"req_{len(self.requests):04d}"},
        )


SUMMARY_TOOL = "write_summaries"


def _lines(body: dict[str, Any]) -> Reply:
    """A summarizer's answer: one line for each row its request names."""
    sent = json.dumps(body.get("messages", []))
    ids = [int(i) for i in re.findall(r'<row id=\\?"(\d+)', sent)]
    summaries = [{"id": i, "summary": f"summary of row {i}"} for i in ids]
    return message(tool_use("toolu_lines", SUMMARY_TOOL, {"summaries": summaries}))


def _error(
    status: int, error_type: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"type": "error", "error": {"type": error_type, "message": message}},
        status_code=status,
        headers={"request-id": "req_error", **(headers or {})},
    )


def validate(body: dict[str, Any]) -> str | None:
    """What the real API would reject this request for, or None."""
    if not isinstance(body.get("model"), str):
        return "model: field required"
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return "max_tokens: must be a positive integer"
    tools = body.get("tools", [])
    tool_names = set()
    for tool in tools:
        if not tool.get("name") or tool.get("input_schema", {}).get("type") != "object":
            return f"tools: invalid tool {tool.get('name')!r}"
        tool_names.add(tool["name"])
    choice = body.get("tool_choice")
    if choice and choice.get("type") == "tool" and choice.get("name") not in tool_names:
        return f"tool_choice: unknown tool {choice.get('name')!r}"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    if messages[0].get("role") != "user":
        return "messages: first message must use the user role"
    pending: list[str] = []
    for index, msg in enumerate(messages):
        role, content = msg.get("role"), msg.get("content")
        if index and role == messages[index - 1].get("role"):
            return f"messages.{index}: roles must alternate between user and assistant"
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list) or not content:
            return f"messages.{index}: content must be non-empty"
        if role == "user":
            results = [b for b in content if b.get("type") == "tool_result"]
            leading = content[: len(results)]
            if results and any(b.get("type") != "tool_result" for b in leading):
                return f"messages.{index}: tool_result blocks must come first"
            ids = [b.get("tool_use_id") for b in results]
            if sorted(ids) != sorted(pending):
                return (
                    f"messages.{index}: tool_use ids {pending} need exactly one tool_result "
                    f"each immediately after, got {ids}"
                )
            pending = []
        else:
            pending = []
            for block in content:
                if block.get("type") == "tool_use":
                    if not isinstance(block.get("input"), dict):
                        return f"messages.{index}: tool_use.input must be an object"
                    pending.append(block.get("id"))
    if messages[-1].get("role") != "user":
        return "messages: the last message must use the user role"
    breakpoints = sum(1 for block in _all_blocks(body) if "cache_control" in block)
    if breakpoints > MAX_CACHE_BREAKPOINTS:
        return f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided"
    return None


def _all_blocks(body: dict[str, Any]) -> list[dict[str, Any]]:
    system = body.get("system", [])
    blocks = list(system) if isinstance(system, list) else []
    blocks += body.get("tools", [])
    for msg in body.get("messages", []):
        if isinstance(msg.get("content"), list):
            blocks += msg["content"]
    return blocks
