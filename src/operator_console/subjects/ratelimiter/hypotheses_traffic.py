"""The runbook for what the clients see: keys over their limit, stale configs, slow or failing
nodes, sources that stop answering."""

from __future__ import annotations

import statistics
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
    CLOCK_TOLERANCE_MS,
    DEFAULT_SLO_MS,
    OBSERVE,
    SLOW_STORE_PING_MS,
    STORE_DETAIL,
    _Hypothesis,
    node_detail,
    node_metrics,
)

# ----------------------------------------------------------------------------- over_limit


def _key_findings(key: str, o: dict[str, Any]) -> list[Finding]:
    truth = (o.get("keys") or {}).get(key)
    if not truth:
        return []
    claim = (
        f"clients were allowed {truth['allowed_in_window']} requests for {key} in the last "
        f"{truth['window_ms']} ms window, limit {truth['limit']}"
    )
    return [_f(claim, OBSERVE, **{key: truth})]


def _clock_deviation(offsets: dict[str, float]) -> dict[str, float]:
    """How far each node's heartbeat clock is from the median of the other nodes' clocks."""
    if len(offsets) < 2:
        return {}
    return {
        n: off - statistics.median(v for m, v in offsets.items() if m != n)
        for n, off in offsets.items()
    }


class ClockSkew(_Hypothesis):
    name = "clock_skew"
    description = "a node's clock is skewed, so its window trims drop the other nodes' entries"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        nodes: dict[str, Any] = need(results, OBSERVE)["nodes"]
        skews = {
            n: v["failpoints"]["clock_skew_ms"]
            for n, v in nodes.items()
            if (v.get("failpoints") or {}).get("clock_skew_ms")
        }
        offsets = {
            n: v["clock_offset_ms"]
            for n, v in nodes.items()
            if v.get("clock_offset_ms") is not None
        }
        if skews:
            node = max(skews, key=lambda n: abs(skews[n]))
            claim = f"{node}'s clock_skew_ms failpoint is {skews[node]} ms"
            findings = [_f(claim, OBSERVE, node=node, failpoints=nodes[node]["failpoints"])]
            ahead = _clock_deviation(offsets).get(node, 0.0)
            if abs(ahead) > CLOCK_TOLERANCE_MS:
                claim = f"{node}'s heartbeat clock is {ahead:.0f} ms off the other nodes'"
                findings.append(_f(claim, OBSERVE, clock_offset_ms=offsets))
            findings += _key_findings(ticket.target, need(results, OBSERVE))
            params = {"node": node, "name": "clock_skew_ms"}
            why = f"put {node}'s clock back so every node trims the same window"
            return self.fix(1.0, findings, "clear_failpoint", params, why)
        deviation = _clock_deviation(offsets)
        if deviation:
            node = max(deviation, key=lambda n: abs(deviation[n]))
            if abs(deviation[node]) > CLOCK_TOLERANCE_MS:
                claim = (
                    f"{node}'s heartbeat clock is {deviation[node]:.0f} ms off the other nodes' "
                    "with no clock_skew_ms failpoint set: the host clock itself is off"
                )
                return explain(0.6, [_f(claim, OBSERVE, clock_offset_ms=offsets)])
        return reject(
            "no node's clock is off: clock_skew_ms is 0 on every node and the heartbeat "
            f"clocks agree within {CLOCK_TOLERANCE_MS} ms"
        )


class FailOpen(_Hypothesis):
    name = "fail_open"
    description = "nodes fail open because they cannot reach the store, so checks pass unsynced"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        o = need(results, OBSERVE)
        store = o["store"]
        cut_off = sorted(
            n
            for n, v in o["nodes"].items()
            if v.get("store_reachable") is False and v.get("fail_mode") != "closed"
        )
        if store["reachable"] and not cut_off:
            return reject("the store answers the console and every node reaches it")
        findings = _key_findings(ticket.target, o)
        if not store["reachable"]:
            claim = f"the store does not answer: {store['error']}"
            findings.append(_f(claim, OBSERVE, store={"state": store["state"]}))
        if cut_off:
            claim = f"nodes failing open without the store: {', '.join(cut_off)}"
            findings.append(_f(claim, OBSERVE, nodes=cut_off))
        # The store_unreachable ticket carries the fix; acting on the key would hide the cause.
        return explain(0.8, findings)


