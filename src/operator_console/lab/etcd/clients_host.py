"""Starts and stops the etcd clients process for a cluster given by its members' client URLs:
the local lab's members, or a compose stack's."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

from operator_console.lab.etcd.client import ClientTLS
from operator_console.lab.etcd.clients import clients_argv, write_auth_file
from operator_console.lab.ports import free_ports
from operator_console.lab.supervisor import Supervisor, UnknownProcessError

CLIENTS = "clients"
HOST = "127.0.0.1"
_PROBE_TIMEOUT_S = 0.5


class ClientsHost:
    """One clients process under a supervisor (its process group, its log in the run folder)."""

    def __init__(
        self,
        supervisor: Supervisor,
        run_dir: Path,
        client_urls: Callable[[], Mapping[str, str]],
        tls: Callable[[], ClientTLS | None],
        start_timeout: float,
    ) -> None:
        self._supervisor = supervisor
        self.run_dir = run_dir
        self._client_urls = client_urls
        self._tls = tls
        self.start_timeout = start_timeout
        self.url: str | None = None

    @property
    def pid(self) -> int | None:
        if self.url is None:
            return None
        try:
            proc = self._supervisor.get(CLIENTS)
        except UnknownProcessError:
            return None
        return proc.pid if proc.alive else None

    async def start_clients(
        self,
        *,
        rate: float,
        mix: Mapping[str, float] | None,
        keys: int,
        prefix: str,
        timeout_s: float,
        check_every_s: float,
        warm_up_s: float,
        credentials: tuple[str, str] | None = None,
        seed: int | None = None,
    ) -> str:
        """Start the clients and return their API's URL; a password goes through a 0600 file
        they delete on reading."""
        (port,) = free_ports(1, HOST)
        url = f"http://{HOST}:{port}"
        auth_file = write_auth_file(self.run_dir, *credentials) if credentials else None
        argv = clients_argv(
            host=HOST,
            port=port,
            endpoints=dict(self._client_urls()),
            rate=rate,
            mix=mix,
            keys=keys,
            prefix=prefix,
            timeout_s=timeout_s,
            check_every_s=check_every_s,
            warm_up_s=warm_up_s,
            tls=self._tls(),
            auth_file=auth_file,
            seed=seed,
        )
        async with httpx.AsyncClient(timeout=_PROBE_TIMEOUT_S, trust_env=False) as http:

            async def answers() -> bool:
                try:
                    response = await http.get(f"{url}/api/health")
                except httpx.HTTPError:
                    return False
                return response.status_code == 200

            try:
                await self._supervisor.start(
                    CLIENTS, argv, ready=answers, timeout=self.start_timeout
                )
            finally:
                if auth_file is not None:  # the clients deleted it; this covers a failed start
                    auth_file.unlink(missing_ok=True)
        self.url = url
        return url

    async def stop_clients(self) -> None:
        """Stop the clients process if it runs."""
        self.url = None
        if CLIENTS in self._supervisor.names():
            with contextlib.suppress(Exception):
                await self._supervisor.stop(CLIENTS)
