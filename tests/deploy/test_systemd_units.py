"""The systemd units in deploy/systemd: systemd accepts them, they are sandboxed, they run
`vigil` commands that exist with flags that parse, and the files they share agree."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.cli import build_parser
from edge.firstboot import DeviceLayout, render_unit
from tests.conftest import ROOT
from tests.deploy.unitfile import Unit, parse_unit

SYSTEMD = ROOT / "deploy" / "systemd"
VIGIL = "/opt/vigil/bin/vigil"
SERVER_SERVICES = ["vigil-broker.service", "vigil-bridge.service", "vigil-processors@.service",
                   "vigil-api.service"]
VIGIL_SERVICES = [*SERVER_SERVICES, "vigil-edge.service"]
ALL_UNITS = sorted(p.name for p in SYSTEMD.iterdir()
                   if p.suffix in (".service", ".target", ".path", ".socket", ".timer"))


def unit(name: str) -> Unit:
    return parse_unit(SYSTEMD / name)


def env_file() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (SYSTEMD / "vigil.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_every_vigil_service_is_here() -> None:
    assert set(VIGIL_SERVICES) <= set(ALL_UNITS)
    assert {"vigil.target", "vigil-mosquitto-reload.path", "vigil-mosquitto-reload.service"} <= set(ALL_UNITS)


# ------------------------------------------------------------------------- systemd itself


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed here")
@pytest.mark.parametrize("name", ALL_UNITS)
def test_systemd_accepts_the_unit(name: str, tmp_path: Path) -> None:
    for p in SYSTEMD.iterdir():  # together, so that PartOf=vigil.target and Unit= resolve
        if p.is_file():
            shutil.copyfile(p, tmp_path / p.name)
    verify = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)],
                            capture_output=True, text=True, check=False)
    complaints = [line for line in verify.stderr.splitlines() if line.strip() and not (
        f"{VIGIL} is not executable" in line  # not installed on this machine
        or re.search(r"Unknown key '(RestartSteps|RestartMaxDelaySec)'", line))]  # systemd < 254
    assert complaints == [], verify.stderr


DEBIAN_MOSQUITTO = Path("/lib/systemd/system/mosquitto.service")


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed here")
@pytest.mark.skipif(not DEBIAN_MOSQUITTO.exists(), reason="Debian's mosquitto.service is not installed here")
def test_systemd_accepts_the_drop_in_on_debians_mosquitto_unit(tmp_path: Path) -> None:
    shutil.copyfile(DEBIAN_MOSQUITTO, tmp_path / "mosquitto.service")
    shutil.copytree(SYSTEMD / "mosquitto.service.d", tmp_path / "mosquitto.service.d")
    verify = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "mosquitto.service")],
                            capture_output=True, text=True, check=False)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    debian = parse_unit(DEBIAN_MOSQUITTO)
    assert debian.get("Service", "ExecReload"), "vigil-mosquitto-reload relies on its ExecReload (SIGHUP)"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed here")
@pytest.mark.parametrize("name", [*VIGIL_SERVICES, "vigil-backup.service"])
def test_systemd_rates_the_service_well_sandboxed(name: str, tmp_path: Path) -> None:
    path = tmp_path / name.replace("@.", "@1.")  # a template is rated as an instance
    shutil.copyfile(SYSTEMD / name, path)
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(path)],
                              capture_output=True, text=True, check=False)
    level = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout)
    if level is None:
        pytest.skip(f"this systemd-analyze cannot rate a unit file offline: {security.stderr.strip()}")
    assert float(level.group(1)) <= 2.0, security.stdout  # systemd's scale: 0 safest, 10 unprotected


# ------------------------------------------------------------------------------ hardening


@pytest.mark.parametrize("name", VIGIL_SERVICES)
def test_the_service_runs_sandboxed_as_the_vigil_user(name: str) -> None:
    u = unit(name)
    expected = {
        "User": "vigil", "Group": "vigil", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
        "AmbientCapabilities": "", "SystemCallFilter": "@system-service",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "RestrictSUIDSGID": "yes",
        "ProtectKernelTunables": "yes", "ProtectControlGroups": "yes",
    }
    assert {k: u.get("Service", k) for k in expected} == expected
    assert u.get("Service", "Restart") in ("always", "on-failure")
    assert "vigil" in (u.get("Service", "StateDirectory") or "").split()
    assert "/var/lib/vigil" in " ".join(u.values("Service", "ReadWritePaths")).split()
    assert u.get("Service", "Type") == "exec"  # a missing binary fails the start, visibly


@pytest.mark.parametrize("name", SERVER_SERVICES)
def test_a_server_service_sees_no_devices_and_belongs_to_vigil_target(name: str) -> None:
    u = unit(name)
    assert u.get("Service", "PrivateDevices") == "yes"
    assert u.get("Install", "WantedBy") == "vigil.target"
    assert u.get("Unit", "PartOf") == "vigil.target"  # restarting the target restarts it


@pytest.mark.parametrize("name", VIGIL_SERVICES)
def test_the_service_writes_only_where_the_sandbox_lets_it(name: str) -> None:
    """Under ProtectSystem=strict a data path outside ReadWritePaths/StateDirectory would
    fail at the first write; and no service writes under /etc (read-only there)."""
    u = unit(name)
    writable = [*" ".join(u.values("Service", "ReadWritePaths")).split(),
                *(f"/var/lib/{d}" for d in (u.get("Service", "StateDirectory") or "").split())]
    argv = u.exec_start()
    for flag in ("--data-dir", "--db", "--outbox-dir"):
        if flag in argv:
            path = argv[argv.index(flag) + 1]
            assert any(path == w or path.startswith(w.rstrip("/") + "/") for w in writable), (flag, path)
    assert u.get("Service", "WorkingDirectory") in writable


# ------------------------------------------------------------- the commands really exist


def _command_path(parser: argparse.ArgumentParser, args: list[str]) -> tuple[list[str], str | None]:
    """Follow the subcommand words of ``args`` down the parser; returns the words found and
    the first word that names no subcommand (None when every level was found)."""
    found: list[str] = []
    for word in args:
        if not found and word in ("-v", "-vv", "--verbose"):
            continue  # `vigil -v COMMAND`: more logging, the only option before a command
        if word.startswith("-"):
            break
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            break
        choices = subs[0].choices
        if word not in choices:
            return found, word
        found.append(word)
        parser = choices[word]
    return found, None


@pytest.mark.parametrize("name", VIGIL_SERVICES)
def test_the_service_runs_a_vigil_command_that_exists(name: str) -> None:
    argv = unit(name).exec_start()
    assert argv[0] == VIGIL
    parser = build_parser()
    found, missing = _command_path(parser, argv[1:])
    if missing is not None:
        pytest.xfail(f"`vigil {' '.join([*found, missing])}` does not exist yet (being written)")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = parser.parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"{name}: `{' '.join(argv)}` does not parse: {err.getvalue()}")
    assert getattr(args, "func", None) is not None, f"{name}: `{' '.join(argv)}` runs nothing"


@pytest.mark.parametrize("name", VIGIL_SERVICES)
def test_the_environment_file_sets_every_variable_the_service_uses(name: str) -> None:
    """What ExecStart= takes from the environment has a default in the unit and is in the
    example /etc/vigil/vigil.env with the same value, so editing that one file moves it."""
    u = unit(name)
    used = set(re.findall(r"\$\{(\w+)\}", u.get("Service", "ExecStart") or ""))
    defaults = u.environment()
    example = env_file()
    assert used <= set(defaults)
    assert {k: defaults[k] for k in used} == {k: example.get(k) for k in used}
    if used:
        assert u.get("Service", "EnvironmentFile") == "-/etc/vigil/vigil.env"


def test_sh_reads_the_environment_file_as_systemd_does() -> None:
    """vigilctl (deploy/INSTALL.md) sources /etc/vigil/vigil.env with sh: it must mean the
    same there as in EnvironmentFile=."""
    done = subprocess.run(["sh", "-c", f"set -a; . {SYSTEMD / 'vigil.env'}; env"], env={},
                          capture_output=True, text=True, check=True)
    from_sh = dict(line.split("=", 1) for line in done.stdout.splitlines() if line.startswith("VIGIL_"))
    assert from_sh == env_file()


def test_the_bridge_reaches_mosquitto_on_its_loopback_listener_with_its_metrics_local() -> None:
    argv = unit("vigil-bridge.service").exec_start()
    conf = (ROOT / "deploy" / "mosquitto" / "vigil.conf").read_text()
    mqtt = argv[argv.index("--mqtt") + 1]
    host, port = mqtt.rsplit(":", 1)
    assert host == "127.0.0.1"
    assert re.search(rf"^listener {port} 127\.0\.0\.1$", conf, re.M)
    assert "--metrics-port" in argv


def test_the_edge_unit_is_the_one_flashed_devices_get() -> None:
    """One unit for the agent: deploy's copy is what `vigil edge bundle|flash` installs
    (edge.firstboot.render_unit), for a device whose outbox is in /var/lib/vigil."""
    rendered = render_unit(DeviceLayout(vigil_version="0", pip_wheel="pip.whl", etc_files=()))
    assert (SYSTEMD / "vigil-edge.service").read_text() == rendered
    u = unit("vigil-edge.service")
    assert u.get("Service", "SupplementaryGroups") == "gpio dialout"  # serial ports and GPIO
    assert u.get("Service", "PrivateDevices") is None
    assert u.exec_start() == [VIGIL, "edge", "run", "--config", "/etc/vigil/device.toml"]


def test_the_nightly_backup_copies_the_registry_and_the_alert_store(tmp_path: Path) -> None:
    """vigil-backup.service's commands, run here with its paths moved to a temporary
    folder, leave readable copies holding what the admin registered."""
    if not Path("/usr/bin/sqlite3").exists():
        pytest.skip("the sqlite3 command is not installed here (apt install sqlite3)")
    state, backups = tmp_path / "state", tmp_path / "backups"
    state.mkdir()
    backups.mkdir()
    env = {**os.environ, "VIGIL_REGISTRY": str(state / "registry.db"),
           "VIGIL_ALERTS_DB": str(state / "alerts.db"),
           "VIGIL_MOSQUITTO_PASSWD": str(tmp_path / "passwd"), "VIGIL_MOSQUITTO_ACL": str(tmp_path / "acl")}
    for args in (["devices", "add", "truck-7", "--kind", "vehicle"],
                 ["tokens", "create", "--name", "dashboard", "--scope", "read"]):
        subprocess.run([sys.executable, "-m", "deploy.cli", *args], cwd=ROOT, env=env, check=True,
                       capture_output=True, timeout=60)
    backup = unit("vigil-backup.service")
    assert backup.get("Timer", "OnCalendar") is None
    assert unit("vigil-backup.timer").get("Timer", "OnCalendar")
    commands = backup.exec_starts(extra_env={k: env[k] for k in ("VIGIL_REGISTRY", "VIGIL_ALERTS_DB")})
    assert len(commands) == 2
    for argv in commands:
        argv = [a.replace("/var/backups/vigil", str(backups)) for a in argv]
        subprocess.run(argv, check=True, capture_output=True, timeout=60)
    registry = subprocess.run(["/usr/bin/sqlite3", str(backups / "registry.db"), ".dump"],
                              capture_output=True, text=True, check=True).stdout
    alerts = subprocess.run(["/usr/bin/sqlite3", str(backups / "alerts.db"), ".dump"],
                            capture_output=True, text=True, check=True).stdout
    assert "truck-7" in registry
    assert "dashboard" in alerts
    env_example = env_file()
    assert {k: backup.environment()[k] for k in ("VIGIL_REGISTRY", "VIGIL_ALERTS_DB")} == \
        {k: env_example[k] for k in ("VIGIL_REGISTRY", "VIGIL_ALERTS_DB")}


# ------------------------------------------------------------------- Mosquitto's side


def _conf_value(key: str) -> str:
    conf = (ROOT / "deploy" / "mosquitto" / "vigil.conf").read_text()
    values = re.findall(rf"^{key} (\S+)$", conf, re.M)
    assert len(values) == 1, (key, values)
    return str(values[0])


def test_mosquitto_runs_vigils_config_and_reloads_when_the_registry_writes() -> None:
    dropin = parse_unit(SYSTEMD / "mosquitto.service.d" / "vigil.conf")
    assert dropin.commands("ExecStart") == ["/usr/sbin/mosquitto -c /etc/mosquitto/vigil.conf"]
    passwd, acl = _conf_value("password_file"), _conf_value("acl_file")
    env = env_file()
    assert (env["VIGIL_MOSQUITTO_PASSWD"], env["VIGIL_MOSQUITTO_ACL"]) == (passwd, acl)
    path = unit("vigil-mosquitto-reload.path")
    folder = str(Path(passwd).parent) + "/"
    assert str(Path(acl).parent) + "/" == folder
    assert path.values("Path", "PathChanged") == [folder]
    reload = unit("vigil-mosquitto-reload.service")
    assert path.get("Path", "Unit") == "vigil-mosquitto-reload.service"
    assert "reload" in (reload.get("Service", "ExecStart") or "")
    assert "mosquitto.service" in (reload.get("Service", "ExecStart") or "")


@pytest.mark.skipif(not (shutil.which("systemd-sysusers") and shutil.which("systemd-tmpfiles")),
                    reason="systemd-sysusers and systemd-tmpfiles are not installed here")
@pytest.mark.skipif(os.geteuid() != 0, reason="creating files owned by other users needs root")
def test_sysusers_and_tmpfiles_lay_out_users_and_directories(tmp_path: Path) -> None:
    """Run both snippets into an empty root: the users, groups, owners and modes the units
    and Mosquitto rely on."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for f in ("passwd", "group", "shadow", "gshadow"):
        (root / "etc" / f).touch()
    subprocess.run(["systemd-sysusers", f"--root={root}", str(SYSTEMD / "vigil.sysusers.conf")],
                   check=True, capture_output=True)
    subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create", str(SYSTEMD / "vigil.tmpfiles.conf")],
                   check=True, capture_output=True)
    users = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in (root / "etc/group").read_text().splitlines()}
    assert users["vigil"][6] == "/usr/sbin/nologin"
    assert "vigil" in groups["mosquitto"][3].split(",")  # so the registry can hand files to mosquitto
    uid = {name: int(u[2]) for name, u in users.items()}
    gid = {name: int(g[2]) for name, g in groups.items()}

    def owner(rel: str) -> tuple[int, int, int]:
        st = (root / rel).stat()
        return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)

    # a host user of the same id would make the names ambiguous, the ids are not
    assert owner("var/lib/vigil") == (uid["vigil"], gid["vigil"], 0o750)
    assert owner("etc/vigil") == (0, gid["vigil"], 0o750)
    assert owner("etc/mosquitto/vigil") == (uid["vigil"], gid["mosquitto"], 0o750)
    assert owner("etc/mosquitto/vigil/passwd") == (uid["vigil"], gid["mosquitto"], 0o640)
    assert owner("etc/mosquitto/certs") == (0, gid["mosquitto"], 0o750)
    assert pwd.getpwuid(0).pw_name == "root"
