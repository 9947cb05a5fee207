"""``vigil dash``: the terminal dashboard against a gateway's HTTP API."""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["register", "run_dash"]

DEFAULT_API = "http://127.0.0.1:8000"


def run_dash(api: str, token: str, interval: float = 2.0, telemetry_topic: str = "telemetry") -> int:
    """Run the dashboard in this terminal until the user quits."""
    from tui.app import VigilDash
    from tui.client import ApiClient

    VigilDash(ApiClient(api, token), interval=interval, telemetry_topic=telemetry_topic,
              exit_on_sigterm=True).run()
    return 0


def _main(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("VIGIL_TOKEN")
    if not token:
        print("vigil dash: no token: pass --token or set VIGIL_TOKEN "
              "(create one on the gateway with `vigil tokens create --scope read --scope ack --name NAME`)",
              file=sys.stderr)
        return 2
    if args.interval <= 0:
        print("vigil dash: --interval must be positive", file=sys.stderr)
        return 2
    return run_dash(args.api, token, args.interval, args.telemetry_topic)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dash", help="the terminal dashboard (a client of the HTTP API)",
                       description="Watch devices, alerts and the log cluster of a Vigil gateway.")
    p.add_argument("--api", default=DEFAULT_API, help=f"the gateway's HTTP API (default {DEFAULT_API})")
    p.add_argument("--token", default=None,
                   help="a bearer token with the read scope (ack to acknowledge); default: $VIGIL_TOKEN")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between polls (default 2)")
    p.add_argument("--telemetry-topic", default="telemetry",
                   help="the topic whose growth is events/s on the Overview (default telemetry)")
    p.set_defaults(func=_main)
