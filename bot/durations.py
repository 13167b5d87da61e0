"""Durations as people type them: ``90s``, ``30m``, ``4h``, ``3d``, ``1h30m``."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

__all__ = ["Duration", "format_duration", "parse_duration"]

_PART = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Past this a timedelta (and a datetime it is added to) overflows: 100 years is plenty.
_LONGEST = 100 * 365 * 86400


def parse_duration(text: str) -> dt.timedelta:
    """``"1h30m"`` → 90 minutes. Raises ValueError with the expected form on bad input."""
    cleaned = text.strip().lower().replace(" ", "")
    if not cleaned or _PART.sub("", cleaned):
        raise ValueError(
            f"{text!r} is not a duration: use a number and a unit, like 30m, 4h, 3d or 1h30m"
        )
    seconds = sum(int(n) * _UNITS[u] for n, u in _PART.findall(cleaned))
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a duration: it must be longer than zero")
    if seconds > _LONGEST:
        raise ValueError(f"{text!r} is not a duration Stopbot takes: give at most 100 years")
    return dt.timedelta(seconds=seconds)


def format_duration(delta: dt.timedelta) -> str:
    """90 minutes → ``"1h 30m"``; under a minute, seconds."""
    total = round(delta.total_seconds())
    if total < 60:
        return f"{max(total, 0)}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return " ".join(parts[:2])


def _coerce(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.timedelta(seconds=value)
    return value


# Serialised as a number of seconds, which _coerce reads back.
Duration = Annotated[
    dt.timedelta,
    BeforeValidator(_coerce),
    PlainSerializer(lambda d: d.total_seconds(), return_type=float, when_used="json"),
]
