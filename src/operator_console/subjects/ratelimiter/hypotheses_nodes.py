"""The runbook for a node or the store that stops answering: died, paused, cut off."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from operator_console.contract import (
    Assessment,
    Finding,
    Probe,
    Results,
    TicketContext,
    Verdict,
    explain,
    need,
    reject,
)
from operator_console.contract import finding as _f
from operator_console.subjects.ratelimiter.probes import (
    DEAD,
    STORE,
    STORE_DETAIL,
    _Hypothesis,
    log_tail,
    node_detail,
)

# ------------------------------------------------------------------------------ node_down


def _down_node(ticket: TicketContext, results: Results) -> tuple[dict[str, Any], list[Finding]]:
    probe = node_detail(ticket.target)
    d = need(results, probe)
    if d["reachable"]:
        raise Verdict(reject(f"{ticket.target} answers its health endpoint now"))
    findings = [_f(f"{ticket.target}'s health endpoint: {d['error']}", probe, error=d["error"])]
    if d["process"] is not None:
        claim = f"the supervisor reports {ticket.target}'s process {d['process']}"
        findings.insert(0, _f(claim, probe, process=d["process"]))
    return d, findings


class NodeProcessDied(_Hypothesis):
    name = "process_died"
    description = "the node's process was killed or crashed, so nothing answers on its port"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [node_detail(ticket.target), log_tail(ticket.target)]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        node = ticket.target
        d, findings = _down_node(ticket, results)
        log = results.get(log_tail(node))
        if isinstance(log, dict) and log.get("lines"):
            last = str(log["lines"][-1])[:160]
            findings.append(_f(f"{node}'s log ends with: {last}", log_tail(node), last=last))
        if d["process"] in DEAD:
            why = f"{node}'s process is {d['process']}; starting it again brings it back"
            return self.fix(1.0, findings, "restart_node", {"node": node}, why)
        if d["process"] == "running" and d["error"] == "connection refused":
            why = f"{node} refuses connections although its process exists"
            return self.fix(0.7, findings, "restart_node", {"node": node}, why)
        if d["process"] is None and d["error"] == "connection refused":
            # Attached: no process to look at, but nothing listens on the node's port.
            why = f"nothing listens on {node}'s port: its process is gone; start it again"
            return self.fix(0.8, findings, "restart_node", {"node": node}, why)
        return reject(f"{node}'s process is {d['process']}, not dead ({d['error']})")


class NodeProcessPaused(_Hypothesis):
    name = "process_paused"
    description = "the node's process is stopped (SIGSTOP) or hung: port open, no answers"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [node_detail(ticket.target)]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        node = ticket.target
        d, findings = _down_node(ticket, results)
        if d["process"] == "paused":
            why = f"{node} is SIGSTOPped; SIGCONT lets it answer again"
            return self.fix(1.0, findings, "resume_node", {"node": node}, why)
        if d["process"] == "running" and str(d["error"]).startswith("timed out"):
            why = f"{node} runs but times out: a hung process does not resume, restart it"
            return self.fix(0.6, findings, "restart_node", {"node": node}, why)
        return reject(f"{node}'s process is {d['process']} and its health check: {d['error']}")


class NodeNetworkPartition(_Hypothesis):
    name = "network_partition"
    description = "a network fault between the console and the node while its process runs"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [node_detail(ticket.target)]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        d, findings = _down_node(ticket, results)
        if d["process"] != "running":
            return reject(
                f"{ticket.target}'s process is {d['process']}: it is not serving at all, "
                "so no network fault is needed to explain it"
            )
        return explain(0.3, findings)


# ---------------------------------------------------------------------- store_unreachable


def _silent_store(results: Results) -> tuple[dict[str, Any], list[Finding]]:
    s = need(results, STORE_DETAIL)
    if s["reachable"]:
        raise Verdict(reject("the store answers the console, so its process is serving"))
    findings = [
        _f(
            f"the supervisor reports the store process {s['process']}",
            STORE_DETAIL,
            process=s["process"],
        ),
        _f(f"the console cannot read the store: {s['error']}", STORE_DETAIL, error=s["error"]),
    ]
    if s.get("nodes_cut_off"):
        cut = s["nodes_cut_off"]
        claim = f"nodes reporting the store unreachable: {', '.join(cut)}"
        findings.append(_f(claim, STORE_DETAIL, nodes_cut_off=cut))
    return s, findings


class _StoreProcess(_Hypothesis):
    """The store process itself: it must not answer, and it must be in `states`."""

    states: tuple[str, ...] = ()
    score = 1.0
    action = ""
    why = ""

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [STORE_DETAIL, log_tail(STORE)] if ticket.target == STORE else [STORE_DETAIL]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        s, findings = _silent_store(results)
        if s["process"] not in self.states:
            return reject(f"the store process is {s['process']}, not {'/'.join(self.states)}")
        return self.fix(self.score, findings, self.action, {}, self.why)


class StorePaused(_StoreProcess):
    name = "store_paused"
    description = "the store process is stopped (SIGSTOP): it holds its port and answers nothing"
    states = ("paused",)
    action = "resume_store"
    why = "the store is SIGSTOPped; SIGCONT lets it answer again"


class StoreDead(_StoreProcess):
    name = "store_dead"
    description = "the store process was killed or exited"
    states = DEAD
    action = "restart_store"
    why = "the store process is gone; start it again (it comes back empty)"


class StoreHung(_StoreProcess):
    name = "store_hung"
    description = "the store process runs but does not answer (hung or overloaded)"
    states = ("running",)
    score = 0.4
    action = "restart_store"
    why = "the store runs but does not answer; a restart is the way out"


def _link_probes(ticket: TicketContext) -> list[Probe]:
    return [STORE_DETAIL] if ticket.target == STORE else [STORE_DETAIL, node_detail(ticket.target)]


def _node_link(ticket: TicketContext, results: Results) -> tuple[dict[str, Any], dict[str, Any]]:
    """The node's detail and link, when the ticket is on a node and the store answers."""
    s = need(results, STORE_DETAIL)
    if not s["reachable"]:
        raise Verdict(reject("the console cannot reach the store either: not one node's path"))
    if ticket.target == STORE:
        raise Verdict(reject("the store answers the console and the ticket names no node"))
    d = need(results, node_detail(ticket.target))
    return d, dict(d.get("link") or {})


