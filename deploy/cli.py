"""The `vigil` command: one subcommand per part, each a thin layer over a function.

Each part registers its own subcommands through a `register(subparsers)` function, imported
lazily so that the edge install (which lacks the server dependencies) still runs
`vigil edge ...`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# (module, description) of every part that adds subcommands.
_PARTS: tuple[tuple[str, str], ...] = (
    ("edge.cli", "the device agent"),
    ("broker.cli", "the Kafka-compatible log and its admin tools"),
    ("gateway.cli", "the MQTT -> log bridge and the device registry"),
    ("gateway.api_cli", "API tokens"),
    ("processors.cli", "the stream processors"),
    ("deploy.up", "the one-box launcher"),
    ("tui.cli", "the terminal dashboard"),
)

_OWN_PACKAGES = {"edge", "gateway", "broker", "processors", "tui", "deploy"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vigil", description="Vigil telemetry appliance")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name, _ in _PARTS:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            missing = (exc.name or "").split(".")[0]
            if missing in _OWN_PACKAGES:
                raise  # our own bug, not a missing optional dependency
            # a part whose dependencies are not installed here (e.g. the edge install)
            logging.getLogger("vigil").debug("skipping %s: %s", module_name, exc)
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
