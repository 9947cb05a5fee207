"""Webhook subscriptions and their delivery log over HTTP (``admin`` scope), and the hook
that hands the store's changes to ``gateway.webhooks``.

Every change the store commits (a transition from the log, an acknowledgement, ...) is
enqueued for the matching subscriptions inside the same SQLite transaction, so a change is
never committed without its deliveries nor the other way round. Changes of a silenced
alert are not enqueued (an ``unsilenced`` change is: the alert is live again). The
``Dispatcher`` thread (started with the app) sends them, signed, with retries.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from sqlite_utils import Database

from gateway.api.auth import AdminUser
from gateway.api.errors import ApiError, error_responses
from gateway.api.models import ChangeEvent, alert_model
from gateway.store import AlertDB
from gateway.webhooks import WebhookError, Webhooks

__all__ = ["change_event", "install_webhooks"]

log = logging.getLogger("vigil.api")

Severity = Literal["info", "minor", "major", "critical"]
ChangeKind = Literal["fired", "updated", "resolved", "acknowledged", "unacknowledged", "silenced",
                     "unsilenced"]


class WebhookFilterModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_severity: Severity | None = None
    rules: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="exact, or a prefix ending in * (geofence:*)")
    devices: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    device_kinds: list[Literal["vehicle", "patient"]] = Field(default_factory=list)
    states: list[ChangeKind] = Field(default_factory=list, description="the change kinds to receive")


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=2000, pattern=r"^https?://[A-Za-z0-9._~-]+(:[0-9]{1,5})?([/?#][\x21-\x7e]*)?$",
                     description="http:// or https://")
    secret: str | None = Field(None, min_length=16, max_length=500,
                               description="the HMAC key; generated when omitted (shown once)")
    filter: WebhookFilterModel = Field(default_factory=WebhookFilterModel)
    enabled: StrictBool = True
    description: str = Field("", max_length=2000)


class WebhookUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: StrictBool


class Webhook(BaseModel):
    id: str
    url: str
    filter: WebhookFilterModel
    enabled: bool
    created: datetime
    description: str
    secret: str | None = Field(None, description="only in the answer to the creation")


class Attempt(BaseModel):
    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: float
    outcome: str
    retry_in_s: float | None
    response: str | None


class Delivery(BaseModel):
    id: str
    webhook_id: str
    transition_id: str
    event: str
    status: Literal["pending", "delivered", "failed", "cancelled"]
    attempts: int
    next_attempt_at: datetime | None
    created: datetime
    finished: datetime | None
    last_status_code: int | None
    last_error: str | None
    body: dict[str, Any]
    log: list[Attempt] | None = Field(None, description="every attempt (on GET of one delivery)")


def _dt(v: Any) -> datetime | None:
    if v is None:
        return None
    dt = datetime.fromisoformat(str(v))
    return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)


def _when(v: Any) -> datetime:
    dt = _dt(v)
    assert dt is not None
    return dt


def _webhook(sub: Any, with_secret: bool = False) -> Webhook:
    d = sub.to_json(with_secret=with_secret)
    f = {k: (v if v is not None else ([] if k != "min_severity" else None)) for k, v in d["filter"].items()}
    return Webhook(id=d["id"], url=d["url"], filter=WebhookFilterModel(**f), enabled=d["enabled"],
                   created=_when(d["created"]), description=d["description"] or "",
                   secret=d.get("secret"))


def _delivery(d: dict[str, Any]) -> Delivery:
    body = d["body"] if isinstance(d["body"], dict) else {}
    attempts = None
    if "log" in d:
        attempts = [Attempt(**{**a, "at": _dt(a["at"])}) for a in d["log"]]
    return Delivery(id=d["id"], webhook_id=d["webhook_id"], transition_id=d["transition_id"],
                    event=d["event"], status=d["status"], attempts=d["attempts"],
                    next_attempt_at=_dt(d.get("next_attempt_at")), created=_when(d["created"]),
                    finished=_dt(d.get("finished")), last_status_code=d.get("last_status_code"),
                    last_error=d.get("last_error"), body=body, log=attempts)


def change_event(h: dict[str, Any]) -> ChangeEvent:
    """A store history row as the API shows a change (SSE data, webhook body)."""
    return ChangeEvent(change=h["id"], kind=h["kind"], at=datetime.fromtimestamp(h["ts"] / 1000, tz=UTC),
                       actor=h["actor"], comment=h["comment"], alert=alert_model(h["alert"]))


def _webhook_change(h: dict[str, Any]) -> dict[str, Any]:
    """What ``Webhooks.enqueue`` gets: the API's change, plus the fields its filters read."""
    a = h["alert"]
    out = change_event(h).model_dump(mode="json")
    out.update(transition_id=f"change:{h['id']}", fingerprint=a["fingerprint"], rule=a["rule"],
               subject=a["subject"], device_kind=a["device_kind"], severity=a["severity"])
    return out


