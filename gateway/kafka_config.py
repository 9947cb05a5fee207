"""Kafka client settings from a file, for a log that needs them (TLS, SASL, ...).

``vigil gateway bridge --kafka-config FILE`` and ``vigil gateway api --kafka-config FILE``
(or ``VIGIL_KAFKA_CONFIG``) read librdkafka settings in the format kcat's ``-F`` reads:
one ``key=value`` a line, ``#`` comments, blank lines ignored::

    security.protocol=SASL_SSL
    sasl.mechanism=SCRAM-SHA-512
    sasl.username=vigil-gateway
    sasl.password=...
    ssl.ca.location=/etc/vigil/kafka-ca.pem

The same keys go in the processors' TOML under ``[kafka.client]``. ``bootstrap.servers``
is refused here: the address is ``--bootstrap``, one place.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["KafkaConfigError", "read_kafka_config"]


class KafkaConfigError(ValueError):
    """The file cannot be read or a line is not ``key=value``; the message says where."""


def read_kafka_config(path: str | Path) -> dict[str, str]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise KafkaConfigError(f"cannot read {path}: {exc.strerror}") from None
    settings: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or any(c.isspace() for c in key):
            raise KafkaConfigError(f"{path}:{number}: expected key=value, got {raw.strip()!r}")
        if key == "bootstrap.servers":
            raise KafkaConfigError(f"{path}:{number}: give bootstrap.servers with --bootstrap, not here")
        if key in settings:
            raise KafkaConfigError(f"{path}:{number}: {key} is set twice")
        settings[key] = value
    return settings
