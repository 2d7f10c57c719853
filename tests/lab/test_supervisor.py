"""The supervisor starts children with readiness, signals whole groups and leaves no orphan."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from operator_console.lab.ports import free_port, free_ports
from operator_console.lab.supervisor import (
    ProcessStartError,
    Supervisor,
    SupervisorError,
    UnknownProcessError,
)

PY = sys.executable


def gone(pid: int) -> bool:
    """True when the pid no longer runs (a zombie awaiting its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: list[int], timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if not gone(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if not gone(p)]
    return alive


def descendants(pid: int) -> list[int]:
    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


async def wait_for_children(pid: int, count: int, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = descendants(pid)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"pid {pid} did not spawn {count} children")


@pytest.fixture
async def supervisor(tmp_path: Path):
    sup = Supervisor(tmp_path)
    yield sup
    sup.kill_all()


def test_free_port_is_bindable_and_free_ports_are_distinct() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    ports = free_ports(5)
    assert len(set(ports)) == 5


def test_free_ports_stay_below_the_kernels_ephemeral_range() -> None:
    """A restarted node rebinds its port; an outgoing socket must never have taken it."""
    from pathlib import Path

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(20000 <= port < low for port in free_ports(50))


async def test_start_waits_for_readiness_and_logs_output(supervisor: Supervisor, tmp_path: Path):
    marker = tmp_path / "ready.flag"
    script = (
        "import time, pathlib; print('booting', flush=True); time.sleep(0.3); "
        f"pathlib.Path({str(marker)!r}).touch(); time.sleep(60)"
    )

    async def ready() -> bool:
        return marker.exists()

    proc = await supervisor.start("svc", [PY, "-c", script], ready=ready, timeout=10)
    assert marker.exists()
    assert supervisor.status("svc") == "running"
    assert supervisor.pid("svc") == proc.pid
    assert supervisor.names() == ["svc"]
    assert not gone(proc.pid)
    assert os.getpgid(proc.pid) == proc.pid  # its own process group
    assert supervisor.log_path("svc") == tmp_path / "logs" / "svc.log"
    assert "booting" in supervisor.log_path("svc").read_text()


async def test_exit_before_ready_names_process_reason_and_log_tail(supervisor: Supervisor):
    script = "import sys\nfor i in range(30): print(f'line {i}')\nsys.exit('config missing')"

    async def never() -> bool:
        return False

    with pytest.raises(ProcessStartError) as info:
        await supervisor.start("broken", [PY, "-c", script], ready=never, timeout=10)
    message = str(info.value)
    assert "'broken'" in message
    assert "exited with code 1" in message
    assert "config missing" in message
    assert "line 29" in message and "line 5" not in message  # only the tail
    assert supervisor.status("broken") == "exited"


async def test_readiness_timeout_kills_the_process(supervisor: Supervisor):
    async def never() -> bool:
        return False

    started = time.monotonic()
    with pytest.raises(ProcessStartError, match=r"'slow'.*not ready within 0.5 s"):
        await supervisor.start("slow", ["sleep", "60"], ready=never, timeout=0.5)
    assert time.monotonic() - started < 5
    assert supervisor.status("slow") == "killed"
    assert wait_gone([supervisor.pid("slow")]) == []


async def test_readiness_check_that_raises_counts_as_not_ready(supervisor: Supervisor):
    async def boom() -> bool:
        raise ConnectionRefusedError("nope")

    with pytest.raises(ProcessStartError, match="not ready"):
        await supervisor.start("raises", ["sleep", "60"], ready=boom, timeout=0.3)


async def test_missing_binary_is_a_start_error(supervisor: Supervisor):
    with pytest.raises(ProcessStartError, match="cannot execute"):
        await supervisor.start("ghost", ["/nonexistent/binary"])


async def test_starting_a_running_name_twice_is_refused(supervisor: Supervisor):
    await supervisor.start("one", ["sleep", "60"])
    with pytest.raises(SupervisorError, match="already running"):
        await supervisor.start("one", ["sleep", "60"])


async def test_unknown_name_is_a_lookup_error(supervisor: Supervisor):
    with pytest.raises(UnknownProcessError, match="nobody"):
        supervisor.status("nobody")


async def test_pause_and_resume_stop_and_continue_the_whole_group(supervisor: Supervisor):
    proc = await supervisor.start("grp", ["sh", "-c", "sleep 60 & sleep 60 & wait"])
    kids = await wait_for_children(proc.pid, 2)
    supervisor.pause("grp")
    assert supervisor.status("grp") == "paused"
    await asyncio.sleep(0.2)
    for pid in [proc.pid, *kids]:
        assert psutil.Process(pid).status() == psutil.STATUS_STOPPED
    supervisor.resume("grp")
    assert supervisor.status("grp") == "running"
    await asyncio.sleep(0.2)
    for pid in [proc.pid, *kids]:
        assert psutil.Process(pid).status() != psutil.STATUS_STOPPED


async def test_a_process_stopped_or_continued_from_outside_reads_as_it_is(
    supervisor: Supervisor,
) -> None:
    """The status is the kernel's: `kill -STOP` by someone else is paused, `kill -CONT` running."""
    proc = await supervisor.start("outside", ["sleep", "60"])
    os.kill(proc.pid, signal.SIGSTOP)
    await wait_until(lambda: psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED)
    assert supervisor.status("outside") == "paused"
    os.kill(proc.pid, signal.SIGCONT)
    await wait_until(lambda: psutil.Process(proc.pid).status() != psutil.STATUS_STOPPED)
    assert supervisor.status("outside") == "running"


async def wait_until(probe: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_kill_sigkills_the_group_and_reaps(supervisor: Supervisor):
    proc = await supervisor.start("victim", ["sh", "-c", "sleep 60 & wait"])
    kids = await wait_for_children(proc.pid, 1)
    supervisor.kill("victim")
    assert supervisor.status("victim") == "killed"
    assert proc.popen.returncode == -signal.SIGKILL
    assert wait_gone([proc.pid, *kids]) == []


async def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(supervisor: Supervisor):
    script = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(60)"
    )
    proc = await supervisor.start("stubborn", [PY, "-c", script])
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await supervisor.stop("stubborn", timeout=0.5)
    assert 0.4 < time.monotonic() - started < 4
    assert supervisor.status("stubborn") == "stopped"
    assert proc.popen.returncode == -signal.SIGKILL


async def test_stop_of_a_paused_process_resumes_it_so_sigterm_lands(supervisor: Supervisor):
    proc = await supervisor.start("sleepy", ["sleep", "60"])
    supervisor.pause("sleepy")
    await supervisor.stop("sleepy", timeout=3)
    assert supervisor.status("sleepy") == "stopped"
    assert proc.popen.returncode == -signal.SIGTERM


async def test_restart_runs_the_same_command_again(supervisor: Supervisor, tmp_path: Path):
    counter = tmp_path / "count"
    script = (
        f"import pathlib, time; p = pathlib.Path({str(counter)!r}); "
        "p.write_text(str(int(p.read_text()) + 1) if p.exists() else '1'); time.sleep(60)"
    )

    async def ready() -> bool:
        return counter.exists()

    first = await supervisor.start("again", [PY, "-c", script], ready=ready)
    first_pid = first.pid
    second = await supervisor.restart("again")
    assert second.pid != first_pid
    assert gone(first_pid)
    assert supervisor.status("again") == "running"
    await asyncio.sleep(0.3)
    assert counter.read_text() == "2"
    supervisor.kill("again")
    third = await supervisor.restart("again")  # a killed process starts again too
    assert supervisor.status("again") == "running" and third.pid != second.pid


async def test_process_that_exits_on_its_own_reports_exited(supervisor: Supervisor):
    await supervisor.start("brief", ["sh", "-c", "sleep 0.2"])
    await asyncio.sleep(0.6)
    assert supervisor.status("brief") == "exited"


async def test_stop_all_reaps_every_descendant_even_escaped_ones(supervisor: Supervisor):
    escaper = textwrap.dedent(
        """
        import subprocess, time
        subprocess.Popen(["sleep", "60"], start_new_session=True)
        subprocess.Popen(["sleep", "60"])
        time.sleep(60)
        """
    )
    a = await supervisor.start("a", [PY, "-c", escaper])
    b = await supervisor.start("b", ["sh", "-c", "sleep 60 & sleep 60 & wait"])
    c = await supervisor.start("c", ["sleep", "60"])
    supervisor.pause("c")
    pids = [a.pid, b.pid, c.pid]
    pids += await wait_for_children(a.pid, 2)
    pids += await wait_for_children(b.pid, 2)
    await supervisor.stop_all(timeout=2)
    assert wait_gone(pids) == []
    assert {supervisor.status(n) for n in supervisor.names()} <= {"stopped", "killed"}


async def test_kill_all_is_synchronous_and_kills_paused_groups(supervisor: Supervisor):
    one = await supervisor.start("one", ["sh", "-c", "sleep 60 & wait"])
    two = await supervisor.start("two", ["sleep", "60"])
    kids = await wait_for_children(one.pid, 1)
    supervisor.pause("one")
    supervisor.kill_all()
    assert wait_gone([one.pid, two.pid, *kids]) == []
    supervisor.kill_all()  # idempotent


def test_children_die_when_the_parent_is_sigkilled(tmp_path: Path) -> None:
    parent_script = textwrap.dedent(
        f"""
        import asyncio, sys, time
        from pathlib import Path
        from operator_console.lab.supervisor import Supervisor

        async def main():
            sup = Supervisor(Path({str(tmp_path)!r}))
            proc = await sup.start("sleeper", ["sleep", "60"])
            print(proc.pid, flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
        """
    )
    parent = subprocess.Popen([PY, "-c", parent_script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert not gone(child_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=5)
        assert wait_gone([child_pid], timeout=5) == [], "child outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
