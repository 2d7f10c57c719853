"""Every installed subject says, before anything starts, what its lab would run on this machine
(the binary and the release it reports), or that it has no lab and can only be watched."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from operator_console.contract import RuntimeDescription, subject_kinds
from operator_console.lab.ratelimiter.store import valkey_server_path


def _version(argv: list[str], pattern: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    match = re.search(pattern, done.stdout)
    assert match is not None, done.stdout
    return match.group(1)


def test_every_installed_subject_describes_its_runtime() -> None:
    kinds = subject_kinds()
    described = {name: kind.describe_runtime() for name, kind in kinds.items()}
    assert all(isinstance(d, RuntimeDescription) and d.summary for d in described.values())
    # The ones with scenarios deploy; a subject with no local lab is watch-only.
    assert {n for n, d in described.items() if not d.deploys} == {"tikv"}
    assert "operator-console watch tikv --endpoints FILE" in described["tikv"].summary


def test_etcd_names_the_binary_and_the_release_it_reports(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OPERATOR_CONSOLE_ETCD_BIN", "/usr/bin/etcd")
    etcd = subject_kinds()["etcd"].describe_runtime()
    release = _version(["/usr/bin/etcd", "--version"], r"etcd Version:\s*(\S+)")
    assert etcd.ready and etcd.deploys
    assert etcd.summary.startswith(f"etcd {release} (/usr/bin/etcd, from OPERATOR_CONSOLE_ETCD_BIN")

    missing = tmp_path / "no-etcd-here"
    monkeypatch.setenv("OPERATOR_CONSOLE_ETCD_BIN", str(missing))
    broken = subject_kinds()["etcd"].describe_runtime()
    assert not broken.ready and broken.deploys
    assert f"{missing} is not an executable file" in broken.summary
    assert "apt-get install etcd-server" in broken.summary  # the fix is named


def test_the_rate_limiter_names_the_valkey_release_its_store_runs() -> None:
    described = subject_kinds()["ratelimiter"].describe_runtime()
    release = _version([valkey_server_path(), "--version"], r"v=(\S+)")
    assert described.ready and f"valkey-server {release}" in described.summary
