"""Reading a compose file into what the console's own `up` needs, checked key by key.

The console brings a stack up through the engine's API (the `docker` SDK) when no compose CLI
is at hand, so it reads the part of the compose specification its stacks use: images and
builds, commands, environment, ports, volumes, networks (or the host's), dependencies with
their conditions, healthchecks and the usual container settings. A key outside that part is
one error naming it, so a file the console cannot run faithfully is never run half-way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

COMPOSE_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
ENDPOINTS_FILE = "endpoints.json"
_VAR = re.compile(r"\$(?:\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}|\$)")
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|us|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|s|m|h)")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PROJECT = re.compile(r"[^a-z0-9_-]")

TOP_KEYS = {"name", "services", "networks", "volumes", "version"}
SERVICE_KEYS = {
    "image", "build", "command", "entrypoint", "environment", "ports", "volumes",
    "network_mode", "networks", "depends_on", "healthcheck", "restart", "labels", "user",
    "working_dir", "hostname", "stop_grace_period", "init", "cap_add", "cap_drop",
    "read_only", "tmpfs", "mem_limit", "container_name", "stop_signal", "ulimits",
}  # fmt: skip
CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")


class ComposeError(ValueError):
    """A compose file the console cannot run; the message names the file, the key and the fix."""


@dataclass(frozen=True, slots=True)
class Build:
    context: Path
    dockerfile: str = "Dockerfile"
    args: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Port:
    host_ip: str
    host_port: int | None
    container_port: int
    protocol: str = "tcp"


@dataclass(frozen=True, slots=True)
class Mount:
    source: str  # a named volume, or an absolute host path (kind "bind")
    target: str
    read_only: bool
    kind: str  # volume | bind


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    image: str | None
    build: Build | None
    command: list[str] | str | None
    entrypoint: list[str] | str | None
    environment: dict[str, str]
    ports: list[Port]
    mounts: list[Mount]
    network_mode: str | None
    networks: dict[str, list[str]]  # network -> aliases
    depends_on: dict[str, str]  # service -> condition
    healthcheck: dict[str, Any] | None
    restart: str | None
    labels: dict[str, str]
    extra: dict[str, Any]  # user, working_dir, hostname, init, caps, read_only, tmpfs...
    stop_grace_s: float | None = None


@dataclass(frozen=True, slots=True)
class ComposeFile:
    path: Path
    project: str
    services: dict[str, Service]
    networks: dict[str, dict[str, Any]]
    volumes: dict[str, dict[str, Any]]

    def order(self) -> list[str]:
        """Services in an order that starts each after what it depends on."""
        done: list[str] = []
        visiting: set[str] = set()

        def visit(name: str, chain: tuple[str, ...]) -> None:
            if name in done:
                return
            if name in visiting:
                raise ComposeError(f"{self.path}: depends_on has a cycle: {' -> '.join(chain)}")
            visiting.add(name)
            for dep in self.services[name].depends_on:
                visit(dep, (*chain, dep))
            visiting.discard(name)
            done.append(name)

        for name in self.services:
            visit(name, (name,))
        return done

    def image_of(self, name: str) -> str:
        """The image a service runs: its `image`, or what its build is tagged."""
        service = self.services[name]
        return service.image or f"{self.project}-{name}"


def find_compose_file(directory: Path) -> Path:
    if directory.is_file():
        return directory
    for name in COMPOSE_FILES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    if not directory.is_dir():
        raise ComposeError(f"{directory}: no such directory; give a folder of compose/")
    raise ComposeError(f"{directory}: no compose file here (looked for {', '.join(COMPOSE_FILES)})")


def project_name(text: str) -> str:
    """Compose's rule: lower case letters, digits, dashes and underscores."""
    name = _PROJECT.sub("", text.lower())
    return name.lstrip("-_") or "default"


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's ${NAME}, ${NAME:-default} and $$ in every string of a parsed document."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group("name"), match.group("default")
            found = env.get(name)
            return found if found else (default or "")

        return _VAR.sub(sub, value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def duration_s(value: Any, where: str) -> float:
    """A compose duration (`1m30s`, `500ms`, or a number of seconds)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and _DURATION.match(value.strip()):
        return sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(value))
    raise ComposeError(f"{where}: {value!r} is not a duration such as 30s or 1m30s")


class _Reader:
    def __init__(self, path: Path, env: Mapping[str, str]) -> None:
        self.path = path
        self.base = path.parent
        self.env = env

    def fail(self, where: str, problem: str) -> ComposeError:
        return ComposeError(f"{self.path}: {where}: {problem}")

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(where, "a mapping is needed")
        return value

    def str_map(self, value: Any, where: str) -> dict[str, str]:
        """`KEY=value` lists or mappings (environment, labels, build args)."""
        if value is None:
            return {}
        if isinstance(value, list):
            out = {}
            for item in value:
                key, sep, val = str(item).partition("=")
                out[key] = val if sep else self.env.get(key, "")
            return out
        if isinstance(value, dict):
            return {str(k): "" if v is None else str(v) for k, v in value.items()}
        raise self.fail(where, "a list of KEY=value or a mapping is needed")

    def port(self, value: Any, where: str) -> Port:
        if isinstance(value, dict):
            return Port(
                str(value.get("host_ip", "")),
                int(value["published"]) if value.get("published") else None,
                int(value["target"]),
                str(value.get("protocol", "tcp")),
            )
        text, _, proto = str(value).partition("/")
        parts = text.rsplit(":", 2)
        try:
            if len(parts) == 3:
                return Port(
                    parts[0], int(parts[1]) if parts[1] else None, int(parts[2]), proto or "tcp"
                )
            if len(parts) == 2:
                return Port("", int(parts[0]), int(parts[1]), proto or "tcp")
            return Port("", None, int(parts[0]), proto or "tcp")
        except ValueError:
            raise self.fail(where, f"{value!r} is not a port such as 127.0.0.1:2379:2379") from None

    def mount(self, value: Any, where: str, volumes: Mapping[str, Any]) -> Mount:
        if isinstance(value, dict):
            source, target = str(value.get("source", "")), str(value.get("target", ""))
            read_only = bool(value.get("read_only", False))
        else:
            parts = str(value).split(":")
            if len(parts) not in (2, 3):
                raise self.fail(where, f"{value!r}: give SOURCE:TARGET[:ro]")
            source, target = parts[0], parts[1]
            read_only = len(parts) == 3 and parts[2] == "ro"
        if not target.startswith("/"):
            raise self.fail(where, f"{value!r}: the target must be an absolute path")
        if source.startswith((".", "/", "~")):
            host = (self.base / os.path.expanduser(source)).resolve()
            return Mount(str(host), target, read_only, "bind")
        if source not in volumes:
            raise self.fail(where, f"volume {source!r} is not declared under top-level volumes")
        return Mount(source, target, read_only, "volume")

    def service(self, name: str, raw: Any, top: dict[str, Any]) -> Service:
        where = f"services.{name}"
        raw = self.mapping(raw, where)
        unknown = sorted(set(raw) - SERVICE_KEYS)
        if unknown:
            raise self.fail(
                f"{where}.{unknown[0]}",
                "not a key the console's own `up` supports; bring this stack up with "
                "`docker compose up -d` and attach with `watch SUBJECT --compose DIR`",
            )
        build = None
        if raw.get("build") is not None:
            spec = raw["build"]
            spec = (
                {"context": spec} if isinstance(spec, str) else self.mapping(spec, f"{where}.build")
            )
            context = (self.base / str(spec.get("context", "."))).resolve()
            if not context.is_dir():
                raise self.fail(f"{where}.build.context", f"{context} is not a directory")
            build = Build(
                context,
                str(spec.get("dockerfile", "Dockerfile")),
                self.str_map(spec.get("args"), f"{where}.build.args"),
            )
        image = raw.get("image")
        if image is None and build is None:
            raise self.fail(where, "give an image or a build")
        network_mode = raw.get("network_mode")
        nets_raw = raw.get("networks")
        networks: dict[str, list[str]] = {}
        if isinstance(nets_raw, list):
            networks = {str(n): [] for n in nets_raw}
        elif isinstance(nets_raw, dict):
            for net, conf in nets_raw.items():
                aliases = (conf or {}).get("aliases", []) if isinstance(conf, dict) else []
                networks[str(net)] = [str(a) for a in aliases]
        elif nets_raw is not None:
            raise self.fail(f"{where}.networks", "a list or mapping of networks is needed")
        if network_mode is not None and networks:
            raise self.fail(where, "network_mode and networks exclude each other")
        if network_mode is None and not networks:
            networks = {"default": []}
        for net in networks:
            if net != "default" and net not in (top.get("networks") or {}):
                raise self.fail(f"{where}.networks", f"{net!r} is not declared under networks")
        deps_raw = raw.get("depends_on") or {}
        depends: dict[str, str] = {}
        if isinstance(deps_raw, list):
            depends = {str(d): "service_started" for d in deps_raw}
        elif isinstance(deps_raw, dict):
            for dep, conf in deps_raw.items():
                condition = (conf or {}).get("condition", "service_started")
                if condition not in CONDITIONS:
                    raise self.fail(f"{where}.depends_on.{dep}", f"unknown condition {condition!r}")
                depends[str(dep)] = str(condition)
        for dep in depends:
            if dep not in (top.get("services") or {}):
                raise self.fail(f"{where}.depends_on", f"no service {dep!r} in this file")
        health = raw.get("healthcheck")
        if health is not None:
            health = self.mapping(health, f"{where}.healthcheck")
            for key in ("interval", "timeout", "start_period"):
                if key in health:
                    duration_s(health[key], f"{where}.healthcheck.{key}")
        declared = self.mapping(top.get("volumes"), "volumes")
        mounts = [
            self.mount(v, f"{where}.volumes[{i}]", declared)
            for i, v in enumerate(raw.get("volumes") or [])
        ]
        extra = {
            k: raw[k]
            for k in ("user", "working_dir", "hostname", "init", "cap_add", "cap_drop",
                      "read_only", "tmpfs", "mem_limit", "container_name", "stop_signal",
                      "ulimits")
            if k in raw
        }  # fmt: skip
        grace = raw.get("stop_grace_period")
        return Service(
            name=name,
            image=str(image) if image is not None else None,
            build=build,
            command=raw.get("command"),
            entrypoint=raw.get("entrypoint"),
            environment=self.str_map(raw.get("environment"), f"{where}.environment"),
            ports=[
                self.port(p, f"{where}.ports[{i}]") for i, p in enumerate(raw.get("ports") or [])
            ],
            mounts=mounts,
            network_mode=str(network_mode) if network_mode is not None else None,
            networks=networks,
            depends_on=depends,
            healthcheck=health,
            restart=str(raw["restart"]) if raw.get("restart") else None,
            labels=self.str_map(raw.get("labels"), f"{where}.labels"),
            extra=extra,
            stop_grace_s=duration_s(grace, f"{where}.stop_grace_period") if grace else None,
        )


def load_compose(
    directory: Path, *, project: str | None = None, env: Mapping[str, str] | None = None
) -> ComposeFile:
    """Read and check a stack's compose file; every problem is one ComposeError."""
    path = find_compose_file(Path(directory))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ComposeError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ComposeError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    environment = dict(os.environ if env is None else env)
    reader = _Reader(path, environment)
    top = interpolate(reader.mapping(raw, "the file"), environment)
    unknown = sorted(k for k in set(top) - TOP_KEYS if not str(k).startswith("x-"))
    if unknown:
        raise reader.fail(unknown[0], "not a top-level key the console's own `up` supports")
    services_raw = reader.mapping(top.get("services"), "services")
    if not services_raw:
        raise reader.fail("services", "the file has no services")
    services = {str(n): reader.service(str(n), s, top) for n, s in services_raw.items()}
    networks = {
        str(k): dict(v or {}) for k, v in reader.mapping(top.get("networks"), "networks").items()
    }
    if any("default" in s.networks for s in services.values()):
        networks.setdefault("default", {})
    volumes = {
        str(k): dict(v or {}) for k, v in reader.mapping(top.get("volumes"), "volumes").items()
    }
    name = project or top.get("name") or path.parent.name
    compose = ComposeFile(path, project_name(str(name)), services, networks, volumes)
    compose.order()  # a cycle is an error now, not at `up`
    return compose


__all__ = [
    "COMPOSE_FILES",
    "ENDPOINTS_FILE",
    "Build",
    "ComposeError",
    "ComposeFile",
    "Mount",
    "Port",
    "Service",
    "duration_s",
    "find_compose_file",
    "interpolate",
    "load_compose",
    "project_name",
]
