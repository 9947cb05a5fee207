"""``vigil tokens`` and ``vigil gateway api`` as real processes: a token printed once
works, a revoked one stops working, and the API process killed with SIGKILL mid-stream
comes back with nothing lost and nothing doubled."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from deploy.cli import main
from gateway.api import TokenStore
from gateway.store import AlertDB
from tests.api.conftest import T0, transition, wait_until
from tests.api.test_store_consumer import Log, create_topics
from tests.conftest import BrokerProcess, free_port, start_logged, stop_process


def test_tokens_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "alerts.db")

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["tokens", "--db", db, *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, token, err = run("create", "--name", "pager", "--scope", "read", "--scope", "ack")
    assert code == 0 and "shown only now" in err
    token = token.strip()
    assert token.startswith("vgl_")
    code, listed, _ = run("list")
    assert "pager" in listed and "ack,read" in listed
    assert token.rsplit("_", 1)[1] not in listed + Path(db).read_bytes().decode(errors="replace")
    with pytest.raises(SystemExit):
        run("create", "--name", "x", "--scope", "root")
    assert "invalid choice: 'root'" in capsys.readouterr().err
    assert run("revoke", "pager")[0] == 0
    code, _, err = run("revoke", "pager")
    assert code == 1 and "no active token" in err


def test_api_process_survives_sigkill(broker: BrokerProcess, tmp_path: Path) -> None:
    create_topics(broker.bootstrap)
    db = str(tmp_path / "alerts.db")
    store = AlertDB(db)
    token, _ = TokenStore(store).create("ops", ["read"])
    store.close()
    port = free_port()
    argv = [sys.executable, "-m", "deploy.cli", "gateway", "api", "--db", db, "--bootstrap", broker.bootstrap,
            "--listen", f"127.0.0.1:{port}"]
    log = Log(broker.bootstrap)
    stream = [transition("overspeed", f"truck-{i}", ts=T0 + i) for i in range(40)]
    stream += [transition("overspeed", f"truck-{i}", state="resolved", started=T0 + i, ts=T0 + 100 + i,
                          revision=1) for i in range(40)]
    log.alerts(*stream[:50])
    log.flush()
    headers = {"Authorization": f"Bearer {token}"}
    proc = start_logged(argv, tmp_path / "api.log", port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10) as c:
            wait_until(lambda: c.get("/alerts", params={"limit": 1000}).json()["items"], what="alerts")
            log.alerts(*stream[50:])  # arriving while it is killed
            log.flush()
            proc.kill()
            proc.wait(10)
    finally:
        stop_process(proc)
    proc = start_logged(argv, tmp_path / "api.log", port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10) as c:
            wait_until(lambda: len(c.get("/alerts", params={"state": "resolved", "limit": 1000}).json()["items"])
                       == 40, what="every resolution")
            wait_until(lambda: c.get("/healthz").json()["store_lag"] == 0, what="no lag")
            for a in c.get("/alerts", params={"limit": 1000}).json()["items"]:
                history = c.get(f"/alerts/{a['id']}").json()["history"]
                assert [h["kind"] for h in history] == ["fired", "resolved"], a["device"]
            assert c.get("/healthz").json()["status"] == "ok"
    finally:
        stop_process(proc)
    assert "Traceback" not in (tmp_path / "api.log").read_text()
