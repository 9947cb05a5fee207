"""The dashboard is a client of the HTTP API only: importing it loads nothing of the
server's parts or their dependencies (it installs on a laptop with ``pip install .[tui]``)."""

from __future__ import annotations

import subprocess
import sys

import tui
from tests.conftest import ROOT

SERVER_SIDE = ("gateway", "processors", "broker", "edge", "fastapi", "uvicorn", "orjson",
               "confluent_kafka", "sqlite_utils")


def test_importing_the_dashboard_loads_nothing_server_side() -> None:
    code = ("import sys, tui, tui.cli, tui.app; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({SERVER_SIDE!r})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_public_names() -> None:
    assert sorted(tui.__all__) == ["ApiClient", "ApiError", "Clock", "DashboardState", "ManualClock",
                                   "SystemClock", "Unreachable", "VigilDash"]
