"""OBD-II through an ELM327: the host state machine fed with bytes, and the driver on a pty
talking to the simulated adapter."""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Iterator

import pytest

from edge.sensors.obd import INIT_COMMANDS, Elm327Session, ObdSample, ObdSensor
from edge.sim.elm327 import Elm327Emulator
from tests.edge.serial_pty import Pty, open_pty, poll_until


@pytest.fixture
def pty() -> Iterator[Pty]:
    with open_pty() as p:
        yield p


def converse(session: Elm327Session, adapter: Elm327Emulator, cycles: int = 1) -> list[ObdSample]:
    """Run the session against the emulator in memory until ``cycles`` samples came back."""
    samples: list[ObdSample] = []
    for _ in range(200):
        if not session.busy:
            session.start_cycle()
        command = session.next_command()
        if command is not None:
            samples += session.receive_data(adapter.receive(command))
        if len(samples) >= cycles:
            break
    return samples


def test_initialisation_sends_the_at_sequence_one_command_per_prompt() -> None:
    adapter = Elm327Emulator(lambda: (True, 50, 1800))
    session = Elm327Session()
    converse(session, adapter)
    assert adapter.commands[:len(INIT_COMMANDS)] == list(INIT_COMMANDS)
    assert session.ready and session.adapter_version == "ELM327 v1.5"


def test_speed_rpm_and_ignition_are_decoded() -> None:
    session = Elm327Session()
    [sample] = converse(session, Elm327Emulator(lambda: (True, 87, 2456.25)))
    assert sample == ObdSample(ignition=True, speed_kmh=87, rpm=2456.25)
    assert sample.to_json() == {"ignition": True, "speed_kmh": 87, "speed": 24.167, "rpm": 2456.25}


def test_ignition_off_skips_the_pids() -> None:
    adapter = Elm327Emulator(lambda: (False, 0, 0))
    [sample] = converse(Elm327Session(), adapter)
    assert sample == ObdSample(False, None, None)
    assert "010D" not in adapter.commands


def test_an_adapter_without_ignition_input_gets_ignition_from_the_ecu() -> None:
    state = {"on": True}
    adapter = Elm327Emulator(lambda: (state["on"], 30, 900), ignition_input=False)
    session = Elm327Session()
    first = converse(session, adapter)
    state["on"] = False
    second = converse(session, adapter)
    assert first == [ObdSample(True, 30, 900)]
    assert second == [ObdSample(False, None, None)]
    assert session.counters["no_data"] == 2


def test_answers_with_echo_spaces_and_searching_are_understood() -> None:
    session = Elm327Session()
    session._todo.clear()
    session.ready = True
    session.start_cycle()
    assert session.next_command() == b"ATIGN\r"
    session.receive_data(b"ATIGN\rON\r\r>")
    assert session.next_command() == b"010D\r"
    session.receive_data(b"010D\rSEARCHING...\r41 0D 3")  # a prompt split across reads
    assert session.receive_data(b"C\r\r>") == []
    assert session.next_command() == b"010C\r"
    assert session.receive_data(b"41 0C 0F A0\r\n7E8 garbage\r\r>") == [ObdSample(True, 60, 1000.0)]


@pytest.mark.parametrize(("answer", "counter"), [
    (b"NO DATA\r\r>", "no_data"), (b"CAN ERROR\r\r>", "errors"), (b"?\r\r>", "errors"),
    (b"UNABLE TO CONNECT\r\r>", "errors"), (b"\xff\xfe\r\r>", "errors"), (b"41 0D\r\r>", "errors"),
])
def test_errors_leave_the_value_unknown_and_are_counted(answer: bytes, counter: str) -> None:
    session = Elm327Session()
    session._todo.clear()
    session.ready = True
    session.start_cycle()
    session.next_command()
    session.receive_data(b"ON\r\r>")
    session.next_command()
    session.receive_data(answer)  # 010D
    session.next_command()
    [sample] = session.receive_data(b"410C1AF8\r\r>")
    assert sample == ObdSample(True, None, 1726.0)
    assert session.counters[counter] == 1


def test_a_timeout_restarts_initialisation() -> None:
    session = Elm327Session()
    assert session.next_command() == b"ATZ\r"
    session.timeout()
    assert session.counters["timeouts"] == 1 and not session.ready
    assert session.next_command() == b"ATZ\r"


# ---- the driver on a pseudo-terminal, the simulated adapter at the other end -----------


class AdapterOnPty:
    """The emulator answering on the device end of a pty, in a thread."""

    def __init__(self, pty: Pty, adapter: Elm327Emulator) -> None:
        self.pty, self.adapter = pty, adapter
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            ready, _, _ = select.select([self.pty.master], [], [], 0.05)
            if ready:
                try:
                    data = os.read(self.pty.master, 1024)
                except OSError:
                    return
                reply = self.adapter.receive(data)
                if reply:
                    os.write(self.pty.master, reply)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


@pytest.fixture
def vehicle() -> dict[str, float]:
    return {"ignition": 1, "speed": 72, "rpm": 2100}


@pytest.fixture
def adapter_on_pty(pty: Pty, vehicle: dict[str, float]) -> Iterator[AdapterOnPty]:
    a = AdapterOnPty(pty, Elm327Emulator(lambda: (bool(vehicle["ignition"]), vehicle["speed"], vehicle["rpm"])))
    yield a
    a.close()


def test_obd_sensor_polls_a_simulated_adapter_through_a_pseudo_terminal(
        pty: Pty, adapter_on_pty: AdapterOnPty, vehicle: dict[str, float]) -> None:
    sensor = ObdSensor("obd", pty.path, period=0.05, timeout=1.0)
    sensor.open()
    try:
        readings = poll_until(sensor, lambda r: len(r) >= 2)
        vehicle["ignition"] = 0
        readings += poll_until(sensor, lambda r: any(x.data["ignition"] is False for x in r))
    finally:
        sensor.close()
    assert readings[0].kind == "obd"
    assert readings[0].data == {"ignition": True, "speed_kmh": 72, "speed": 20.0, "rpm": 2100.0}
    assert readings[-1].data == {"ignition": False, "speed_kmh": None, "speed": None, "rpm": None}
    assert adapter_on_pty.adapter.commands[:6] == list(INIT_COMMANDS)


def test_obd_sensor_resets_an_adapter_that_stops_answering(pty: Pty) -> None:
    sensor = ObdSensor("obd", pty.path, period=0.05, timeout=0.1)
    sensor.open()
    try:
        poll_until(sensor, lambda r: sensor.stats()["timeouts"] >= 2, timeout=3)
        sent = os.read(pty.master, 1024)
    finally:
        sensor.close()
    assert sensor.stats()["timeouts"] >= 2
    assert sent.startswith(b"ATZ\rATZ\r")  # nothing but resets until the adapter answers


def test_a_reopened_sensor_initialises_the_adapter_again(
        pty: Pty, adapter_on_pty: AdapterOnPty) -> None:
    sensor = ObdSensor("obd", pty.path, period=0.05, timeout=1.0)
    try:
        for _ in range(2):  # e.g. the agent reopens it after a read error
            sensor.open()
            assert poll_until(sensor, lambda r: len(r) >= 1)
            sensor.close()
    finally:
        sensor.close()
    assert adapter_on_pty.adapter.commands.count("ATZ") == 2
