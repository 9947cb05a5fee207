"""Reading and writing the monitors' checkpoints as plain JSON data.

A checkpoint is data from a topic, so it is read like any other input: every field is
checked for its type and a snapshot that is not what ``snapshot()`` writes raises
``ValueError`` naming the field (``malformed vehicle snapshot: trip.distance_m must
be a number, got 'x'``). Nothing here is ever unpickled or evaluated.

The free-form parts (an alert's ``details``) may hold floats that JSON cannot carry
(``inf`` from an absurd input); ``plain`` writes them as ``{"$float": "inf"}`` and
``unplain`` reads them back, so ``json.dumps(snapshot, allow_nan=False)`` always works.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, NoReturn

SNAPSHOT_FORMAT: Final = 1

_FLOAT_TAG: Final = "$float"


class Fields:
    """The fields of one JSON object of a snapshot, read with their expected types.

    ``where`` names the object in error messages (``"vehicle snapshot: trip"``)."""

    __slots__ = ("_seen", "_state", "where")

    def __init__(self, state: Any, where: str) -> None:
        if not isinstance(state, Mapping):
            raise ValueError(f"malformed {where}: expected a JSON object, got {_show(state)}")
        self._state: Mapping[str, Any] = state
        self._seen: set[str] = set()
        self.where = where

    def fail(self, message: str) -> NoReturn:
        raise ValueError(f"malformed {self.where}: {message}")

    def raw(self, name: str) -> Any:
        if name not in self._state:
            self.fail(f"{name} is missing")
        self._seen.add(name)
        return self._state[name]

    def names(self) -> list[str]:
        """Every field's name (an object keyed by names, not a record); all count as read."""
        names = [str(k) for k in self._state]
        self._seen.update(names)
        return names

    def done(self) -> None:
        """Refuse fields nobody read: a snapshot of some other thing, or a newer writer."""
        extra = sorted(str(k) for k in self._state if k not in self._seen)
        if extra:
            self.fail(f"unknown field(s) {', '.join(extra)}")

    def integer(self, name: str) -> int:
        value = self.raw(name)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{name} must be an integer, got {_show(value)}")
        return value

    def opt_integer(self, name: str) -> int | None:
        return None if self.raw(name) is None else self.integer(name)

    def number(self, name: str) -> float:
        value = self.raw(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(f"{name} must be a finite number, got {_show(value)}")
        return float(value)

    def opt_number(self, name: str) -> float | None:
        return None if self.raw(name) is None else self.number(name)

    def flag(self, name: str) -> bool:
        value = self.raw(name)
        if not isinstance(value, bool):
            self.fail(f"{name} must be true or false, got {_show(value)}")
        return value

    def opt_flag(self, name: str) -> bool | None:
        return None if self.raw(name) is None else self.flag(name)

    def text(self, name: str) -> str:
        value = self.raw(name)
        if not isinstance(value, str):
            self.fail(f"{name} must be a string, got {_show(value)}")
        return value

    def opt_text(self, name: str) -> str | None:
        return None if self.raw(name) is None else self.text(name)

    def items(self, name: str) -> list[Any]:
        value = self.raw(name)
        if not isinstance(value, list):
            self.fail(f"{name} must be a list, got {_show(value)}")
        return value

    def object(self, name: str) -> Fields:
        return Fields(self.raw(name), f"{self.where}: {name}")

    def mapping(self, name: str) -> dict[str, Any]:
        value = self.raw(name)
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            self.fail(f"{name} must be a JSON object, got {_show(value)}")
        return dict(value)

    def point(self, name: str) -> tuple[float, float] | None:
        """A ``[lat, lon]`` pair or null."""
        value = self.raw(name)
        if value is None:
            return None
        if (not isinstance(value, list) or len(value) != 2
                or not all(_finite(v) for v in value)):
            self.fail(f"{name} must be a [lat, lon] pair of numbers or null, got {_show(value)}")
        return float(value[0]), float(value[1])


def check_header(state: Any, kind: str, device: str) -> Fields:
    """The fields of a ``kind`` snapshot of ``device``, its format and identity checked."""
    where = f"{kind} snapshot"
    f = Fields(state, where)
    version = f.raw("format")
    if isinstance(version, bool) or version != SNAPSHOT_FORMAT:
        f.fail(f"unknown format {_show(version)} (this version reads format {SNAPSHOT_FORMAT})")
    if f.raw("kind") != kind:
        f.fail(f"it is a snapshot of a {_show(f.raw('kind'))}, not of a {kind}")
    if f.raw("device") != device:
        f.fail(f"it is the snapshot of {_show(f.raw('device'))}, not of {device!r}")
    return f


def header(kind: str, device: str) -> dict[str, Any]:
    return {"format": SNAPSHOT_FORMAT, "kind": kind, "device": device}


def _finite(value: Any) -> bool:
    return (not isinstance(value, bool) and isinstance(value, int | float)
            and math.isfinite(value))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---- free-form JSON (alert details) -------------------------------------------------

def plain(value: Any) -> Any:
    """``value`` as data ``json.dumps(..., allow_nan=False)`` takes: tuples become lists,
    non-finite floats ``{"$float": "inf" | "-inf" | "nan"}``."""
    if isinstance(value, float) and not math.isfinite(value):
        return {_FLOAT_TAG: repr(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def unplain(value: Any, where: str) -> Any:
    """The inverse of ``plain``, refusing anything JSON could not have given."""
    if isinstance(value, dict):
        if len(value) == 1 and _FLOAT_TAG in value:
            tag = value[_FLOAT_TAG]
            if tag not in ("inf", "-inf", "nan"):
                raise ValueError(f"malformed {where}: {_FLOAT_TAG} must be inf, -inf or nan, "
                                 f"got {_show(tag)}")
            return float(tag)
        if not all(isinstance(k, str) for k in value):
            raise ValueError(f"malformed {where}: object keys must be strings")
        return {k: unplain(v, where) for k, v in value.items()}
    if isinstance(value, list):
        return [unplain(v, where) for v in value]
    if value is None or isinstance(value, str | bool | int) or _finite(value):
        return value
    raise ValueError(f"malformed {where}: {_show(value)} is not JSON data")
