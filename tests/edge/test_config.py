"""A device's TOML config: every error names its key; env vars override; paths resolve."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import ConfigError, load_config, parse_config, parse_remote_config

GOOD = """
[device]
id = "truck-7"
kind = "vehicle"

[mqtt]
host = "gw.example"
username = "truck-7"
password_file = "secret"

[mqtt.tls]
ca = "ca.pem"
cert = "truck-7.pem"
key = "truck-7.key"

[outbox]
path = "data/outbox.sqlite"
max_bytes = 1048576

[[sensors]]
name = "gps"
type = "gps"
port = "/dev/ttyAMA0"
baud = 9600
period_s = 2
deadband = { lat = 0.0001, lon = 0.0001 }
heartbeat_s = 30

[[sensors]]
name = "door"
type = "gpio_input"
pin = 17
deadband = 0
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "device.toml"
    p.write_text(text)
    (tmp_path / "secret").write_text("s3cret\n")
    return p


def errors_of(tmp_path: Path, text: str, **kw: object) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text), environ={}, **kw)  # type: ignore[arg-type]
    return exc.value.errors


def test_a_good_file_loads_with_paths_relative_to_it(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, GOOD), environ={}, sensor_types={"gps", "gpio_input"})
    assert (c.device.id, c.device.kind) == ("truck-7", "vehicle")
    assert c.mqtt.host == "gw.example" and c.mqtt.port == 8883  # TLS default port
    assert c.mqtt.password == "s3cret"  # read from the file, stripped
    assert c.mqtt.tls is not None and c.mqtt.tls.ca == tmp_path / "ca.pem"
    assert c.outbox.path == tmp_path / "data" / "outbox.sqlite"
    gps, door = c.sensors
    assert gps.options == {"port": "/dev/ttyAMA0", "baud": 9600}
    assert gps.period_s == 2.0 and gps.heartbeat_s == 30.0 and gps.deadband == {"lat": 1e-4, "lon": 1e-4}
    assert door.option("pin") == 17 and door.deadband == 0.0 and door.period_s is None
    with pytest.raises(ValueError, match=r"sensors\[1\]\.port: required"):
        door.option("port")
    assert "s3cret" not in repr(c)


@pytest.mark.parametrize(("edit", "message"), [
    (("period_s = 2", "period_s = -1"), "sensors[0].period_s: must be a non-negative number, got -1"),
    (("heartbeat_s = 30", "heartbeat_s = 1"), "sensors[0].heartbeat_s: must be >= period_s (2.0), got 1.0"),
    (('kind = "vehicle"', 'kind = "boat"'), "device.kind: must be one of vehicle, patient, got 'boat'"),
    (('id = "truck-7"', 'id = "truck 7"'), "device.id: device id 'truck 7' is invalid"),
    (('host = "gw.example"', 'host = "gw.example"\nprot = 1883'), "mqtt.prot: unknown key"),
    (("max_bytes = 1048576", 'max_bytes = "1MB"'), "outbox.max_bytes: must be an integer >= 1024, got '1MB'"),
    (("lon = 0.0001 }", 'lon = "near" }'), "sensors[0].deadband.lon: must be a non-negative number, got 'near'"),
    (('name = "door"', 'name = "gps"'), "sensors[1].name: 'gps' is already the name of sensors[0]"),
    (('key = "truck-7.key"', ""), "mqtt.tls: cert and key go together"),
    (('password_file = "secret"', 'password_file = "missing"'), "mqtt.password_file: cannot read"),
])
def test_errors_name_the_bad_key(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    errors = errors_of(tmp_path, GOOD.replace(*edit, 1))
    assert any(e.startswith(message) for e in errors), errors


def test_every_error_is_reported_at_once_and_unknown_types_are_named(tmp_path: Path) -> None:
    text = GOOD.replace("period_s = 2", "period_s = -1").replace('type = "gpio_input"', 'type = "gpoi"')
    errors = errors_of(tmp_path, text, sensor_types={"gps", "gpio_input"})
    assert errors == ["sensors[0].period_s: must be a non-negative number, got -1",
                      "sensors[1].type: unknown sensor type 'gpoi' (known: gpio_input, gps)"]


def test_missing_required_keys_and_bad_toml(tmp_path: Path) -> None:
    assert errors_of(tmp_path, "[device]\n") == ["device.id: is required", "device.kind: is required"]
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[device\n"), environ={})
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "nope.toml", environ={})


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    env = {"VIGIL_MQTT_HOST": "10.0.0.5", "VIGIL_MQTT_PORT": "1884", "VIGIL_MQTT_PASSWORD": "from-env",
           "VIGIL_DEVICE_ID": "truck-8", "VIGIL_OUTBOX_MAX_BYTES": "2048", "VIGIL_MQTT_TLS_CA": "/etc/ca.pem",
           "VIGIL_AGENT_SENSOR_MODULES": "a.b, c"}
    c = load_config(write(tmp_path, GOOD), environ=env)
    assert (c.mqtt.host, c.mqtt.port, c.mqtt.password) == ("10.0.0.5", 1884, "from-env")
    assert c.device.id == "truck-8" and c.outbox.max_bytes == 2048
    assert c.mqtt.tls is not None and c.mqtt.tls.ca == Path("/etc/ca.pem")
    assert c.agent.sensor_modules == ("a.b", "c")
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, GOOD), environ={"VIGIL_MQTT_PORT": "eighty"})
    assert exc.value.errors == ["mqtt.port (from VIGIL_MQTT_PORT): must be an integer >= 1 and <= 65535, got 'eighty'"]


def test_defaults_for_a_minimal_file() -> None:
    c = parse_config({"device": {"id": "bed-3", "kind": "patient"}}, environ={})
    assert (c.mqtt.host, c.mqtt.port, c.mqtt.tls, c.mqtt.username) == ("127.0.0.1", 1883, None, None)
    assert c.outbox.path.name == "bed-3.outbox.sqlite" and c.sensors == ()


def test_remote_config_is_validated_as_a_whole() -> None:
    rc = parse_remote_config({"sensors": {"gps": {"period_s": 5, "deadband": {"lat": 0.001}}},
                              "status_interval_s": 30}, ["gps"])
    assert rc.sensors["gps"].period_s == 5.0 and rc.status_interval_s == 30.0
    with pytest.raises(ConfigError) as exc:
        parse_remote_config({"sensors": {"gps": {"period_s": -5}, "radar": {}}, "colour": "red"}, ["gps"])
    assert exc.value.errors == ["sensors.gps.period_s: must be a non-negative number, got -5",
                                "sensors.radar: this device has no such sensor", "colour: unknown key"]
