"""--kafka-config: librdkafka settings (TLS, SASL) for the bridge and the API's store."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from gateway.kafka_config import KafkaConfigError, read_kafka_config
from tests.conftest import ROOT, BrokerProcess, free_port, start_logged, stop_process


def test_the_file_reads_like_kcats(tmp_path: Path) -> None:
    path = tmp_path / "kafka.properties"
    path.write_text("# the site's cluster\nsecurity.protocol = SASL_SSL\n\nsasl.mechanism=SCRAM-SHA-512\n"
                    "sasl.password=a=b#c\n")
    assert read_kafka_config(path) == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                                       "sasl.password": "a=b#c"}


@pytest.mark.parametrize(("text", "error"), [
    ("security.protocol\n", r"kafka.properties:1: expected key=value"),
    ("a=1\nsasl mechanism=PLAIN\n", r"kafka.properties:2: expected key=value"),
    ("bootstrap.servers=x:9092\n", r"kafka.properties:1: give bootstrap.servers with --bootstrap"),
    ("a=1\na=2\n", r"kafka.properties:2: a is set twice"),
])
def test_mistakes_say_where(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "kafka.properties"
    path.write_text(text)
    with pytest.raises(KafkaConfigError, match=error):
        read_kafka_config(path)
    with pytest.raises(KafkaConfigError, match="cannot read"):
        read_kafka_config(tmp_path / "missing.properties")


def test_the_bridge_refuses_a_bad_file_before_starting(tmp_path: Path) -> None:
    bad = tmp_path / "kafka.properties"
    bad.write_text("security.protocol\n")
    done = subprocess.run([sys.executable, "-m", "deploy.cli", "gateway", "bridge", "--kafka-config", str(bad)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "kafka.properties:1: expected key=value" in done.stderr


def _health(port: int, config: Path | None, tmp_path: Path, broker: BrokerProcess) -> dict[str, object]:
    """/healthz of `vigil gateway api` against the broker, once its store has tried."""
    argv = [sys.executable, "-m", "deploy.cli", "gateway", "api", "--db", str(tmp_path / f"{port}.db"),
            "--bootstrap", broker.bootstrap, "--listen", f"127.0.0.1:{port}"]
    if config is not None:
        argv += ["--kafka-config", str(config)]
    proc = start_logged(argv, tmp_path / f"api-{port}.log", port, timeout=60)
    try:
        deadline = time.monotonic() + 30
        while True:
            health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
            settled = health["store_error"] is not None or health["store_lag"] is not None
            if settled or time.monotonic() > deadline:
                return dict(health)
            time.sleep(0.3)
    finally:
        stop_process(proc)


def test_the_api_store_uses_the_settings(tmp_path: Path, broker: BrokerProcess) -> None:
    """A setting reaches the store's Kafka client: TLS towards this plaintext broker fails,
    and /healthz says so; without the file the same store reads the log."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in
                                       ("alerts", "device-state", "device-status")]).values():
        future.result(10)
    plain = _health(free_port(), None, tmp_path, broker)
    assert plain["store_error"] is None and plain["store_lag"] == 0, plain
    tls = tmp_path / "kafka.properties"
    tls.write_text("security.protocol=ssl\n")
    refused = _health(free_port(), tls, tmp_path, broker)
    assert refused["store_error"], refused
