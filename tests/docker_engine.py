"""A Docker engine for the tests marked `docker`: the one DOCKER_HOST (or the default socket)
names when it answers, else a private dockerd started for the session with host networking
only (--bridge=none --iptables=false) and its own data-root, exec-root, pidfile and socket
under a fresh temp dir, so it collides with nothing; stopped and removed afterwards. Where no
engine can start, the tests skip saying why."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Engine:
    address: str  # unix:///... for DOCKER_HOST
    private: bool  # started by these tests


def _answers(address: str) -> str | None:
    """None when an engine answers at `address`, else why not."""
    import docker

    try:
        client = docker.DockerClient(base_url=address, timeout=5)
    except Exception as exc:
        return str(exc).splitlines()[0]
    try:
        client.ping()
    except Exception as exc:
        return str(exc).splitlines()[0]
    finally:
        client.close()
    return None


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def docker_engine() -> Iterator[Engine | str]:
    """An engine (yielded), or the reason there is none (a string)."""
    existing = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if _answers(existing) is None:
        yield Engine(existing, private=False)
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        yield "no Docker engine answers and dockerd is not installed (apt-get install docker.io)"
        return
    if os.geteuid() != 0:
        yield "no Docker engine answers, and starting dockerd needs root"
        return
    # Short paths: containerd's sockets live under the exec-root (a unix socket path is
    # limited to 108 bytes).
    root = Path(tempfile.mkdtemp(prefix="oc-dk-", dir="/tmp"))
    address = f"unix://{root}/docker.sock"
    log_path = root / "dockerd.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                dockerd,
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                f"--data-root={root}/data",
                f"--exec-root={root}/exec",
                f"--pidfile={root}/docker.pid",
                f"--host={address}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        why = "not started yet"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                why = f"dockerd exited with {proc.returncode}: {_tail(log_path)}"
                break
            answer = _answers(address)
            if answer is None:
                why = ""
                break
            why = answer
            time.sleep(0.2)
        if why:
            yield f"a private dockerd did not start: {why}"
        else:
            yield Engine(address, private=True)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        _unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)


def _unmount_under(root: Path) -> None:
    """dockerd leaves its default network namespace (and, when killed, overlays) mounted under
    its roots: unmount the deepest first, so the temp dir can go."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    inside = [line.split()[1] for line in mounts if line.split()[1].startswith(f"{root}/")]
    for target in sorted(inside, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)
