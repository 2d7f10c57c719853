"""Maintenance windows: when high-risk actions may run.

A window is written as a person would say it, e.g. `Sat 02:00-04:00 UTC` or
`Mon-Fri 22:00-23:30 UTC`; several are separated by `;`. Times are UTC (the word is optional but,
when given, must be UTC); a window may run past midnight (`Sun 23:00-01:00 UTC`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(
    r"^\s*(?P<days>[A-Za-z]{3}(?:\s*-\s*[A-Za-z]{3})?(?:\s*,\s*[A-Za-z]{3})*)\s+"
    r"(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*(?P<zone>UTC)?\s*$",
    re.IGNORECASE,
)


class WindowError(ValueError):
    """A maintenance window cannot be read; the message shows the form that works."""


@dataclass(frozen=True, slots=True)
class Window:
    """Days of the week it opens on (0 is Monday), and its start and length."""

    days: frozenset[int]
    start: time
    length: timedelta
    text: str

    def openings_around(self, now: datetime) -> list[datetime]:
        """The window's openings from a week before `now` to a week after."""
        base = datetime.combine(now.date(), self.start, tzinfo=now.tzinfo)
        out = []
        for offset in range(-8, 9):
            opening = base + timedelta(days=offset)
            if opening.weekday() in self.days:
                out.append(opening)
        return out


def _day(token: str, text: str) -> int:
    try:
        return DAYS.index(token.strip().lower()[:3])
    except ValueError:
        raise WindowError(f"{text!r}: {token!r} is not a day (Mon..Sun)") from None


def _clock(token: str, text: str) -> time:
    hours, minutes = (int(part) for part in token.split(":"))
    if hours > 23 or minutes > 59:
        raise WindowError(f"{text!r}: {token} is not a time of day")
    return time(hours, minutes)


def parse_window(text: str) -> Window:
    match = _WINDOW.match(text)
    if match is None:
        raise WindowError(
            f"{text!r} is not a maintenance window; write e.g. 'Sat 02:00-04:00 UTC' or "
            "'Mon-Fri 22:00-23:30 UTC'"
        )
    days: set[int] = set()
    for part in match["days"].split(","):
        if "-" in part:
            first, last = (_day(p, text) for p in part.split("-"))
            span = (last - first) % 7
            days.update((first + i) % 7 for i in range(span + 1))
        else:
            days.add(_day(part, text))
    start, end = _clock(match["start"], text), _clock(match["end"], text)
    minutes = (end.hour * 60 + end.minute) - (start.hour * 60 + start.minute)
    if minutes <= 0:
        minutes += 24 * 60  # past midnight
    return Window(frozenset(days), start, timedelta(minutes=minutes), text.strip())


@dataclass(frozen=True, slots=True)
class Windows:
    """The configured windows; none configured means high-risk actions may run any time."""

    windows: tuple[Window, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> Windows:
        parts = [p for p in (text or "").split(";") if p.strip()]
        return cls(tuple(parse_window(p) for p in parts))

    def __bool__(self) -> bool:
        return bool(self.windows)

    def open_at(self, now: datetime) -> bool:
        return any(
            opening <= now < opening + w.length
            for w in self.windows
            for opening in w.openings_around(now)
        )

    def next_opening(self, now: datetime) -> datetime | None:
        """When the next window opens (now, if one is open)."""
        if not self.windows:
            return None
        if self.open_at(now):
            return now
        upcoming = [
            opening for w in self.windows for opening in w.openings_around(now) if opening > now
        ]
        return min(upcoming) if upcoming else None

    def describe(self) -> str:
        return "; ".join(w.text for w in self.windows) or "none (any time)"
