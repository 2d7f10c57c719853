"""What a rate limiter scenario may say about its topology and workload, checked field by field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from operator_console.contract import SpecError

M = TypeVar("M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ThresholdSpec(_Strict):
    latency_p99_ms: float = Field(default=250.0, gt=0)
    error_rate: float = Field(default=0.05, gt=0, lt=1)


class TopologySpec(_Strict):
    nodes: int = Field(default=3, ge=1, le=9)
    default_limit: int = Field(default=50, gt=0)
    window_ms: int = Field(default=5000, ge=100, le=600_000)
    fail_mode: Literal["open", "closed"] = "open"
    config_refresh_s: float = Field(default=1.0, gt=0, le=60)
    thresholds: ThresholdSpec = Field(default_factory=ThresholdSpec)


class WorkloadChange(_Strict):
    rate: float | None = Field(default=None, gt=0, le=2000)
    hot_keys: dict[str, float] | None = None

    @model_validator(mode="after")
    def _shares(self) -> WorkloadChange:
        if self.hot_keys is not None:
            if any(not 0 < share < 1 for share in self.hot_keys.values()):
                raise ValueError("each hot key share must be between 0 and 1")
            if sum(self.hot_keys.values()) > 1:
                raise ValueError("hot key shares add up to more than 1")
        return self


class WorkloadSpec(WorkloadChange):
    rate: float | None = Field(default=60.0, gt=0, le=2000)
    keys: int = Field(default=20, ge=1, le=100_000)
    hot_keys: dict[str, float] | None = Field(default_factory=lambda: {"user:hot": 0.4})
    timeout_s: float = Field(default=1.0, gt=0, le=30)
    seed: int | None = None  # the clients' random choices (keys, arrivals), for repeatable runs


class AttachSpec(_Strict):
    """What `watch ratelimiter` takes besides the endpoints: the thresholds to judge by."""

    thresholds: ThresholdSpec = Field(default_factory=ThresholdSpec)


def parse(model: type[M], data: Mapping[str, Any], prefix: str) -> M:
    """Validate `data`; the first problem becomes a SpecError naming its field."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        field = f"{prefix}.{where}" if where else prefix
        raise SpecError(field, error["msg"]) from None
