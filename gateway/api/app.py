"""The HTTP API: FastAPI over the alert store (``gateway.store``).

``create_app(settings)`` builds the app; ``vigil gateway api`` serves it with uvicorn and
runs the store's consumer in the same process (a thread, started and stopped by the app's
lifespan). One process, because:

* the SQLite file has one writer at a time anyway, and the API writes to it too
  (acknowledgements, silences): two processes would only add lock waits;
* the SSE streams wake up the moment the consumer commits (an in-process notifier)
  instead of polling the file;
* there is one thing to deploy and supervise; ``--no-store`` serves the API alone (a
  second API process over the same file, or a file restored from a backup).

Every route but ``/healthz`` and the OpenAPI document needs a bearer token with a scope
(``gateway.api.auth``); each route declares its scope once, through ``requires(scope)``,
which also writes it into the OpenAPI document as ``x-required-scope``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response, StreamingResponse
from fastapi.routing import APIRoute
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.api.auth import Principal, TokenStore, requires
from gateway.api.errors import ApiError, error_responses, install_error_handlers
from gateway.api.models import (
    AckRequest,
    Alert,
    AlertDetail,
    AlertPage,
    BulkAckRequest,
    BulkAckResult,
    Device,
    DeviceKind,
    DevicePage,
    Health,
    IsoTime,
    Severity,
    Silence,
    SilenceCreate,
    Status,
    alert_model,
    device_model,
    dt_to_ms,
    history_model,
    silence_model,
)
from gateway.api.sse import ChangeFeed, stream_changes
from gateway.api.webhook_routes import install_webhooks
from gateway.store import (
    AlertDB,
    AlertFilter,
    AlertNotFound,
    AlertStateConflict,
    SilenceNotFound,
    StoreConsumer,
    StoreTopics,
    now_ms,
)

__all__ = ["ApiSettings", "create_app"]

log = logging.getLogger("vigil.api")

PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect"})


@dataclass
class ApiSettings:
    db_path: Path | str = "var/gateway/alerts.db"
    bootstrap: str | None = None  # the log; None: no consumer, no /cluster
    kafka_config: dict[str, str] = field(default_factory=dict)  # TLS, SASL, ... (gateway.kafka_config)
    run_store: bool = True  # run the store's consumer in this process (needs bootstrap)
    store_group: str = "vigil-alert-store"
    topics: StoreTopics = field(default_factory=StoreTopics)
    cors_origins: tuple[str, ...] = ()  # CORS is off unless origins are given
    keepalive_s: float = 15.0  # SSE keepalive comments
    sse_window: int = 10_000  # changes kept in memory for the streams (older ones: from the file)
    cluster_timeout_s: float = 5.0
    run_webhooks: bool = True  # send webhook deliveries from this process (while it serves)


# --- auth -------------------------------------------------------------------------------

def _scoped(scope: str, *errors: int) -> dict[str, Any]:
    """Route keyword arguments: the auth dependency, its scope in the OpenAPI document, and
    the documented error responses."""
    return {"openapi_extra": {"x-required-scope": scope},
            "responses": error_responses(400, 401, 403, 422, *errors)}


ReadUser = Annotated[Principal, Depends(requires("read"))]
AckUser = Annotated[Principal, Depends(requires("ack"))]


# --- cursors ----------------------------------------------------------------------------


def _encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


def _decode_cursor(cursor: str) -> Any:
    try:
        return orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, "invalid cursor: pass the next_cursor of a previous page unchanged",
                       code="invalid_cursor") from exc


def _alert_cursor(cursor: str | None) -> tuple[int, str] | None:
    if cursor is None:
        return None
    v = _decode_cursor(cursor)
    if (not isinstance(v, list) or len(v) != 2 or not isinstance(v[0], int)
            or isinstance(v[0], bool) or not isinstance(v[1], str)):
        raise ApiError(400, "invalid cursor: pass the next_cursor of a previous page unchanged",
                       code="invalid_cursor")
    return v[0], v[1]


# --- metrics ----------------------------------------------------------------------------


class _StoreCollector(Collector):
    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        db: AlertDB = self.app.state.db
        alerts = GaugeMetricFamily("vigil_api_alerts", "stored alerts by state and severity",
                                   labels=["state", "severity"])
        for (state, severity), n in sorted(db.counts().items()):
            alerts.add_metric([state, severity], n)
        yield alerts
        consumer: StoreConsumer | None = self.app.state.consumer
        if consumer is not None:
            lag = GaugeMetricFamily("vigil_store_lag_records", "records not yet in the store",
                                    labels=["topic", "partition"])
            for (t, p), n in sorted(consumer.status.lag.items()):
                lag.add_metric([t, str(p)], n)
            yield lag
            yield GaugeMetricFamily("vigil_store_records_consumed", "records consumed since start",
                                    value=consumer.status.records)
        yield GaugeMetricFamily("vigil_store_last_change", "the newest change number",
                                value=db.notifier.last_id)


class _Metrics:
    def __init__(self, app: FastAPI) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("vigil_api_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("vigil_api_request_seconds", "time to the response's start",
                                 ["route"], registry=r,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
        self.sse_clients = Gauge("vigil_api_sse_clients", "open /alerts/stream connections", registry=r)
        self.sse_events = Counter("vigil_api_sse_events", "SSE events sent", registry=r)
        r.register(_StoreCollector(app))


class _MetricsMiddleware:
    """Counts requests by route template (not by raw path: ids would explode the labels)."""

    def __init__(self, app: Any, metrics: Callable[[], _Metrics]) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                route = getattr(scope.get("route"), "path", "unmatched")
                self.metrics().latency.labels(route).observe(time.perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics().requests.labels(scope["method"], route, str(status)).inc()


# --- the app ----------------------------------------------------------------------------


def create_app(settings: ApiSettings | None = None, db: AlertDB | None = None) -> FastAPI:
    """The API over ``settings.db_path`` (or an open ``db``). The store's consumer starts
    with the app's lifespan when ``settings.bootstrap`` is set and ``run_store``."""
    s = settings or ApiSettings()
    own_db = db is None
    the_db = db if db is not None else AlertDB(s.db_path)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from gateway.webhooks import Dispatcher

        dispatcher = Dispatcher(the_db.path).start() if s.run_webhooks else None
        app.state.dispatcher = dispatcher
        wake = the_db.notifier.subscribe(lambda _last: dispatcher.notify()) if dispatcher else None
        consumer = None
        if s.bootstrap and s.run_store:
            consumer = StoreConsumer(the_db, s.bootstrap, s.store_group, s.topics,
                                     client_config=s.kafka_config).start()
            app.state.consumer = consumer
        try:
            yield
        finally:
            await app.state.feed.close()
            if consumer is not None:
                consumer.stop()
            if dispatcher is not None and wake is not None:
                the_db.notifier.unsubscribe(wake)
                dispatcher.stop()
            if own_db:
                the_db.close()

    app = FastAPI(
        title="Vigil API", version="1.0.0", lifespan=lifespan, redoc_url=None,
        description="Alerts, devices and the log cluster of a Vigil gateway. Every timestamp "
                    "is timezone-aware UTC (ISO 8601). Errors are `{\"error\": {\"code\", "
                    "\"message\", \"details\"}}`. Authenticate with `Authorization: Bearer "
                    "<token>` (`vigil tokens create --scope read --name NAME`).",
    )
    app.router.dependencies.append(Depends(_known_query_parameters))
    app.state.db = the_db
    app.state.tokens = TokenStore(the_db)
    app.state.settings = s
    app.state.consumer = None
    app.state.dispatcher = None
    app.state.feed = ChangeFeed(the_db, s.sse_window)
    app.state.metrics = _Metrics(app)
    install_error_handlers(app)
    if s.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(s.cors_origins),
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Last-Event-ID"])
    app.add_middleware(_MetricsMiddleware, metrics=lambda: app.state.metrics)

    _alert_routes(app, the_db, s)
    _silence_routes(app, the_db)
    _device_routes(app, the_db)
    _ops_routes(app, the_db, s)
    install_webhooks(app, the_db)
    return app


