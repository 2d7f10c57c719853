"""Writers that put bytes on the wire the way PD's Go encoders do, to author its payloads.

`indented()` is encoding/json's MarshalIndent as unrolled/render writes it for
`render.JSON` with IndentJSON (PD's `createIndentRender`, a trailing newline); `compact()`
is easyjson's and encoding/json's Marshal. Go specifics kept: HTML characters escaped,
float64 in strconv's shortest 'f' form ("1", not "1.0"), map keys sorted as strings,
RFC 3339 times with nanoseconds, Duration and ByteSize as PD's typeutil prints them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class GoFloat:
    """A float64 field: Go writes 1.0 as `1` and 0.00001 as `0.00001`."""

    value: float


class GoMap(dict):  # type: ignore[type-arg]
    """A Go map: encoding/json writes its keys sorted by their string form."""


def go_float(value: float) -> str:
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("encoding/json cannot write NaN or Inf")
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    magnitude = abs(value)
    if 1e-6 <= magnitude < 1e21:
        return format(Decimal(repr(value)), "f")
    mantissa, exponent = repr(value).split("e")
    return f"{mantissa}e{int(exponent):+03d}".replace("e+0", "e+").replace("e-0", "e-")


def go_string(value: str) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _scalar(value: Any) -> str | None:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, GoFloat):
        return go_float(value.value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        raise TypeError("wrap float64 fields in GoFloat so their Go form is explicit")
    if isinstance(value, str):
        return go_string(value)
    return None


def _items(value: dict) -> list[tuple[str, Any]]:  # type: ignore[type-arg]
    items = [(str(k), v) for k, v in value.items()]
    return sorted(items) if isinstance(value, GoMap) else items


def compact(value: Any) -> str:
    scalar = _scalar(value)
    if scalar is not None:
        return scalar
    if isinstance(value, dict):
        return "{" + ",".join(f"{go_string(k)}:{compact(v)}" for k, v in _items(value)) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(compact(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__}")


def _indent(value: Any, depth: int) -> str:
    scalar = _scalar(value)
    if scalar is not None:
        return scalar
    pad, inner = "  " * depth, "  " * (depth + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        body = ",\n".join(
            f"{inner}{go_string(k)}: {_indent(v, depth + 1)}" for k, v in _items(value)
        )
        return "{\n" + body + "\n" + pad + "}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        body = ",\n".join(inner + _indent(v, depth + 1) for v in value)
        return "[\n" + body + "\n" + pad + "]"
    raise TypeError(f"cannot write {type(value).__name__}")


def indented(value: Any) -> str:
    """What PD's `render.JSON` sends: MarshalIndent with two spaces, then a newline."""
    return _indent(value, 0) + "\n"


def rfc3339nano(moment: datetime, nanos: int | None = None) -> str:
    """Go's time.Time JSON form: trailing zeros of the nanoseconds dropped, +08:00 or Z."""
    base = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if nanos is None:
        nanos = moment.microsecond * 1000
    frac = f".{nanos:09d}".rstrip("0") if nanos else ""
    offset = moment.utcoffset()
    if offset is None or offset == timedelta(0):
        zone = "Z"
    else:
        minutes = int(offset.total_seconds() // 60)
        sign = "+" if minutes >= 0 else "-"
        zone = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return base + frac + zone


def go_duration(seconds: Decimal | float) -> str:
    """time.Duration.String(): "72h3m4.5s", "350ms", "0s" (what typeutil.Duration writes)."""
    nanos = int(Decimal(str(seconds)) * 1_000_000_000)
    if nanos == 0:
        return "0s"
    if nanos < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1000), ("ns", 1)):
            if nanos >= size:
                return _trim(Decimal(nanos) / size) + unit
    hours, rest = divmod(nanos, 3600 * 1_000_000_000)
    minutes, rest = divmod(rest, 60 * 1_000_000_000)
    secs = _trim(Decimal(rest) / 1_000_000_000) + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    if minutes:
        return f"{minutes}m{secs}"
    return secs


def _trim(value: Decimal) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def byte_size(size: int) -> str:
    """docker/go-units BytesSize, which typeutil.ByteSize writes: "%.4g" and a binary unit."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"]
    value = float(size)
    index = 0
    while value >= 1024 and index < len(units) - 1:
        value /= 1024
        index += 1
    # Go's %.4g and Python's agree for values below 1024: no exponent, zeros trimmed.
    return f"{value:.4g}" + units[index]
