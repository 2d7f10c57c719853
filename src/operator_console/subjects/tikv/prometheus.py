"""An async client for Prometheus's HTTP query API (`/api/v1/query`, `/api/v1/query_range`).

Results come back typed (vector, matrix, scalar, string) with Prometheus's sample values
decoded ("NaN" and "+Inf" included); errors carry Prometheus's `errorType` and `error`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from operator_console.subjects.tikv.connection import (
    Credentials,
    TLSFiles,
    build_http_client,
    split_endpoint,
)


class PrometheusError(Exception):
    """A Prometheus request failed; `error_type` is Prometheus's own (bad_data, timeout...)."""

    def __init__(
        self, message: str, *, query: str = "", status: int | None = None, error_type: str = ""
    ) -> None:
        super().__init__(message)
        self.query = query
        self.status = status
        self.error_type = error_type


class PrometheusUnavailableError(PrometheusError):
    """Prometheus could not be reached."""


class PrometheusQueryError(PrometheusError):
    """Prometheus refused or failed the query (status "error")."""


class PrometheusResponseError(PrometheusError):
    """The answer is not the Prometheus API's JSON envelope."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One instant-vector element: a series' labels and its value at `timestamp`."""

    labels: Mapping[str, str]
    timestamp: float
    value: float

    def __getitem__(self, label: str) -> str:
        return self.labels[label]


@dataclass(frozen=True, slots=True)
class Series:
    """One range-vector element: a series' labels and its (timestamp, value) points."""

    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class Vector:
    samples: tuple[Sample, ...]
    warnings: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def by(self, label: str) -> dict[str, float]:
        """Values keyed by one label (e.g. instance); a repeated label value is an error."""
        out: dict[str, float] = {}
        for sample in self.samples:
            key = sample.labels.get(label, "")
            if key in out:
                raise PrometheusResponseError(f"label {label!r} does not tell series apart")
            out[key] = sample.value
        return out


@dataclass(frozen=True, slots=True)
class Matrix:
    series: tuple[Series, ...]
    warnings: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[Series]:
        return iter(self.series)

    def __len__(self) -> int:
        return len(self.series)


@dataclass(frozen=True, slots=True)
class Scalar:
    timestamp: float
    value: float
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class String:
    timestamp: float
    value: str
    warnings: tuple[str, ...] = ()


QueryResult = Vector | Matrix | Scalar | String


def _time(value: float | datetime) -> str:
    return repr(value.timestamp() if isinstance(value, datetime) else float(value))


class PrometheusClient:
    """Queries one Prometheus server (or anything speaking its HTTP API)."""

    def __init__(
        self,
        url: str,
        *,
        tls: TLSFiles | None = None,
        credentials: Credentials | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url, embedded = split_endpoint(url)
        self._http = build_http_client(
            tls=tls,
            credentials=credentials or embedded,
            timeout=timeout,
            endpoints=(self.url,),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"PrometheusClient(url={self.url!r})"

    async def __aenter__(self) -> PrometheusClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def query(self, promql: str, *, at: float | datetime | None = None) -> QueryResult:
        """Evaluate `promql` at one instant (now by default)."""
        form = {"query": promql}
        if at is not None:
            form["time"] = _time(at)
        return await self._post("/api/v1/query", form, promql)

    async def query_range(
        self,
        promql: str,
        *,
        start: float | datetime,
        end: float | datetime,
        step: float,
    ) -> Matrix:
        """Evaluate `promql` over [start, end] every `step` seconds."""
        form = {"query": promql, "start": _time(start), "end": _time(end), "step": repr(step)}
        result = await self._post("/api/v1/query_range", form, promql)
        if not isinstance(result, Matrix):
            raise PrometheusResponseError(
                f"Prometheus query_range returned a {type(result).__name__}", query=promql
            )
        return result

    async def vector(self, promql: str, *, at: float | datetime | None = None) -> Vector:
        """Evaluate an expression that must give an instant vector."""
        result = await self.query(promql, at=at)
        if isinstance(result, Scalar):
            return Vector((Sample({}, result.timestamp, result.value),), result.warnings)
        if not isinstance(result, Vector):
            raise PrometheusResponseError(
                f"expected a vector from {promql!r}, got a {type(result).__name__}", query=promql
            )
        return result

    async def _post(self, path: str, form: dict[str, str], promql: str) -> QueryResult:
        try:
            response = await self._http.post(self.url + path, data=form)
        except (httpx.TransportError, OSError) as exc:
            raise PrometheusUnavailableError(
                f"Prometheus at {self.url} cannot be reached ({exc or type(exc).__name__});"
                " check the URL (usually port 9090)",
                query=promql,
            ) from None
        try:
            envelope = json.loads(response.content)
        except ValueError:
            head = response.content[:120].decode("utf-8", errors="replace")
            raise PrometheusResponseError(
                f"Prometheus at {self.url}{path} answered HTTP {response.status_code} with a"
                f" body that is not its API's JSON: {head!r}",
                query=promql,
                status=response.status_code,
            ) from None
        if not isinstance(envelope, dict) or envelope.get("status") not in ("success", "error"):
            raise PrometheusResponseError(
                f"Prometheus at {self.url}{path}: no API envelope in the answer",
                query=promql,
                status=response.status_code,
            )
        warnings = tuple(str(w) for w in envelope.get("warnings") or ())
        if envelope["status"] == "error":
            error_type = str(envelope.get("errorType", ""))
            raise PrometheusQueryError(
                f"Prometheus refused {promql!r}: {error_type}: {envelope.get('error', '')}",
                query=promql,
                status=response.status_code,
                error_type=error_type,
            )
        return _result(envelope.get("data"), warnings, promql)


def _value(raw: Any, promql: str) -> tuple[float, float]:
    try:
        ts, value = raw
        return float(ts), float(value)
    except (TypeError, ValueError):
        raise PrometheusResponseError(f"bad sample {raw!r}", query=promql) from None


def _labels(raw: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (raw or {}).items()}


def _result(data: Any, warnings: tuple[str, ...], promql: str) -> QueryResult:
    if not isinstance(data, dict):
        raise PrometheusResponseError("the answer has no data object", query=promql)
    kind, result = data.get("resultType"), data.get("result")
    if kind == "vector":
        samples = []
        for item in result or ():
            ts, value = _value(item.get("value"), promql)
            samples.append(Sample(_labels(item.get("metric")), ts, value))
        return Vector(tuple(samples), warnings)
    if kind == "matrix":
        series = tuple(
            Series(
                _labels(item.get("metric")),
                tuple(_value(v, promql) for v in item.get("values") or ()),
            )
            for item in result or ()
        )
        return Matrix(series, warnings)
    if kind == "scalar":
        ts, value = _value(result, promql)
        return Scalar(ts, value, warnings)
    if kind == "string" and isinstance(result, list) and len(result) == 2:
        return String(float(result[0]), str(result[1]), warnings)
    raise PrometheusResponseError(f"unknown resultType {kind!r}", query=promql)
