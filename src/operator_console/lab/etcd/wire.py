"""The etcd v3 JSON gateway's wire format: result types, errors, base64 and field parsing.

Names follow etcd 3.4's `rpc.proto` as its grpc-gateway serves them (proto names, e.g.
`raftTerm`, `header.member_id`): 64-bit integers arrive as JSON strings, zero values and empty
lists are left out, keys and values are base64. Keys and values are `str` here; bytes that are
not UTF-8 survive the round trip through the `surrogateescape` error handler.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# gRPC status codes etcd's gateway reports in an error body's "code".
GRPC_RESOURCE_EXHAUSTED = 8
GRPC_PERMISSION_DENIED = 7
GRPC_UNAUTHENTICATED = 16
AUTH_MESSAGES = (
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


def encode(text: str | bytes) -> str:
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    return base64.b64encode(raw).decode("ascii")


def decode(value: Any) -> str:
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


def int_field(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name, 0)
    if isinstance(value, bool):
        raise ValueError(f"{name} is a boolean")
    return int(value)


def key_value(data: Mapping[str, Any]) -> KeyValue:
    return KeyValue(
        key=decode(data.get("key")),
        value=decode(data.get("value")),
        create_revision=int_field(data, "create_revision"),
        mod_revision=int_field(data, "mod_revision"),
        version=int_field(data, "version"),
        lease=int_field(data, "lease"),
    )


def revision_of(body: Mapping[str, Any]) -> int:
    return int_field(body.get("header") or {}, "revision")
