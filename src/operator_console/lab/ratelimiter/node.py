"""One rate limiter node process: `python -m operator_console.lab.ratelimiter.node --name ...`."""

from __future__ import annotations

import argparse
import logging
import sys

from starlette.applications import Starlette

from operator_console.lab.ratelimiter.node_http import EXCEPTION_HANDLERS, NodeHandlers
from operator_console.lab.ratelimiter.node_runtime import FAIL_MODES, NodeSettings, RateLimiterNode

__all__ = ["NodeSettings", "create_app", "main"]


def create_app(settings: NodeSettings) -> Starlette:
    """Build the node's ASGI app; the store client connects lazily on first use."""
    node = RateLimiterNode(settings)
    app = Starlette(
        routes=NodeHandlers(node).routes(),
        lifespan=node.lifespan,
        exception_handlers=dict(EXCEPTION_HANDLERS),
    )
    app.state.node = node
    return app


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m operator_console.lab.ratelimiter.node",
        description="Run one rate limiter node against a shared Valkey store.",
    )
    p.add_argument("--name", required=True, help="node name, unique among nodes")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--store-url", required=True, help="e.g. redis://127.0.0.1:6379")
    p.add_argument("--fail-mode", choices=FAIL_MODES, default="open")
    p.add_argument("--default-limit", type=_positive_int, default=100)
    p.add_argument("--default-window-ms", type=_positive_int, default=5000)
    p.add_argument("--config-refresh-s", type=_positive_float, default=1.0)
    p.add_argument("--heartbeat-s", type=_positive_float, default=1.0)
    p.add_argument(
        "--log-level", choices=("critical", "error", "warning", "info", "debug"), default="info"
    )
    return p


def main(argv: list[str] | None = None) -> None:
    """Parse the CLI, then serve until SIGTERM/SIGINT."""
    parser = _parser()
    args = parser.parse_args(argv)
    settings = NodeSettings(
        name=args.name,
        host=args.host,
        port=args.port,
        store_url=args.store_url,
        fail_mode=args.fail_mode,
        default_limit=args.default_limit,
        default_window_ms=args.default_window_ms,
        config_refresh_s=args.config_refresh_s,
        heartbeat_s=args.heartbeat_s,
        log_level=args.log_level,
    )
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format=f"%(asctime)s %(levelname)s [{settings.name}] %(name)s: %(message)s",
    )
    try:
        app = create_app(settings)
    except ValueError as exc:
        parser.error(f"--store-url {settings.store_url!r}: {exc}")

    import uvicorn

    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="asyncio",
        workers=1,
        access_log=False,
        log_config=None,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
