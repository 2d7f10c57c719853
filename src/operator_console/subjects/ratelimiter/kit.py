"""The ratelimiter's agent kit: its actions, investigation tools, runbook and context."""

from __future__ import annotations

from collections.abc import Sequence

from operator_console.contract import ActionCatalog, Hypothesis, Toolbox
from operator_console.subjects.ratelimiter.backend import Backend
from operator_console.subjects.ratelimiter.runbook import hypotheses_for
from operator_console.subjects.ratelimiter.tools import ObserverGetter, build_toolbox

RUNBOOK_TEXT = """\
Rate limiter runbook. Gather evidence with the tools first; recommend an action only when the
evidence shows its cause, never because of the ticket's name alone.

node_down (target: a node)
- Process killed or crashed: node_detail shows the process killed/exited and the health check
  refused. Fix: restart_node(node).
- Process paused (SIGSTOP): the process is paused and the health check times out.
  Fix: resume_node(node). A running process that times out is hung: restart_node(node).
- A network partition only when the process runs; rule it out when it is dead or paused.

store_unreachable
- Target "store": store_detail shows the process paused -> resume_store; killed or exited ->
  restart_store (it comes back empty: limits set at runtime are lost); running but silent ->
  restart_store.
- Target a node while the store answers the console: node_detail's link is cut or adds latency
  -> drain_node(node). A clean link but a lost connection -> restart_node(node).

over_limit (target: a key)
- A skewed clock: observe shows a node's failpoints.clock_skew_ms != 0 (its heartbeat clock is
  far from the others'). Fix: clear_failpoint(node, clock_skew_ms).
- Nodes failing open because the store is unreachable: no action here; the store_unreachable
  ticket carries the fix.
- A stale node enforcing an older, higher limit (limits_differing, an older config version):
  clear_failpoint(node, config_refresh_stuck) when that failpoint is on, else reload_config(node).

config_drift (target: a node)
- Refresh stuck: failpoints.config_refresh_stuck is true and config_age_s keeps growing.
  Fix: clear_failpoint(node, config_refresh_stuck) (it also reloads the config).
- Refresh lagging: the versions differ without the failpoint. Fix: reload_config(node).
- The node cannot reach the store: no action here (store_unreachable carries it).

store_link_slow (target: a node)
- The node's own ping of the store is slow while the other nodes' are fast: its link to the
  store is slow (node_detail's link latency_ms > 0). Fix: drain_node(node) (a mitigation: the
  link stays slow; undrain_node once it is fast again).

latency_slo (target: a node)
- Slow link to the store: node_detail's link latency_ms > 0, or its store ping far slower than
  the other nodes'. Fix: drain_node(node).
- The store itself slow (every node over the SLO): no action; escalate to a person.

error_rate (target: a node)
- Node degraded (health not ok, errors concentrated on it): drain_node(node).
- Store unreachable with nodes failing closed: no action here (store_unreachable carries it).

observation_failed (target: a source)
- Diagnose only: say which source fails and why; no action.
"""


class RateLimiterAgentKit:
    """What the operator agent gets for a rate limiter cluster (an `AgentKit`)."""

    def __init__(
        self,
        backend: Backend,
        catalog: ActionCatalog,
        observe: ObserverGetter,
        *,
        about: str,
    ) -> None:
        self._backend = backend
        self._catalog = catalog
        self._observe = observe
        self._about = about

    @property
    def actions(self) -> ActionCatalog:
        return self._catalog

    @property
    def runbook(self) -> str:
        return RUNBOOK_TEXT

    @property
    def context(self) -> str:
        nodes = ", ".join(self._backend.node_names)
        lines = [
            f"A distributed sliding-window rate limiter: {len(self._backend.node_names)} nodes "
            f"({nodes}) share one Valkey store.",
            "Each node answers POST /check for a key and counts it in the store.",
            self._about,
            "",
            "Tools (read-only): " + ", ".join(spec.name for spec in self.toolbox().specs()) + ".",
            "",
            "Actions you may recommend (name(params): risk; restores):",
        ]
        for spec in self._catalog.describe():
            props = spec["params"].get("properties", {})
            params = ", ".join(props)
            restores = ", ".join(spec["restores"]) or "nothing by itself"
            kind = " A mitigation, not a fix." if spec["effect"] == "mitigate" else ""
            lines.append(
                f"- {spec['name']}({params}): {spec['risk']}; restores {restores}. "
                f"{spec['description']}{kind}"
            )
        for name, why in self._catalog.unavailable.items():
            lines.append(f"- {name}: not available here ({why}); do not recommend it.")
        return "\n".join(lines)

    def toolbox(self) -> Toolbox:
        return build_toolbox(self._backend, self._observe, self._catalog)

    def hypotheses(self, invariant: str) -> Sequence[Hypothesis]:
        return hypotheses_for(invariant, self._catalog)
