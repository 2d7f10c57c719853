"""Helpers for the etcd subject's tests: a deployed lab, observing until something shows,
putting the cluster back whole, and asking the rules brain."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from operator_console.agent.base import BrainResult, Step, StepKind
from operator_console.agent.rules import RulesBrain
from operator_console.contract import Deployment, TicketContext
from operator_console.domain import Observation, Violation
from operator_console.lab.etcd.binary import EtcdBinaryError, find_etcd
from operator_console.lab.etcd.client import EtcdError
from operator_console.lab.etcd.cluster import EtcdCluster
from operator_console.subjects.etcd import EtcdKind
from operator_console.subjects.etcd.invariants import SplitLeaders
from operator_console.subjects.etcd.kit import EtcdAgentKit
from operator_console.subjects.etcd.lab import EtcdLab
from operator_console.subjects.etcd.state import EtcdState


def etcd_or_skip() -> None:
    try:
        find_etcd()
    except EtcdBinaryError as exc:
        pytest.skip(str(exc))


@dataclass
class Etcd:
    """One deployed etcd lab with its workload, and every observation a test made of it."""

    deployment: Deployment
    seen: list[Observation] = field(default_factory=list)

    @property
    def lab(self) -> EtcdLab:
        assert isinstance(self.deployment.lab, EtcdLab)
        return self.deployment.lab

    @property
    def cluster(self) -> EtcdCluster:
        return self.lab.cluster

    @property
    def kit(self) -> EtcdAgentKit:
        assert isinstance(self.deployment.agent, EtcdAgentKit)
        return self.deployment.agent

    async def observe(self) -> Observation:
        observation = await self.deployment.subject.observe()
        self.seen.append(observation)
        return observation

    def violations(self, observation: Observation, invariant: str) -> list[Violation]:
        for inv in self.deployment.subject.invariants:
            if inv.name == invariant:
                return inv.check(observation)
        raise KeyError(invariant)

    async def until(
        self,
        probe: Callable[[Observation], Any],
        what: str,
        timeout: float = 20.0,
        every: float = 0.5,
    ) -> tuple[Observation, Any]:
        """Observe until `probe` returns something truthy; that and the observation."""
        deadline = time.monotonic() + timeout
        last: Observation | None = None
        while time.monotonic() < deadline:
            last = await self.observe()
            found = probe(last)
            if found:
                return last, found
            await asyncio.sleep(every)
        summary = last.state.summary() if last is not None else "no observation"
        raise AssertionError(f"timed out waiting for: {what}; last: {summary}")

    async def fired(
        self, invariant: str, target: str | None = None, timeout: float = 20.0
    ) -> tuple[Observation, Violation]:
        def probe(observation: Observation) -> Violation | None:
            hits = self.violations(observation, invariant)
            return next((v for v in hits if target is None or v.target == target), None)

        observation, violation = await self.until(probe, f"{invariant} on {target}", timeout)
        return observation, violation

    async def leader(self) -> str:
        _observation, leader = await self.until(
            lambda o: o.state.leader if _whole(o) else None, "one leader that all follow"
        )
        return str(leader)

    async def restore(self) -> None:
        """Every link clean, every member running, no alarm, one leader all follow."""
        cluster = self.cluster
        cluster.peer_links.restore()
        down = []
        for name in cluster.member_names:
            status = cluster.member_status(name)
            if status == "paused":
                cluster.resume_member(name)
            elif status != "running":
                down.append(name)
        await asyncio.gather(*(cluster.restart_member(n) for n in down))
        try:
            raised = await cluster.client("member-1").alarms(timeout=5.0)
        except EtcdError:
            raised = []
        if raised:  # the NOSPACE chain's steps, one after the other
            catalog = self.kit.actions
            for step in catalog.plan("recover_nospace", {}).steps:
                await step.spec.run(step.params)
        await self.until(_whole, "every member answers and follows one leader", timeout=30.0)

    def investigate_ticket(self, invariant: str, target: str, **details: Any) -> TicketContext:
        return TicketContext(
            ticket_id=7,
            subject="etcd",
            invariant=invariant,
            target=target,
            severity="critical",
            message=f"{invariant} on {target}",
            details=details,
            runbook=self.kit.runbook,
            subject_context=self.kit.context,
        )

    async def investigate(self, invariant: str, target: str, **details: Any) -> BrainResult:
        steps: list[Step] = []
        ticket = self.investigate_ticket(invariant, target, **details)
        result = await RulesBrain(self.kit.hypotheses).investigate(
            ticket, self.kit.toolbox(), steps.append
        )
        assert result.diagnosis is not None
        diagnosis = result.diagnosis
        assert diagnosis.alternatives, "every ticket weighs more than one explanation"
        results = {s.tool_use_id for s in result.steps if s.kind is StepKind.TOOL_RESULT}
        for item in diagnosis.evidence:
            assert item.tool_use_id in results, item  # every claim cites a tool result
        return result

    def split_leaders_seen(self) -> list[Violation]:
        """split_leaders over every observation this lab made: it must never fire."""
        check = SplitLeaders()
        return [v for observation in self.seen for v in check.check(observation)]


def _whole(observation: Observation) -> bool:
    state = observation.state
    if not isinstance(state, EtcdState) or not state.leader:
        return False
    return all(m.status_ok and m.leader == state.leader for m in state.members.values())


def recommended(result: BrainResult) -> tuple[str, dict[str, Any]] | None:
    diagnosis = result.diagnosis
    assert diagnosis is not None
    if not diagnosis.recommended:
        return None
    assert len(diagnosis.recommended) == 1, diagnosis
    action = diagnosis.recommended[0]
    return action.action, action.params


async def deployed(
    run_dir: Path, topology: dict[str, Any], workload: dict[str, Any] | None
) -> AsyncIterator[Etcd]:
    etcd_or_skip()
    deployment = EtcdKind().deploy(topology, workload, run_dir, lambda _sample: None)
    await deployment.lab.start()
    try:
        if deployment.workload is not None:
            await deployment.workload.start()
        yield Etcd(deployment)
    finally:
        if deployment.workload is not None:
            await deployment.workload.stop()
        await deployment.subject.close()
        await deployment.lab.stop()
