"""Small conversions both rule sets use."""

from __future__ import annotations

import math
from typing import Any


def ms(seconds: float) -> int:
    return round(seconds * 1000)


def finite_number(value: Any) -> float | None:
    """A finite int or float as float; None for anything else (bool included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
