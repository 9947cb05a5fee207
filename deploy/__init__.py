"""Running Vigil: the `vigil` command line and the one-box launcher."""

from __future__ import annotations

__all__: list[str] = []
