"""``vigil gateway api`` (the HTTP API with the alert store's consumer) and
``vigil tokens create|list|revoke``: thin argparse layers over ``gateway.api``.

Settings come from options, with environment variables as defaults: VIGIL_BOOTSTRAP,
VIGIL_ALERTS_DB (the SQLite file), VIGIL_API (host:port).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["register", "register_api"]

_DEFAULT_DB = "var/gateway/alerts.db"


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host or "127.0.0.1", int(port)


def register_api(gsub: Any) -> None:
    """Adds ``api`` to the ``vigil gateway`` subcommands."""
    a = gsub.add_parser("api", help="the HTTP API and the alert store (alerts, devices, SSE)")
    a.add_argument("--db", default=os.environ.get("VIGIL_ALERTS_DB", _DEFAULT_DB),
                   help=f"the alert store's SQLite file (default {_DEFAULT_DB})")
    a.add_argument("--bootstrap", default=os.environ.get("VIGIL_BOOTSTRAP", "127.0.0.1:9092"),
                   help="Kafka bootstrap servers (default 127.0.0.1:9092)")
    a.add_argument("--kafka-config", metavar="FILE", default=os.environ.get("VIGIL_KAFKA_CONFIG"),
                   help="librdkafka settings, key=value lines as kcat -F reads (TLS, SASL: "
                        "see gateway/kafka_config.py)")
    a.add_argument("--listen", type=_host_port,
                   default=_host_port(os.environ.get("VIGIL_API", "127.0.0.1:8000")),
                   metavar="HOST:PORT", help="default 127.0.0.1:8000")
    a.add_argument("--no-store", action="store_true",
                   help="serve the API only; another process fills the database")
    a.add_argument("--group", default="vigil-alert-store", help="the store's consumer group name")
    a.add_argument("--alerts-topic", default="alerts")
    a.add_argument("--device-state-topic", default="device-state")
    a.add_argument("--device-status-topic", default="device-status")
    a.add_argument("--cors-origin", action="append", default=[],
                   help="allow this browser origin (CORS is off by default)")
    a.add_argument("--keepalive", type=float, default=15.0, help="SSE keepalive interval (s)")
    a.set_defaults(func=_api)


def register(sub: Any) -> None:
    t = sub.add_parser("tokens", help="API bearer tokens (stored hashed in the alert store)")
    t.add_argument("--db", default=os.environ.get("VIGIL_ALERTS_DB", _DEFAULT_DB),
                   help=f"the alert store's SQLite file (default {_DEFAULT_DB})")
    tsub = t.add_subparsers(dest="tokens_command", metavar="COMMAND")
    c = tsub.add_parser("create", help="create a token and print it (once)")
    c.add_argument("--name", required=True, help="who or what uses it")
    c.add_argument("--scope", action="append", required=True, choices=["read", "ack", "admin"],
                   help="read, ack or admin (admin implies the others); repeat for several")
    c.set_defaults(func=_tokens_create)
    lst = tsub.add_parser("list", help="tokens (never their secrets)")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=_tokens_list)
    r = tsub.add_parser("revoke", help="revoke a token by id, or every token with a name")
    r.add_argument("token", metavar="ID_OR_NAME")
    r.set_defaults(func=_tokens_revoke)


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.api import ApiSettings, create_app
    from gateway.kafka_config import KafkaConfigError, read_kafka_config
    from gateway.store import StoreTopics

    try:
        kafka_config = read_kafka_config(args.kafka_config) if args.kafka_config else {}
    except KafkaConfigError as exc:
        print(f"vigil gateway api: {exc}", file=sys.stderr)
        return 2
    settings = ApiSettings(
        db_path=args.db, bootstrap=args.bootstrap, kafka_config=kafka_config, run_store=not args.no_store,
        store_group=args.group,
        topics=StoreTopics(args.alerts_topic, args.device_state_topic, args.device_status_topic),
        cors_origins=tuple(args.cors_origin), keepalive_s=args.keepalive)
    app = create_app(settings)
    uvicorn.run(app, host=args.listen[0], port=args.listen[1], log_level="warning",
                timeout_graceful_shutdown=3, proxy_headers=False)
    return 0


def _store(args: argparse.Namespace) -> Any:
    from gateway.api import TokenStore
    from gateway.store import AlertDB

    return TokenStore(AlertDB(args.db))


def _when(ms: object) -> str:
    if not isinstance(ms, int):
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def _tokens_create(args: argparse.Namespace) -> int:
    from gateway.api import TokenError

    store = _store(args)
    try:
        token, row = store.create(args.name, args.scope)
    except TokenError as exc:
        print(f"vigil tokens: {exc}", file=sys.stderr)
        return 1
    finally:
        store.db.close()
    print(f"token {row['id']} ({row['name']}, scopes {', '.join(row['scopes'])}); shown only now:",
          file=sys.stderr)
    print(token)
    return 0


def _tokens_list(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        rows = store.all()
    finally:
        store.db.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'ID':10} {'NAME':24} {'SCOPES':16} {'CREATED':26} REVOKED")
    for r in rows:
        print(f"{r['id']:10} {r['name']:24} {','.join(r['scopes']):16} {_when(r['created_at']):26} "
              f"{_when(r['revoked_at'])}")
    return 0


def _tokens_revoke(args: argparse.Namespace) -> int:
    from gateway.api import TokenError

    store = _store(args)
    try:
        rows = store.revoke(args.token)
    except TokenError as exc:
        print(f"vigil tokens: {exc}", file=sys.stderr)
        return 1
    finally:
        store.db.close()
    for r in rows:
        print(f"token {r['id']} ({r['name']}) revoked", file=sys.stderr)
    return 0
