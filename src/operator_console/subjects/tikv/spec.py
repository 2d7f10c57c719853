"""What `watch tikv --endpoints FILE` takes: PD's client URLs, an optional Prometheus, TLS
files, credentials and thresholds, checked field by field into one clear error each.

    {"pd": "http://pd:2379", "prometheus": "http://prom:9090"}
    {"pd": {"endpoints": ["https://pd-0:2379", "https://pd-1:2379"],
            "tls": {"ca_file": "ca.pem", "cert_file": "client.pem", "key_file": "key.pem"},
            "username": "ops", "password_file": "/run/secrets/pd"},
     "prometheus": {"url": "http://prom:9090", "labels": "cluster=\\"prod\\""},
     "thresholds": {"grpc_p99_ms": 150}}

Secrets (passwords) are held as `SecretStr` and never shown: `redacted()` is what the
timeline and the console see.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from operator_console.contract import SpecError
from operator_console.subjects.tikv.connection import (
    ConnectionConfigError,
    Credentials,
    TLSFiles,
    split_endpoint,
)
from operator_console.subjects.tikv.queries import TargetLabels

M = TypeVar("M", bound=BaseModel)
_WINDOW = re.compile(r"^\d+(ms|s|m|h)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSSpec(_Strict):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def files(self) -> TLSFiles:
        return TLSFiles(self.ca_file, self.cert_file, self.key_file)


class _Auth(_Strict):
    tls: TLSSpec | None = None
    username: str | None = Field(default=None, min_length=1)
    password: SecretStr | None = None
    password_file: Path | None = None

    @model_validator(mode="after")
    def _pairs(self) -> _Auth:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        if self.username is None and (self.password is not None or self.password_file):
            raise ValueError("a password needs a username")
        return self

    def credentials(self, where: str) -> Credentials | None:
        """The basic credentials, reading password_file now (its content is never shown)."""
        if self.username is None:
            return None
        if self.password_file is not None:
            try:
                secret = self.password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SpecError(
                    f"{where}.password_file", f"cannot read it: {exc.strerror}"
                ) from None
            return Credentials(self.username, secret)
        password = self.password.get_secret_value() if self.password else ""
        return Credentials(self.username, password)

    def shown(self) -> dict[str, Any]:
        """TLS paths and whether credentials are set: nothing secret."""
        out: dict[str, Any] = {}
        if self.tls is not None:
            out["tls"] = {k: str(v) for k, v in self.tls.model_dump().items() if v is not None}
        if self.username is not None:
            out["auth"] = "basic (user and password not shown)"
        return out


def _userinfo_out(data: Any, key: str) -> Any:
    """Clean URLs; credentials written into one (user:password@) become the fields."""
    if not isinstance(data, dict):
        return data
    raw = data.get(key)
    urls: list[Any] = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(u, str) for u in urls):
        return data
    split = [split_endpoint(str(u)) for u in urls]  # a bad URL: a ValueError naming it, no userinfo
    out = {**data, key: [u for u, _ in split] if isinstance(raw, list) else split[0][0]}
    found = next((c for _, c in split if c is not None), None)
    if found is not None and "username" not in data:
        out.update(username=found.username, password=found.password)
    return out


class PDSpec(_Auth):
    endpoints: list[str] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _clean(cls, data: Any) -> Any:
        return _userinfo_out(data, "endpoints")


class TidbOperatorSpec(_Strict):
    cluster: str = Field(min_length=1)
    namespace: str | None = None


class PrometheusSpec(_Auth):
    url: str
    labels: str = Field(default="", description='extra label matchers, e.g. cluster="prod"')
    tidb_operator: TidbOperatorSpec | None = None
    window: str = Field(default="1m", description="the rate window of every query")

    @model_validator(mode="before")
    @classmethod
    def _clean(cls, data: Any) -> Any:
        return _userinfo_out(data, "url")

    @field_validator("window")
    @classmethod
    def _window(cls, window: str) -> str:
        if not _WINDOW.match(window):
            raise ValueError(f"{window!r} is not a PromQL duration such as 1m or 30s")
        return window

    def targets(self) -> TargetLabels:
        if self.tidb_operator is not None:
            op = self.tidb_operator
            labels = TargetLabels.tidb_operator(op.cluster, op.namespace)
            if self.labels:
                labels = TargetLabels(
                    f"{labels.tikv},{self.labels}", f"{labels.pd},{self.labels}", True
                )
            return labels
        return TargetLabels.tiup(self.labels)


class ThresholdSpec(_Strict):
    """What counts as a breach; the defaults follow PD's own (20 s heartbeat, 80 slow score)."""

    heartbeat_s: float = Field(default=20.0, gt=0, description="PD's Disconnected after 20 s")
    disk_available_ratio: float = Field(default=0.2, gt=0, lt=1)
    grpc_p99_ms: float = Field(default=200.0, gt=0)
    leader_imbalance_ratio: float = Field(default=0.4, gt=0)
    leader_imbalance_min: int = Field(default=5, ge=1)
    offline_stuck_s: float = Field(default=600.0, gt=0)
    slow_score: int = Field(default=80, ge=1, le=100)


class EndpointsSpec(_Strict):
    pd: PDSpec
    prometheus: PrometheusSpec | None = None
    thresholds: ThresholdSpec = Field(default_factory=ThresholdSpec)

    @field_validator("pd", mode="before")
    @classmethod
    def _pd_short(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"endpoints": [value]}
        if isinstance(value, list):
            return {"endpoints": value}
        return value

    @field_validator("prometheus", mode="before")
    @classmethod
    def _prometheus_short(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value

    def pd_endpoints(self) -> list[str]:
        """PD's client URLs (any user:password@ they were written with is in the fields)."""
        return list(self.pd.endpoints)

    def prometheus_url(self) -> str | None:
        return self.prometheus.url if self.prometheus else None

    def redacted(self) -> dict[str, Any]:
        """The endpoints as the timeline, the database and the console may show them."""
        pd: dict[str, Any] = {"endpoints": self.pd_endpoints(), **self.pd.shown()}
        out: dict[str, Any] = {"pd": pd}
        if self.prometheus is not None:
            prom: dict[str, Any] = {"url": self.prometheus_url(), **self.prometheus.shown()}
            if self.prometheus.labels:
                prom["labels"] = self.prometheus.labels
            out["prometheus"] = prom
        out["thresholds"] = self.thresholds.model_dump()
        return out


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_endpoints(data: Mapping[str, Any]) -> EndpointsSpec:
    """The endpoints file, or a SpecError naming the field and the fix."""
    if "pd" not in data:
        raise SpecError("pd", 'missing: give PD\'s client URL(s), e.g. {"pd": "http://pd:2379"}')
    try:
        spec = EndpointsSpec.model_validate(dict(data))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = _where(tuple(error["loc"])) or "endpoints"
        if error["type"] == "extra_forbidden":
            raise SpecError(where, "not a field of a TiKV endpoints file") from None
        message = str(error["msg"]).removeprefix("Value error, ")
        raise SpecError(where, message) from None
    for where, auth in (("pd", spec.pd), ("prometheus", spec.prometheus)):
        if auth is not None and auth.tls is not None:
            try:
                auth.tls.files().ssl_context()
            except ConnectionConfigError as exc:
                raise SpecError(f"{where}.tls", str(exc)) from None
    return spec


__all__ = ["EndpointsSpec", "ThresholdSpec", "parse_endpoints"]
