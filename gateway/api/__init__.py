"""Vigil's HTTP API over the alert store: ``create_app`` (FastAPI) and its settings.

Run it (the store's consumer runs in the same process)::

    vigil tokens create --name pager --scope read --scope ack      # prints the token once
    vigil gateway api --db var/gateway/alerts.db --bootstrap 127.0.0.1:9092 --listen 127.0.0.1:8000

Use it::

    H="Authorization: Bearer $TOKEN"
    curl -H "$H" 'localhost:8000/alerts?state=firing&min_severity=major&device_kind=patient&limit=50'
    curl -H "$H" 'localhost:8000/alerts?cursor=<next_cursor of the previous page>'
    curl -H "$H" -X POST localhost:8000/alerts/<id>/ack -d '{"by": "nurse-ann", "comment": "on my way"}'
    curl -H "$H" -N localhost:8000/alerts/stream                  # SSE; resume with Last-Event-ID
    curl -H "$H" -X POST localhost:8000/silences -d '{"rule": "geofence:*", "device": "truck-7", "duration_s": 3600}'
    curl localhost:8000/healthz; curl localhost:8000/openapi.json

Modules: ``app`` (routes, auth wiring, metrics), ``auth`` (tokens and scopes), ``models``
(bodies), ``errors`` (the error model), ``sse`` (the change feed), ``webhook_routes``
(subscriptions over ``gateway.webhooks``). The store itself is ``gateway.store``.
"""

from __future__ import annotations

from gateway.api.app import ApiSettings, create_app
from gateway.api.auth import SCOPES, Principal, TokenError, TokenStore, requires

__all__ = ["SCOPES", "ApiSettings", "Principal", "TokenError", "TokenStore", "create_app", "requires"]
