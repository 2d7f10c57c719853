"""`operator-console serve` in a real browser: headless Chromium loads the page, the console's
picker appears in the page's terminal, and stopping the server leaves no process behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psutil
import pytest

from operator_console.lab.ports import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed"),
]

DEADLINE_S = 60.0

# textual.js keeps its xterm.js Terminal in a closure; this setter, installed before the page's
# scripts run, catches the object when textual.js assigns it to `this.terminal`.
CAPTURE_TERMINAL = """
Object.defineProperty(Object.prototype, "terminal", {
  configurable: true,
  set(value) {
    Object.defineProperty(this, "terminal", {value, writable: true, configurable: true});
    (window.__ocTerminals = window.__ocTerminals || []).push(value);
  },
});
"""

# The text of every row in xterm.js's active buffer: what the page's terminal shows.
READ_TERMINAL = """(() => {
  const term = (window.__ocTerminals || []).find((t) => t && t.buffer && t.buffer.active);
  const body = document.body ? document.body.className : "";
  if (!term) return {body, text: null};
  const buffer = term.buffer.active, rows = [];
  for (let i = 0; i < buffer.length; i++) rows.push(buffer.getLine(i).translateToString(true));
  return {body, text: rows.join("\\n")};
})()"""


def _kill_group(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """Stop `proc`'s process group (TERM, then KILL) and return any process of it still alive."""
    try:
        tracked = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tracked = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    _, alive = psutil.wait_procs(tracked, timeout=10)
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _wait_for_page(server: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"serve exited with {server.returncode}:\n{log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered; serve output:\n{log.read_text()}")


@contextlib.contextmanager
def _chromium(profile: Path, survivors: list[psutil.Process]) -> Iterator[int]:
    """Headless Chromium in its own process group; yields its DevTools port."""
    log = profile.with_suffix(".log")
    with log.open("wb") as err:
        browser = subprocess.Popen(
            [
                "chromium",
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                # The page links a Google font; fail that lookup at once instead of waiting.
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                "--window-size=1280,800",
                "--no-first-run",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if browser.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"chromium never opened DevTools:\n{log.read_text()}")
            time.sleep(0.1)
        yield int(port_file.read_text().split()[0])
    finally:
        survivors.extend(_kill_group(browser))


class _DevTools:
    """Just enough of the Chrome DevTools Protocol: send a command, wait for its answer."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.last_id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.last_id += 1
        await self.ws.send_json({"id": self.last_id, "method": method, "params": params})
        async for message in self.ws:
            data = json.loads(message.data)
            if data.get("id") == self.last_id:
                if "error" in data:
                    raise AssertionError(f"{method} failed: {data['error']}")
                result: dict[str, Any] = data["result"]
                return result
        raise AssertionError(f"DevTools closed the connection during {method}")


async def _read_terminal_until(devtools_port: int, url: str, wanted: str) -> tuple[str, str]:
    """Open `url` and poll the page's terminal until `wanted` shows; return (screen, body class)."""
    seen: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        listing = await session.get(f"http://127.0.0.1:{devtools_port}/json/list")
        page = next(t for t in await listing.json() if t["type"] == "page")
        async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            devtools = _DevTools(ws)
            await devtools.call("Page.enable")
            await devtools.call("Page.addScriptToEvaluateOnNewDocument", source=CAPTURE_TERMINAL)
            await devtools.call("Page.navigate", url=url)
            try:
                async with asyncio.timeout(DEADLINE_S):
                    while True:
                        answer = await devtools.call(
                            "Runtime.evaluate", expression=READ_TERMINAL, returnByValue=True
                        )
                        seen = answer["result"].get("value") or {}
                        if wanted in (seen.get("text") or ""):
                            return seen["text"], seen["body"]
                        await asyncio.sleep(0.25)
            except TimeoutError:
                pass
    if seen.get("text") is None:
        raise AssertionError(
            f"no xterm.js Terminal was captured on the page (body class {seen.get('body')!r}); "
            "textual.js may no longer assign it to `this.terminal`"
        )
    raise AssertionError(
        f"{wanted!r} never appeared in the browser's terminal within {DEADLINE_S:.0f} s; "
        f"it showed:\n{seen['text'].rstrip()}"
    )


def test_serve_shows_the_picker_in_a_browser_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    db_url = f"sqlite:///{tmp_path / 'x.db'}"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "OPERATOR_CONSOLE_DB"}
    }
    env["OPERATOR_CONSOLE_DATA_DIR"] = str(tmp_path / "data")
    console = Path(sys.executable).with_name("operator-console")
    log = tmp_path / "serve.log"
    survivors: list[psutil.Process] = []
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(console), "serve", "--port", str(port), "--db", db_url],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        _wait_for_page(server, url, log)
        with _chromium(tmp_path / "chromium", survivors) as devtools_port:
            screen, body = asyncio.run(
                _read_terminal_until(devtools_port, url, "ratelimiter-node-kill")
            )
            # The one open tab runs one console, given --db through the environment.
            sessions = [
                p.environ().get("OPERATOR_CONSOLE_DB")
                for p in psutil.Process(server.pid).children(recursive=True)
                if p.cmdline()[1:] == ["-m", "operator_console"]
            ]
    finally:
        survivors.extend(_kill_group(server))

    assert "Pick a scenario" in screen, screen
    assert "-first-byte" in body.split(), f"intro never gave way to the terminal: {body}"
    assert sessions == [db_url], f"console processes' OPERATOR_CONSOLE_DB: {sessions}"
    assert survivors == [], f"processes outlived the server and browser: {survivors}"
