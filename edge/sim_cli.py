"""`vigil edge replay` and `vigil edge simulate`: thin layers over edge.sensors.nmea and edge.sim."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

__all__ = ["register", "replay_nmea"]


def replay_nmea(lines: list[str], out: TextIO) -> dict[str, int]:
    """Decode a capture (lines not starting with ``$`` ignored) and write one JSON line per
    fix; returns the decoder's counters."""
    from edge.sensors.nmea import decode_capture

    fixes, counters = decode_capture(lines)
    for fix in fixes:
        data = fix.to_json()
        out.write(json.dumps({k: data[k] for k in ("time", "mode", "lat", "lon", "speed", "track")
                              } | ({"alt": data["alt"]} if data["alt"] is not None else {})) + "\n")
    return counters


def _replay(args: Any) -> int:
    try:
        with open(args.nmea, encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        print(f"vigil edge replay: {exc}", file=sys.stderr)
        return 1
    counters = replay_nmea(lines, sys.stdout)
    skipped = {k: v for k, v in counters.items() if v and k not in ("sentences", "ignored")}
    if skipped:
        print(f"skipped: {json.dumps(skipped)}", file=sys.stderr)
    return 0


def _simulate(args: Any) -> int:
    if args.mqtt:
        return _simulate_agents(args)
    from edge.sim.run import simulate_cli

    return simulate_cli(args)


def _simulate_agents(args: Any) -> int:
    import signal
    import sys
    import threading
    from pathlib import Path

    from edge.sim import Simulation
    from edge.sim_agents import load_credentials, run_simulated_agents

    host, _, port = args.mqtt.rpartition(":")
    try:
        credentials = load_credentials(args.credentials)
        sim = Simulation(args.vehicles, args.patients, args.seed, speedup=args.speedup,
                         traffic=args.traffic, line_noise=args.line_noise, incidents=args.incidents)
    except (ValueError, OSError) as exc:
        print(f"vigil edge simulate: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.duration:
        threading.Timer(args.duration / args.speedup, stop.set).start()
    run_simulated_agents(sim, host=host or "127.0.0.1", port=int(port), credentials=credentials,
                         outbox_dir=Path(args.outbox_dir), stop=stop)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("replay", help="decode an NMEA capture and print one JSON line per fix")
    p.add_argument("--nmea", required=True, metavar="FILE",
                   help="a capture: NMEA sentences one a line; lines not starting with $ are ignored")
    p.set_defaults(func=_replay)

    s = sub.add_parser("simulate", help="run simulated vehicles and patients through the real drivers")
    s.add_argument("--vehicles", type=int, default=1, metavar="N")
    s.add_argument("--patients", type=int, default=0, metavar="M")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--speedup", type=float, default=1.0, metavar="X",
                   help="simulated seconds per real second (default 1)")
    s.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="simulated seconds to run (default: until interrupted)")
    s.add_argument("--traffic", metavar="CSV.GZ",
                   help="drive the vehicles along tracks of a recorded traffic file (t,vehicle,lat,lon,speed,heading)")
    s.add_argument("--line-noise", type=float, default=0.0, metavar="P",
                   help="share of GPS and monitor lines sent with a corrupted byte (default 0)")
    s.add_argument("--incidents", action="store_true",
                   help="script incidents (edge/sim/incidents.py): veh-001 speeds, veh-002 cuts through the "
                        "town centre, bed-001 deteriorates, bed-002's probe falls off; every 5 simulated minutes")
    s.add_argument("--print", action="store_true", dest="print_readings",
                   help="print every reading as a JSON line")
    s.add_argument("--mqtt", metavar="HOST:PORT",
                   help="publish through a real agent per device to this MQTT broker (instead of printing)")
    s.add_argument("--credentials", metavar="FILE",
                   help="with --mqtt: a JSON object of device id -> MQTT password (user = device id)")
    s.add_argument("--outbox-dir", default="var/edge-sim", metavar="DIR",
                   help="with --mqtt: where the agents keep their outboxes (default var/edge-sim)")
    s.set_defaults(func=_simulate)
