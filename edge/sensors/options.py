"""Reading a driver's options from its ``[[sensors]]`` entry; a bad one is a ValueError
that starts with the key's name (the agent prefixes ``sensors[i].``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["opt_bool", "opt_float", "opt_int", "opt_str"]

_MISSING: Any = object()


def _get(options: Mapping[str, Any], key: str, default: Any) -> Any:
    if key in options:
        return options[key]
    if default is _MISSING:
        raise ValueError(f"{key}: required")
    return default


def opt_int(options: Mapping[str, Any], key: str, default: Any = _MISSING, *, lo: int | None = None,
            hi: int | None = None) -> int:
    v = _get(options, key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{key}: expected an integer, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{key}: expected {lo}..{hi}, got {v}")
    return v


def opt_float(options: Mapping[str, Any], key: str, default: Any = _MISSING, *, positive: bool = False) -> float:
    v = _get(options, key, default)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{key}: expected a number, got {v!r}")
    if positive and v <= 0:
        raise ValueError(f"{key}: expected a positive number, got {v}")
    return float(v)


def opt_bool(options: Mapping[str, Any], key: str, default: Any = _MISSING) -> bool:
    v = _get(options, key, default)
    if not isinstance(v, bool):
        raise ValueError(f"{key}: expected true or false, got {v!r}")
    return v


def opt_str(options: Mapping[str, Any], key: str, default: Any = _MISSING) -> str:
    v = _get(options, key, default)
    if not isinstance(v, str):
        raise ValueError(f"{key}: expected a string, got {v!r}")
    return v