class NodeStoreLink(_Hypothesis):
    name = "node_store_link"
    description = "the node's link to the store is cut or slow, while the store itself answers"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return _link_probes(ticket)

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        node, probe = ticket.target, node_detail(ticket.target)
        d, link = _node_link(ticket, results)
        findings = [
            _f("the store answers the console", STORE_DETAIL, reachable=True),
            _f(
                f"{node}'s link to the store: cut={link.get('cut')}, latency "
                f"{link.get('latency_ms')} ms",
                probe,
                link=link,
            ),
        ]
        if d.get("store_error"):
            findings.append(_f(f"{node} reports: {d['store_error']}", probe, store_error=True))
        why = f"{node} cannot use the store over its link; send its traffic to the other nodes"
        if link.get("cut"):
            return self.fix(1.0, findings, "drain_node", {"node": node}, why)
        if (link.get("latency_ms") or 0) > 0:
            return self.fix(0.8, findings, "drain_node", {"node": node}, why)
        return reject(f"{node}'s link to the store is clean (not cut, no added latency)")


class NodeStoreConnection(_Hypothesis):
    name = "node_store_connection"
    description = "the node lost its own store connection although link and store are fine"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return _link_probes(ticket)

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        node = ticket.target
        d, link = _node_link(ticket, results)
        if link.get("cut") or (link.get("latency_ms") or 0) > 0:
            return reject(f"{node}'s link is faulty, which explains it better")
        if d.get("store_reachable") is not False:
            return reject(f"{node} reaches the store now")
        claim = f"{node} reports {d['store_error']} over a clean link"
        findings = [_f(claim, node_detail(node), store_error=d["store_error"])]
        return self.fix(0.4, findings, "restart_node", {"node": node}, "a new process reconnects")
