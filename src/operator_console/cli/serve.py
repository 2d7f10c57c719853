"""`operator-console serve`: the same console in a web browser, one app process per tab."""

from __future__ import annotations

import errno
import os
import shlex
import socket
import sys

import click

from operator_console.cli.context import cli_context, db_option

_WILDCARD_HOSTS = {"", "0.0.0.0", "::"}


def _check_port_free(host: str, port: int) -> None:
    """Fail with one clear line if the server could not bind, before it prints a banner."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # The server sets SO_REUSEADDR too, so a port left in TIME_WAIT is not "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise click.ClickException(
                    f"port {port} is in use on {host}: pick another with --port"
                ) from None
            if exc.errno == errno.EACCES:
                raise click.ClickException(
                    f"port {port} on {host} needs more privileges: pick one above 1023 with --port"
                ) from None
            raise click.ClickException(
                f"cannot listen on {host}:{port} ({exc.strerror}): check --host and --port"
            ) from None


def _reachable_host(host: str) -> str:
    """The address a browser should use: a wildcard bind is reached through this machine's IP."""
    if host not in _WILDCARD_HOSTS:
        return host
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            # connect() on UDP sends nothing; it only picks the outgoing interface.
            probe.connect(("10.255.255.255", 1))
            address: str = probe.getsockname()[0]
        except OSError:
            return socket.gethostname()
    return address


def public_url(host: str, port: int) -> str:
    """The URL the page and its websocket are served under (textual-serve embeds it in HTML)."""
    reachable = _reachable_host(host)
    if ":" in reachable:
        reachable = f"[{reachable}]"
    return f"http://{reachable}:{port}"


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="TCP port."
)
@db_option
def serve(host: str, port: int) -> None:
    """Serve the console to web browsers; each tab runs its own console."""
    context = cli_context()
    # A bad URL fails here in one line, not in every browser tab.
    context.engine.dispose()
    db = context.overrides.get("db")
    _check_port_free(host, port)
    if db:
        os.environ["OPERATOR_CONSOLE_DB"] = db  # inherited by each session's process

    from operator_console.tui.serve import serve_in_browser

    url = public_url(host, port)
    command = f"{shlex.quote(sys.executable)} -m operator_console"
    click.echo(f"open {url} in a browser (Ctrl+C stops the server)")
    serve_in_browser(command, host=host, port=port, public_url=url)
