"""The local etcd cluster: N real members, each its own process, peer links via fault proxies."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from operator_console.lab.etcd.binary import EtcdBinary, find_etcd
from operator_console.lab.etcd.client import ClientTLS, EtcdClient, EtcdError, Status
from operator_console.lab.etcd.clients_host import ClientsHost
from operator_console.lab.etcd.faults import FAULT_KINDS, EtcdFault, make_fault
from operator_console.lab.etcd.peers import PeerLinks, PeerPorts
from operator_console.lab.ports import free_ports
from operator_console.lab.supervisor import ManagedProcess, Supervisor, UnknownProcessError

HOST = "127.0.0.1"
MEMBER_COUNTS = (1, 3, 5)
READY_PREFIX = "lab/ready/"
_PROBE_TIMEOUT_S = 0.5
_STATUS_TIMEOUT_S = 0.5
_START_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True)
class EtcdTLS:
    """Certificate files for client traffic; with client_cert_auth a client must show a cert."""

    ca_file: str
    cert_file: str
    key_file: str
    client_cert_file: str | None = None
    client_key_file: str | None = None
    client_cert_auth: bool = True

    def __post_init__(self) -> None:
        if self.client_cert_auth and not (self.client_cert_file and self.client_key_file):
            raise ValueError(
                "client_cert_auth needs client_cert_file and client_key_file for the lab's "
                "own client"
            )

    def client_tls(self) -> ClientTLS:
        return ClientTLS(self.ca_file, self.client_cert_file, self.client_key_file)

    def to_dict(self) -> dict[str, Any]:
        """File paths only: the files' contents never leave the disk."""
        return {
            "ca_file": self.ca_file,
            "cert_file": self.cert_file,
            "key_file": self.key_file,
            "client_cert_file": self.client_cert_file,
            "client_key_file": self.client_key_file,
            "client_cert_auth": self.client_cert_auth,
        }


@dataclass(frozen=True, slots=True)
class MemberPorts:
    client: int
    peer: int  # where etcd listens for peers
    peer_proxy: int  # what it advertises: its inbound fault proxy


