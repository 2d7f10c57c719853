"""Ground truth for an etcd workload: every acknowledged write, and the check against a read-back.

Ops on one key must be issued one at a time (the workload does), so each key's
acknowledgements come in revision order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from operator_console.lab.etcd.wire import KeyValue


@dataclass(frozen=True, slots=True)
class Ack:
    """One acknowledged write: a put of `value`, or a delete, at `revision`."""

    key: str
    kind: str  # put | delete
    revision: int
    value: str | None = None


@dataclass(frozen=True, slots=True)
class LostWrite:
    """An acknowledged write that a later linearizable read does not show."""

    key: str
    kind: str
    revision: int
    value: str | None
    found_value: str | None
    found_revision: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class LedgerSnapshot:
    acks: dict[str, Ack]
    uncertain_deletes: frozenset[str]


class WriteLedger:
    """Ground truth: per key the latest acknowledged write, and deletes whose fate is unknown."""

    def __init__(self) -> None:
        self._latest: dict[str, Ack] = {}
        self._uncertain_deletes: set[str] = set()
        self.acknowledged = 0

    def record(self, ack: Ack) -> None:
        self.acknowledged += 1
        known = self._latest.get(ack.key)
        if known is None or ack.revision >= known.revision:
            self._latest[ack.key] = ack

    def record_uncertain_delete(self, key: str) -> None:
        """A delete that failed after it may have reached etcd: it might still have applied."""
        self._uncertain_deletes.add(key)

    def latest(self, key: str) -> Ack | None:
        return self._latest.get(key)

    def keys(self) -> list[str]:
        return sorted(self._latest)

    def snapshot(self) -> LedgerSnapshot:
        return LedgerSnapshot(dict(self._latest), frozenset(self._uncertain_deletes))

    @staticmethod
    def settled(
        before: LedgerSnapshot, after: LedgerSnapshot, busy: frozenset[str]
    ) -> LedgerSnapshot:
        """`before` without the keys whose fate a read taken between the two snapshots cannot
        judge: a request on them was in flight, or acknowledged or failed meanwhile."""
        acks = {
            key: ack
            for key, ack in before.acks.items()
            if key not in busy and after.acks.get(key) == ack
        }
        return LedgerSnapshot(acks, after.uncertain_deletes)

    @staticmethod
    def check(snapshot: LedgerSnapshot, found: Mapping[str, KeyValue]) -> list[LostWrite]:
        """Compare what was acknowledged with what a linearizable read, taken after, returned.

        A later write (higher mod_revision) supersedes an ack; a key acknowledged deleted must be
        absent or newer; a missing key is lost unless a delete of it may have applied unseen.
        """
        lost: list[LostWrite] = []
        for key, ack in sorted(snapshot.acks.items()):
            kv = found.get(key)
            if ack.kind == "put":
                if kv is None:
                    if key in snapshot.uncertain_deletes:
                        continue
                elif kv.mod_revision > ack.revision or (
                    kv.mod_revision == ack.revision and kv.value == ack.value
                ):
                    continue
            elif kv is None or kv.mod_revision > ack.revision:
                continue
            lost.append(
                LostWrite(
                    key=key,
                    kind=ack.kind,
                    revision=ack.revision,
                    value=ack.value,
                    found_value=kv.value if kv else None,
                    found_revision=kv.mod_revision if kv else None,
                )
            )
        return lost
