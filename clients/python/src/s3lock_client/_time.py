"""The server's time format: Python's ``isoformat()`` of an aware UTC datetime."""

from __future__ import annotations

import datetime as _dt
import re

_FRACTION = re.compile(r"\.(\d+)")


def parse_time(text: str) -> _dt.datetime:
    """Parses ``2026-11-26T05:48:36.081968+00:00`` (fraction optional, ``Z`` accepted) into an
    aware datetime. Python 3.9's ``fromisoformat`` takes only 3 or 6 fraction digits and no ``Z``,
    so both are normalised first."""
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    s = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], s, count=1)
    value = _dt.datetime.fromisoformat(s)
    if value.tzinfo is None:
        raise ValueError(f"time without a UTC offset: {text!r}")
    return value.astimezone(_dt.timezone.utc)


def format_time(value: _dt.datetime) -> str:
    """Writes an aware datetime as the server and the old module do (UTC, ``+00:00``)."""
    return value.astimezone(_dt.timezone.utc).isoformat()