def install_webhooks(app: FastAPI, db: AlertDB) -> None:
    """The routes, and the change hook; the app's lifespan starts ``app.state.dispatcher``."""
    with db.connection() as conn:
        Webhooks(Database(conn))  # creates its tables

    def enqueue(conn: sqlite3.Connection, changes: list[dict[str, Any]]) -> None:
        try:
            hooks = Webhooks(Database(conn))
            for h in changes:
                if not h["alert"].get("silenced"):
                    hooks.enqueue(_webhook_change(h))
        except (WebhookError, sqlite3.Error):
            log.exception("webhook deliveries of changes %d..%d not enqueued", changes[0]["id"],
                          changes[-1]["id"])

    db.change_hooks.append(enqueue)
    scoped: dict[str, Any] = {"openapi_extra": {"x-required-scope": "admin"}, "tags": ["webhooks"]}

    def hooks() -> Any:
        return db.connection()

    @app.get("/webhooks", response_model=list[Webhook], responses=error_responses(400, 401, 403, 422), **scoped)
    def list_webhooks(_user: AdminUser) -> list[Webhook]:
        with hooks() as conn:
            return [_webhook(s) for s in Webhooks(Database(conn)).list()]

    @app.post("/webhooks", response_model=Webhook, status_code=201,
              responses=error_responses(400, 401, 403, 422), **scoped)
    def create_webhook(_user: AdminUser, body: WebhookCreate) -> Webhook:
        """Subscribe a URL to alert changes. The answer holds the signing secret: keep it."""
        with hooks() as conn:
            try:
                sub = Webhooks(Database(conn)).create(
                    body.url, secret=body.secret, filter=body.filter.model_dump(),
                    enabled=body.enabled, description=body.description)
            except WebhookError as exc:
                raise ApiError(422, str(exc)) from exc
        return _webhook(sub, with_secret=True)

    @app.get("/webhooks/deliveries/{delivery_id}", response_model=Delivery,
             responses=error_responses(400, 401, 403, 422, 404), **scoped)
    def get_delivery(_user: AdminUser, delivery_id: str) -> Delivery:
        """One delivery with every attempt: time, status code or error, what was decided."""
        with hooks() as conn:
            d = Webhooks(Database(conn)).delivery(delivery_id)
        if d is None:
            raise ApiError(404, f"no delivery {delivery_id}")
        return _delivery(d)

    @app.post("/webhooks/deliveries/{delivery_id}/redeliver", response_model=Delivery,
              responses=error_responses(400, 401, 403, 422, 404, 409), **scoped)
    def redeliver(_user: AdminUser, delivery_id: str) -> Delivery:
        """Send a failed or cancelled delivery again."""
        with hooks() as conn:
            wh = Webhooks(Database(conn))
            if wh.delivery(delivery_id) is None:
                raise ApiError(404, f"no delivery {delivery_id}")
            if not wh.redeliver(delivery_id):
                raise ApiError(409, "only a failed or cancelled delivery of an existing webhook "
                                    "can be sent again")
            d = wh.delivery(delivery_id)
        dispatcher = app.state.dispatcher
        if dispatcher is not None:
            dispatcher.notify()
        assert d is not None
        return _delivery(d)

    @app.get("/webhooks/{webhook_id}", response_model=Webhook,
             responses=error_responses(400, 401, 403, 422, 404), **scoped)
    def get_webhook(_user: AdminUser, webhook_id: str) -> Webhook:
        with hooks() as conn:
            sub = Webhooks(Database(conn)).get(webhook_id)
        if sub is None:
            raise ApiError(404, f"no webhook {webhook_id}")
        return _webhook(sub)

    @app.patch("/webhooks/{webhook_id}", response_model=Webhook,
               responses=error_responses(400, 401, 403, 422, 404), **scoped)
    def update_webhook(_user: AdminUser, webhook_id: str, body: WebhookUpdate) -> Webhook:
        """Enable or disable (a disabled webhook's pending deliveries wait)."""
        with hooks() as conn:
            wh = Webhooks(Database(conn))
            if not wh.set_enabled(webhook_id, body.enabled):
                raise ApiError(404, f"no webhook {webhook_id}")
            sub = wh.get(webhook_id)
        return _webhook(sub)

    @app.delete("/webhooks/{webhook_id}", status_code=204,
                responses=error_responses(400, 401, 403, 422, 404), **scoped)
    def delete_webhook(_user: AdminUser, webhook_id: str) -> Response:
        """Remove a subscription; its pending deliveries are cancelled (the log stays)."""
        with hooks() as conn:
            if not Webhooks(Database(conn)).delete(webhook_id):
                raise ApiError(404, f"no webhook {webhook_id}")
        return Response(status_code=204)

    @app.get("/webhooks/{webhook_id}/deliveries", response_model=list[Delivery],
             responses=error_responses(400, 401, 403, 422, 404), **scoped)
    def list_deliveries(
        _user: AdminUser, webhook_id: str,
        status: Annotated[Literal["pending", "delivered", "failed", "cancelled"] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[Delivery]:
        """The delivery log of one webhook, newest first."""
        with hooks() as conn:
            wh = Webhooks(Database(conn))
            if wh.get(webhook_id) is None:
                raise ApiError(404, f"no webhook {webhook_id}")
            return [_delivery(d) for d in wh.deliveries(webhook_id, status, limit)]
