"""`vigil edge check` and `vigil edge run` as a user runs them."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from edge.agent_cli import check_device, load_device_config
from tests.conftest import ROOT, free_port
from tests.edge.conftest import device_toml

BROKEN_SENSOR = """
[[sensors]]
name = "dead"
type = "counter"
fail_open = true

[[sensors]]
name = "silent"
type = "counter"
limit = 0
"""


def vigil(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deploy.cli", "edge", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_check_prints_one_reading_per_sensor(tmp_path: Path) -> None:
    config = device_toml(tmp_path, "truck-3", free_port())
    done = vigil("check", "--config", str(config))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("device truck-3 (vehicle); MQTT 127.0.0.1:")
    assert lines[1].startswith('ok   counter (counter): {"kind":"counter","ts":')


def test_check_names_each_failing_sensor_and_exits_non_zero(tmp_path: Path) -> None:
    config = load_device_config(device_toml(tmp_path, "truck-4", free_port(), extra_sensors=BROKEN_SENSOR))
    out = io.StringIO()
    assert not check_device(config, timeout=0.2, out=out)
    lines = out.getvalue().splitlines()[1:]
    assert lines[0].startswith("ok   counter (counter):")
    assert lines[1] == "FAIL dead (counter): cannot open: dead: no such device /dev/counter"
    assert lines[2] == "FAIL silent (counter): no reading in 0.2 s"
    done = vigil("check", "--config", str(device_toml(tmp_path, "truck-4", free_port(), extra_sensors=BROKEN_SENSOR)),
                 "--timeout", "0.2")
    assert done.returncode == 1 and "FAIL dead" in done.stdout


def test_bad_config_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = device_toml(tmp_path, "truck-5", free_port(), extra_sensors='[[sensors]]\nname = "x"\ntype = "radar"\n')
    config.write_text(config.read_text().replace("keepalive = 10", "keepalive = -3"))
    for command in ("check", "run"):
        done = vigil(command, "--config", str(config))
        assert done.returncode == 2
        assert "mqtt.keepalive: must be an integer >= 5 and <= 65535, got -3" in done.stderr
    config.write_text(config.read_text().replace("keepalive = -3", "keepalive = 10"))
    done = vigil("run", "--config", str(config))
    assert done.returncode == 2 and "sensors[1].type: unknown sensor type 'radar' (known: " in done.stderr
    config.write_text(config.read_text().replace("rate = 200", "rate = -1"))
    done = vigil("check", "--config", str(config).replace("truck-5", "truck-5"))
    assert done.returncode == 2 or "sensors[0].rate: must be a positive number" in done.stdout


def test_a_driver_refusing_its_options_is_reported_as_the_configs_key(tmp_path: Path) -> None:
    config = device_toml(tmp_path, "truck-6", free_port(),
                         extra_sensors='[[sensors]]\nname = "gps"\ntype = "gps"\nport = "/dev/null"\nbaudrate = "fast"\n')
    done = vigil("run", "--config", str(config))
    assert done.returncode == 2
    assert "sensors[1].baudrate: expected an integer, got 'fast'" in done.stderr
