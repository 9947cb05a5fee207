"""OBD-II through an ELM327-style adapter: a request/response state machine and its shell.

An ELM327 speaks a half-duplex text protocol on a serial line: the host sends one
command ending in CR (``ATZ``, ``010D``), the adapter answers with lines ending in CR
(with LF after ``ATL1``) and then the prompt ``>``, after which it accepts the next
command. Nothing may be sent before the prompt.

``Elm327Session`` holds the protocol without I/O:

1. initialisation, one command at a time: ``ATZ`` (reset; answers its version, e.g.
   ``ELM327 v1.5``), ``ATE0`` (echo off), ``ATL0`` (no linefeeds), ``ATS0`` (no
   spaces), ``ATH0`` (no headers), ``ATSP0`` (automatic protocol). An echo still on
   or spaces still in answers are tolerated, whatever the adapter does.
2. poll cycles: ``ATIGN`` (the adapter's ignition input, pin 15: ``ON``/``OFF``), then,
   with the ignition on, ``010D`` (vehicle speed, ``41 0D A``: A km/h) and ``010C``
   (engine speed, ``41 0C A B``: (256 A + B) / 4 rpm). Each cycle gives one
   ``ObdSample``. An adapter that answers ``?`` to ``ATIGN`` (clones without the
   input) gets ignition from the ECU instead: an answer to ``010C`` means on,
   ``NO DATA`` / ``UNABLE TO CONNECT`` to both PIDs means off.
3. ``NO DATA`` leaves a value unknown (``None``) and is counted; ``?``, ``CAN ERROR``,
   ``BUS ERROR``, ``UNABLE TO CONNECT``, ``STOPPED`` and garbled answers are counted as
   errors. No prompt within the shell's timeout (adapter unplugged, reset) is counted
   and restarts initialisation.

Readings: kind ``obd``, data ``{"ignition": bool | None, "speed_kmh": int | None,
"speed": m/s | None, "rpm": float | None}``. Config options (``type = "obd"``): ``port``
(required), ``baudrate`` (38400), ``period`` (seconds between poll cycles, 1.0),
``timeout`` (seconds to wait for a prompt, 2.0).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge.sensors.base import Reading
from edge.sensors.options import opt_float, opt_int, opt_str
from edge.sensors.serial_link import SerialLink

__all__ = ["INIT_COMMANDS", "Elm327Session", "ObdSample", "ObdSensor", "make_obd"]

log = logging.getLogger("vigil.edge")

INIT_COMMANDS = ("ATZ", "ATE0", "ATL0", "ATS0", "ATH0", "ATSP0")
PID_SPEED = "010D"
PID_RPM = "010C"
PID_BYTES = {PID_SPEED: 1, PID_RPM: 2}  # data bytes each answer carries


@dataclass(frozen=True, slots=True)
class ObdSample:
    ignition: bool | None
    speed_kmh: int | None
    rpm: float | None

    def to_json(self) -> dict[str, Any]:
        return {"ignition": self.ignition, "speed_kmh": self.speed_kmh,
                "speed": None if self.speed_kmh is None else round(self.speed_kmh / 3.6, 3),
                "rpm": self.rpm}


class Elm327Session:
    """The host side of the ELM327 protocol (see the module docstring), fed with bytes."""

    def __init__(self) -> None:
        self._buffer = b""
        self.pending: str | None = None  # the command awaiting its prompt
        self.ready = False  # initialised
        self.adapter_version = ""
        self._todo: deque[str] = deque(INIT_COMMANDS)
        self._ign_supported = True
        self._cycle: dict[str, Any] | None = None
        self.counters = {"cycles": 0, "no_data": 0, "errors": 0, "timeouts": 0, "resets": 0}

    # -- what to send ----------------------------------------------------------------

    def next_command(self) -> bytes | None:
        """The next command to write, if the adapter is idle and there is one."""
        if self.pending is not None or not self._todo:
            return None
        self.pending = self._todo.popleft()
        return self.pending.encode("ascii") + b"\r"

    def start_cycle(self) -> bool:
        """Queue one poll cycle; False while initialising or a cycle is under way."""
        if not self.ready or self._cycle is not None:
            return False
        self._cycle = {"ignition": None, "speed": None, "rpm": None, "answered": False}
        self._todo.extend(["ATIGN"] if self._ign_supported else [PID_SPEED, PID_RPM])
        return True

    @property
    def busy(self) -> bool:
        return self.pending is not None or bool(self._todo)

    # -- what came back --------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[ObdSample]:
        self._buffer += data
        samples: list[ObdSample] = []
        while b">" in self._buffer:
            answer, _, self._buffer = self._buffer.partition(b">")
            if self.pending is None:
                continue  # a prompt nobody asked for (adapter powered up): ignore
            command, self.pending = self.pending, None
            lines = self._lines(answer, command)
            sample = self._handle(command, lines)
            if sample is not None:
                samples.append(sample)
        if len(self._buffer) > 4096:  # no prompt in sight: not an ELM327 talking
            self._buffer = b""
        return samples

    def timeout(self) -> None:
        """No prompt came for the pending command: start over with a reset."""
        self.counters["timeouts"] += 1
        log.warning("OBD adapter did not answer %s; resetting it", self.pending)
        self.restart()

    def restart(self) -> None:
        """Forget the adapter's state and initialise it again (after a timeout, a refusal,
        or the port being reopened)."""
        self.counters["resets"] += 1
        self.pending = None
        self.ready = False
        self._cycle = None
        self._buffer = b""
        self._todo = deque(INIT_COMMANDS)

    @staticmethod
    def _lines(answer: bytes, command: str) -> list[str]:
        text = answer.decode("ascii", errors="replace").replace("\n", "\r")
        out = []
        for line in text.split("\r"):
            line = line.strip().strip("\x00")
            if not line or line.replace(" ", "").upper() == command:
                continue  # blank, or the echo of what we sent
            if line.startswith(("SEARCHING", "BUS INIT")) and not line.endswith("ERROR"):
                continue
            out.append(line)
        return out

    def _handle(self, command: str, lines: list[str]) -> ObdSample | None:
        joined = " ".join(lines).upper()
        if command == "ATZ":
            if "ELM" not in joined:
                self.counters["errors"] += 1
                self._todo = deque(INIT_COMMANDS)
                return None
            self.adapter_version = next(x for x in lines if "ELM" in x.upper())
            return None
        if command in INIT_COMMANDS:
            if "OK" not in joined:  # the adapter refuses a setting: start over
                self.counters["errors"] += 1
                self.restart()
                return None
            if command == INIT_COMMANDS[-1]:
                self.ready = True
                log.info("OBD adapter ready: %s", self.adapter_version)
            return None
        cycle = self._cycle
        if cycle is None:
            return None
        if command == "ATIGN":
            if joined in ("ON", "OFF"):
                cycle["ignition"] = joined == "ON"
                if cycle["ignition"]:
                    self._todo.extend([PID_SPEED, PID_RPM])
            else:  # "?": a clone without the ignition input; infer it from the ECU
                self._ign_supported = False
                self._todo.extend([PID_SPEED, PID_RPM])
        else:
            payload = self._pid_payload(command, lines)
            if payload is not None:
                cycle["answered"] = True
                if command == PID_SPEED:
                    cycle["speed"] = payload[0]
                elif command == PID_RPM:
                    cycle["rpm"] = (256 * payload[0] + payload[1]) / 4.0
        if self._todo:
            return None
        self._cycle = None
        self.counters["cycles"] += 1
        ignition = cycle["ignition"]
        if not self._ign_supported:
            ignition = cycle["answered"]
        return ObdSample(ignition, cycle["speed"], cycle["rpm"])

    def _pid_payload(self, command: str, lines: list[str]) -> list[int] | None:
        """The data bytes of the first ``41 <pid>`` answer, or None (counted)."""
        want = "4" + command[1:]  # "010D" -> "410D"
        need = 2 * PID_BYTES.get(command, 1)
        for line in lines:
            hexed = line.replace(" ", "").upper()
            if hexed.startswith(want) and len(hexed) % 2 == 0 and len(hexed) - len(want) >= need:
                try:
                    return list(bytes.fromhex(hexed[len(want):]))
                except ValueError:
                    break
        joined = " ".join(lines).upper()
        if "NO DATA" in joined:
            self.counters["no_data"] += 1
        else:
            self.counters["errors"] += 1
            log.debug("OBD %s answered %r", command, lines)
        return None


class ObdSensor:
    kind = "obd"

    def __init__(self, name: str, port: str, baudrate: int = 38400, period: float = 1.0,
                 timeout: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.link = SerialLink(name, port, baudrate)
        self.period = float(period)
        self.timeout = float(timeout)
        self.session = Elm327Session()
        self._clock = clock
        self._wall = wall_clock
        self._sent_at = 0.0
        self._next_cycle = 0.0

    def open(self) -> None:
        self.link.open()
        if self.session.pending is not None or self.session.ready:
            self.session.restart()  # reopened: the adapter may have been power-cycled
        self._pump()

    def poll(self) -> list[Reading]:
        samples = self.session.receive_data(self.link.read_available())
        now = self._clock()
        if self.session.pending is not None and now - self._sent_at > self.timeout:
            self.session.timeout()
        if not self.session.busy and now >= self._next_cycle and self.session.start_cycle():
            self._next_cycle = now + self.period
        self._pump()
        ts = int(self._wall() * 1000)
        return [Reading(self.kind, s.to_json(), ts) for s in samples]

    def _pump(self) -> None:
        command = self.session.next_command()
        if command is not None:
            self.link.write(command)
            self._sent_at = self._clock()

    def close(self) -> None:
        self.link.close()

    def stats(self) -> dict[str, int]:
        return dict(self.session.counters)


def make_obd(name: str, options: dict[str, Any]) -> ObdSensor:
    return ObdSensor(name, opt_str(options, "port"), opt_int(options, "baudrate", 38400, lo=50),
                     opt_float(options, "period", 1.0, positive=True), opt_float(options, "timeout", 2.0, positive=True))
