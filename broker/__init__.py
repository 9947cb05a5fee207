"""Vigil's log: a broker that speaks the Apache Kafka wire protocol.

Other parts never import this package's internals: they reach the log through a Kafka
client, so any Kafka-compatible cluster can replace it.
"""

from __future__ import annotations

__all__: list[str] = []
