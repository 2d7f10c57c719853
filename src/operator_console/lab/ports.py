"""Loopback port allocation for the processes the lab starts.

Ports come from below the kernel's ephemeral range. A port the kernel hands out for
`bind(0)` or as an outgoing connection's source port can be taken by anything on the
machine the moment it is released; a node restarted on "its" port after a kill would
then fail to bind. Ports outside that range are only ever taken by listeners that ask
for them by number.
"""

from __future__ import annotations

import random
import socket
from contextlib import ExitStack
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 20000  # above most well-known service ports
_ATTEMPTS = 200


def _listener_range() -> tuple[int, int] | None:
    """The port range below the ephemeral range, or None when there is none to use."""
    try:
        low, _high = (int(part) for part in _RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return None
    if low - 1 - _LOWEST < 1000:
        return None
    return _LOWEST, low - 1


def _bind(sock: socket.socket, host: str, port: int) -> bool:
    try:
        sock.bind((host, port))
    except OSError:
        return False
    return True


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return `count` distinct ports free on `host` now, holding each until all are chosen."""
    span = _listener_range()
    ports: list[int] = []
    with ExitStack() as stack:
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            if span is not None:
                for _attempt in range(_ATTEMPTS):
                    if _bind(sock, host, random.randint(*span)):
                        break
                else:
                    sock.bind((host, 0))
            else:
                sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
    return ports


def free_port(host: str = "127.0.0.1") -> int:
    """Return one TCP port that is free on `host` right now."""
    return free_ports(1, host)[0]
