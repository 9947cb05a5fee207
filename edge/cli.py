"""`vigil edge ...`: the device agent's commands, each a thin layer over a function.

Each area adds its own subcommands through a ``register(subparsers)`` function:
``edge.agent_cli`` (run, check), ``edge.sim_cli`` (replay, simulate),
``edge.flash`` (bundle, flash).
"""

from __future__ import annotations

import importlib
from typing import Any

_AREAS = ("edge.agent_cli", "edge.sim_cli", "edge.flash")


def register(sub: Any) -> None:
    p = sub.add_parser("edge", help="the device agent: run, check, replay, simulate, bundle, flash")
    edge_sub = p.add_subparsers(dest="edge_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    for name in _AREAS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that area is not built yet
                continue
            raise
        module.register(edge_sub)
