"""Every route needs a token with its scope; 401 and 403 say what is wrong."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi.routing import APIRoute

from gateway.api.app import PUBLIC_PATHS
from tests.api.conftest import Api

pytestmark = pytest.mark.anyio

def required_scope(route: APIRoute) -> str | None:
    scopes = {getattr(d.call, "required_scope", None) for d in route.dependant.dependencies}
    scopes.discard(None)
    assert len(scopes) <= 1, f"{route.path} declares several scopes {scopes}"
    return scopes.pop() if scopes else None


def api_routes(api: Api) -> list[tuple[str, str, str | None]]:
    out = []
    for route in api.app.routes:
        if not isinstance(route, APIRoute):
            continue
        path = re.sub(r"\{[^}]+\}", "x", route.path)
        for method in sorted(route.methods or ()):
            out.append((method, path, required_scope(route)))
            if route.path not in PUBLIC_PATHS:
                assert required_scope(route) is not None, f"{method} {route.path} has no auth dependency"
                assert (route.openapi_extra or {}).get("x-required-scope") == required_scope(route), \
                    f"{method} {route.path}: the OpenAPI document names another scope"
    return out


async def test_every_route_needs_a_token_with_its_scope(api: Api) -> None:
    routes = api_routes(api)
    assert len(routes) >= 14
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="http://t") as c:
        for method, path, scope in routes:
            if scope is None:
                continue
            r = await c.request(method, path)
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert r.json()["error"]["code"] == "unauthorized"
            # a token with every other scope (never admin, which implies the others)
            name = {"read": "ack", "ack": "read", "admin": "readack"}[scope]
            r = await c.request(method, path, headers=api.auth(name))
            assert r.status_code == 403, (method, path, r.status_code)
            body = r.json()["error"]
            assert body["code"] == "forbidden" and f"'{scope}'" in body["message"]
            assert f'scope="{scope}"' in r.headers["www-authenticate"]


async def test_unknown_malformed_and_revoked_tokens_are_401(api: Api) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="http://t") as c:
        for header in ("Bearer nope", "Bearer vgl_00000000_secret", "Basic dXNlcjpwYXNz",
                       "Bearer " + api.tokens["admin"][:-2] + "xx"):
            r = await c.get("/alerts", headers={"Authorization": header})
            assert r.status_code == 401, header
        assert (await c.get("/alerts", headers=api.auth("read"))).status_code == 200
        api.app.state.tokens.revoke("read")
        r = await c.get("/alerts", headers=api.auth("read"))
        assert r.status_code == 401
        assert r.json()["error"]["message"] == "unknown or revoked token"
        assert 'error="invalid_token"' in r.headers["www-authenticate"]


async def test_admin_implies_read_and_ack_and_healthz_is_open(api: Api) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="http://t") as c:
        assert (await c.get("/alerts", headers=api.auth("admin"))).status_code == 200
        assert (await c.post("/alerts/ack", json={}, headers=api.auth("admin"))).status_code == 200
        r = await c.get("/healthz")
        assert r.status_code == 200 and r.json()["db"] is True


async def test_cors_is_off_by_default(api: Api) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="http://t") as c:
        r = await c.get("/alerts", headers={**api.auth("read"), "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
        r = await c.options("/alerts", headers={"Origin": "https://evil.example",
                                                "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in r.headers


def test_tokens_are_stored_hashed(api: Api) -> None:
    with api.db.connection() as conn:
        stored = " ".join(str(v) for row in conn.execute("SELECT * FROM tokens") for v in tuple(row))
    for token in api.tokens.values():
        assert token.rsplit("_", 1)[1] not in stored
