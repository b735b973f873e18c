"""Human units in station files: durations, sizes and frequencies.

Every parser accepts a plain number (already in the base unit) or a string with a unit, and
returns the value in the base unit: seconds (float), bytes (int) and hertz (int). Sizes are parsed
by pydantic's :class:`pydantic.ByteSize` (decimal ``kB/MB/GB`` = 10^3/10^6/10^9, binary
``KiB/MiB/GiB`` = 2^10/2^20/2^30), the other two here.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import BeforeValidator, ByteSize, PlainSerializer

__all__ = [
    "parse_since",
    "Bytes",
    "Hertz",
    "Seconds",
    "format_bytes",
    "format_seconds",
    "parse_duration",
    "parse_frequency",
]

_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_DURATION_ALIASES = {"sec": "s", "min": "m"}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h|d|w)", re.IGNORECASE)
_FREQUENCY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(hz|khz|mhz)?\s*$", re.IGNORECASE)
_FREQUENCY_UNITS = {"hz": 1.0, "khz": 1e3, "mhz": 1e6}


def parse_duration(value: object) -> float:
    """Return a duration in seconds from a number of seconds or a string like ``"1h30m"``.

    Units: ``ms``, ``s``/``sec``, ``m``/``min``, ``h``, ``d``, ``w``; parts may be combined
    (``"1h30m"``, ``"2m 30s"``), each unit at most once. Raises ``ValueError`` for anything
    else, a repeated unit (``"1h1h"``), a negative value or a non-finite one (``inf``, ``nan``).
    """
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '90s', '5m'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_duration_text(value)
    else:
        raise ValueError("a duration must be a number of seconds or a string like '90s', '5m'")
    if not math.isfinite(seconds):
        raise ValueError("a duration must be finite (not inf or nan)")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def _parse_duration_text(value: str) -> float:
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or _DURATION_PART.sub("", text).strip():
        raise ValueError(
            f"cannot read {value!r} as a duration; use e.g. '90s', '5m', '1h30m', '2d'"
        )
    units = [_DURATION_ALIASES.get(u.lower(), u.lower()) for _, u in parts]
    for unit in units:
        if units.count(unit) > 1:
            raise ValueError(
                f"{value!r} repeats the unit {unit!r}; give each unit once, e.g. '1h30m'"
            )
    return sum(float(n) * _DURATION_UNITS[u] for (n, _), u in zip(parts, units, strict=True))


def parse_frequency(value: object) -> int:
    """Return a frequency in Hz from a number or a string like ``"48kHz"`` or ``"44.1 kHz"``.

    Raises ``ValueError`` when the text is not a frequency, the value is not finite, or the
    result is not a positive whole number of hertz.
    """
    if isinstance(value, bool):
        raise ValueError("a frequency must be a number of Hz or a string like '48kHz'")
    if isinstance(value, int | float):
        hz = float(value)
    elif isinstance(value, str):
        match = _FREQUENCY.match(value)
        if not match:
            raise ValueError(f"cannot read {value!r} as a frequency; use e.g. '48kHz', '256000'")
        hz = float(match.group(1)) * _FREQUENCY_UNITS[(match.group(2) or "hz").lower()]
    else:
        raise ValueError("a frequency must be a number of Hz or a string like '48kHz'")
    if not math.isfinite(hz):
        raise ValueError("a frequency must be finite (not inf or nan)")
    if hz <= 0 or hz != int(hz):
        raise ValueError(f"a frequency must be a positive whole number of Hz, got {hz:g}")
    return int(hz)


def _parse_size(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("a size must be a number of bytes or a string like '20 GB'")
    return value


def format_bytes(n: float) -> str:
    """Format a byte count with binary units (``"1.5 GiB"``)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_seconds(seconds: float) -> str:
    """Format seconds as a short human duration (``"1h30m"``, ``"45s"``, ``"250ms"``)."""
    if seconds < 1 and seconds > 0:
        return f"{seconds * 1000:.0f}ms"
    whole = int(round(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if v]
    return "".join(parts) or "0s"


Seconds = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_seconds, return_type=str, when_used="json"),
]
"""A duration in seconds; accepts ``90``, ``"90s"``, ``"5m"``, ``"1h30m"``."""

Bytes = Annotated[ByteSize, BeforeValidator(_parse_size)]
"""A size in bytes; accepts ``1000000``, ``"20 GB"``, ``"512MiB"`` (pydantic ``ByteSize``)."""

Hertz = Annotated[int, BeforeValidator(parse_frequency)]
"""A frequency in Hz; accepts ``48000``, ``"48kHz"``, ``"44.1 kHz"``."""


def parse_since(text: str, now: datetime) -> datetime:
    """``text`` as an aware UTC time: ISO 8601 (naive = UTC) or an age before ``now`` ('2d'),
    as ``--since`` options and the ``reprocess`` fleet command take it.

    Raises ``ValueError`` naming both accepted forms.
    """
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        try:
            return now - timedelta(seconds=parse_duration(text))
        except ValueError:
            raise ValueError(
                f"since {text!r}: give an ISO time ('2026-06-01', '2026-06-01T05:30') or an "
                "age ('90m', '2d')"
            ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
