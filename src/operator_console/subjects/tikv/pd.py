"""An async client for PD's HTTP API (`/pd/api/v1`), written against PD v7.5 to v26.3.

What differs between releases is handled by reading the body, never by trusting headers:
region bodies come compact as `application/octet-stream` (easyjson, `render.Data`) or
indented JSON (v7.5.0's `render.JSON`); a missing region is `null` (v7.5.0), a zero
region (v7.5.1 to v8.5) or a 404 with `ErrRegionNotFound` (v9.0 and later); errors are
JSON strings, errcode objects or plain text (see pd_errors). A follower PD forwards every
request but /health, /ping, /status and /version to the leader itself (v8.5's
redirector; v7.5 forwards those too), so the client sees the leader's answer; the
redirector's own refusals (no leader, forwarded to a non-leader, forwarding failed) send
the client to the next endpoint when the request cannot have been applied.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote_from_bytes

import httpx
import ijson

from operator_console.subjects.tikv.connection import (
    Credentials,
    TLSFiles,
    build_http_client,
    split_endpoint,
)
from operator_console.subjects.tikv.pd_errors import (
    PDError,
    PDHTTPError,
    PDNoLeaderError,
    PDNotLeaderError,
    PDRedirectFailedError,
    PDResponseError,
    PDUnavailableError,
    RegionNotFoundError,
    SchedulerNotFoundError,
    error_for,
)
from operator_console.subjects.tikv.pd_models import (
    MalformedPayloadError,
    MemberHealth,
    Members,
    PDMember,
    ReplicationConfig,
    Store,
    arr,
    obj,
    stores_from_json,
)
from operator_console.subjects.tikv.pd_regions import (
    Operator,
    Region,
    RegionBrief,
    RegionCheck,
    RegionStats,
)

log = logging.getLogger(__name__)

API = "/pd/api/v1"
REGION_CHECKS = (
    "miss-peer",
    "extra-peer",
    "down-peer",
    "pending-peer",
    "offline-peer",
    "learner-peer",
    "empty-region",
    "oversized-region",
    "undersized-region",
)
EVICT_LEADER = "evict-leader-scheduler"
# server/api/region.go and pkg/schedule/handler: /regions/key caps `limit` at 10240.
MAX_SCAN_LIMIT = 10240
# PD's operator and scheduler handlers read ids as float64 (`input["region_id"].(float64)`).
_FLOAT_EXACT = 2**53
# Refusals after which the request cannot have been applied, so another member may take it.
_RETRY_ANY = (PDNoLeaderError, PDNotLeaderError)


class PDClient:
    """One PD cluster: tries its endpoints in turn and remembers the one that answered."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        tls: TLSFiles | None = None,
        credentials: Credentials | None = None,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        urls = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not urls:
            raise ValueError("PDClient needs at least one PD endpoint, e.g. http://pd:2379")
        cleaned = [split_endpoint(u) for u in urls]
        self.endpoints: tuple[str, ...] = tuple(url for url, _ in cleaned)
        creds = credentials or next((c for _, c in cleaned if c is not None), None)
        self._http = build_http_client(
            tls=tls,
            credentials=creds,
            timeout=timeout,
            endpoints=self.endpoints,
            transport=transport,
        )
        self._preferred = 0
        self.bytes_read = 0
        self.requests_sent = 0
        # PD's own clock, from the Date header of its latest answer (second resolution).
        self.server_time: datetime | None = None

    def __repr__(self) -> str:
        return f"PDClient(endpoints={list(self.endpoints)!r})"

    @property
    def endpoint_in_use(self) -> str:
        return self.endpoints[self._preferred]

    async def __aenter__(self) -> PDClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ transport

    async def _open(
        self, method: str, path: str, *, query: str = "", body: Any = None
    ) -> httpx.Response:
        """Send to the first endpoint that takes it; the response body is still unread."""
        endpoint = f"{method} {path}"
        idempotent = method == "GET"
        content = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        failures: list[str] = []
        refusals: list[PDError] = []
        order = [*range(self._preferred, len(self.endpoints)), *range(self._preferred)]
        for index in order:
            base = self.endpoints[index]
            url = base + path + (f"?{query}" if query else "")
            request = self._http.build_request(method, url, content=content, headers=headers)
            try:
                response = await self._http.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout, ssl.SSLError) as exc:
                # ssl.SSLError: under TLS 1.3 the server's refusal (certificate required)
                # can surface bare on the first read, after the request was refused unread.
                failures.append(f"{base}: cannot connect ({_reason(exc)})")
                continue
            except (httpx.TransportError, OSError) as exc:
                if not idempotent:
                    raise PDUnavailableError(
                        f"PD {endpoint} at {base}: the connection failed after the request was"
                        f" sent ({_reason(exc)}); it may or may not have been applied",
                        endpoint=endpoint,
                    ) from None
                failures.append(f"{base}: {_reason(exc)}")
                continue
            self.requests_sent += 1
            self._note_server_time(response)
            if response.status_code >= 500:
                # A follower's redirector refuses with 5xx; find out which refusal it is.
                data = await self._read(response)
                error = error_for(endpoint, response.status_code, data)
                if isinstance(error, _RETRY_ANY) or (
                    idempotent and isinstance(error, PDRedirectFailedError)
                ):
                    failures.append(f"{base}: {error.pd_text or error}")
                    refusals.append(error)
                    continue
                self._preferred = index
                raise error
            self._preferred = index
            log.debug("PD %s %s -> %s", method, path, response.status_code)
            return response
        unavailable = PDUnavailableError(
            f"PD {endpoint}: no endpoint answered ({'; '.join(failures)}); check that PD is"
            " running and the endpoints are its client URLs (port 2379)",
            endpoint=endpoint,
        )
        unavailable.refusals = tuple(refusals)
        raise unavailable

    def _note_server_time(self, response: httpx.Response) -> None:
        date = response.headers.get("date")
        if date:
            try:
                self.server_time = parsedate_to_datetime(date)
            except (TypeError, ValueError):
                pass

    async def _read(self, response: httpx.Response) -> bytes:
        try:
            data = await response.aread()
        except httpx.TransportError as exc:
            raise PDUnavailableError(
                f"PD {response.request.method} {response.request.url.path}: the body was cut"
                f" off ({_reason(exc)})",
                endpoint=f"{response.request.method} {response.request.url.path}",
            ) from None
        finally:
            await response.aclose()
            self.bytes_read += response.num_bytes_downloaded
        return data

    async def _call(
        self, method: str, path: str, *, query: str = "", body: Any = None
    ) -> tuple[int, bytes]:
        """Status and body of a successful answer; PD's refusals become typed errors."""
        response = await self._open(method, path, query=query, body=body)
        data = await self._read(response)
        if response.status_code >= 400:
            raise error_for(f"{method} {path}", response.status_code, data)
        return response.status_code, data

    async def _json(self, method: str, path: str, *, query: str = "", body: Any = None) -> Any:
        _, data = await self._call(method, path, query=query, body=body)
        return _decode(f"{method} {path}", data)

    def _parse(self, endpoint: str, parse: Any, raw: Any) -> Any:
        try:
            return parse(raw)
        except MalformedPayloadError as exc:
            raise PDResponseError(
                f"PD {endpoint}: unexpected payload: {exc}", endpoint=endpoint
            ) from None

    # ---------------------------------------------------------------------- reads

    async def version(self) -> str:
        """The PD release answering, e.g. "v8.5.7" (GET /version)."""
        raw = await self._json("GET", f"{API}/version")
        return str(obj(raw, "version").get("version", ""))

    async def members(self) -> Members:
        path = f"{API}/members"
        return self._parse(f"GET {path}", Members.from_json, await self._json("GET", path))

    async def leader(self) -> PDMember:
        path = f"{API}/leader"
        return self._parse(f"GET {path}", PDMember.from_json, await self._json("GET", path))

    async def health(self) -> tuple[MemberHealth, ...]:
        """Each PD member's health as the answering member's check of its peers sees it."""
        path = f"{API}/health"
        raw = await self._json("GET", path)
        return self._parse(
            f"GET {path}",
            lambda r: tuple(
                MemberHealth.from_json(h, f"health[{i}]") for i, h in enumerate(arr(r, "health"))
            ),
            raw,
        )

    async def stores(self, *, include_tombstone: bool = False) -> tuple[Store, ...]:
        """Every store; by default PD leaves out Tombstone stores (state 0 and 1 only)."""
        path = f"{API}/stores"
        query = "state=0&state=1&state=2" if include_tombstone else ""
        raw = await self._json("GET", path, query=query)
        return self._parse(f"GET {path}", stores_from_json, raw)

    async def store(self, store_id: int) -> Store:
        path = f"{API}/store/{int(store_id)}"
        return self._parse(f"GET {path}", Store.from_json, await self._json("GET", path))

    async def region_stats(
        self, start_key: bytes = b"", end_key: bytes = b"", *, count_only: bool = False
    ) -> RegionStats:
        """Region statistics over [start_key, end_key) (all regions by default)."""
        path = f"{API}/stats/region"
        query = _query({"start_key": start_key, "end_key": end_key})
        if count_only:
            query += "&count"
        raw = await self._json("GET", path, query=query)
        return self._parse(f"GET {path}", RegionStats.from_json, raw)

    async def region(self, region_id: int) -> Region:
        """One region by id; a missing region raises RegionNotFoundError in every release."""
        path = f"{API}/region/id/{int(region_id)}"
        raw = await self._json("GET", path)
        missing = raw is None or (isinstance(raw, Mapping) and raw.get("id") in (0, None))
        if missing:
            # v7.5.0 writes null, v7.5.1 to v8.5 a zero region, v9.0+ a 404 (raised above).
            raise RegionNotFoundError(
                f"PD GET {path}: region not found: PD has no region {region_id}",
                endpoint=f"GET {path}",
                status=200,
                pd_text="null" if raw is None else "zero region",
            )
        return self._parse(f"GET {path}", Region.from_json, raw)

    async def region_check(self, kind: str, *, sample: int = 8) -> RegionCheck:
        """How many regions one check lists, read as a stream so a long list costs no memory."""
        path = _check_path(kind)
        endpoint = f"GET {path}"
        response = await self._open("GET", path)
        if response.status_code >= 400:
            data = await self._read(response)
            raise error_for(endpoint, response.status_code, data)
        briefs: list[RegionBrief] = []
        down: Counter[int] = Counter()
        pending: Counter[int] = Counter()
        count = 0
        items = ijson.sendable_list()
        coro = ijson.items_coro(items, "regions.item")
        try:
            async for chunk in response.aiter_bytes():
                coro.send(chunk)
                count += self._take(items, briefs, down, pending, sample)
            coro.close()
            count += self._take(items, briefs, down, pending, sample)
        except (ijson.JSONError, ijson.IncompleteJSONError) as exc:
            raise PDResponseError(
                f"PD {endpoint}: the region list is not JSON ({exc})", endpoint=endpoint
            ) from None
        except MalformedPayloadError as exc:
            raise PDResponseError(
                f"PD {endpoint}: unexpected payload: {exc}", endpoint=endpoint
            ) from None
        except httpx.TransportError as exc:
            raise PDUnavailableError(
                f"PD {endpoint}: the body was cut off ({_reason(exc)})", endpoint=endpoint
            ) from None
        finally:
            await response.aclose()
            self.bytes_read += response.num_bytes_downloaded
        return RegionCheck(kind, count, tuple(briefs), dict(down), dict(pending))

    @staticmethod
    def _take(
        items: list[Any],
        briefs: list[RegionBrief],
        down: Counter[int],
        pending: Counter[int],
        sample: int,
    ) -> int:
        taken = len(items)
        for raw in items:
            if len(briefs) < sample:
                brief = RegionBrief.from_json(raw)
                briefs.append(brief)
                down.update(brief.down_store_ids)
                pending.update(brief.pending_store_ids)
                continue
            # Past the sample only the stores matter: read them without building objects.
            try:
                for stats in raw.get("down_peers") or ():
                    down[stats["peer"]["store_id"]] += 1
                for peer in raw.get("pending_peers") or ():
                    pending[peer["store_id"]] += 1
            except (AttributeError, KeyError, TypeError):
                raise MalformedPayloadError(
                    f"region {raw.get('id') if isinstance(raw, dict) else raw!r}: down or"
                    " pending peers without a store id"
                ) from None
        items.clear()
        return taken

    async def region_check_list(self, kind: str) -> tuple[Region, ...]:
        """Every region one check lists, in full (PD does not page these lists)."""
        path = _check_path(kind)
        return self._parse(f"GET {path}", _regions_of, await self._json("GET", path))

    async def scan_regions(
        self, start_key: bytes = b"", end_key: bytes = b"", *, page_size: int = 1024
    ) -> AsyncIterator[Region]:
        """Regions of [start_key, end_key) in key order, one /regions/key page at a time."""
        limit = max(1, min(page_size, MAX_SCAN_LIMIT))
        key = start_key
        path = f"{API}/regions/key"
        while True:
            # Raw key bytes, percent-encoded: v7.5 has no `format=hex`, and v8.5 reads raw
            # keys the same way when the parameter is absent.
            query = _query({"key": key, "end_key": end_key}) + f"&limit={limit}"
            page = self._parse(
                f"GET {path}", _regions_of, await self._json("GET", path, query=query)
            )
            for region in page:
                yield region
            if len(page) < limit or not page:
                return
            last_end = bytes.fromhex(page[-1].end_key)
            if not last_end or (end_key and last_end >= end_key):
                return
            key = last_end

    async def schedulers(self) -> tuple[str, ...]:
        raw = await self._json("GET", f"{API}/schedulers")
        return tuple(str(name) for name in arr(raw, "schedulers"))

    async def evict_leader_stores(self) -> tuple[int, ...]:
        """Stores the evict-leader scheduler holds leaders off; () when it does not run."""
        path = f"{API}/scheduler-config/{EVICT_LEADER}/list"
        try:
            raw = await self._json("GET", path)
        except PDHTTPError as exc:
            if exc.status == 404:  # no such scheduler: its config route does not exist
                return ()
            raise
        ranges = obj(obj(raw, "evict-leader config").get("store-id-ranges") or {}, "ranges")
        return tuple(sorted(int(k) for k in ranges))

    async def operators(self) -> tuple[Operator, ...]:
        """Pending operators, parsed from PD's operator strings (every release writes these)."""
        path = f"{API}/operators"
        raw = await self._json("GET", path)
        return self._parse(
            f"GET {path}",
            lambda r: tuple(
                Operator.parse(o, f"operators[{i}]") for i, o in enumerate(arr(r, "operators"))
            ),
            raw,
        )

    async def operator_status(self, region_id: int) -> str:
        """PD's "status: RUNNING, operator: ..." line for the region's operator."""
        raw = await self._json("GET", f"{API}/operators/{int(region_id)}")
        return str(raw)

    async def config(self) -> Mapping[str, Any]:
        return obj(await self._json("GET", f"{API}/config"), "config")

    async def schedule_config(self) -> Mapping[str, Any]:
        return obj(await self._json("GET", f"{API}/config/schedule"), "schedule config")

    async def replication_config(self) -> ReplicationConfig:
        path = f"{API}/config/replicate"
        raw = await self._json("GET", path)
        return self._parse(f"GET {path}", ReplicationConfig.from_json, raw)

    # --------------------------------------------------------------------- writes

    async def add_evict_leader_scheduler(self, store_id: int) -> str:
        """Move every leader off the store (evict-leader-scheduler); PD's reply text."""
        body = {"name": EVICT_LEADER, "store_id": _float_exact("store_id", store_id)}
        return str(await self._json("POST", f"{API}/schedulers", body=body))

    async def remove_evict_leader_scheduler(self, store_id: int) -> None:
        """Let the store take leaders again; the scheduler goes when its last store does."""
        path = f"{API}/schedulers/{EVICT_LEADER}-{int(store_id)}"
        try:
            await self._call("DELETE", path)
        except PDHTTPError as exc:
            # PD forwards this to the scheduler's config route and answers with that
            # route's status and a `null` body, losing the reason (server/api/scheduler.go).
            if exc.status == 404:
                raise SchedulerNotFoundError(
                    f"PD DELETE {path}: scheduler not found: {EVICT_LEADER} has no entry for"
                    f" store {store_id} (PD answered 404 without a message)",
                    endpoint=f"DELETE {path}",
                    status=404,
                    pd_text=exc.pd_text,
                ) from None
            raise

    async def remove_scheduler(self, name: str) -> str:
        path = f"{API}/schedulers/{quote_from_bytes(name.encode(), safe='')}"
        return str(await self._json("DELETE", path))

    async def transfer_leader(self, region_id: int, to_store_id: int) -> str:
        return await self._operator(
            {"name": "transfer-leader", "region_id": region_id, "to_store_id": to_store_id}
        )

    async def transfer_peer(self, region_id: int, from_store_id: int, to_store_id: int) -> str:
        return await self._operator(
            {
                "name": "transfer-peer",
                "region_id": region_id,
                "from_store_id": from_store_id,
                "to_store_id": to_store_id,
            }
        )

    async def add_peer(self, region_id: int, store_id: int) -> str:
        return await self._operator(
            {"name": "add-peer", "region_id": region_id, "store_id": store_id}
        )

    async def remove_peer(self, region_id: int, store_id: int) -> str:
        return await self._operator(
            {"name": "remove-peer", "region_id": region_id, "store_id": store_id}
        )

    async def _operator(self, body: dict[str, Any]) -> str:
        for key, value in body.items():
            if key != "name":
                body[key] = _float_exact(key, value)
        return str(await self._json("POST", f"{API}/operators", body=body))

    async def cancel_operator(self, region_id: int) -> str:
        return str(await self._json("DELETE", f"{API}/operators/{int(region_id)}"))

    async def set_store_weight(self, store_id: int, *, leader: float, region: float) -> str:
        """Set the store's leader and region weights (PD refuses negative weights)."""
        if leader < 0 or region < 0:
            raise ValueError("store weights must be zero or more")
        body = {"leader": float(leader), "region": float(region)}
        return str(await self._json("POST", f"{API}/store/{int(store_id)}/weight", body=body))

    async def set_config(self, items: Mapping[str, Any]) -> str:
        """Change PD config items, e.g. {"schedule.leader-schedule-limit": 8}."""
        return str(await self._json("POST", f"{API}/config", body=dict(items)))


