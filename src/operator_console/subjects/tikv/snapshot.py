"""One look at a TiKV cluster through PD, costing the same whatever the number of regions.

Each tick reads members, health, stores, region statistics and the region checks; it
never lists /regions (a million regions is hundreds of megabytes). The checks are read
as streams and kept as a count, a sample and the stores they point at, so a long list
costs time but no memory; an operator pages into regions only where a check points.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from operator_console.subjects.tikv.pd import PDClient
from operator_console.subjects.tikv.pd_errors import (
    PDError,
    PDUnavailableError,
    RegionNotFoundError,
)
from operator_console.subjects.tikv.pd_models import MemberHealth, Members, PDMember, Store
from operator_console.subjects.tikv.pd_regions import Region, RegionCheck, RegionStats

OBSERVED_CHECKS = ("miss-peer", "down-peer", "pending-peer", "offline-peer")


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """What PD said about the cluster in one observation, with what could not be read."""

    taken_at: datetime
    pd_time: datetime | None
    pd_endpoint: str
    cluster_id: int | None
    members: tuple[PDMember, ...]
    leader: PDMember | None
    health: tuple[MemberHealth, ...]
    stores: tuple[Store, ...]
    region_stats: RegionStats | None
    checks: Mapping[str, RegionCheck]
    failures: Mapping[str, str] = field(default_factory=dict)
    errors: Mapping[str, PDError] = field(default_factory=dict)
    elapsed_s: float = 0.0
    bytes_read: int = 0

    @property
    def unhealthy_members(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.health if not h.healthy)

    @property
    def check_counts(self) -> dict[str, int]:
        return {kind: check.count for kind, check in self.checks.items()}

    def store(self, store_id: int) -> Store | None:
        return next((s for s in self.stores if s.id == store_id), None)

    def stores_in(self, *state_names: str) -> tuple[Store, ...]:
        """Stores whose PD state is one of `state_names` (Up, Disconnected, Down, ...)."""
        return tuple(s for s in self.stores if s.state_name in state_names)

    def heartbeat_age_s(self, store: Store) -> float | None:
        """Seconds since the store's last heartbeat, both ends read off PD's clock."""
        now = self.pd_time or self.taken_at
        return store.heartbeat_age_s(now)


async def observe_cluster(
    pd: PDClient, *, checks: Sequence[str] = OBSERVED_CHECKS, sample: int = 8
) -> ClusterSnapshot:
    """Read the cluster's state from PD once; raises PDUnavailableError only if PD is gone."""
    started = time.perf_counter()
    bytes_before = pd.bytes_read
    parts: dict[str, Awaitable[Any]] = {
        "members": pd.members(),
        "health": pd.health(),
        "stores": pd.stores(),
        "region_stats": pd.region_stats(),
        **{f"check:{kind}": pd.region_check(kind, sample=sample) for kind in checks},
    }
    results = await asyncio.gather(*parts.values(), return_exceptions=True)
    values: dict[str, Any] = {}
    failures: dict[str, str] = {}
    errors: dict[str, PDError] = {}
    for name, result in zip(parts, results, strict=True):
        if isinstance(result, PDError):
            failures[name] = str(result)
            errors[name] = result
        elif isinstance(result, BaseException):
            raise result
        else:
            values[name] = result
    if not values:
        first = next(r for r in results if isinstance(r, PDError))
        if isinstance(first, PDUnavailableError):
            raise first
    members: Members | None = values.get("members")
    return ClusterSnapshot(
        taken_at=datetime.now(UTC),
        pd_time=pd.server_time,
        pd_endpoint=pd.endpoint_in_use,
        cluster_id=members.cluster_id if members else None,
        members=members.members if members else (),
        leader=members.leader if members else None,
        health=values.get("health", ()),
        stores=values.get("stores", ()),
        region_stats=values.get("region_stats"),
        checks={k.removeprefix("check:"): v for k, v in values.items() if k.startswith("check:")},
        failures=failures,
        errors=errors,
        elapsed_s=time.perf_counter() - started,
        bytes_read=pd.bytes_read - bytes_before,
    )


async def regions_pointed_at(
    pd: PDClient, snapshot: ClusterSnapshot, *, per_check: int = 2
) -> dict[str, tuple[Region, ...]]:
    """Full detail of the first regions each non-empty check sampled, fetched by id."""
    wanted = {
        kind: check.sample_ids[:per_check] for kind, check in snapshot.checks.items() if check.count
    }
    ids = sorted({region_id for chosen in wanted.values() for region_id in chosen})

    async def fetch(region_id: int) -> Region | None:
        try:
            return await pd.region(region_id)
        except RegionNotFoundError:  # merged or gone since the check listed it
            return None

    found = dict(zip(ids, await asyncio.gather(*(fetch(i) for i in ids)), strict=True))
    return {
        kind: tuple(r for i in chosen if (r := found[i]) is not None)
        for kind, chosen in wanted.items()
    }
