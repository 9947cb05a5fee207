"""A simulated ELM327 OBD-II adapter: the adapter's side of the protocol, without I/O.

``Elm327Emulator.receive(bytes) -> bytes`` takes what the host wrote and returns what the
adapter answers, prompt included. It keeps the adapter's settings as a real one does
(echo and spaces on after ``ATZ``, linefeeds off), answers ``ATIGN`` from the vehicle's
ignition, ``010D`` / ``010C`` from its speed and rpm (``NO DATA`` with the ignition off)
and ``?`` to anything it does not know. ``vehicle`` is any callable returning
``(ignition, speed_kmh, rpm)``.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Elm327Emulator"]

VehicleState = Callable[[], tuple[bool, float, float]]


class Elm327Emulator:
    VERSION = "ELM327 v1.5"

    def __init__(self, vehicle: VehicleState, *, ignition_input: bool = True) -> None:
        self.vehicle = vehicle
        self.ignition_input = ignition_input  # False: a clone that answers ? to ATIGN
        self._buffer = b""
        self.commands: list[str] = []
        self._defaults()

    def _defaults(self) -> None:
        self.echo, self.linefeeds, self.spaces, self.headers = True, False, True, False

    def receive(self, data: bytes) -> bytes:
        self._buffer += data
        out = b""
        while b"\r" in self._buffer:
            raw, _, self._buffer = self._buffer.partition(b"\r")
            command = raw.decode("ascii", errors="replace").strip().replace(" ", "").upper()
            echo = raw + b"\r" if self.echo else b""
            if not command:
                continue
            self.commands.append(command)
            eol = "\r\n" if self.linefeeds else "\r"
            answer = self._answer(command)
            out += echo + (eol.join(answer) + eol + eol + ">").encode("ascii")
        return out

    def _answer(self, c: str) -> list[str]:
        if c == "ATZ" or c == "ATWS":
            self._defaults()
            return ["", self.VERSION]
        if c == "ATI":
            return [self.VERSION]
        settings = {"ATE0": ("echo", False), "ATE1": ("echo", True), "ATL0": ("linefeeds", False),
                    "ATL1": ("linefeeds", True), "ATS0": ("spaces", False), "ATS1": ("spaces", True),
                    "ATH0": ("headers", False), "ATH1": ("headers", True)}
        if c in settings:
            name, value = settings[c]
            setattr(self, name, value)
            return ["OK"]
        if c.startswith("ATSP") or c in ("ATD", "ATAT1", "ATAT2"):
            return ["OK"]
        if c == "ATIGN":
            if not self.ignition_input:
                return ["?"]
            return ["ON" if self.vehicle()[0] else "OFF"]
        if c in ("010D", "010C", "0100"):
            ignition, speed_kmh, rpm = self.vehicle()
            if not ignition:
                return ["NO DATA"]
            if c == "010D":
                data = [0x41, 0x0D, max(0, min(255, round(speed_kmh)))]
            elif c == "010C":
                raw = max(0, min(0xFFFF, round(rpm * 4)))
                data = [0x41, 0x0C, raw >> 8, raw & 0xFF]
            else:
                data = [0x41, 0x00, 0xBE, 0x1F, 0xB8, 0x10]
            sep = " " if self.spaces else ""
            return [sep.join(f"{b:02X}" for b in data)]
        return ["?"]
