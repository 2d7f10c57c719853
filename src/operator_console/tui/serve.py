"""The console in a web browser: textual-serve runs one console process per browser tab."""

from __future__ import annotations

from textual_serve.server import Server


def serve_in_browser(command: str, *, host: str, port: int, public_url: str) -> None:
    """Serve `command` (the console) on host:port until Ctrl+C."""
    Server(command, host=host, port=port, title="operator-console", public_url=public_url).serve()
