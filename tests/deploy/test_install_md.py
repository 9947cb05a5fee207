"""deploy/INSTALL.md and deploy/kafka/README.md say what to type and what to write: the
files they install exist, the configs they show load, the `vigil` commands they show
parse, and the shell they give is valid."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

from deploy.cli import build_parser
from edge.agent_cli import load_device_config
from processors.config import ProcessorsConfig
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
INSTALL = (DEPLOY / "INSTALL.md").read_text()
KAFKA = (DEPLOY / "kafka" / "README.md").read_text()
VIGIL_COMMANDS = ("vigil", "vigilctl", "/opt/vigil/bin/vigil")


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def toml_block(text: str, first_line: str) -> str:
    found = [b for b in blocks(text, "toml") if b.startswith(first_line)]
    assert len(found) == 1, f"one toml block starting with {first_line!r}"
    return found[0]


def shell_lines(text: str) -> list[str]:
    lines: list[str] = []
    for block in blocks(text, "sh"):
        block = re.sub(r"<<'EOF'\n.*?\nEOF\n", "<<'EOF'\n", block, flags=re.S)  # here-documents
        lines += block.replace("\\\n", " ").splitlines()
    return lines


def vigil_commands(text: str) -> list[list[str]]:
    out = []
    for line in shell_lines(text):
        words = shlex.split(line, comments=True)
        while words and "=" in words[0] and not words[0].startswith("-"):
            words = words[1:]  # VAR=value before the command
        if not words or words[0] not in VIGIL_COMMANDS:
            continue
        args = words[1:]
        for stop in (">", "|", "&&", ";"):
            if stop in args:
                args = args[: args.index(stop)]
        if args != ["--help"]:
            out.append(args)
    return out


def test_every_file_the_guide_installs_is_here() -> None:
    table = INSTALL.split("## Requirements")[0]
    named = re.findall(r"^\| `([^`]+)`", table, re.M)
    assert len(named) >= 10
    for name in named:
        first = name.split(",")[0]
        assert (DEPLOY / first).exists(), first
        for extra in re.findall(r"`(\.[a-z]+)`", name):  # "`x.path`, `.service`"
            assert (DEPLOY / (first.rsplit(".", 1)[0] + extra)).exists(), extra
    for f in re.findall(r"`((?:systemd|mosquitto|kafka)/[\w.@-]+)`", INSTALL):
        assert (DEPLOY / f).exists(), f


def test_the_processors_toml_shown_loads(tmp_path: Path) -> None:
    path = tmp_path / "processors.toml"
    path.write_text(toml_block(INSTALL, "[kafka]"))
    config = ProcessorsConfig.load(path)
    assert config.group == "vigil-processors"


def test_the_kafka_security_settings_shown_load_in_processors_toml() -> None:
    block = toml_block(KAFKA, "# /etc/vigil/processors.toml")
    config = ProcessorsConfig.from_mapping(tomllib.loads(block))
    assert config.client["security.protocol"] == "SASL_SSL"


def test_the_device_toml_shown_loads_with_its_files_next_to_it(tmp_path: Path) -> None:
    device = tmp_path / "truck-7"
    device.mkdir()
    (device / "truck-7.password").write_text("secret\n")
    (device / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (device / "device.toml").write_text(toml_block(INSTALL, "# truck-7/device.toml"))
    config = load_device_config(device / "device.toml")
    assert (config.mqtt.port, config.mqtt.username) == (8883, "truck-7")
    assert config.mqtt.tls is not None and config.mqtt.tls.ca == device / "ca.crt"
    assert [s.type for s in config.sensors] == ["gps"]


@pytest.mark.parametrize("args", vigil_commands(INSTALL) + vigil_commands(KAFKA),
                         ids=lambda a: " ".join(a)[:60])
def test_every_vigil_command_shown_parses(args: list[str]) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parsed = build_parser().parse_args(args)
        except SystemExit:
            pytest.fail(f"`vigil {' '.join(args)}`: {err.getvalue()}")
    assert isinstance(parsed, argparse.Namespace)
    assert getattr(parsed, "func", None) is not None, args


def test_the_guide_shows_the_commands_an_admin_needs() -> None:
    shown = {" ".join(a[:2]) for a in vigil_commands(INSTALL)}
    assert {"devices add", "devices revoke", "devices bridge-user", "tokens create", "edge flash",
            "edge bundle", "groups describe", "topics describe"} <= shown


def test_the_shell_it_gives_is_valid() -> None:
    vigilctl = re.search(r"cat > /usr/local/sbin/vigilctl <<'EOF'\n(.*?)\nEOF\n", INSTALL, re.S)
    assert vigilctl is not None
    subprocess.run(["sh", "-n"], input=vigilctl.group(1), text=True, check=True)
    for block in blocks(INSTALL, "sh") + blocks(KAFKA, "sh"):
        subprocess.run(["bash", "-n"], input=block, text=True, check=True)
