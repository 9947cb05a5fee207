"""API tokens: bearer tokens with scopes, stored hashed in the alert store's SQLite file.

A token reads ``vgl_<id>_<secret>``: ``id`` (8 hex) names the row, ``secret`` is 32
random bytes (base64url). Only ``sha256(secret)`` is stored and it is compared in constant
time, so the file never holds a usable token. ``vigil tokens create`` prints the token
once.

Scopes: ``read`` (every GET), ``ack`` (acknowledge, unacknowledge, resolve, silences),
``admin`` (webhooks; implies ``read`` and ``ack``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import orjson
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.api.errors import ApiError
from gateway.store import AlertDB, now_ms

__all__ = ["SCOPES", "AdminUser", "Principal", "TokenError", "TokenStore", "requires"]

log = logging.getLogger("vigil.api")

SCOPES: tuple[str, ...] = ("read", "ack", "admin")
_PREFIX = "vgl"


class TokenError(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    """Who made a request: the token's id, name and scopes."""

    token_id: str
    name: str
    scopes: frozenset[str]

    def has(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    def __init__(self, db: AlertDB) -> None:
        self.db = db

    def create(self, name: str, scopes: list[str] | tuple[str, ...]) -> tuple[str, dict[str, object]]:
        """A new token: returns (the token, its row without the secret)."""
        if not name.strip():
            raise TokenError("a token needs a name (who or what uses it)")
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown:
            raise TokenError(f"unknown scope {', '.join(unknown)}; scopes are {', '.join(SCOPES)}")
        if not scopes:
            raise TokenError(f"a token needs at least one scope ({', '.join(SCOPES)})")
        token_id = secrets.token_hex(4)
        secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        row = {"id": token_id, "name": name.strip(), "secret_sha256": _digest(secret),
               "scopes": orjson.dumps(sorted(set(scopes))).decode(), "created_at": now_ms(),
               "revoked_at": None, "last_used_at": None}
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO tokens (id, name, secret_sha256, scopes, created_at, revoked_at, "
                         "last_used_at) VALUES (:id, :name, :secret_sha256, :scopes, :created_at, "
                         ":revoked_at, :last_used_at)", row)
        return f"{_PREFIX}_{token_id}_{secret}", self._public(row)

    def all(self) -> list[dict[str, object]]:
        with self.db.connection() as conn:
            return [self._public(dict(r)) for r in conn.execute("SELECT * FROM tokens ORDER BY created_at, id")]

    def revoke(self, token_id_or_name: str) -> list[dict[str, object]]:
        """Revoke the token with this id, or every active token with this name."""
        at = now_ms()
        with self.db.transaction() as conn:
            rows = [dict(r) for r in conn.execute(
                "SELECT * FROM tokens WHERE (id = ? OR name = ?) AND revoked_at IS NULL",
                (token_id_or_name, token_id_or_name))]
            if not rows:
                raise TokenError(f"no active token with id or name {token_id_or_name!r}")
            conn.executemany("UPDATE tokens SET revoked_at = ? WHERE id = ?", [(at, r["id"]) for r in rows])
        for r in rows:
            r["revoked_at"] = at
        return [self._public(r) for r in rows]

    def verify(self, token: str) -> Principal | None:
        """The principal of a valid, unrevoked token; None otherwise."""
        prefix, _, rest = token.partition("_")
        token_id, _, secret = rest.partition("_")
        if prefix != _PREFIX or not token_id or not secret:
            return None
        with self.db.connection() as conn:
            r = conn.execute("SELECT * FROM tokens WHERE id = ?", (token_id,)).fetchone()
        if r is None or r["revoked_at"] is not None:
            # the same work as a real comparison, so timing says nothing
            hmac.compare_digest(_digest(secret), "0" * 64)
            return None
        if not hmac.compare_digest(_digest(secret), r["secret_sha256"]):
            return None
        return Principal(r["id"], r["name"], frozenset(orjson.loads(r["scopes"])))

    @staticmethod
    def _public(row: dict[str, object]) -> dict[str, object]:
        out = {k: v for k, v in row.items() if k not in ("secret_sha256", "last_used_at")}
        if isinstance(out.get("scopes"), str):
            out["scopes"] = orjson.loads(str(out["scopes"]))
        return out


# --- the FastAPI dependency ---------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="a token from `vigil tokens create`")
_CHALLENGE = 'Bearer realm="vigil"'


def requires(scope: str) -> Callable[..., Principal]:
    """The dependency that authenticates a request and checks ``scope``."""

    def dependency(request: Request,
                   creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
        if creds is None:
            raise ApiError(401, "missing bearer token: send 'Authorization: Bearer <token>' "
                                "(create one with `vigil tokens create`)",
                           headers={"WWW-Authenticate": _CHALLENGE})
        tokens: TokenStore = request.app.state.tokens
        principal = tokens.verify(creds.credentials)
        if principal is None:
            raise ApiError(401, "unknown or revoked token",
                           headers={"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_token"'})
        if not principal.has(scope):
            raise ApiError(403, f"token {principal.name!r} lacks the {scope!r} scope needed here "
                                f"(it has: {', '.join(sorted(principal.scopes)) or 'none'})",
                           headers={"WWW-Authenticate":
                                    f'{_CHALLENGE}, error="insufficient_scope", scope="{scope}"'})
        return principal

    dependency.required_scope = scope  # type: ignore[attr-defined]
    return dependency


AdminUser = Annotated[Principal, Depends(requires("admin"))]
