"""Read systemd unit files the way systemd does, as far as the deploy tests need:
sections of ``Key=value`` entries (keys may repeat), ``#``/``;`` comments, backslash line
continuations, and ExecStart= command lines with ``${VAR}`` and ``%`` specifiers expanded."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Unit", "parse_unit"]


@dataclass(frozen=True)
class Unit:
    name: str
    entries: tuple[tuple[str, str, str], ...]  # (section, key, value) in file order

    def values(self, section: str, key: str) -> list[str]:
        """Every value of ``key`` in ``section``, in file order."""
        return [v for s, k, v in self.entries if s == section and k == key]

    def commands(self, key: str = "ExecStart") -> list[str]:
        """The command lines of an Exec*= setting; an empty one resets the list, as
        systemd does (a drop-in's ``ExecStart=`` then ``ExecStart=...``)."""
        out: list[str] = []
        for value in self.values("Service", key):
            out = [] if value == "" else [*out, value]
        return out

    def get(self, section: str, key: str) -> str | None:
        values = self.values(section, key)
        return values[-1] if values else None

    def environment(self) -> dict[str, str]:
        """The Environment= assignments (not the EnvironmentFile=, which overrides them)."""
        env: dict[str, str] = {}
        for value in self.values("Service", "Environment"):
            for item in shlex.split(value):
                key, _, val = item.partition("=")
                env[key] = val
        return env

    def exec_start(self, instance: str = "1", hostname: str = "gateway",
                   extra_env: Mapping[str, str] | None = None) -> list[str]:
        """The one ExecStart= as the argv systemd runs (see ``exec_starts``)."""
        commands = self.exec_starts(instance, hostname, extra_env)
        if len(commands) != 1:
            raise ValueError(f"{self.name}: expected one ExecStart=, got {commands}")
        return commands[0]

    def exec_starts(self, instance: str = "1", hostname: str = "gateway",
                    extra_env: Mapping[str, str] | None = None) -> list[list[str]]:
        """Every ExecStart= as the argv systemd runs: prefixes (``-@:+!``) dropped,
        ``%i``/``%I``/``%H``/``%%`` and ``${VAR}``/``$VAR`` from Environment= expanded."""
        env = {**self.environment(), **(extra_env or {})}

        def var(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(2)
            if name not in env:
                raise ValueError(f"{self.name}: ExecStart uses ${name}, which no Environment= sets")
            return env[name]

        out = []
        for command in self.commands("ExecStart"):
            line = command.lstrip("-@:+!")
            line = re.sub(r"%([iIH%])", lambda m: {"i": instance, "I": instance, "H": hostname,
                                                    "%": "%"}[m.group(1)], line)
            out.append(shlex.split(re.sub(r"\$\{(\w+)\}|\$(\w+)", var, line)))
        return out


def parse_unit(path: Path) -> Unit:
    entries: list[tuple[str, str, str]] = []
    section = ""
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}: not Key=value: {line!r}")
        entries.append((section, key.strip(), value.strip()))
    return Unit(path.name, tuple(entries))
