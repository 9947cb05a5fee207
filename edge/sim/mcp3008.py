"""A simulated MCP3008 ADC on gpiozero's mock SPI bus (the chip's side of the wire).

gpiozero's ``MCP3008`` on a ``MockFactory`` talks software SPI over mock pins (clock
GPIO11, MOSI GPIO10, MISO GPIO9, chip select GPIO8 for device 0, GPIO7 for device 1);
this device listens on those pins and answers conversions bit by bit as the chip does:
a start bit, single/differential, three channel bits, then a null bit and ten data bits
MSB first. Set ``voltages[channel]`` (0 to ``vref``) to what the sensor would output.
"""

from __future__ import annotations

from typing import Any

from gpiozero.pins.mock import MockSPIDevice

__all__ = ["SimulatedMCP3008"]

SELECT_PINS = {0: 8, 1: 7}


class SimulatedMCP3008(MockSPIDevice):  # type: ignore[misc]
    rx_buf: list[int]
    tx_buf: list[int]

    def __init__(self, pin_factory: Any, device: int = 0, vref: float = 3.3) -> None:
        super().__init__(11, 10, 9, SELECT_PINS[device], pin_factory=pin_factory)
        self.vref = vref
        self.voltages = [0.0] * 8
        self._state = "idle"

    def set_fraction(self, channel: int, fraction: float) -> None:
        self.voltages[channel] = max(0.0, min(1.0, fraction)) * self.vref

    def on_start(self) -> None:
        super().on_start()
        self._state = "idle"

    def on_bit(self) -> None:
        if self._state == "idle":
            if self.rx_buf[-1]:  # start bit
                self._state = "mode"
                self.rx_buf = []
        elif self._state == "mode":
            self._state = "single" if self.rx_buf[-1] else "diff"
            self.rx_buf = []
        elif self._state in ("single", "diff"):
            if len(self.rx_buf) == 3:
                channel = self.rx_word()
                if self._state == "diff":
                    volts = self.voltages[channel] - self.voltages[channel ^ 1]
                else:
                    volts = self.voltages[channel]
                volts = max(0.0, min(self.vref, volts))
                self.tx_word(round(volts / self.vref * 1023), 12)  # null bit + 10 bits (+1 spare)
                self._state = "result"
        elif self._state == "result" and not self.tx_buf:
            self._state = "idle"
            self.rx_buf = []
