"""schemathesis over the whole OpenAPI document, in-process (ASGI): every documented
operation with generated valid and invalid input answers what the document says."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import negative_data_rejection

from gateway.api import ApiSettings, create_app
from tests.api.conftest import T0, Feed, transition


@pytest.fixture(scope="module")
def app_and_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, str]]:
    path: Path = tmp_path_factory.mktemp("schema") / "alerts.db"
    app = create_app(ApiSettings(db_path=path, run_webhooks=False))
    feed = Feed(app.state.db)
    feed(transition("overspeed", "truck-1"), transition("news2", "bed-4", kind="patient", ts=T0 + 1))
    feed({"device": "truck-1", "kind": "vehicle", "ts": T0, "latest": {"lat": 1.0, "lon": 2.0},
          "news2": None, "window": {"start": T0, "end": T0, "count": 0}, "alerts": []}, topic="device-state")
    token, _ = app.state.tokens.create("schemathesis", ["admin"])
    try:
        yield app, token
    finally:
        app.state.db.close()


@pytest.fixture(scope="module")
def api_schema(app_and_token: tuple[object, str]) -> schemathesis.schemas.BaseSchema:
    app, _ = app_and_token
    # 400 is a documented answer to schema-valid input: an opaque cursor that no page gave out
    config = SchemathesisConfig.from_dict({"checks": {"positive_data_acceptance": {
        "expected-statuses": ["2xx", "400", "401", "403", "404", "409"]}}})
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


# the stream never ends (tests/api/test_stream.py reads it through uvicorn); /cluster needs a
# log cluster (tests/api/test_store_consumer.py asks it of a real broker)
schema = schemathesis.pytest.from_fixture("api_schema").exclude(path=["/alerts/stream", "/cluster"])


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_keeps_its_document(case: schemathesis.Case, app_and_token: tuple[object, str]) -> None:
    _, token = app_and_token
    excluded = []
    meta = case.meta
    if meta is not None and meta.generation.mode.is_negative and not any(
            meta.components[loc].mode.is_negative for loc in meta.components
            if loc not in (ParameterLocation.QUERY, ParameterLocation.HEADER)):
        # A query string is text: a "negative" boolean true or number 5 arrives as the
        # valid strings "true" and "5" for rule= or device=; and the headers' mutations
        # include the Authorization we replace. Negative bodies and paths are still checked
        # (and the query parameters' own refusals are tested in test_alerts.py).
        excluded.append(negative_data_rejection)
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, excluded_checks=excluded)


def test_every_error_in_the_document_is_the_error_model(app_and_token: tuple[object, str]) -> None:
    app, _ = app_and_token
    doc = app.openapi()  # type: ignore[attr-defined]
    assert doc["openapi"].startswith("3.1")
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            for status, response in op["responses"].items():
                if int(status) >= 400 and path != "/healthz":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
            if path not in ("/healthz",):
                assert op["security"] == [{"HTTPBearer": []}], (method, path)
                assert {"401", "403"} <= set(op["responses"]), (method, path)
