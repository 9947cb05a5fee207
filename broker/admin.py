"""Admin tools over a Kafka client: `vigil topics`, `vigil produce`, `vigil consume`."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add the admin subcommands (filled in by the admin tools work)."""
