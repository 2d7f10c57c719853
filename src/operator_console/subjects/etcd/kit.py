"""The etcd agent kit: its actions, investigation tools, runbook and context."""

from __future__ import annotations

from collections.abc import Sequence

from operator_console.contract import ActionCatalog, Hypothesis, Toolbox
from operator_console.subjects.etcd.backend import EtcdBackend
from operator_console.subjects.etcd.runbook_load import hypotheses_for
from operator_console.subjects.etcd.tools import ObserverGetter, build_toolbox

RUNBOOK_TEXT = """\
etcd runbook. Gather evidence with the tools first; recommend an action only when the evidence
shows its cause, never because of the ticket's name alone. Prefer doing nothing over an action
that cannot help: a restart that does not reconnect a member only adds an election.

member_down (target: a member)
- Process killed or crashed: member_detail shows the process killed/exited and the client port
  refusing connections. Fix: restart_member(member) (its data dir is intact).
- Process paused (SIGSTOP): the process is paused and reads time out. Fix: resume_member(member).
  A running process that times out is hung: restart_member(member).

quorum_lost (target: cluster)
- Fewer than a majority of the members answer: no write commits. Restart (or resume) one of the
  dead (paused) members: one more is enough for a quorum; the member_down tickets bring the rest.

no_leader (target: a member, or cluster)
- A member that answers its clients but knows no leader while the others follow one (a quorum
  without it) is cut off from its peers: its raft index stops, the others' sends to it fail,
  its log says it lost its peers. The cluster keeps serving writes. Its network is the fix; no
  action of this console reaches it. Do NOT restart it (it would come back just as cut off).
  Diagnose, recommend nothing, and leave it to a person.
- No member knows a leader although a quorum answers: elections do not complete; a person.

split_leaders (target: cluster)
- Two members claiming leadership in one term breaks raft's safety: recommend nothing; stop
  writes, keep the data dirs, get a person. If a fresh look shows one leader, the reads raced
  a leadership change.

leader_flapping (target: cluster)
- Failing peer sends (peer links) or a slow WAL fsync (disk) on some member: explain; a person.

nospace_alarm (target: cluster)
- NOSPACE raised and the databases at their quota: recover_nospace (compacts, defragments each
  member in turn, disarms the alarm, proves a write works). NOSPACE raised while every
  database is well below its quota: disarm_alarm.

db_near_quota (target: a member)
- Mostly free pages (db_size_in_use far below db_size): defragment(member).
- The space is in use by old revisions: recover_nospace (compaction then defragmentation).

apply_lag (target: a member)
- Entries reach the follower late (its peer links are slow): explain; its network.
- It has the entries but applies slowly (committed > applied on itself): its disk; a person.

slow_member (target: the leader)
- The leader's quorum round trip is slow and the followers are slower still through it (its
  peer links), its WAL fsync normal: move_leader(to=the fastest healthy follower). This is a
  mitigation: the member stays slow as a follower.
- The leader's WAL fsync p99 is high (its disk): move_leader as well.

latency_slo / error_rate (target: cluster)
- One follower much slower than the others for the clients: its network; explain.
- The leader slow: move_leader. Everyone alike slow with a fast leader: load; explain.
- Writes refused with NOSPACE: recover_nospace. Timeouts: find the member; explain.

lost_writes (target: workload)
- Acknowledged writes missing from a linearizable read-back: recommend nothing; stop the
  clients, keep the data dirs, get a person.

observation_failed (target: a source)
- Authentication errors: the console's credentials are wrong; otherwise say which source fails
  and why; no action.
"""


class EtcdAgentKit:
    """What the operator agent gets for an etcd cluster (an `AgentKit`)."""

    def __init__(
        self,
        backend: EtcdBackend,
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
        names = self._backend.member_names
        lines = [
            f"An etcd cluster of {len(names)} members ({', '.join(names)}): a raft group that "
            f"commits a write once a majority ({len(names) // 2 + 1}) has it. Clients reach "
            "every member; a follower forwards writes to the leader.",
            self._about,
            "",
            "Tools (read-only): " + ", ".join(spec.name for spec in self.toolbox().specs()) + ".",
            "A member's quorum_ms is how much longer etcd's /health (a quorum read through it) "
            "takes than its status answered from memory: the wait on its peers.",
            "",
            "Actions you may recommend (name(params): risk; restores):",
        ]
        for spec in self._catalog.describe():
            params = ", ".join(spec["params"].get("properties", {}))
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
