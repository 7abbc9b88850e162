"""The OpenAPI document as built (no server): one error model, no 422, required inputs, closed request bodies, a
response schema on every operation, links, and the bearer scheme exactly when the API asks for a token."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubecrawl.api.app import openapi_document
from kubecrawl.core.settings import Settings

PG = "postgresql+asyncpg://u:p@127.0.0.1:1/db"  # never connected: the document is built without servers


def document(auth: str = "api_keys") -> dict[str, Any]:
    return openapi_document(Settings(database_url=PG, auth=auth))  # type: ignore[arg-type]


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, item in doc["paths"].items() for method, op in item.items()]


def test_no_operation_documents_fastapis_422_and_its_schemas_are_gone() -> None:
    doc = document()
    assert [(m, p) for m, p, op in operations(doc) if "422" in op["responses"]] == []
    assert {"HTTPValidationError", "ValidationError"}.isdisjoint(doc["components"]["schemas"])


def test_every_error_answer_is_the_one_error_model_with_the_codes_it_can_carry() -> None:
    doc = document()
    assert doc["components"]["schemas"]["Error"]["required"] == ["code", "detail"]
    for method, path, op in operations(doc):
        for status, answer in op["responses"].items():
            if int(status) < 400 or path == "/health/ready":  # readiness answers its own 503 body
                continue
            schema = answer["content"]["application/json"]["schema"]
            assert schema["allOf"] == [{"$ref": "#/components/schemas/Error"}], (method, path, status)
            assert schema["properties"]["code"]["enum"], (method, path, status)


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("post", "/metadata", "503", "queue_rejected"),
        ("post", "/metadata", "413", "body_too_large"),
        ("get", "/metadata", "503", "publish_failed"),
        ("put", "/sites/{namespace}/{name}", "400", "invalid_spec"),
        ("post", "/sites/{namespace}/{name}/crawls", "409", "idempotency_key_conflict"),
        ("get", "/crawls/{crawl_id}/pages", "400", "invalid_cursor"),
        ("get", "/crawls/{crawl_id}/events", "429", "too_many_subscribers"),
        ("get", "/crawls/{crawl_id}", "401", "unauthenticated"),
    ],
)
def test_a_route_lists_the_codes_it_answers(method: str, path: str, status: str, code: str) -> None:
    answer = document()["paths"][path][method]["responses"][status]
    assert code in answer["content"]["application/json"]["schema"]["properties"]["code"]["enum"]


def test_get_metadata_requires_url() -> None:
    params = {p["name"]: p for p in document()["paths"]["/metadata"]["get"]["parameters"]}
    assert params["url"]["required"] is True


def test_request_bodies_are_required_where_needed_and_refuse_unknown_fields() -> None:
    doc = document()
    schemas = doc["components"]["schemas"]
    bodies = {}
    for method, path, op in operations(doc):
        if "requestBody" in op:
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            schema = schema.get("anyOf", [schema])[0]  # an optional body: anyOf [model, null]
            resolved = schemas[schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema
            bodies[method, path] = (op["requestBody"].get("required", False), resolved["additionalProperties"])
    assert bodies == {
        ("post", "/metadata"): (True, False),
        ("put", "/sites/{namespace}/{name}"): (True, False),
        ("post", "/sites/{namespace}/{name}/crawls"): (False, False),  # optional: {} means a manual trigger
    }
    assert {schemas[name]["additionalProperties"] for name in ("ScopeSpec", "PolitenessSpec", "FetchSpec")} == {False}


def test_every_success_answer_declares_its_body() -> None:
    for method, path, op in operations(document()):
        for status, answer in op["responses"].items():
            if status.startswith("2") and status != "204":
                assert answer.get("content"), (method, path, status)


def test_the_event_stream_is_text_event_stream_with_its_payloads_named() -> None:
    doc = document()
    answer = doc["paths"]["/crawls/{crawl_id}/events"]["get"]["responses"]["200"]
    assert list(answer["content"]) == ["text/event-stream"]
    progress, final = answer["content"]["text/event-stream"]["schema"]["oneOf"]
    assert progress["properties"]["event"]["enum"] == ["progress"]
    assert progress["properties"]["data"]["contentSchema"] == {"$ref": "#/components/schemas/Progress"}
    assert final["properties"]["event"]["enum"] == ["completed", "failed", "cancelled"]
    assert final["properties"]["data"]["contentSchema"] == {"$ref": "#/components/schemas/Crawl"}
    assert {"Progress", "Outcome", "Crawl"} <= set(doc["components"]["schemas"])


def test_put_site_and_trigger_crawl_link_to_the_operations_that_use_their_results() -> None:
    doc = document()
    put = doc["paths"]["/sites/{namespace}/{name}"]["put"]["responses"]
    assert put["201"]["links"]["TriggerCrawl"] == {
        "operationId": "trigger_crawl",
        "parameters": {"namespace": "$request.path.namespace", "name": "$request.path.name"},
    }
    trigger = doc["paths"]["/sites/{namespace}/{name}/crawls"]["post"]["responses"]
    for status in ("200", "202"):
        assert trigger[status]["links"]["GetCrawlPages"]["parameters"] == {"crawl_id": "$response.body#/id"}
    ids = {op["operationId"] for _, _, op in operations(doc)}
    linked = {
        link["operationId"]
        for answer in (*put.values(), *trigger.values())
        for link in answer.get("links", {}).values()
    }
    assert linked <= ids


def test_with_authentication_one_bearer_scheme_covers_every_route_but_the_probes() -> None:
    doc = document("api_keys")
    assert doc["components"]["securitySchemes"] == {"bearer": doc["components"]["securitySchemes"]["bearer"]}
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["security"] == [{"bearer": []}]
    for method, path, op in operations(doc):
        if path.startswith("/health/") or path == "/metrics":
            assert op["security"] == [], (method, path)
            assert "401" not in op["responses"]
        else:
            assert {"401", "403"} <= set(op["responses"]), (method, path)
            assert "WWW-Authenticate" in op["responses"]["401"]["headers"]


def test_without_authentication_the_document_asks_for_no_token() -> None:
    doc = document("none")
    assert "security" not in doc
    assert "securitySchemes" not in doc["components"]
    assert [(m, p) for m, p, op in operations(doc) if "401" in op["responses"]] == []


def test_the_committed_document_is_the_one_the_app_serves() -> None:
    committed = json.loads((Path(__file__).parents[3] / "docs" / "openapi.json").read_text())
    assert committed == document("api_keys"), "docs/openapi.json is stale: run scripts/openapi and review the diff"


def test_metrics_need_the_bearer_scheme_when_the_setting_says_so() -> None:
    settings = Settings(database_url=PG, auth="api_keys", metrics_require_auth=True)  # type: ignore[arg-type]
    metrics = openapi_document(settings)["paths"]["/metrics"]["get"]
    assert "security" not in metrics  # the document's: bearer
    assert "401" in metrics["responses"]


def test_every_answer_documents_its_request_id() -> None:
    for method, path, op in operations(document()):
        for status, answer in op["responses"].items():
            assert answer["headers"]["X-Request-ID"]["required"] is True, (method, path, status)