class StaleLimit(_Hypothesis):
    name = "stale_limit"
    description = "a node runs a stale config and still enforces an older, higher limit"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        o = need(results, OBSERVE)
        key, version = ticket.target, o["store"]["config_version"]
        if not o["store"]["reachable"]:
            return reject("the store does not answer, so no node can be compared with it")
        stale: dict[str, float] = {}
        for name, view in o["nodes"].items():
            diff = (view.get("limits_differing") or {}).get(key)
            if not view["reachable"]:
                continue
            if diff is not None and (diff["node"] is None or diff["node"] > diff["store"]):
                stale[name] = 1.0
            elif view["config_version"] != version:
                stale[name] = 0.5
        if not stale:
            return reject(f"every node runs the store's config v{version} and its limits")
        node = max(stale, key=lambda n: stale[n])
        view = o["nodes"][node]
        differing = view.get("limits_differing") or {}
        claim = (
            f"{node} runs config v{view['config_version']} (store v{version}); "
            f"limits that differ: {differing or 'none'}"
        )
        findings = [_f(claim, OBSERVE, config_version=view["config_version"], store=version)]
        findings += _key_findings(key, o)
        if view["failpoints"].get("config_refresh_stuck"):
            claim = f"{node}'s config_refresh_stuck failpoint is on"
            findings.append(_f(claim, OBSERVE, failpoints=view["failpoints"]))
            params = {"node": node, "name": "config_refresh_stuck"}
            why = f"unstick {node}'s refresh so it loads the store's limits"
            return self.fix(0.9 * stale[node], findings, "clear_failpoint", params, why)
        why = f"make {node} load the store's current limits"
        return self.fix(0.7 * stale[node], findings, "reload_config", {"node": node}, why)


# --------------------------------------------------------------------------- config_drift


def _drifted_node(ticket: TicketContext, results: Results) -> tuple[dict[str, Any], list[Finding]]:
    node, probe = ticket.target, node_detail(ticket.target)
    d = need(results, probe)
    if not d["reachable"]:
        raise Verdict(reject(f"{node} does not answer at all (node_down covers that)"))
    mine, store = d["config_version"], d["store_config_version"]
    if not d["store_reachable_from_console"] or (mine == store and not d["limits_differing"]):
        raise Verdict(reject(f"{node} runs the store's config v{store}"))
    findings = [
        _f(f"{node} runs config v{mine}, the store has v{store}", probe, node=mine, store=store)
    ]
    if d["limits_differing"]:
        claim = f"limits that differ on {node}: {d['limits_differing']}"
        findings.append(_f(claim, probe, limits_differing=d["limits_differing"]))
    if d.get("config_age_s") is not None:
        every = d.get("config_refresh_s")
        claim = f"{node} last refreshed its config {d['config_age_s']:.1f} s ago" + (
            f" (it refreshes every {every:g} s)" if every is not None else ""
        )
        findings.append(_f(claim, probe, config_age_s=d["config_age_s"]))
    return d, findings


class _Drift(_Hypothesis):
    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [node_detail(ticket.target)]


class RefreshStuck(_Drift):
    name = "refresh_stuck"
    description = "the node's config refresh is stuck, so it never loads the store's new limits"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        node = ticket.target
        d, findings = _drifted_node(ticket, results)
        if not d["failpoints"].get("config_refresh_stuck"):
            return reject(f"{node}'s config_refresh_stuck failpoint is off")
        claim = f"{node}'s config_refresh_stuck failpoint is on"
        findings.insert(0, _f(claim, node_detail(node), failpoints=d["failpoints"]))
        params = {"node": node, "name": "config_refresh_stuck"}
        why = f"unstick {node}'s refresh and reload its limits"
        return self.fix(1.0, findings, "clear_failpoint", params, why)


