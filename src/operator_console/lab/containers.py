"""A compose stack's containers as a `ProcessBackend`, through the Docker engine's API (the
`docker` SDK): found by their compose labels, killed, paused, stopped, started, restarted,
read (logs) and cut off from or put back on a network.

Every SDK call blocks, so each runs in a worker thread under a timeout; the event loop never
waits on the engine. An engine that does not answer and a container that is gone are each one
clear line (`EngineUnreachableError`, `ContainerGoneError`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from operator_console.contract.processes import ProcessControlError

log = logging.getLogger(__name__)

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"
ONEOFF_LABEL = "com.docker.compose.oneoff"
NETWORK_LABEL = "com.docker.compose.network"
VOLUME_LABEL = "com.docker.compose.volume"
DEFAULT_TIMEOUT_S = 10.0
STOP_GRACE_S = 10
_EXIT_CODE = re.compile(r"Exited \((-?\d+)\)")
T = TypeVar("T")


class ContainerError(ProcessControlError):
    """The engine refused an action on a container; the message names it and why."""


class EngineUnreachableError(ContainerError):
    """No Docker engine answers at the address the console uses."""


class ContainerGoneError(ContainerError):
    """The service has no container (removed, or the stack is down)."""


def engine_address() -> str:
    """Where the console looks for the engine: $DOCKER_HOST, else the default socket."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _unreachable(address: str, exc: BaseException) -> EngineUnreachableError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return EngineUnreachableError(
        f"no Docker engine answers at {address} ({reason[:160]}): start dockerd, or set "
        "DOCKER_HOST to the engine's address"
    )


