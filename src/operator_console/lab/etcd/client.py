"""A small async etcd client over the v3 JSON gateway, so the lab and observers need no gRPC stack.

It speaks `/v3/...`, which etcd 3.4 and 3.5 both serve (3.4 also accepts the older
`/v3beta/...`); see `wire` for the field names. Every failure is an `EtcdError` naming the
endpoint; tokens and passwords never appear in messages or reprs.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import httpx

from operator_console.lab.etcd.wire import (
    AUTH_MESSAGES,
    GRPC_PERMISSION_DENIED,
    GRPC_UNAUTHENTICATED,
    Alarm,
    ClientTLS,
    DeleteResult,
    EtcdAuthError,
    EtcdError,
    EtcdRequestError,
    EtcdResponseError,
    EtcdUnavailableError,
    Health,
    KeyValue,
    Member,
    PutResult,
    RangeResult,
    Status,
    encode,
    int_field,
    key_value,
    prefix_end,
    revision_of,
)

__all__ = [
    "Alarm",
    "ClientTLS",
    "DeleteResult",
    "EtcdAuthError",
    "EtcdClient",
    "EtcdError",
    "EtcdRequestError",
    "EtcdResponseError",
    "EtcdUnavailableError",
    "Health",
    "KeyValue",
    "Member",
    "PutResult",
    "RangeResult",
    "Status",
    "prefix_end",
]

API_PREFIX = "/v3"
DEFAULT_TIMEOUT_S = 2.0


class EtcdClient:
    """One etcd endpoint over its JSON gateway; every failure is an EtcdError naming it."""

    def __init__(
        self,
        endpoint: str,
        *,
        tls: ClientTLS | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        api_prefix: str = API_PREFIX,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.endpoint = endpoint.rstrip("/")
        self.tls = tls
        self.timeout = timeout
        self.api_prefix = api_prefix.rstrip("/")
        self._username = username
        self._password = password
        self._token: str | None = None
        verify: ssl.SSLContext | bool = tls.ssl_context() if tls is not None else True
        self._http = httpx.AsyncClient(
            base_url=self.endpoint, timeout=timeout, verify=verify, trust_env=False
        )

    def __repr__(self) -> str:
        auth = f", username={self._username!r}" if self._username else ""
        return f"EtcdClient({self.endpoint!r}{auth})"

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------- transport

    async def _send(
        self, method: str, path: str, body: Mapping[str, Any] | None, timeout: float | None
    ) -> httpx.Response:
        headers = {"Authorization": self._token} if self._token else None
        limit = self.timeout if timeout is None else timeout
        try:
            return await self._http.request(method, path, json=body, headers=headers, timeout=limit)
        except httpx.TimeoutException as exc:
            raise EtcdUnavailableError(
                self.endpoint,
                f"etcd at {self.endpoint} did not answer {path} within {limit:g} s "
                "(is the member paused, partitioned or without quorum?)",
                maybe_sent=not isinstance(exc, httpx.ConnectTimeout),
            ) from exc
        except (httpx.HTTPError, OSError) as exc:
            # OSError: httpcore lets some ssl.SSLError escape unwrapped (a TLS 1.3 alert read late).
            reason = str(exc) or type(exc).__name__
            hint = "is the member running?"
            if self.tls is not None and not self.tls.cert_file:
                hint = "does the member require a client certificate? none was given"
            elif self.tls is not None or "SSL" in reason or "certificate" in reason.lower():
                hint = "is it running, and are the CA, client certificate and key right?"
            elif isinstance(
                exc, httpx.RemoteProtocolError | httpx.ReadError
            ) and self.endpoint.startswith("http:"):
                hint = "is the member running, and does it serve https instead?"
            raise EtcdUnavailableError(
                self.endpoint,
                f"cannot reach etcd at {self.endpoint} for {path}: {reason}; {hint}",
                maybe_sent=not isinstance(exc, httpx.ConnectError),
            ) from exc

    def _json(self, path: str, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise EtcdResponseError(
                self.endpoint,
                f"{self.endpoint}{path} answered HTTP {response.status_code} with a body that is "
                f"not an etcd gateway response ({response.text[:120]!r}); "
                "is this an etcd client URL?",
            )
        return body

    async def _call(
        self, path: str, body: Mapping[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]:
        """POST one gateway request and return its JSON body; authenticates when configured."""
        if self._username is not None and self._token is None:
            await self.authenticate()
        full = f"{self.api_prefix}{path}"
        response = await self._send("POST", full, body, timeout)
        data = self._json(full, response)
        if response.status_code == 200 and "error" not in data:
            return data
        error = self._error(full, response.status_code, data)
        if (
            isinstance(error, EtcdAuthError)
            and self._username is not None
            and "invalid auth token" in error.server_message
        ):
            self._token = None  # expired or revoked: log in again, once
            await self.authenticate()
            response = await self._send("POST", full, body, timeout)
            data = self._json(full, response)
            if response.status_code == 200 and "error" not in data:
                return data
            error = self._error(full, response.status_code, data)
        raise error

    async def call(
        self, path: str, body: Mapping[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Any other gateway call, e.g. call("/auth/user/add", {...}); the raw JSON answer."""
        return await self._call(path, body, timeout=timeout)

    def _error(self, path: str, status: int, data: Mapping[str, Any]) -> EtcdRequestError:
        message = str(data.get("message") or data.get("error") or f"HTTP {status}")
        try:
            code = int(data.get("code", 0))
        except (TypeError, ValueError):
            code = 0
        auth = code in (GRPC_UNAUTHENTICATED, GRPC_PERMISSION_DENIED) or any(
            text in message for text in AUTH_MESSAGES
        )
        cls = EtcdAuthError if auth else EtcdRequestError
        return cls(self.endpoint, path, status, code, message)

    def _parse(self, path: str, build: Any, body: Mapping[str, Any]) -> Any:
        try:
            return build(body)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EtcdResponseError(
                self.endpoint,
                f"{self.endpoint}{self.api_prefix}{path} answered a malformed body: {exc!r}",
            ) from exc

    async def authenticate(self) -> None:
        """Trade the username and password for a token; the token is sent on every request."""
        if self._username is None or self._password is None:
            raise ValueError(f"{self!r} has no username and password to authenticate with")
        path = f"{self.api_prefix}/auth/authenticate"
        response = await self._send(
            "POST", path, {"name": self._username, "password": self._password}, None
        )
        data = self._json(path, response)
        token = data.get("token")
        if response.status_code != 200 or "error" in data or not isinstance(token, str):
            error = self._error(path, response.status_code, data)
            raise EtcdAuthError(
                self.endpoint, path, error.http_status, error.code, error.server_message
            )
        self._token = token

    # --------------------------------------------------------------------- key-value

    async def put(
        self,
        key: str | bytes,
        value: str | bytes,
        *,
        lease: int = 0,
        prev_kv: bool = False,
        timeout: float | None = None,
    ) -> PutResult:
        """Write one key; the result's revision is the write's own (its mod_revision)."""
        body: dict[str, Any] = {"key": encode(key), "value": encode(value)}
        if lease:
            body["lease"] = str(lease)
        if prev_kv:
            body["prev_kv"] = True
        data = await self._call("/kv/put", body, timeout=timeout)

        def build(d: Mapping[str, Any]) -> PutResult:
            prev = d.get("prev_kv")
            return PutResult(revision=revision_of(d), prev_kv=key_value(prev) if prev else None)

        result: PutResult = self._parse("/kv/put", build, data)
        return result

    async def range(
        self,
        key: str | bytes,
        range_end: str | bytes | None = None,
        *,
        prefix: bool = False,
        serializable: bool = False,
        limit: int = 0,
        revision: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
        timeout: float | None = None,
    ) -> RangeResult:
        """Read a key, a range or (prefix=True) every key under `key`; linearizable by default."""
        body: dict[str, Any] = {"key": encode(key)}
        if prefix:
            body["range_end"] = encode(prefix_end(key))
        elif range_end is not None:
            body["range_end"] = encode(range_end)
        if serializable:
            body["serializable"] = True
        if limit:
            body["limit"] = str(limit)
        if revision:
            body["revision"] = str(revision)
        if keys_only:
            body["keys_only"] = True
        if count_only:
            body["count_only"] = True
        data = await self._call("/kv/range", body, timeout=timeout)

        def build(d: Mapping[str, Any]) -> RangeResult:
            return RangeResult(
                kvs=[key_value(kv) for kv in d.get("kvs") or []],
                count=int_field(d, "count"),
                revision=revision_of(d),
                more=bool(d.get("more", False)),
            )

        result: RangeResult = self._parse("/kv/range", build, data)
        return result

    async def get(
        self, key: str | bytes, *, serializable: bool = False, timeout: float | None = None
    ) -> KeyValue | None:
        """One key, or None when it does not exist; serializable reads skip the leader."""
        found = await self.range(key, serializable=serializable, timeout=timeout)
        return found.kvs[0] if found.kvs else None

    async def delete(
        self,
        key: str | bytes,
        *,
        prefix: bool = False,
        prev_kv: bool = False,
        timeout: float | None = None,
    ) -> DeleteResult:
        """Delete a key or (prefix=True) every key under it; `deleted` says how many existed."""
        body: dict[str, Any] = {"key": encode(key)}
        if prefix:
            body["range_end"] = encode(prefix_end(key))
        if prev_kv:
            body["prev_kv"] = True
        data = await self._call("/kv/deleterange", body, timeout=timeout)

        def build(d: Mapping[str, Any]) -> DeleteResult:
            return DeleteResult(
                deleted=int_field(d, "deleted"),
                revision=revision_of(d),
                prev_kvs=[key_value(kv) for kv in d.get("prev_kvs") or []],
            )

        result: DeleteResult = self._parse("/kv/deleterange", build, data)
        return result

    async def compact(
        self, revision: int, *, physical: bool = True, timeout: float | None = None
    ) -> None:
        """Drop history before `revision`; physical waits until the space is really freed."""
        body: dict[str, Any] = {"revision": str(revision)}
        if physical:
            body["physical"] = True
        await self._call("/kv/compaction", body, timeout=timeout)

    # ------------------------------------------------------------------ maintenance

    async def status(self, *, timeout: float | None = None) -> Status:
        data = await self._call("/maintenance/status", {}, timeout=timeout)

        def build(d: Mapping[str, Any]) -> Status:
            header = d.get("header") or {}
            return Status(
                member_id=int_field(header, "member_id"),
                cluster_id=int_field(header, "cluster_id"),
                leader=int_field(d, "leader"),
                raft_term=int_field(d, "raftTerm"),
                raft_index=int_field(d, "raftIndex"),
                raft_applied_index=int_field(d, "raftAppliedIndex"),
                db_size=int_field(d, "dbSize"),
                db_size_in_use=int_field(d, "dbSizeInUse"),
                version=str(d.get("version", "")),
                revision=int_field(header, "revision"),
                errors=tuple(str(e) for e in d.get("errors") or ()),
                is_learner=bool(d.get("isLearner", False)),
            )

        result: Status = self._parse("/maintenance/status", build, data)
        return result

    async def member_list(self, *, timeout: float | None = None) -> list[Member]:
        data = await self._call("/cluster/member/list", {}, timeout=timeout)

        def build(d: Mapping[str, Any]) -> list[Member]:
            return [
                Member(
                    id=int_field(m, "ID"),
                    name=str(m.get("name", "")),
                    peer_urls=tuple(m.get("peerURLs") or ()),
                    client_urls=tuple(m.get("clientURLs") or ()),
                    is_learner=bool(m.get("isLearner", False)),
                )
                for m in d.get("members") or []
            ]

        result: list[Member] = self._parse("/cluster/member/list", build, data)
        return result

    async def _alarm(self, body: Mapping[str, Any], timeout: float | None) -> list[Alarm]:
        data = await self._call("/maintenance/alarm", body, timeout=timeout)

        def build(d: Mapping[str, Any]) -> list[Alarm]:
            return [
                Alarm(member_id=int_field(a, "memberID"), alarm=str(a.get("alarm", "NONE")))
                for a in d.get("alarms") or []
            ]

        result: list[Alarm] = self._parse("/maintenance/alarm", build, data)
        return result

    async def alarms(self, *, timeout: float | None = None) -> list[Alarm]:
        """Every alarm raised anywhere in the cluster (NOSPACE, CORRUPT)."""
        return await self._alarm({"action": "GET"}, timeout)

    async def disarm(
        self, alarm: Alarm | None = None, *, timeout: float | None = None
    ) -> list[Alarm]:
        """Deactivate one alarm, or (None) every raised one as etcdctl does; returns those left."""
        targets = [alarm] if alarm is not None else await self.alarms(timeout=timeout)
        for one in targets:
            await self._alarm(
                {"action": "DEACTIVATE", "memberID": str(one.member_id), "alarm": one.alarm},
                timeout,
            )
        return await self.alarms(timeout=timeout)

    async def defragment(self, *, timeout: float | None = 30.0) -> None:
        """Rewrite this member's database file to give compacted space back (this member only)."""
        await self._call("/maintenance/defragment", {}, timeout=timeout)

    async def move_leader(self, target_id: int, *, timeout: float | None = None) -> None:
        """Hand leadership to `target_id`; etcd accepts this only on the current leader."""
        await self._call(
            "/maintenance/transfer-leadership", {"targetID": str(target_id)}, timeout=timeout
        )

    # ------------------------------------------------------------ plain HTTP endpoints

    async def health(self, *, timeout: float | None = None) -> Health:
        """etcd's /health: false (with a reason on 3.5) when there is no leader or an alarm."""
        response = await self._send("GET", "/health", None, timeout)
        data = self._json("/health", response)
        if "health" not in data or response.status_code not in (200, 503):
            raise EtcdResponseError(
                self.endpoint,
                f"{self.endpoint}/health answered HTTP {response.status_code} without a health "
                "field; is this an etcd client URL?",
            )
        return Health(healthy=str(data["health"]) == "true", reason=str(data.get("reason", "")))

    async def metrics(self, *, timeout: float | None = None) -> str:
        """The member's Prometheus exposition text from /metrics."""
        response = await self._send("GET", "/metrics", None, timeout)
        if response.status_code != 200:
            raise EtcdResponseError(
                self.endpoint,
                f"{self.endpoint}/metrics answered HTTP {response.status_code}; "
                "is this an etcd client URL?",
            )
        return response.text