def _known_query_parameters(request: Request) -> None:
    """Refuse query parameters the route does not know: a misspelt filter (``sevrity=``)
    must not silently select everything."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    known = _query_names(route.dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise ApiError(422, f"unknown query parameter(s) {', '.join(map(repr, unknown))}; "
                            f"this route takes {', '.join(sorted(known)) or 'none'}",
                       code="invalid_request")


def _query_names(dependant: Any) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def _actor(principal: Principal, body: AckRequest | SilenceCreate | None) -> str:
    """Who acted: ``by`` from the body (a shared pager token acts for many people), and
    the token it came through when that is another name (the audit trail keeps both)."""
    by = body.by.strip() if body is not None and body.by else ""
    if not by or by == principal.name:
        return principal.name
    return f"{by} (token {principal.name})"


def _to_filter(state: list[Status] | None = None, severity: list[Severity] | None = None,
               min_severity: Severity | None = None, rule: list[str] | None = None,
               device: list[str] | None = None, device_kind: list[DeviceKind] | None = None,
               since: datetime | None = None, until: datetime | None = None) -> AlertFilter:
    if since is not None and until is not None and until <= since:
        raise ApiError(400, "until must be later than since")
    return AlertFilter(
        status=tuple(state or ()), severity=tuple(severity or ()), min_severity=min_severity,
        rule=tuple(rule or ()), device=tuple(device or ()), device_kind=tuple(device_kind or ()),
        since=dt_to_ms(since) if since is not None else None,
        until=dt_to_ms(until) if until is not None else None)


_TIME_DOC = "ISO 8601 with a timezone (naive times are refused)"


def _alert_routes(app: FastAPI, db: AlertDB, s: ApiSettings) -> None:
    @app.get("/alerts", response_model=AlertPage, tags=["alerts"], **_scoped("read", 400))
    def list_alerts(
        _user: ReadUser,
        state: Annotated[list[Status] | None, Query(description="firing, acknowledged, resolved")] = None,
        severity: Annotated[list[Severity] | None, Query()] = None,
        min_severity: Annotated[Severity | None, Query()] = None,
        rule: Annotated[list[str] | None, Query(description="rule names or globs (geofence:*)")] = None,
        device: Annotated[list[str] | None, Query(description="device ids or globs")] = None,
        device_kind: Annotated[list[DeviceKind] | None, Query()] = None,
        since: Annotated[IsoTime | None, Query(description=f"last change at or after; {_TIME_DOC}")] = None,
        until: Annotated[IsoTime | None, Query(description=f"last change before; {_TIME_DOC}")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(max_length=500, description="next_cursor of the previous page")] = None,
    ) -> AlertPage:
        """Alerts, most recently changed first, one page at a time (keyset pagination on
        (last change, id): a page never repeats or skips an alert that did not change
        meanwhile; one that changed moves to the front)."""
        flt = _to_filter(state, severity, min_severity, rule, device, device_kind, since, until)
        rows = db.list_alerts(flt, limit + 1, _alert_cursor(cursor))
        active = db.active_silences()
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = _encode_cursor([rows[-1]["last_change"], rows[-1]["id"]]) if more else None
        return AlertPage(items=[alert_model(r, active) for r in rows], next_cursor=nxt)

    @app.post("/alerts/ack", response_model=BulkAckResult, tags=["alerts"], **_scoped("ack"))
    def bulk_ack(user: AckUser, body: BulkAckRequest) -> BulkAckResult:
        """Acknowledge every firing alert the filter selects. An empty filter selects
        nothing unless `all` is true."""
        flt = _to_filter(None, body.severity, None, body.rule, body.device, body.device_kind,
                         body.since, body.until)
        if flt == AlertFilter() and not body.all:
            return BulkAckResult(acknowledged=0, ids=[])
        ids = db.acknowledge_many(flt, _actor(user, body), body.comment)
        return BulkAckResult(acknowledged=len(ids), ids=ids)

    @app.get("/alerts/stream", tags=["alerts"], response_class=StreamingResponse,
             openapi_extra={"x-required-scope": "read"},
             responses={200: {"description": "Server-Sent Events: `id` = change number, `event` = "
                                              "the change's kind, `data` = a ChangeEvent (JSON); "
                                              "`: keepalive` comments in between",
                              "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                        **error_responses(400, 401, 403, 422)})
    async def stream(
        request: Request,
        _user: ReadUser,
        last_event_id: Annotated[str | None, Header(description="resume after this change number")] = None,
        after: Annotated[int | None, Query(ge=0, description="resume after this change number "
                                                               "(for clients that cannot set Last-Event-ID); "
                                                               "0 replays everything")] = None,
        severity: Annotated[list[Severity] | None, Query()] = None,
        rule: Annotated[list[str] | None, Query()] = None,
        device: Annotated[list[str] | None, Query()] = None,
        device_kind: Annotated[list[DeviceKind] | None, Query()] = None,
    ) -> StreamingResponse:
        """Every change of every alert as it is committed, in change-number order.
        Reconnect with `Last-Event-ID` (browsers' EventSource does it by itself) to get
        the changes missed meanwhile, then the live ones: no gap, no repeat. A
        Last-Event-ID ahead of the store (rebuilt from the log: change numbers start again)
        gets an `event: reset` first: reload `GET /alerts`, then follow the stream."""
        start: int
        if last_event_id is not None:
            if not last_event_id.strip().isdigit():
                raise ApiError(400, "Last-Event-ID must be a change number (an SSE id we sent)")
            start = int(last_event_id.strip())
        elif after is not None:
            start = after
        else:
            start = db.last_change_id()
        newest = db.last_change_id()
        reset = start > newest  # an id this store never gave out: it was rebuilt or replaced
        if reset:
            start = newest
        flt = _to_filter(None, severity, None, rule, device, device_kind)
        metrics: _Metrics = app.state.metrics
        body = stream_changes(app.state.feed, start, flt, s.keepalive_s, metrics.sse_events.inc,
                              reset=reset)
        return StreamingResponse(
            _counted(body, metrics), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/alerts/{alert_id}", response_model=AlertDetail, tags=["alerts"], **_scoped("read", 404))
    def get_alert(_user: ReadUser, alert_id: str,
                  history_limit: Annotated[int, Query(ge=0, le=10000)] = 1000) -> AlertDetail:
        """One alert with its history (oldest first; the last `history_limit` changes)."""
        row = _found(db.get_alert, alert_id)
        alert = alert_model(row, db.active_silences())
        return AlertDetail(**alert.model_dump(),
                           history=[history_model(h) for h in db.history(alert_id, history_limit)])

    def _action(name: str, fn: Callable[..., dict[str, Any]], doc: str) -> None:
        @app.post(f"/alerts/{{alert_id}}/{name}", response_model=Alert, tags=["alerts"],
                  name=f"{name}_alert", summary=doc, **_scoped("ack", 404, 409))
        def action(user: AckUser, alert_id: str, body: AckRequest | None = None) -> Alert:
            try:
                row = _found(fn, alert_id, _actor(user, body), body.comment if body else None)
            except AlertStateConflict as exc:
                raise ApiError(409, str(exc)) from exc
            return alert_model(row, db.active_silences())

    _action("ack", db.acknowledge, "Acknowledge a firing alert (409 if resolved)")
    _action("unack", db.unacknowledge, "Take an acknowledgement back (409 if resolved)")
    _action("resolve", db.resolve, "Resolve an alert by hand (closes its episode)")


def _found(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    try:
        return fn(*args)
    except AlertNotFound as exc:
        raise ApiError(404, str(exc)) from exc


async def _counted(body: AsyncIterator[bytes], metrics: _Metrics) -> AsyncIterator[bytes]:
    metrics.sse_clients.inc()
    try:
        async for chunk in body:
            yield chunk
    finally:
        metrics.sse_clients.dec()


def _silence_routes(app: FastAPI, db: AlertDB) -> None:
    @app.get("/silences", response_model=list[Silence], tags=["silences"], **_scoped("read"))
    def list_silences(_user: ReadUser, include_expired: bool = False) -> list[Silence]:
        """Silences that have not ended (with `include_expired`, all of them)."""
        now = now_ms()
        return [silence_model(x, now) for x in db.silences(include_expired, now)]

    @app.post("/silences", response_model=Silence, status_code=201, tags=["silences"], **_scoped("ack"))
    def create_silence(user: AckUser, body: SilenceCreate) -> Silence:
        """Silence the alerts whose rule and device match (exact names or globs) from
        `starts_at` to `ends_at`. Matching alerts are still stored, marked silenced, and
        not sent to webhooks."""
        now = now_ms()
        starts = dt_to_ms(body.starts_at) if body.starts_at else now
        if body.ends_at is not None:
            ends = dt_to_ms(body.ends_at)
        elif body.duration_s is not None:
            ends = starts + body.duration_s * 1000
        else:
            raise ApiError(400, "give ends_at or duration_s")
        if ends <= starts:
            raise ApiError(400, "ends_at must be later than starts_at")
        row = db.create_silence(body.rule, body.device, starts, ends, _actor(user, body), body.comment, now)
        return silence_model(row, now)

    @app.delete("/silences/{silence_id}", status_code=204, tags=["silences"], **_scoped("ack", 404))
    def delete_silence(user: AckUser, silence_id: str) -> Response:
        """End a silence now (matching alerts are no longer silenced)."""
        try:
            db.delete_silence(silence_id, user.name)
        except SilenceNotFound as exc:
            raise ApiError(404, str(exc)) from exc
        return Response(status_code=204)


def _device_routes(app: FastAPI, db: AlertDB) -> None:
    @app.get("/devices", response_model=DevicePage, tags=["devices"], **_scoped("read", 400))
    def list_devices(
        _user: ReadUser,
        kind: Annotated[DeviceKind | None, Query()] = None,
        status: Annotated[str | None, Query(pattern="^(online|offline)$", description="online or offline")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(max_length=500)] = None,
    ) -> DevicePage:
        """Devices by id: kind, online/offline, last seen, latest position or vitals,
        NEWS2, the agent's outbox depth and drops."""
        after = None
        if cursor is not None:
            v = _decode_cursor(cursor)
            if not isinstance(v, str):
                raise ApiError(400, "invalid cursor: pass the next_cursor of a previous page unchanged",
                               code="invalid_cursor")
            after = v
        rows = db.devices(kind, status, limit + 1, after)
        more = len(rows) > limit
        rows = rows[:limit]
        return DevicePage(items=[device_model(r) for r in rows],
                          next_cursor=_encode_cursor(rows[-1]["id"]) if more else None)

    @app.get("/devices/{device_id}", response_model=Device, tags=["devices"], **_scoped("read", 404))
    def get_device(_user: ReadUser, device_id: str) -> Device:
        row = db.device(device_id)
        if row is None:
            raise ApiError(404, f"no device {device_id}")
        return device_model(row)


def _ops_routes(app: FastAPI, db: AlertDB, s: ApiSettings) -> None:
    @app.get("/healthz", response_model=Health, tags=["ops"],
             responses={503: {"model": Health, "description": "the database is not usable"}})
    def healthz(response: Response) -> Health:
        """No authentication: the database answers, and how far behind the log the store is."""
        ok = db.check()
        consumer: StoreConsumer | None = app.state.consumer
        running = None if consumer is None else consumer.status.running
        healthy = ok and running is not False
        if not ok:
            response.status_code = 503
        return Health(status="ok" if healthy else "degraded", db=ok, store_running=running,
                      store_lag=None if consumer is None else consumer.status.total_lag,
                      store_error=None if consumer is None else consumer.status.last_error,
                      last_change=db.notifier.last_id)

    @app.get("/metrics", tags=["ops"], response_class=Response,
             openapi_extra={"x-required-scope": "read"},
             responses={200: {"description": "Prometheus text format",
                              "content": {"text/plain": {"schema": {"type": "string"}}}},
                        **error_responses(401, 403)})
    def metrics(_user: ReadUser) -> Response:
        m: _Metrics = app.state.metrics
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/cluster", tags=["ops"], response_model=dict[str, Any], **_scoped("read", 503))
    def cluster(_user: ReadUser) -> dict[str, Any]:
        """Brokers, topics, partitions (leader, replicas, ISR, log-end offsets) and
        consumer-group lag, through the Kafka admin API."""
        if not s.bootstrap:
            raise ApiError(503, "this API runs without a log (no --bootstrap)")
        try:
            from gateway.cluster import ClusterUnavailable, describe_cluster
        except ImportError as exc:
            raise ApiError(503, f"the cluster view is not available: {exc}") from exc
        try:
            return describe_cluster({**s.kafka_config, "bootstrap.servers": s.bootstrap},
                                    timeout=s.cluster_timeout_s)
        except ClusterUnavailable as exc:
            raise ApiError(503, f"the log cluster did not answer: {exc}") from exc
