"""One error shape for every 4xx and 5xx: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from gateway.api.models import ErrorBody

__all__ = ["ApiError", "error_responses", "install_error_handlers"]

log = logging.getLogger("vigil.api")

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 406: "not_acceptable", 409: "conflict",
          415: "unsupported_media_type", 422: "invalid_request", 500: "internal",
          503: "unavailable"}

_DESCRIPTIONS = {
    400: "the request matches the document but its values do not make sense together "
         "(until before since, a silence that ends before it starts), an opaque value we did "
         "not give out (cursor, Last-Event-ID), or a body that is not JSON",
    401: "missing, unknown or revoked bearer token",
    403: "the token lacks the scope this route needs",
    404: "no such resource",
    409: "the resource's state does not allow this",
    422: "the parameters or body do not match the document",
    503: "a dependency (the log cluster, the database) is unavailable",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None,
                 headers: dict[str, str] | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.headers = headers
        self.details = details


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses."""
    return {s: {"model": ErrorBody, "description": _DESCRIPTIONS.get(s, "error")} for s in statuses}


def _body(status: int, code: str, message: str, details: Any = None,
          headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "details": details}},
                          status_code=status, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """The methods of the routes this path matches; a literal path (/alerts/ack) beats a
    template (/alerts/{alert_id})."""
    path = request.url.path
    matching = [r for r in request.app.routes
                if r.matches({"type": "http", "path": path, "method": "\x00"})[0] != Match.NONE]
    literal = [r for r in matching if getattr(r, "path", None) == path]
    methods: set[str] = set()
    for route in literal or matching:
        methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _body(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.url.path}"
        if exc.status_code == 405:  # FastAPI has a route per method: name them all
            allowed = _allowed_methods(request)
            headers["Allow"] = ", ".join(allowed)
            message = f"{request.method} is not allowed on {request.url.path} (use {', '.join(allowed)})"
        return _body(exc.status_code, _CODES.get(exc.status_code, "error"), message,
                     headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in exc.errors()]
        summary = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:5])
        return _body(422, "invalid_request", summary or "invalid request", errors)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _body(500, "internal", f"internal error ({type(exc).__name__}); see the server log")