class RefreshLagging(_Drift):
    name = "refresh_lagging"
    description = "the node's refresh lags behind a recent limit change"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        node = ticket.target
        d, findings = _drifted_node(ticket, results)
        if d["failpoints"].get("config_refresh_stuck"):
            return reject(
                f"{node}'s refresh is stuck, not lagging: a reload would catch up once and "
                "miss the next change"
            )
        if d.get("store_reachable") is False:
            return reject(f"{node} cannot reach the store, so a reload cannot work")
        why = f"make {node} load the store's current limits now"
        return self.fix(0.6, findings, "reload_config", {"node": node}, why)


class DriftCutOff(_Drift):
    name = "drift_cut_off"
    description = "the node cannot reach the store, so it cannot refresh its config"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        d, findings = _drifted_node(ticket, results)
        if d.get("store_reachable") is not False:
            return reject(f"{ticket.target} reaches the store")
        claim = f"{ticket.target} reports {d['store_error']}"
        return explain(0.7, [_f(claim, node_detail(ticket.target)), *findings])


# ------------------------------------------------------------------- latency and errors


def _client_p99(o: dict[str, Any]) -> dict[str, float]:
    """p99 per node in rotation that answered something, by the clients' own clock."""
    per_node = (o.get("clients") or {}).get("per_node") or {}
    return {
        name: stats["p99_ms"]
        for name, stats in per_node.items()
        if stats.get("p99_ms") is not None
        and not o["nodes"].get(name, {}).get("drained")
        and stats.get("allowed", 0) + stats.get("denied", 0) > 0
    }


class SlowLink(_Hypothesis):
    name = "slow_link"
    description = "the node's link to the store is slow, and every check on it pays the delay"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [node_detail(ticket.target), OBSERVE]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        node, probe = ticket.target, node_detail(ticket.target)
        d, o = need(results, probe), need(results, OBSERVE)
        link = d.get("link") or {}
        p99 = _client_p99(o)
        findings = []
        if node in p99:
            others = ", ".join(f"{n} {v:.0f} ms" for n, v in p99.items() if n != node)
            claim = f"clients see {node} at p99 {p99[node]:.0f} ms, the others at {others}"
            findings.append(_f(claim, OBSERVE, p99_ms=p99))
        why = f"send traffic to the nodes with a fast link to the store while {node}'s is slow"
        if (link.get("latency_ms") or 0) > 0:
            claim = f"{node}'s link to the store adds {link['latency_ms']:g} ms each way"
            findings.insert(0, _f(claim, probe, link=link))
            return self.fix(1.0, findings, "drain_node", {"node": node}, why)
        pings = {n: v["health_latency_ms"] for n, v in o["nodes"].items() if v["health_latency_ms"]}
        mine = pings.get(node, 0.0)
        others_max = max((v for n, v in pings.items() if n != node), default=None)
        if others_max is not None and mine > SLOW_STORE_PING_MS and mine > 3 * others_max:
            claim = (
                f"{node}'s health check (which pings the store) takes {mine:.0f} ms, "
                f"the other nodes' at most {others_max:.0f} ms"
            )
            findings.insert(0, _f(claim, OBSERVE, health_latency_ms=pings))
            return self.fix(0.6, findings, "drain_node", {"node": node}, why)
        return reject(f"{node}'s link adds no latency and its store ping matches the others'")


class StoreSlow(_Hypothesis):
    name = "store_slow"
    description = "the store itself is slow, so every node is slow"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [OBSERVE, STORE_DETAIL]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        slo = float(ticket.details.get("slo_ms") or DEFAULT_SLO_MS)
        p99 = _client_p99(need(results, OBSERVE))
        slow = sorted(n for n, v in p99.items() if v > slo)
        fast = sorted(n for n, v in p99.items() if v <= slo)
        if not slow:
            return reject(f"no node in rotation is over the {slo:.0f} ms SLO now")
        if fast or len(p99) < 2:
            return reject(
                f"only {', '.join(slow)} over the SLO while {', '.join(fast) or 'no other node'} "
                "stays fast through the same store"
            )
        findings = [_f(f"every node in rotation is over the {slo:.0f} ms SLO", OBSERVE, p99=p99)]
        s = results.get(STORE_DETAIL)
        if isinstance(s, dict):
            claim = f"the console reads the store in {s['latency_ms']} ms"
            findings.append(_f(claim, STORE_DETAIL, latency_ms=s["latency_ms"]))
        # Draining cannot help when every node shares the slow store: a person must look.
        return explain(0.8, findings)


