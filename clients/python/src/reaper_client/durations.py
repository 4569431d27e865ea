"""reaper's durations: ``500ms``, ``5s``, ``10m``, ``2h``, ``1d`` and sums like ``1h30m``."""

from __future__ import annotations

import datetime
import re
from typing import Union

__all__ = ["Duration", "duration_text", "seconds"]

#: A duration as the API writes it, a number of seconds, or a ``timedelta``.
Duration = Union[str, int, float, datetime.timedelta]

_PART = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def seconds(value: Duration) -> float:
    """The duration in seconds; ``ValueError`` for text reaper would refuse."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"a duration cannot be negative: {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"not a duration: {value!r}")
    text = value.strip()
    pos, total = 0, 0.0
    while pos < len(text):
        m = _PART.match(text, pos)
        if not m:
            break
        total += int(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise ValueError(
            f"not a duration: {value!r} (write a number and a unit: 500ms, 5s, 10m, 2h, 1d, or a sum like 1h30m)"
        )
    return total


def duration_text(value: Duration) -> str:
    """The duration as the API takes it (``"30s"``, ``"1500ms"``); text is checked and kept."""
    if isinstance(value, str):
        seconds(value)
        return value.strip()
    total_ms = round(seconds(value) * 1000)
    if total_ms % 1000:
        return f"{total_ms}ms"
    return f"{total_ms // 1000}s"
