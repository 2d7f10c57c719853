"""What an etcd scenario may say about its topology and workload, and what an endpoints file for
`watch etcd` holds, checked field by field."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from operator_console.contract import SpecError
from operator_console.lab.etcd.client import ClientTLS

M = TypeVar("M", bound=BaseModel)

MiB = 1024 * 1024
OPS = ("put", "get", "delete")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ThresholdSpec(_Strict):
    """What counts as broken: the clients' SLO and error budget, and etcd's own limits."""

    latency_p99_ms: float = Field(default=250.0, gt=0)
    error_rate: float = Field(default=0.05, gt=0, lt=1)
    # A leader whose quorum round trip is slower than this holds up every write.
    slow_member_ms: float = Field(default=200.0, gt=0)
    # Entries a member's applied index may trail the leader's committed index by.
    apply_lag_entries: int = Field(default=200, ge=1)
    db_quota_ratio: float = Field(default=0.8, gt=0, lt=1)
    leader_changes: int = Field(default=3, ge=2)
    flapping_window_s: float = Field(default=60.0, ge=5, le=3600)


class TopologySpec(_Strict):
    members: Literal[3, 5] = 3
    quota_backend_bytes: int | None = Field(default=None, ge=MiB, le=8 * 1024 * MiB)
    thresholds: ThresholdSpec = Field(default_factory=ThresholdSpec)


def _check_mix(mix: dict[str, float] | None) -> dict[str, float] | None:
    if mix is None:
        return None
    unknown = sorted(set(mix) - set(OPS))
    if unknown:
        raise ValueError(f"unknown operation(s) {', '.join(unknown)} (put, get, delete)")
    if any(share < 0 for share in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError("shares must be >= 0 and add up to more than 0")
    return mix


class WorkloadChange(_Strict):
    rate: float | None = Field(default=None, ge=0, le=1000)
    mix: dict[str, float] | None = None

    _mix = field_validator("mix")(_check_mix)


class WorkloadSpec(WorkloadChange):
    rate: float | None = Field(default=40.0, ge=0, le=1000)
    mix: dict[str, float] | None = Field(
        default_factory=lambda: {"put": 0.5, "get": 0.4, "delete": 0.1}
    )
    keys: int = Field(default=200, ge=1, le=10_000)
    timeout_s: float = Field(default=1.0, gt=0, le=30)
    # How often the acknowledged writes are read back and checked while traffic runs.
    check_every_s: float = Field(default=2.0, ge=0.5, le=60)


def parse(model: type[M], data: Mapping[str, Any], prefix: str) -> M:
    """Validate `data`; the first problem becomes a SpecError naming its field."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        field = f"{prefix}.{where}" if prefix and where else (where or prefix)
        raise SpecError(field, error["msg"].removeprefix("Value error, ")) from None


# ------------------------------------------------------------------------ endpoints


class TLSFiles(_Strict):
    """Client TLS for a real cluster: the CA that signed the members' certificates and, when
    they ask for one, the client's own certificate and key. `lab up` also lists the members'
    own certificate (`cert_file`, `key_file`) next to `client_cert_file`; the client's pair
    is `client_*` when given, else `cert_file`/`key_file`."""

    ca_file: str
    cert_file: str | None = None
    key_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None
    client_cert_auth: bool | None = None

    def client_tls(self) -> ClientTLS:
        cert = self.client_cert_file or self.cert_file
        key = self.client_key_file if self.client_cert_file else self.key_file
        return ClientTLS(self.ca_file, cert, key)

    @model_validator(mode="after")
    def _files_exist(self) -> TLSFiles:
        for name in ("ca_file", "cert_file", "key_file", "client_cert_file", "client_key_file"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise ValueError(f"{name} {value} is not a readable file")
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("give client_cert_file and client_key_file together")
        return self


class AuthSpec(_Strict):
    """etcd's own user and password; the password inline, in a file, or in a variable."""

    username: str = Field(min_length=1)
    password: str | None = Field(default=None, min_length=1, repr=False)
    password_file: str | None = None
    password_env: str | None = None

    @model_validator(mode="after")
    def _one_password(self) -> AuthSpec:
        given = [k for k in ("password", "password_file", "password_env") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of password, password_file, password_env")
        return self

    def secret(self) -> str:
        """The password itself; read only when a client is built, never stored or shown."""
        if self.password is not None:
            return self.password
        if self.password_file is not None:
            try:
                text = Path(self.password_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SpecError("auth.password_file", f"cannot read it: {exc.strerror}") from None
            if not text:
                raise SpecError("auth.password_file", "the file is empty")
            return text
        assert self.password_env is not None
        value = os.environ.get(self.password_env, "")
        if not value:
            raise SpecError("auth.password_env", f"${self.password_env} is not set")
        return value

    def shown(self) -> dict[str, str]:
        """What the timeline and the database may say about the credentials: no password."""
        out = {"username": self.username}
        if self.password_file:
            out["password_file"] = self.password_file
        if self.password_env:
            out["password_env"] = self.password_env
        return out


class AttachSpec(_Strict):
    thresholds: ThresholdSpec = Field(default_factory=ThresholdSpec)
    tls: TLSFiles | None = None
    auth: AuthSpec | None = None


ENDPOINT_FIELDS = ("members", "tls", "auth", "thresholds", "binary")


@dataclass(frozen=True, slots=True)
class Endpoints:
    """A parsed endpoints file: member client URLs, TLS, credentials and thresholds."""

    members: dict[str, str]
    spec: AttachSpec

    @property
    def tls(self) -> ClientTLS | None:
        return self.spec.tls.client_tls() if self.spec.tls is not None else None

    def credentials(self) -> tuple[str | None, str | None]:
        auth = self.spec.auth
        return (auth.username, auth.secret()) if auth is not None else (None, None)

    def shown(self) -> dict[str, Any]:
        """The endpoints as the timeline may show them: URLs, TLS file paths, no password."""
        return {
            "members": {name: {"client_url": url} for name, url in self.members.items()},
            "tls": self.spec.tls.model_dump(exclude_none=True) if self.spec.tls else None,
            "auth": self.spec.auth.shown() if self.spec.auth else None,
            "thresholds": self.spec.thresholds.model_dump(),
        }


def parse_endpoints(endpoints: Mapping[str, Any]) -> Endpoints:
    """From the JSON `lab up --subject etcd` prints, or the same shape by hand."""
    unknown = sorted(set(endpoints) - set(ENDPOINT_FIELDS))
    if unknown:
        raise SpecError(
            unknown[0], f"not a field of an etcd endpoints file ({', '.join(ENDPOINT_FIELDS)})"
        )
    members = endpoints.get("members")
    if not isinstance(members, Mapping) or not members:
        raise SpecError(
            "members", 'give at least one member: {"members": {"member-1": {"client_url": ...}}}'
        )
    urls: dict[str, str] = {}
    for name, member in members.items():
        url = member.get("client_url") if isinstance(member, Mapping) else member
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise SpecError(f"members.{name}.client_url", "an http:// or https:// URL is needed")
        urls[str(name)] = url.rstrip("/")
    extra = {k: v for k, v in endpoints.items() if k in ("tls", "auth", "thresholds") and v}
    spec = parse(AttachSpec, extra, "")
    if spec.auth is not None:
        spec.auth.secret()  # a missing file or variable is one clear line now
    return Endpoints(urls, spec)
