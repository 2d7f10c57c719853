"""A throwaway container for each shell command the agent was allowed to run.

The container has no Docker socket and no host path but the run's folder (read-only), a
read-only root, every capability dropped, no new privileges, a small pid, memory and /tmp
budget, an unprivileged user, and either no network or the stack's network alone. Its image
holds nothing but a static busybox, built locally (nothing is pulled).
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import shutil
import subprocess
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from operator_console.lab.containers import ContainerError, DockerEngine

log = logging.getLogger(__name__)

SHELL_IMAGE = "operator-console/shell:busybox-1"
SANDBOX_LABEL = "operator-console.sandbox"
WORKDIR = "/run-dir"
MEMORY = "256m"
PIDS = 64
_LDD_PATH = re.compile(r"(/\S+)")


class SandboxError(ContainerError):
    """The sandbox could not run a command (no image, engine refused); one line saying why."""


def binary_files(binary: Path) -> dict[str, Path]:
    """The binary and, when it is dynamically linked, every library it loads (by `ldd`):
    path in the image -> path on this machine."""
    files = {str(binary): binary}
    try:
        out = subprocess.run(
            ["ldd", str(binary)], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    for line in out.splitlines():
        for found in _LDD_PATH.findall(line):
            path = Path(found)
            if path.exists():
                files[found] = path.resolve()
    return files


def _busybox() -> Path:
    found = shutil.which("busybox")
    if found is None:
        raise SandboxError(
            "the shell sandbox needs busybox to build its image: apt-get install busybox-static"
        )
    return Path(found).resolve()


def _applets(busybox: Path) -> list[str]:
    out = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    return [a for a in out.split() if re.fullmatch(r"[a-z0-9_.\[-]+", a)]


def shell_context(busybox: Path) -> bytes:
    """A build context (tar): busybox (and its libraries, if any), an applet link each, /tmp."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            tar.addfile(info)

        dockerfile = (
            "FROM scratch\nCOPY rootfs/ /\n"
            f'LABEL {SANDBOX_LABEL}="image"\nENV PATH=/bin\nCMD ["/bin/sh"]\n'
        ).encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        for name in ("rootfs", "rootfs/bin", "rootfs/tmp", "rootfs/run-dir"):
            add_dir(name, 0o1777 if name.endswith("tmp") else 0o755)
        added = {"rootfs", "rootfs/bin", "rootfs/tmp", "rootfs/run-dir"}
        for inside, host in binary_files(busybox).items():
            target = "rootfs/bin/busybox" if host == busybox else f"rootfs{inside}"
            parts = Path(target).parent.parts
            for i in range(1, len(parts) + 1):
                folder = "/".join(parts[:i])
                if folder not in added:
                    add_dir(folder)
                    added.add(folder)
            tar.add(str(host), arcname=target)
        for applet in _applets(busybox):
            if applet == "busybox":
                continue
            link = tarfile.TarInfo(f"rootfs/bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return buf.getvalue()


@dataclass(frozen=True, slots=True)
class SandboxResult:
    status: str  # "exit 0", "timed out after 20 s and was killed"
    seconds: float
    total: int
    kept: bytes


class ShellSandbox:
    """Runs one command at a time in a fresh container; `network` is the only network it
    joins (None: no network at all)."""

    def __init__(
        self, engine: DockerEngine, *, network: str | None = None, workdir: Path | None = None
    ) -> None:
        self.engine = engine
        self.network = network
        self.workdir = workdir
        self._image_lock = asyncio.Lock()
        self._image_ready = False

    def describe(self) -> str:
        net = f"only the stack's network {self.network}" if self.network else "no network"
        return (
            "in a throwaway container (read-only root, no capabilities, no Docker socket, "
            f"{net}, the run's folder read-only at {WORKDIR})"
        )

    async def ensure_image(self) -> str:
        """The shell image, built once from the local busybox when the engine lacks it."""
        async with self._image_lock:
            if not self._image_ready:
                await self.engine.call("building the shell sandbox image", self._build, 120.0)
                self._image_ready = True
        return SHELL_IMAGE

    def _build(self, client: Any) -> None:
        import docker.errors

        try:
            client.images.get(SHELL_IMAGE)
            return
        except docker.errors.ImageNotFound:
            pass
        context = shell_context(_busybox())
        try:
            client.images.build(
                fileobj=io.BytesIO(context), custom_context=True, tag=SHELL_IMAGE, rm=True
            )
        except docker.errors.BuildError as exc:
            raise SandboxError(f"building {SHELL_IMAGE} failed: {exc.msg}") from None

    def _create_args(self, command: str) -> dict[str, Any]:
        args: dict[str, Any] = {
            "image": SHELL_IMAGE,
            "command": ["/bin/sh", "-c", command],
            "name": f"oc-sandbox-{uuid.uuid4().hex[:12]}",
            "labels": {SANDBOX_LABEL: "command"},
            "environment": {"PATH": "/bin", "HOME": "/tmp", "LANG": "C.UTF-8"},
            "user": "65534:65534",
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "mem_limit": MEMORY,
            "pids_limit": PIDS,
            "tmpfs": {"/tmp": "rw,nosuid,nodev,noexec,size=16m"},
            "working_dir": WORKDIR if self.workdir is not None else "/tmp",
            # The engine keeps what the command prints: bounded on its disk too.
            "log_config": {"type": "json-file", "config": {"max-size": "10m", "max-file": "1"}},
            "detach": True,
        }
        if self.workdir is not None:
            args["volumes"] = {str(self.workdir): {"bind": WORKDIR, "mode": "ro"}}
        if self.network is None:
            args["network_mode"] = "none"
        else:
            args["network"] = self.network
        return args

    async def run(self, command: str, *, timeout_s: float, output_cap: int) -> SandboxResult:
        """Run `command` under /bin/sh in a fresh container, removed afterwards."""
        await self.ensure_image()
        started = time.monotonic()
        container = await self.engine.call(
            "creating the sandbox", lambda c: c.containers.create(**self._create_args(command))
        )
        kept = bytearray()
        total = 0

        def read(_client: Any) -> int:
            nonlocal total
            container.start()
            for chunk in container.logs(stream=True, follow=True):
                total += len(chunk)
                if len(kept) < output_cap:
                    kept.extend(chunk[: output_cap - len(kept)])
            return int(container.wait(timeout=30).get("StatusCode", -1))

        try:
            try:
                async with asyncio.timeout(timeout_s):
                    code = await asyncio.to_thread(self.engine.run, "running the sandbox", read)
                status = f"exit {code}"
            except TimeoutError:
                await self.engine.call("killing the sandbox", lambda c: _kill(container))
                status = f"timed out after {timeout_s:g} s and was killed"
        finally:
            await self.engine.call(
                "removing the sandbox", lambda c: container.remove(force=True), 30.0
            )
        return SandboxResult(status, time.monotonic() - started, total, bytes(kept))


def _kill(container: Any) -> None:
    import docker.errors

    try:
        container.kill()
    except docker.errors.APIError:
        pass  # it ended on its own meanwhile


__all__ = [
    "SANDBOX_LABEL",
    "SHELL_IMAGE",
    "SandboxError",
    "SandboxResult",
    "ShellSandbox",
    "binary_files",
    "shell_context",
]
