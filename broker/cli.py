"""`vigil broker` (run a node) and the admin tools (`vigil topics|groups|produce|consume`)."""

from __future__ import annotations

import argparse
from typing import Any

from broker import admin


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host or "127.0.0.1", int(port)


def register(sub: Any) -> None:
    p = sub.add_parser("broker", help="run a Kafka-compatible log broker node")
    p.add_argument("--listen", type=_host_port, default=("127.0.0.1", 9092), metavar="HOST:PORT",
                   help="address to listen on (default 127.0.0.1:9092)")
    p.add_argument("--advertise", type=_host_port, default=None, metavar="HOST:PORT",
                   help="address clients are told to connect to (default: the listen address)")
    p.add_argument("--data-dir", default="var/broker", help="where the log lives (default var/broker)")
    p.add_argument("--node-id", type=int, default=0, help="this node's id (default 0)")
    p.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                   help="broker setting, e.g. log.flush.interval.messages=1 (repeatable)")
    p.set_defaults(func=_run_broker)
    admin.register(sub)


def _run_broker(args: argparse.Namespace) -> int:
    from broker.server import BrokerConfig, run

    config = BrokerConfig.from_args(
        listen=args.listen, advertise=args.advertise, data_dir=args.data_dir,
        node_id=args.node_id, settings=args.config,
    )
    run(config)
    return 0