class EtcdCluster:
    """Starts, breaks and stops a real etcd cluster: member-N's peers reach it only via proxy N."""

    def __init__(
        self,
        run_dir: Path,
        *,
        members: int = 3,
        binary: EtcdBinary | None = None,
        quota_backend_bytes: int | None = None,
        tls: EtcdTLS | None = None,
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
        pre_vote: bool = True,
        start_timeout: float = _START_TIMEOUT_S,
    ) -> None:
        if members not in MEMBER_COUNTS:
            raise ValueError(f"members must be one of {MEMBER_COUNTS}, got {members}")
        if quota_backend_bytes is not None and quota_backend_bytes < 1024 * 1024:
            raise ValueError(f"quota_backend_bytes must be >= 1 MiB, got {quota_backend_bytes}")
        if election_ms < 5 * heartbeat_ms:
            raise ValueError("election_ms should be at least 5 heartbeats (etcd's advice: 10)")
        self.run_dir = Path(run_dir)
        self.members = members
        self.quota_backend_bytes = quota_backend_bytes
        self.tls = tls
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.pre_vote = pre_vote
        self.start_timeout = start_timeout
        self.token = f"operator-console-{secrets.token_hex(4)}"
        self.startup_s: float | None = None
        self._binary = binary
        self._names = [f"member-{i}" for i in range(1, members + 1)]
        self._supervisor = Supervisor(self.run_dir)
        self._ports: dict[str, MemberPorts] = {}
        self._peer_links: PeerLinks | None = None
        self._clients: dict[str, EtcdClient] = {}
        self._ids: dict[str, int] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self.clients_host = ClientsHost(
            self._supervisor, self.run_dir, self.client_urls, self.client_tls, self.start_timeout
        )
        self._running = False

    # ------------------------------------------------------------- properties

    @property
    def binary(self) -> EtcdBinary:
        if self._binary is None:
            self._binary = find_etcd()
        return self._binary

    @property
    def supervisor(self) -> Supervisor:
        return self._supervisor

    @property
    def member_names(self) -> list[str]:
        return list(self._names)

    @property
    def running(self) -> bool:
        return self._running

    @property
    def peer_links(self) -> PeerLinks:
        if self._peer_links is None:
            raise RuntimeError("the cluster has no peer links yet: start it first")
        return self._peer_links

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    def ports(self, name: str) -> MemberPorts:
        self._check(name)
        try:
            return self._ports[name]
        except KeyError:
            raise RuntimeError(f"{name} has no ports yet: start the cluster first") from None

    def client_url(self, name: str) -> str:
        return f"{self.scheme}://{HOST}:{self.ports(name).client}"

    def peer_url(self, name: str) -> str:
        """The peer URL the member advertises (its inbound proxy)."""
        return f"http://{HOST}:{self.ports(name).peer_proxy}"

    def client_urls(self) -> dict[str, str]:
        return {name: self.client_url(name) for name in self._names}

    def data_dir(self, name: str) -> Path:
        self._check(name)
        return self.run_dir / f"{name}.etcd"

    def client_tls(self) -> ClientTLS | None:
        return self.tls.client_tls() if self.tls is not None else None

    def client(self, name: str) -> EtcdClient:
        """One pooled client per member for the lab's own probes and faults; closed by stop()."""
        client = self._clients.get(name)
        if client is None:
            client = EtcdClient(self.client_url(name), tls=self.client_tls(), timeout=2.0)
            self._clients[name] = client
        return client

    def member_id(self, name: str) -> int:
        self._check(name)
        try:
            return self._ids[name]
        except KeyError:
            raise RuntimeError(f"{name}'s member ID is not known yet: start the cluster") from None

    def name_of(self, member_id: int) -> str | None:
        for name, known in self._ids.items():
            if known == member_id:
                return name
        return None

    def _check(self, name: str) -> None:
        if name not in self._names:
            raise ValueError(f"unknown member {name!r} (members: {', '.join(self._names)})")

    def track(self, task: asyncio.Task[Any]) -> None:
        """Background work a fault started (a writer); stop() cancels what is still running."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---------------------------------------------------------------- the Lab

    async def start(self) -> None:
        """Proxies first, then every member at once; returns when each member answers a put."""
        if self._running:
            return
        started = time.monotonic()
        binary = self.binary
        try:
            if not self._ports:
                ports = free_ports(3 * self.members, HOST)
                for i, name in enumerate(self._names):
                    client, peer, proxy = ports[3 * i : 3 * i + 3]
                    self._ports[name] = MemberPorts(client=client, peer=peer, peer_proxy=proxy)
            self._peer_links = PeerLinks(
                HOST,
                {
                    n: PeerPorts(advertised=p.peer_proxy, listen=p.peer)
                    for n, p in self._ports.items()
                },
                self._pid,
            )
            await self._peer_links.start()
            await asyncio.gather(*(self._start_member(name, binary) for name in self._names))
            await self._learn_ids()
        except BaseException:
            await self._teardown()
            raise
        self.startup_s = time.monotonic() - started
        self._running = True

    async def stop(self) -> None:
        """Peer proxies, then members; no child process survives."""
        self._running = False
        await self._teardown()

    async def _teardown(self) -> None:
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.stop_clients()  # first, so no request meets a stopping member
        # A stopping leader hands its leadership to the peer connected longest and waits up
        # to etcd's request timeout (7 s) if that peer is stopping too. With the peer links
        # gone first, no peer is connected, so every member stops at once.
        if self._peer_links is not None:
            await self._peer_links.stop()
            self._peer_links = None
        sup = self._supervisor
        names = [n for n in self._names if n in sup.names()]
        await asyncio.gather(*(sup.stop(n) for n in names), return_exceptions=True)
        sup.kill_all()
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                await client.aclose()

    def endpoints(self) -> dict[str, Any]:
        """JSON-able: per member its URLs, pid and proxy port; the TLS files and the binary."""
        members: dict[str, Any] = {}
        for name in self._names:
            if name not in self._ports:
                continue
            ports = self._ports[name]
            proxy_port = ports.peer_proxy
            members[name] = {
                "client_url": self.client_url(name),
                "peer_url": self.peer_url(name),
                "peer_listen_url": f"http://{HOST}:{ports.peer}",
                "pid": self._pid(name),
                "peer_proxy_port": proxy_port,
                "member_id": f"{self._ids[name]:x}" if name in self._ids else None,
                "data_dir": str(self.data_dir(name)),
            }
        data: dict[str, Any] = {
            "members": members,
            "tls": self.tls.to_dict() if self.tls is not None else None,
            "binary": self._binary.to_dict() if self._binary is not None else None,
        }
        if self.clients_host.url is not None:
            data["clients"] = {"url": self.clients_host.url, "pid": self.clients_host.pid}
        return data

    def fault_kinds(self) -> Sequence[str]:
        return FAULT_KINDS

    def make_fault(self, kind: str, target: str | None, params: Mapping[str, Any]) -> EtcdFault:
        """Build a fault; ValueError names the valid kinds, targets or parameters."""
        return make_fault(self, kind, target, params)

    # ------------------------------------------------------------ the clients

    @property
    def clients_url(self) -> str | None:
        """The clients process's API while it runs."""
        return self.clients_host.url

    async def start_clients(self, **settings: Any) -> str:
        """Start the clients (a process of their own, in the lab's process group tree) and
        return their API's URL (see ClientsHost.start_clients)."""
        return await self.clients_host.start_clients(**settings)

    async def stop_clients(self) -> None:
        """Stop the clients process if it runs (the lab's teardown does it too)."""
        await self.clients_host.stop_clients()

    # ------------------------------------------------------------ the members

    def member_argv(self, name: str, binary: EtcdBinary | None = None) -> list[str]:
        exe = (binary or self.binary).path
        ports = self.ports(name)
        client_url = self.client_url(name)
        initial = ",".join(f"{n}={self.peer_url(n)}" for n in self._names)
        argv = [
            exe,
            "--name", name,
            "--data-dir", str(self.data_dir(name)),
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", f"http://{HOST}:{ports.peer}",
            "--initial-advertise-peer-urls", self.peer_url(name),
            "--initial-cluster", initial,
            "--initial-cluster-token", self.token,
            "--initial-cluster-state", "new",
            "--heartbeat-interval", str(self.heartbeat_ms),
            "--election-timeout", str(self.election_ms),
            f"--pre-vote={'true' if self.pre_vote else 'false'}",
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]  # fmt: skip
        if self.quota_backend_bytes is not None:
            argv += ["--quota-backend-bytes", str(self.quota_backend_bytes)]
        if self.tls is not None:
            argv += [
                "--cert-file", self.tls.cert_file,
                "--key-file", self.tls.key_file,
                "--trusted-ca-file", self.tls.ca_file,
            ]  # fmt: skip
            if self.tls.client_cert_auth:
                argv.append("--client-cert-auth")
        return argv

    async def _start_member(self, name: str, binary: EtcdBinary) -> ManagedProcess:
        client = self.client(name)

        async def answers_a_put() -> bool:
            try:
                await client.put(
                    f"{READY_PREFIX}{name}", str(time.time()), timeout=_PROBE_TIMEOUT_S
                )
            except EtcdError:
                return False
            return True

        return await self._supervisor.start(
            name,
            self.member_argv(name, binary),
            ready=answers_a_put,
            timeout=self.start_timeout,
        )

    async def _learn_ids(self) -> None:
        statuses = await asyncio.gather(*(self.client(n).status() for n in self._names))
        for name, status in zip(self._names, statuses, strict=True):
            self._ids[name] = status.member_id

    def _pid(self, name: str) -> int | None:
        try:
            proc = self._supervisor.get(name)
        except UnknownProcessError:
            return None
        return proc.pid if proc.alive else None

    def member_status(self, name: str) -> str:
        """running, paused, killed, exited or stopped (stopped before the first start)."""
        self._check(name)
        try:
            return self._supervisor.status(name)
        except UnknownProcessError:
            return "stopped"

    def kill_member(self, name: str) -> None:
        """SIGKILL the member: no goodbye to its peers, its data dir stays as it was."""
        self._check(name)
        self._supervisor.kill(name)

    def pause_member(self, name: str) -> None:
        self._check(name)
        self._supervisor.pause(name)

    def resume_member(self, name: str) -> None:
        self._check(name)
        self._supervisor.resume(name)

    async def restart_member(self, name: str) -> None:
        """Start it again on its data dir and ports; ready once a put answers (needs quorum)."""
        self._check(name)
        if name in self._supervisor.names():
            await self._supervisor.restart(name)
        else:
            await self._start_member(name, self.binary)

    # ----------------------------------------------------------- raft status

    async def statuses(self, timeout: float = _STATUS_TIMEOUT_S) -> dict[str, Status | None]:
        """Each running member's own status; None for members that are down or do not answer."""

        async def one(name: str) -> Status | None:
            if self.member_status(name) != "running":
                return None
            try:
                return await self.client(name).status(timeout=timeout)
            except EtcdError:
                return None

        found = await asyncio.gather(*(one(n) for n in self._names))
        return dict(zip(self._names, found, strict=True))

    async def leader(self) -> str | None:
        """The member that leads now: the one that says so at the highest raft term, if any."""
        best: tuple[int, str] | None = None
        for name, status in (await self.statuses()).items():
            if status is not None and status.is_leader:
                if best is None or status.raft_term > best[0]:
                    best = (status.raft_term, name)
        return best[1] if best is not None else None
