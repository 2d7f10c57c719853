"""A compose stack the console brings up and down itself, through the engine's API.

`up` creates the project's networks and volumes, builds what has a `build`, then creates and
starts each service in dependency order (waiting for a dependency's healthcheck where the file
asks), labelling everything the way `docker compose` does, so `docker compose ps` and the
container backend see the same project. `down` removes exactly what carries the project's
label: containers, networks and (with `volumes`) volumes.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from operator_console.contract import Fault, Lab
from operator_console.lab.compose_file import (
    ENDPOINTS_FILE,
    ComposeError,
    ComposeFile,
    Service,
    duration_s,
    interpolate,
    load_compose,
)
from operator_console.lab.containers import (
    NETWORK_LABEL,
    NUMBER_LABEL,
    ONEOFF_LABEL,
    PROJECT_LABEL,
    SERVICE_LABEL,
    VOLUME_LABEL,
    ContainerBackend,
    ContainerError,
    DockerEngine,
    list_project,
)

log = logging.getLogger(__name__)

UP_TIMEOUT_S = 300.0
DOWN_TIMEOUT_S = 120.0
_HEALTH_POLL_S = 0.5
_NANO = 1_000_000_000


class StackError(ContainerError):
    """The stack could not be brought up or down; the message names the service and why."""


class ComposeStack:
    """One compose project: its file, its endpoints file, `up`, `down` and its containers."""

    def __init__(
        self, directory: Path, engine: DockerEngine, *, project: str | None = None
    ) -> None:
        self.directory = Path(directory)
        self.file: ComposeFile = load_compose(self.directory, project=project)
        self.engine = engine

    @property
    def project(self) -> str:
        return self.file.project

    @property
    def services(self) -> list[str]:
        return list(self.file.services)

    def endpoints_path(self) -> Path:
        return self.file.path.parent / ENDPOINTS_FILE

    def endpoints(self) -> dict[str, Any]:
        """The stack's endpoints file (what `watch` takes), next to its compose file, with
        the same ${VAR:-default} substitution as the compose file (ports moved by variables
        move in both)."""
        path = self.endpoints_path()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ComposeError(
                f"{path}: no endpoints file next to the compose file; write the JSON `watch` "
                "takes (see the stack's README)"
            ) from None
        except (OSError, ValueError) as exc:
            raise ComposeError(f"{path}: cannot read it as JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ComposeError(f"{path}: a JSON object is needed")
        substituted: dict[str, Any] = interpolate(data, os.environ)
        return substituted

    def network(self) -> str | None:
        """The stack's own network (the first one its file declares), None on the host's."""
        for name, conf in self.file.networks.items():
            if not conf.get("external"):
                return self._network_name(name)
        return None

    def backend(self) -> ContainerBackend:
        return ContainerBackend(self.engine, self.project, services=self.services)

    def about(self) -> str:
        return (
            f"compose project {self.project} ({self.file.path}): "
            f"{len(self.services)} services on the Docker engine at {self.engine.address}"
        )

    # ------------------------------------------------------------------ up and down

    async def running(self) -> list[str]:
        """Names of the project's containers that exist now, running or not."""
        found = await self.engine.call(
            f"listing project {self.project}", lambda c: list_project(c, self.project)
        )
        return [c.name for c in found]

    async def up(self, *, timeout_s: float = UP_TIMEOUT_S) -> None:
        """Create and start the whole stack; a stack that is already there is an error (the
        console removes at `down` only what its own `up` made)."""
        existing = await self.running()
        if existing:
            raise StackError(
                f"compose project {self.project} already has containers ({', '.join(existing)}):"
                f" watch it with `watch SUBJECT --compose {self.directory}`, or remove it first "
                f"(docker compose -p {self.project} down, or docker rm -f the containers "
                f"labelled {PROJECT_LABEL}={self.project})"
            )
        try:
            await self.engine.call(f"up {self.project}", self._up, timeout_s)
        except BaseException:
            await self.down()
            raise

    async def down(self, *, volumes: bool = True) -> None:
        """Remove every container, network (and volume) of the project."""
        await self.engine.call(
            f"down {self.project}", lambda c: self._down(c, volumes), DOWN_TIMEOUT_S
        )

    def _labels(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {PROJECT_LABEL: self.project, **(extra or {})}

    def _network_name(self, name: str) -> str:
        conf = self.file.networks.get(name) or {}
        return str(conf.get("name") or f"{self.project}_{name}")

    def _up(self, client: Any) -> None:
        for name, conf in self.file.networks.items():
            if conf.get("external"):
                continue
            full = self._network_name(name)
            if not client.networks.list(names=[full]):
                client.networks.create(
                    full,
                    driver=conf.get("driver", "bridge"),
                    internal=bool(conf.get("internal", False)),
                    labels=self._labels({NETWORK_LABEL: name}),
                )
        for name, conf in self.file.volumes.items():
            if conf.get("external"):
                continue
            client.volumes.create(
                f"{self.project}_{name}", labels=self._labels({VOLUME_LABEL: name})
            )
        for name in self.file.order():
            service = self.file.services[name]
            self._image(client, service)
            for dep, condition in service.depends_on.items():
                self._wait_for(client, dep, condition)
            container = client.containers.create(**self._create_args(client, service))
            for net in list(service.networks)[1:]:
                client.networks.get(self._network_name(net)).connect(
                    container, aliases=[name, *service.networks[net]]
                )
            container.start()
            log.info("%s: started %s", self.project, container.name)

    def _image(self, client: Any, service: Service) -> None:
        import docker.errors

        tag = self.file.image_of(service.name)
        try:
            client.images.get(tag)
            return
        except docker.errors.ImageNotFound:
            pass
        if service.build is not None:
            try:
                client.images.build(
                    path=str(service.build.context),
                    dockerfile=service.build.dockerfile,
                    buildargs=service.build.args or None,
                    tag=tag,
                    rm=True,
                    labels=self._labels({SERVICE_LABEL: service.name}),
                )
            except docker.errors.BuildError as exc:
                raise StackError(f"building {tag} for {service.name} failed: {exc.msg}") from None
            return
        try:
            client.images.pull(tag)
        except docker.errors.APIError as exc:
            raise StackError(
                f"image {tag} (service {service.name}) is not on this engine and could not "
                f"be pulled ({str(exc).splitlines()[0][:160]}): pull or build it first"
            ) from None

    def _wait_for(self, client: Any, dep: str, condition: str) -> None:
        if condition == "service_started":
            return
        service = self.file.services[dep]
        deadline = time.monotonic() + _health_budget(service)
        while True:
            found = [c for c in list_project(client, self.project) if c.service == dep]
            attrs = client.containers.get(found[0].id).attrs if found else {}
            state = attrs.get("State") or {}
            if condition == "service_healthy":
                health = (state.get("Health") or {}).get("Status")
                if health == "healthy":
                    return
                if not state.get("Running", False):
                    raise StackError(f"{dep} exited before it was healthy")
            elif not state.get("Running", True):
                if state.get("ExitCode") == 0:
                    return
                raise StackError(f"{dep} exited with code {state.get('ExitCode')}")
            if time.monotonic() > deadline:
                raise StackError(
                    f"{dep} did not become {condition.removeprefix('service_')} in time"
                )
            time.sleep(_HEALTH_POLL_S)

    def _create_args(self, client: Any, service: Service) -> dict[str, Any]:
        name = service.name
        args: dict[str, Any] = {
            "image": self.file.image_of(name),
            "name": service.extra.get("container_name") or f"{self.project}-{name}-1",
            "command": service.command,
            "entrypoint": service.entrypoint,
            "environment": service.environment or None,
            "labels": {
                **service.labels,
                PROJECT_LABEL: self.project,
                SERVICE_LABEL: name,
                NUMBER_LABEL: "1",
                ONEOFF_LABEL: "False",
            },
            "detach": True,
        }
        for key in ("user", "working_dir", "hostname", "init", "cap_add", "cap_drop",
                    "read_only", "tmpfs", "mem_limit", "stop_signal"):  # fmt: skip
            if key in service.extra:
                args[key] = service.extra[key]
        if service.ports:
            ports: dict[str, Any] = {}
            for port in service.ports:
                key = f"{port.container_port}/{port.protocol}"
                ports[key] = (port.host_ip, port.host_port) if port.host_ip else port.host_port
            args["ports"] = ports
        if service.mounts:
            args["volumes"] = {
                (m.source if m.kind == "bind" else f"{self.project}_{m.source}"): {
                    "bind": m.target,
                    "mode": "ro" if m.read_only else "rw",
                }
                for m in service.mounts
            }
        if service.restart:
            policy = service.restart.split(":")[0]
            if policy != "no":
                args["restart_policy"] = {"Name": policy}
        if service.healthcheck:
            args["healthcheck"] = _healthcheck(service)
        if service.network_mode is not None:
            args["network_mode"] = service.network_mode
        else:
            first = next(iter(service.networks))
            full = self._network_name(first)
            args["network"] = full
            args["networking_config"] = {
                full: client.api.create_endpoint_config(aliases=[name, *service.networks[first]])
            }
        return args

    def _down(self, client: Any, volumes: bool) -> None:
        import docker.errors

        label = f"{PROJECT_LABEL}={self.project}"
        for container in client.containers.list(all=True, filters={"label": label}):
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
        for network in client.networks.list(filters={"label": label}):
            try:
                network.remove()
            except docker.errors.NotFound:
                pass
        if volumes:
            for volume in client.volumes.list(filters={"label": label}):
                try:
                    volume.remove(force=True)
                except docker.errors.NotFound:
                    pass


def _health_budget(service: Service) -> float:
    health = service.healthcheck or {}
    interval = duration_s(health.get("interval", 30), "interval")
    retries = int(health.get("retries", 3))
    start = duration_s(health.get("start_period", 0), "start_period")
    return start + interval * (retries + 1) + 30.0


def _healthcheck(service: Service) -> dict[str, Any]:
    health = service.healthcheck or {}
    test = health.get("test")
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    out: dict[str, Any] = {"test": test}
    for key in ("interval", "timeout", "start_period"):
        if key in health:
            out[key] = int(duration_s(health[key], key) * _NANO)
    if "retries" in health:
        out["retries"] = int(health["retries"])
    return out


class StackLab:
    """A subject's lab on a compose stack: with `owns`, `start` brings the stack up and `stop`
    brings it down (a scenario's run); without, the stack is someone else's (`watch`) and no
    fault is injected into it."""

    def __init__(self, stack: ComposeStack, inner: Lab, *, owns: bool) -> None:
        self.stack = stack
        self.inner = inner
        self.owns = owns
        self._up = False

    async def start(self) -> None:
        if self.owns:
            await self.stack.up()
            self._up = True
        await self.inner.start()

    async def stop(self) -> None:
        try:
            await self.inner.stop()
        finally:
            if self._up:
                self._up = False
                await self.stack.down()

    def endpoints(self) -> dict[str, Any]:
        return self.inner.endpoints()

    def about(self) -> str:
        whose = "brought up for this run" if self.owns else "already running"
        return f"{self.inner.about()}; {self.stack.about()}, {whose}"

    def fault_kinds(self) -> Sequence[str]:
        return self.inner.fault_kinds() if self.owns else ()

    def make_fault(self, kind: str, target: str | None, params: Mapping[str, Any]) -> Fault:
        if not self.owns:
            raise ValueError("fault injection is off for a stack the console did not bring up")
        return self.inner.make_fault(kind, target, params)


__all__ = ["ComposeStack", "StackError", "StackLab"]
