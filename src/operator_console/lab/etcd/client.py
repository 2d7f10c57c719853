"""A small async etcd client over the v3 JSON gateway, so the lab and observers need no gRPC stack.

The field names and paths are those of etcd 3.4's `rpc.proto` as served by its grpc-gateway
(proto names, e.g. `raftTerm`, `header.member_id`): 64-bit integers arrive as JSON strings,
zero values and empty lists are left out, keys and values are base64. etcd 3.4 also accepts
`/v3beta/...`; 3.5 only `/v3/...`, which is what this client speaks. Keys and values are `str`;
bytes that are not UTF-8 survive the round trip through the `surrogateescape` error handler.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

API_PREFIX = "/v3"
DEFAULT_TIMEOUT_S = 2.0

# gRPC status codes etcd's gateway reports in an error body's "code".
GRPC_RESOURCE_EXHAUSTED = 8
GRPC_PERMISSION_DENIED = 7
GRPC_UNAUTHENTICATED = 16
_AUTH_MESSAGES = (
    "user name is empty",
    "authentication failed",
    "invalid auth token",
    "permission denied",
    "user name not found",
    "authentication is not enabled",
)
NO_SPACE_MESSAGE = "database space exceeded"


class EtcdError(RuntimeError):
    """Anything that went wrong talking to one etcd endpoint; the message names it."""

    def __init__(self, endpoint: str, message: str) -> None:
        super().__init__(message)
        self.endpoint = endpoint


class EtcdUnavailableError(EtcdError):
    """The endpoint did not answer: refused, reset, TLS failure or timed out.

    `maybe_sent` is False only when the connection itself failed, so the request surely
    never reached etcd; otherwise a write may still have been applied.
    """

    def __init__(self, endpoint: str, message: str, *, maybe_sent: bool = True) -> None:
        super().__init__(endpoint, message)
        self.maybe_sent = maybe_sent


class EtcdResponseError(EtcdError):
    """The endpoint answered something that is not an etcd gateway response."""


class EtcdRequestError(EtcdError):
    """etcd answered the request with an error (no leader, NOSPACE, bad revision, ...)."""

    def __init__(
        self, endpoint: str, path: str, http_status: int, code: int, server_message: str
    ) -> None:
        super().__init__(
            endpoint,
            f"etcd at {endpoint} refused {path}: {server_message} "
            f"(gRPC code {code}, HTTP {http_status})",
        )
        self.path = path
        self.http_status = http_status
        self.code = code
        self.server_message = server_message

    @property
    def no_space(self) -> bool:
        """True when the cluster refused a write because its NOSPACE alarm is raised."""
        return NO_SPACE_MESSAGE in self.server_message


class EtcdAuthError(EtcdRequestError):
    """etcd refused the credentials or the token, or the user lacks permission."""


@dataclass(frozen=True, slots=True)
class ClientTLS:
    """TLS settings for client traffic: the CA to trust and, for client-cert auth, a cert/key."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def to_dict(self) -> dict[str, str | None]:
        return {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: str
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class PutResult:
    revision: int
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: list[KeyValue]
    count: int
    revision: int
    more: bool = False


@dataclass(frozen=True, slots=True)
class DeleteResult:
    deleted: int
    revision: int
    prev_kvs: list[KeyValue] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Status:
    """One member's own view: who it thinks leads, its raft position and its database size."""

    member_id: int
    cluster_id: int
    leader: int
    raft_term: int
    raft_index: int
    raft_applied_index: int
    db_size: int
    db_size_in_use: int
    version: str
    revision: int
    errors: tuple[str, ...] = ()
    is_learner: bool = False

    @property
    def is_leader(self) -> bool:
        return self.leader != 0 and self.leader == self.member_id


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False

    @property
    def id_hex(self) -> str:
        """The member ID as etcd's logs and peer headers write it."""
        return f"{self.id:x}"


@dataclass(frozen=True, slots=True)
class Alarm:
    member_id: int
    alarm: str  # NOSPACE or CORRUPT


@dataclass(frozen=True, slots=True)
class Health:
    healthy: bool
    reason: str = ""


def _encode(text: str | bytes) -> str:
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    return base64.b64encode(raw).decode("ascii")


def _decode(value: Any) -> str:
    if not value:
        return ""
    return base64.b64decode(value).decode("utf-8", "surrogateescape")


def prefix_end(prefix: str | bytes) -> bytes:
    """The range_end that selects every key starting with `prefix` (etcd's own rule)."""
    raw = bytearray(
        prefix if isinstance(prefix, bytes) else prefix.encode("utf-8", "surrogateescape")
    )
    for i in range(len(raw) - 1, -1, -1):
        if raw[i] < 0xFF:
            raw[i] += 1
            return bytes(raw[: i + 1])
    return b"\x00"  # every byte is 0xff: all keys from `prefix` on


def _int(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name, 0)
    if isinstance(value, bool):
        raise ValueError(f"{name} is a boolean")
    return int(value)


def _kv(data: Mapping[str, Any]) -> KeyValue:
    return KeyValue(
        key=_decode(data.get("key")),
        value=_decode(data.get("value")),
        create_revision=_int(data, "create_revision"),
        mod_revision=_int(data, "mod_revision"),
        version=_int(data, "version"),
        lease=_int(data, "lease"),
    )


def _revision(body: Mapping[str, Any]) -> int:
    return _int(body.get("header") or {}, "revision")


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
            elif isinstance(exc, httpx.RemoteProtocolError) and self.endpoint.startswith("http:"):
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
            text in message for text in _AUTH_MESSAGES
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
        body: dict[str, Any] = {"key": _encode(key), "value": _encode(value)}
        if lease:
            body["lease"] = str(lease)
        if prev_kv:
            body["prev_kv"] = True
        data = await self._call("/kv/put", body, timeout=timeout)

        def build(d: Mapping[str, Any]) -> PutResult:
            prev = d.get("prev_kv")
            return PutResult(revision=_revision(d), prev_kv=_kv(prev) if prev else None)

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
        body: dict[str, Any] = {"key": _encode(key)}
        if prefix:
            body["range_end"] = _encode(prefix_end(key))
        elif range_end is not None:
            body["range_end"] = _encode(range_end)
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
                kvs=[_kv(kv) for kv in d.get("kvs") or []],
                count=_int(d, "count"),
                revision=_revision(d),
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
        body: dict[str, Any] = {"key": _encode(key)}
        if prefix:
            body["range_end"] = _encode(prefix_end(key))
        if prev_kv:
            body["prev_kv"] = True
        data = await self._call("/kv/deleterange", body, timeout=timeout)

        def build(d: Mapping[str, Any]) -> DeleteResult:
            return DeleteResult(
                deleted=_int(d, "deleted"),
                revision=_revision(d),
                prev_kvs=[_kv(kv) for kv in d.get("prev_kvs") or []],
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
                member_id=_int(header, "member_id"),
                cluster_id=_int(header, "cluster_id"),
                leader=_int(d, "leader"),
                raft_term=_int(d, "raftTerm"),
                raft_index=_int(d, "raftIndex"),
                raft_applied_index=_int(d, "raftAppliedIndex"),
                db_size=_int(d, "dbSize"),
                db_size_in_use=_int(d, "dbSizeInUse"),
                version=str(d.get("version", "")),
                revision=_int(header, "revision"),
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
                    id=_int(m, "ID"),
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
                Alarm(member_id=_int(a, "memberID"), alarm=str(a.get("alarm", "NONE")))
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
