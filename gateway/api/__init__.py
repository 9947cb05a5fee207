"""Vigil's HTTP API over the alert store: ``create_app`` (FastAPI) and its settings.

Run it with ``vigil gateway api --db var/gateway/alerts.db --bootstrap 127.0.0.1:9092
--listen 127.0.0.1:8000``; create tokens with ``vigil tokens create --scope read --name NAME``.
"""

from __future__ import annotations

from gateway.api.app import ApiSettings, create_app, requires
from gateway.api.auth import SCOPES, Principal, TokenError, TokenStore

__all__ = ["SCOPES", "ApiSettings", "Principal", "TokenError", "TokenStore", "create_app", "requires"]