class DockerEngine:
    """One connection to a Docker engine, opened on first use in a worker thread."""

    def __init__(self, base_url: str | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.address = base_url or engine_address()
        self.timeout_s = timeout_s
        self._client: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        """The SDK's DockerClient (blocking: call from a worker thread)."""
        import docker
        import docker.errors

        with self._lock:
            if self._client is None:
                try:
                    client = docker.DockerClient(
                        base_url=self.address, timeout=max(1, round(self.timeout_s))
                    )
                    client.ping()
                except docker.errors.DockerException as exc:
                    raise _unreachable(self.address, exc) from None
                except OSError as exc:
                    raise _unreachable(self.address, exc) from None
                self._client = client
            return self._client

    def run(self, what: str, call: Callable[[Any], T]) -> T:
        """Run `call(client)` here (a worker thread), turning the SDK's errors into ours."""
        import docker.errors
        import requests.exceptions

        client = self.client()
        try:
            return call(client)
        except docker.errors.NotFound as exc:
            raise ContainerGoneError(f"{what}: {_explain(exc)}") from None
        except docker.errors.APIError as exc:
            raise ContainerError(f"{what}: {_explain(exc)}") from None
        except (requests.exceptions.ConnectionError, OSError) as exc:
            raise _unreachable(self.address, exc) from None
        except requests.exceptions.Timeout:
            raise ContainerError(
                f"{what}: the engine at {self.address} did not answer within {self.timeout_s:g} s"
            ) from None
        except docker.errors.DockerException as exc:
            raise ContainerError(f"{what}: {exc}") from None

    async def call(self, what: str, call: Callable[[Any], T], timeout_s: float | None = None) -> T:
        """`run` in a worker thread, bounded: a stuck engine is an error, not a hang."""
        limit = timeout_s if timeout_s is not None else self.timeout_s
        try:
            async with asyncio.timeout(limit):
                return await asyncio.to_thread(self.run, what, call)
        except TimeoutError:
            raise ContainerError(
                f"{what}: the engine at {self.address} did not answer within {limit:g} s"
            ) from None

    async def ping(self) -> None:
        await self.call("ping", lambda client: client.ping())

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def _explain(exc: Any) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return str(text).strip().splitlines()[0][:300]


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """One container of the stack as the last refresh saw it."""

    id: str
    name: str
    service: str
    state: str  # the engine's: running, paused, exited, created, restarting, dead
    exit_code: int | None

    @property
    def process_state(self) -> str:
        """The same words the local lab uses (running, paused, killed, exited, stopped)."""
        if self.state in ("running", "paused"):
            return self.state
        if self.state == "created":
            return "stopped"
        if self.exit_code in (137, -9):
            return "killed"  # SIGKILL: docker kill, or the OOM killer
        if self.exit_code in (0, 143) and self.state == "exited":
            return "stopped"  # it ended on SIGTERM (docker stop)
        return "exited"


def _info(summary: dict[str, Any]) -> ContainerInfo:
    labels = summary.get("Labels") or {}
    code = None
    match = _EXIT_CODE.search(str(summary.get("Status", "")))
    if match:
        code = int(match.group(1))
    names = summary.get("Names") or [summary.get("Id", "")[:12]]
    return ContainerInfo(
        id=str(summary.get("Id", "")),
        name=str(names[0]).lstrip("/"),
        service=str(labels.get(SERVICE_LABEL, "")),
        state=str(summary.get("State", "")),
        exit_code=code,
    )


def list_project(client: Any, project: str) -> list[ContainerInfo]:
    """Every container of a compose project (not one-off `run` containers), blocking."""
    found = client.api.containers(all=True, filters={"label": f"{PROJECT_LABEL}={project}"})
    out = []
    for summary in found:
        labels = summary.get("Labels") or {}
        if labels.get(ONEOFF_LABEL, "False") == "True":
            continue
        out.append(_info(summary))
    return sorted(out, key=lambda c: (c.service, c.name))


class ContainerBackend:
    """The containers of one compose project, by service name."""

    kind = "container"

    def __init__(
        self,
        engine: DockerEngine,
        project: str,
        *,
        services: Sequence[str] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.engine = engine
        self.project = project
        self.timeout_s = timeout_s
        self._services = list(services) if services is not None else None
        self._seen: dict[str, ContainerInfo] = {}
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"ContainerBackend(project={self.project!r}, engine={self.engine.address!r})"

    # ------------------------------------------------------------------ reading

    def names(self) -> list[str]:
        if self._services is not None:
            return list(self._services)
        return sorted(self._seen)

    def status(self, name: str) -> str | None:
        info = self._seen.get(name)
        return info.process_state if info is not None else None

    def ident(self, name: str) -> str | None:
        info = self._seen.get(name)
        return f"container {info.id[:12]} ({info.name})" if info is not None else None

    def about(self) -> str:
        return (
            f"containers of compose project {self.project} on the engine at {self.engine.address}"
        )

    async def containers(self) -> list[ContainerInfo]:
        """The project's containers now (raises when the engine does not answer)."""
        found = await self.engine.call(
            f"listing project {self.project}",
            lambda client: list_project(client, self.project),
            self.timeout_s,
        )
        self._seen = {c.service: c for c in found if c.service}
        return found

    async def refresh(self) -> None:
        try:
            await self.containers()
        except ContainerError as exc:
            self._seen = {}
            if self.last_error != str(exc):
                log.warning("%s", exc)
            self.last_error = str(exc)
        else:
            self.last_error = None

    def _find(self, client: Any, name: str) -> Any:
        """The service's container (blocking); ContainerGoneError when there is none."""
        if self._services is not None and name not in self._services:
            raise ContainerError(
                f"{name!r} is not a service of this stack (services: {', '.join(self._services)})"
            )
        found = [c for c in list_project(client, self.project) if c.service == name]
        if not found:
            raise ContainerGoneError(
                f"service {name!r} of compose project {self.project!r} has no container: it "
                "was removed or the stack is down; bring the stack up again"
            )
        return client.containers.get(found[0].id)

    async def _act(self, name: str, verb: str, act: Callable[[Any], object]) -> None:
        def run(client: Any) -> None:
            act(self._find(client, name))

        await self.engine.call(
            f"{verb} {name} ({self.project})", run, self.timeout_s + STOP_GRACE_S
        )
        await self.refresh()

    # ------------------------------------------------------------------ acting

    async def kill(self, name: str) -> None:
        await self._act(name, "kill", lambda c: c.kill(signal="SIGKILL"))

    async def pause(self, name: str) -> None:
        await self._act(name, "pause", lambda c: c.pause())

    async def resume(self, name: str) -> None:
        await self._act(name, "unpause", lambda c: c.unpause())

    async def stop(self, name: str) -> None:
        await self._act(name, "stop", lambda c: c.stop(timeout=STOP_GRACE_S))

    async def start(self, name: str) -> None:
        await self._act(name, "start", lambda c: c.start())

    async def restart(self, name: str) -> None:
        await self._act(name, "restart", lambda c: c.restart(timeout=STOP_GRACE_S))

    async def logs(self, name: str, lines: int) -> tuple[str, str]:
        def read(client: Any) -> tuple[str, str]:
            container = self._find(client, name)
            raw = container.logs(tail=lines, stdout=True, stderr=True)
            return f"docker logs {container.name}", raw.decode("utf-8", errors="replace")

        return await self.engine.call(f"logs of {name} ({self.project})", read, self.timeout_s)

    async def networks(self, name: str) -> list[str]:
        """The networks the service's container is attached to (host and none included)."""

        def read(client: Any) -> list[str]:
            container = self._find(client, name)
            settings = container.attrs.get("NetworkSettings", {}).get("Networks") or {}
            return sorted(settings)

        return await self.engine.call(f"networks of {name}", read, self.timeout_s)

    async def disconnect(self, name: str, network: str) -> None:
        """Cut the container off one network (a partition that needs no proxy)."""

        def run(client: Any) -> None:
            container = self._find(client, name)
            if network in ("host", "none"):
                raise ContainerError(
                    f"{name} uses the {network} network: it cannot be disconnected from it"
                )
            client.networks.get(network).disconnect(container, force=True)

        await self.engine.call(f"disconnect {name} from {network}", run, self.timeout_s)

    async def connect(self, name: str, network: str, aliases: Sequence[str] = ()) -> None:
        def run(client: Any) -> None:
            container = self._find(client, name)
            client.networks.get(network).connect(container, aliases=list(aliases) or [name])

        await self.engine.call(f"connect {name} to {network}", run, self.timeout_s)


__all__ = [
    "NETWORK_LABEL",
    "ONEOFF_LABEL",
    "PROJECT_LABEL",
    "SERVICE_LABEL",
    "VOLUME_LABEL",
    "ContainerBackend",
    "ContainerError",
    "ContainerGoneError",
    "ContainerInfo",
    "DockerEngine",
    "EngineUnreachableError",
    "engine_address",
    "list_project",
]
