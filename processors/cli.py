"""`vigil processors`: run the stream processors (a thin layer over `ProcessorService`)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from typing import Any

from processors.config import ConfigError, ProcessorsConfig

log = logging.getLogger("vigil.processors")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "processors", help="run the stream processors (windows and the vehicle and patient rules)",
        description="Join the processors' consumer group on the telemetry topic and write alerts and "
                    "device state. Run more of them (same --group) to split the partitions.")
    p.add_argument("--config", metavar="FILE", help="the processors' TOML file (see processors/config.py)")
    p.add_argument("--bootstrap", metavar="HOST:PORT[,...]",
                   help="the log's bootstrap servers (overrides [kafka] bootstrap; env VIGIL_BOOTSTRAP)")
    p.add_argument("--group", help="consumer group (overrides [kafka] group)")
    p.add_argument("--instance-id", help="static group membership: a restart under the same id keeps "
                   "its partitions without a rebalance (overrides [kafka] instance_id)")
    p.add_argument("--client-id", default=None, help="this member's name (default: processors-<host>-<pid>)")
    p.add_argument("--check", action="store_true", help="check the configuration and exit")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    try:
        config = ProcessorsConfig.load(args.config) if args.config else ProcessorsConfig()
    except ConfigError as exc:
        print(f"vigil processors: {exc}", file=sys.stderr)
        return 2
    bootstrap = args.bootstrap or os.environ.get("VIGIL_BOOTSTRAP")
    if bootstrap:
        config = replace(config, bootstrap=bootstrap)
    if args.group:
        config = replace(config, group=args.group)
    if args.instance_id:
        config = replace(config, instance_id=args.instance_id)
    if args.check:
        print(f"configuration OK: bootstrap={config.bootstrap} group={config.group} "
              f"topics={config.topics}")
        return 0

    from processors.service import ProcessorService, ProcessorsFailed

    client_id = args.client_id or f"processors-{socket.gethostname()}-{os.getpid()}"
    service = ProcessorService(config, client_id=client_id)

    def stop(signum: int, frame: Any) -> None:
        service.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        service.run(ready=lambda: print(f"vigil processors: {client_id} running against {config.bootstrap}",
                                        flush=True))
    except ProcessorsFailed as exc:
        print(f"vigil processors: {exc}", file=sys.stderr)
        return 1
    return 0