def _check_path(kind: str) -> str:
    if kind not in REGION_CHECKS:
        raise ValueError(f"unknown region check {kind!r}; PD has {', '.join(REGION_CHECKS)}")
    return f"{API}/regions/check/{kind}"


def _regions_of(raw: Any) -> tuple[Region, ...]:
    data = obj(raw, "regions response")
    return tuple(
        Region.from_json(r, f"regions[{i}]")
        for i, r in enumerate(arr(data.get("regions"), "regions"))
    )


def _decode(endpoint: str, data: bytes) -> Any:
    """JSON from PD, whatever Content-Type it came with; big ints stay exact ints."""
    try:
        return json.loads(data) if data.strip() else None
    except ValueError:
        head = data[:80].decode("utf-8", errors="replace")
        raise PDResponseError(
            f"PD {endpoint}: the answer is not JSON (starts {head!r}); is this a PD client URL?",
            endpoint=endpoint,
        ) from None


def _query(params: Mapping[str, bytes]) -> str:
    return "&".join(f"{k}={quote_from_bytes(v, safe='')}" for k, v in params.items())


def _float_exact(name: str, value: int) -> int:
    number = int(value)
    if number < 0 or number > _FLOAT_EXACT:
        raise ValueError(
            f"{name} {number}: PD reads this id as a float64, which cannot hold it exactly"
        )
    return number


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


__all__ = ["REGION_CHECKS", "PDClient", "PDError"]