DEGRADED_ERROR_SHARE = 0.05  # the error_rate invariant's default budget


class NodeDegraded(_Hypothesis):
    name = "node_degraded"
    description = "the node is degraded and fails requests the other nodes serve"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [node_detail(ticket.target), node_metrics(ticket.target), OBSERVE]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        node, probe = ticket.target, node_detail(ticket.target)
        d, o = need(results, probe), need(results, OBSERVE)
        if not d["reachable"]:
            return reject(f"{node} does not answer at all (node_down covers that)")
        per_node = (o.get("clients") or {}).get("per_node") or {}
        errors = {n: s.get("errors", 0) for n, s in per_node.items()}
        mine, others = errors.get(node, 0), sum(v for n, v in errors.items() if n != node)
        findings = []
        if d["healthy"] is False:
            claim = (
                f"{node} reports itself unhealthy: store_reachable={d['store_reachable']}, "
                f"config_fresh={d['config_fresh']}"
            )
            findings.append(_f(claim, probe, healthy=False, store_error=d["store_error"]))
        if mine:
            claim = f"clients saw {mine} errors from {node}, {others} from the other nodes"
            findings.append(_f(claim, OBSERVE, errors=errors))
        m = results.get(node_metrics(node))
        if isinstance(m, dict) and m.get("reachable"):
            claim = f"{node}'s metrics: checks {m['checks']}, store errors {m['store_errors']}"
            findings.append(_f(claim, node_metrics(node), store_errors=m["store_errors"]))
        why = f"send traffic to the healthy nodes while {node} fails requests"
        if d["healthy"] is False:
            return self.fix(1.0 if mine else 0.7, findings, "drain_node", {"node": node}, why)
        mine_stats = per_node.get(node) or {}
        sent = sum(int(mine_stats.get(k) or 0) for k in ("allowed", "denied", "errors"))
        # A stray timeout is not a degraded node: it must fail a real share of its requests.
        failing = sent > 0 and mine / sent >= DEGRADED_ERROR_SHARE
        if failing and mine > 3 * others:
            return self.fix(0.6, findings, "drain_node", {"node": node}, why)
        return reject(
            f"{node} is healthy; clients saw {mine} errors in {sent} requests to it, "
            f"{others} elsewhere"
        )


class ClusterWideErrors(_Hypothesis):
    name = "cluster_wide_errors"
    description = "the store is unreachable and nodes fail closed, so every node fails requests"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        store = need(results, OBSERVE)["store"]
        if store["reachable"]:
            return reject("the store answers the console, so the outage is not cluster-wide")
        claim = f"the store does not answer: {store['error']}"
        return explain(0.7, [_f(claim, OBSERVE, store={"state": store["state"]})])


# --------------------------------------------------------------------- observation_failed


class SourceFailing(_Hypothesis):
    name = "source_failing"
    description = "a source the console reads keeps failing while the rest of the system answers"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        failed = {s["name"]: s for s in need(results, OBSERVE)["failed_sources"]}
        source = failed.get(ticket.target)
        if source is None:
            return reject(f"{ticket.target} answers now")
        claim = f"{ticket.target} still fails: {source['state']} ({source['reason']})"
        return explain(0.8, [_f(claim, OBSERVE, **source)])


class SourceRecovered(_Hypothesis):
    name = "source_recovered"
    description = "a transient failure: the source answers again"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        failed = {s["name"]: s for s in need(results, OBSERVE)["failed_sources"]}
        if ticket.target in failed:
            return reject(f"{ticket.target} still fails: {failed[ticket.target]['reason']}")
        claim = f"{ticket.target} is not among the failed sources"
        return explain(0.4, [_f(claim, OBSERVE, failed_sources=sorted(failed))])
