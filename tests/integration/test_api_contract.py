"""The HTTP contract of the metadata API against real RabbitMQ and PostgreSQL (no worker running)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from structlog.testing import capture_logs

from kubecrawl.core.settings import Settings
from tests.support.api import ApiHandle
from tests.support.servers import RabbitServer
from tests.support.sites import Site
from tests.support.stores import ON_EVERY_DATABASE


async def test_post_metadata_answers_202_queued_with_request_id_and_publishes_persistently(
    api: ApiHandle, rabbit: RabbitServer, vhost: str
) -> None:
    response = await api.client.post("/metadata", json={"url": "https://Example.com:443/a/./b/../c#frag"})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "QUEUED"
    assert body["url"] == "https://example.com/a/c"
    assert len(body["request_id"]) == 32
    assert response.headers["x-request-id"] == body["request_id"]

    messages = rabbit.peek(vhost, "kubecrawl.metadata", 1)
    assert len(messages) == 1
    assert messages[0]["properties"]["delivery_mode"] == 2
    assert '"url":"https://example.com/a/c"' in messages[0]["payload"]


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"url": ""}, "empty_url"),
        ({}, "empty_url"),
        ({"url": "   "}, "empty_url"),
        ({"url": "not a url"}, "invalid_url"),
        ({"url": "ftp://example.com/file"}, "unsupported_scheme"),
        ({"url": "javascript:alert(1)"}, "unsupported_scheme"),
        ({"url": "http://"}, "invalid_url"),
        ({"url": "http://exa mple.com/"}, "invalid_url"),
        ({"url": "http://xn--zz.example/"}, "invalid_url"),  # a Punycode label UTS 46 refuses
        ({"url": 42}, "invalid_url"),
    ],
)
async def test_post_metadata_with_bad_url_answers_400_with_code(
    api: ApiHandle, payload: dict[str, object], code: str
) -> None:
    response = await api.client.post("/metadata", json=payload)
    assert response.status_code == 400
    assert response.json()["code"] == code


async def test_post_metadata_with_non_json_body_answers_400_not_422(api: ApiHandle) -> None:
    response = await api.client.post("/metadata", content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/",
        "http://localhost/",
        "http://192.168.1.1/",
        "http://[::ffff:127.0.0.1]/",
    ],
)
async def test_post_metadata_to_private_target_answers_400_blocked_when_guard_is_on(
    api: ApiHandle, settings: Settings, url: str
) -> None:
    api.app.state.settings = settings.model_copy(update={"allow_private_targets": False})
    response = await api.client.post("/metadata", json={"url": url})
    assert response.status_code == 400
    assert response.json()["code"] == "blocked_target"


async def test_get_metadata_miss_records_queued_and_answers_202(api: ApiHandle) -> None:
    response = await api.client.get("/metadata", params={"url": "https://example.org/x"})
    assert response.status_code == 202
    assert response.json()["status"] == "QUEUED"
    again = await api.client.get("/metadata", params={"url": "https://example.org/x"})
    assert again.status_code == 202
    assert again.json()["status"] == "QUEUED"


async def test_concurrent_get_misses_for_one_url_publish_exactly_once(
    api: ApiHandle, rabbit: RabbitServer, vhost: str
) -> None:
    responses = await asyncio.gather(
        *(api.client.get("/metadata", params={"url": "https://example.net/same"}) for _ in range(25))
    )
    assert {r.status_code for r in responses} == {202}
    messages = rabbit.peek(vhost, "kubecrawl.metadata")
    assert len(messages) == 1


async def test_get_metadata_without_url_answers_400(api: ApiHandle) -> None:
    response = await api.client.get("/metadata")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"  # a required parameter is missing (the document says so)
    blank = await api.client.get("/metadata", params={"url": " "})
    assert (blank.status_code, blank.json()["code"]) == (400, "empty_url")


@ON_EVERY_DATABASE
async def test_health_live_is_200_and_ready_is_200_with_broker_and_database(api: ApiHandle) -> None:
    assert (await api.client.get("/health/live")).status_code == 200
    ready = await api.client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["publisher"] == "READY"


async def test_metrics_expose_kubecrawl_series_in_prometheus_text(api: ApiHandle) -> None:
    await api.client.post("/metadata", json={"url": "https://example.com/"})
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'kubecrawl_api_requests_total{method="POST",route="/metadata",status="202"}' in text
    assert 'kubecrawl_publisher_state{state="READY"} 1.0' in text
    assert "kubecrawl_publish_duration_seconds_bucket" in text


async def test_metrics_pass_promtool_check_metrics(api: ApiHandle, site: Site, worker: None) -> None:
    await api.client.post("/metadata", json={"url": site.html("/m", title="m")})
    await api.client.get("/metadata", params={"url": site.url("/m")})
    text = (await api.client.get("/metrics")).text
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: scripts/install-deps installs Debian's prometheus"
    proc = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate(text.encode())
    kubecrawl_problems = [line for line in out.decode().splitlines() if line.startswith("kubecrawl_")]
    assert not kubecrawl_problems, out.decode()


async def test_unexpected_error_answers_500_with_a_code_and_logs_the_traceback(
    api: ApiHandle, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    async def broken(url: str) -> None:
        raise RuntimeError("store bug " + url)

    monkeypatch.setattr(api.app.state.pages, "get", broken)
    response = await api.client.get("/metadata", params={"url": "https://example.com/bug"})
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert "store bug" not in response.text  # internals stay in the log
    logged = capfd.readouterr().out
    assert "unhandled_error" in logged
    assert "RuntimeError: store bug https://example.com/bug" in logged


# --- POST /metadata under concurrency: group commit (store/page_metadata.py, store/database.py) -----------------


async def _rows(api: ApiHandle) -> dict[str, tuple[str, str]]:
    """url → (status, last_request_id) of every page_metadata row."""
    async with api.app.state.database.engine.connect() as conn:
        result = await conn.execute(text("SELECT url, status, last_request_id FROM page_metadata"))
        return {row.url: (row.status, row.last_request_id) for row in result}


def _queued_messages(rabbit: RabbitServer, vhost: str) -> list[dict[str, object]]:
    return [json.loads(message["payload"]) for message in rabbit.peek(vhost, "kubecrawl.metadata", 1000)]


async def test_concurrent_posts_with_duplicate_urls_each_answer_202_one_row_per_url_and_one_message_each(
    api: ApiHandle, rabbit: RabbitServer, vhost: str
) -> None:
    # 60 requests in one burst, three per URL: they share batches, and a batch holds duplicates.
    sent = [(f"https://example.com/burst/{i % 20}", f"req-{i:03d}") for i in range(60)]
    responses = await asyncio.gather(
        *(api.client.post("/metadata", json={"url": url}, headers={"x-request-id": rid}) for url, rid in sent)
    )
    assert [r.status_code for r in responses] == [202] * 60
    assert [(r.json()["url"], r.json()["request_id"]) for r in responses] == sent
    rows = await _rows(api)
    assert set(rows) == {url for url, _ in sent}
    for url, (status, last_request_id) in rows.items():
        assert status == "QUEUED"
        assert last_request_id in {rid for u, rid in sent if u == url}
    messages = _queued_messages(rabbit, vhost)
    assert sorted((m["url"], m["request_id"]) for m in messages) == sorted(sent)


async def test_one_batch_with_one_url_several_times_leaves_the_last_request_id_and_publishes_each(
    api: ApiHandle, rabbit: RabbitServer, vhost: str
) -> None:
    url = "https://example.com/same-batch"
    # Started together, the five requests join one batch in this order.
    await asyncio.gather(*(api.app.state.enqueuer.enqueue(url, f"r{i}") for i in range(5)))
    assert (await _rows(api))[url] == ("QUEUED", "r4")
    assert sorted(m["request_id"] for m in _queued_messages(rabbit, vhost)) == [f"r{i}" for i in range(5)]


async def test_releasing_leaves_a_row_to_the_request_that_owns_it(api: ApiHandle) -> None:
    pages = api.app.state.pages
    url = "https://example.com/owned"
    writer = await pages.request_writer()
    try:
        await writer.record([(url, "r1")])
        await writer.record([(url, "r2")])
    finally:
        await writer.close()
    await pages.release_requests([(url, "r1"), ("https://example.com/never-recorded", "r0")])
    assert (await _rows(api))[url] == ("QUEUED", "r2")
    await pages.release_request(url, "r2")
    assert url not in await _rows(api)


async def test_database_failure_during_a_batch_answers_503_database_unavailable_to_all_and_publishes_nothing(
    api: ApiHandle, rabbit: RabbitServer, vhost: str
) -> None:
    async with api.app.state.database.engine.begin() as conn:
        await conn.exec_driver_sql(
            "CREATE FUNCTION refuse_writes() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'no space left on device'; END $$"
        )
        await conn.exec_driver_sql(
            "CREATE TRIGGER refuse_writes BEFORE INSERT ON page_metadata "
            "FOR EACH STATEMENT EXECUTE FUNCTION refuse_writes()"
        )
    responses = await asyncio.gather(
        *(api.client.post("/metadata", json={"url": f"https://example.com/refused/{i}"}) for i in range(20))
    )
    assert {r.status_code for r in responses} == {503}
    assert {r.json()["code"] for r in responses} == {"database_unavailable"}
    assert {r.headers["retry-after"] for r in responses} == {"1"}
    assert _queued_messages(rabbit, vhost) == []
    assert await _rows(api) == {}
    async with api.app.state.database.engine.begin() as conn:
        await conn.exec_driver_sql("DROP TRIGGER refuse_writes ON page_metadata")
    after = await api.client.post("/metadata", json={"url": "https://example.com/after-refusal"})
    assert after.status_code == 202


async def test_each_publish_logs_publish_success_with_request_id_url_and_latency(api: ApiHandle) -> None:
    with capture_logs() as logs:
        response = await api.client.post("/metadata", json={"url": "https://example.com/logged"})
    assert response.status_code == 202
    [line] = [entry for entry in logs if entry["event"] == "publish_success"]
    assert line["log_level"] == "info"
    assert line["request_id"] == response.json()["request_id"]
    assert line["url"] == "https://example.com/logged"
    assert line["latency_ms"] >= 0


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'["https://example.com/"]', "application/json"),
        (b'"https://example.com/"', "application/json"),
        (b"", "application/json"),
        (b'{"url": "https://example.com/"}', "text/plain"),
        (b'{"url": "https://example.com/"}', ""),
    ],
)
async def test_post_metadata_body_that_is_not_a_json_object_answers_400_invalid_request(
    api: ApiHandle, content: bytes, content_type: str
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await api.client.post("/metadata", content=content, headers=headers)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"


async def test_post_metadata_with_json_suffix_content_type_and_extra_fields_is_accepted(api: ApiHandle) -> None:
    response = await api.client.post(
        "/metadata",
        content=b'{"url": "https://example.com/vendor"}',
        headers={"content-type": "application/vnd.kubecrawl+json; charset=utf-8"},
    )
    assert response.status_code == 202


async def test_openapi_documents_the_post_metadata_body_and_its_202(api: ApiHandle) -> None:
    operation = (await api.client.get("/openapi.json")).json()["paths"]["/metadata"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["url"]["type"] == "string"
    assert "202" in operation["responses"]


async def test_embedded_default_sqlite_and_in_process_broker_take_concurrent_posts_too(tmp_path: Path) -> None:
    from kubecrawl.api.app import create_app
    from kubecrawl.broker.memory import MemoryBroker
    from kubecrawl.embedded import sqlite_url
    from kubecrawl.store.database import create_engine
    from kubecrawl.store.migrating import upgrade_async
    from kubecrawl.store.opening import SqlDatabase

    url = sqlite_url(tmp_path / "embedded.db")
    await upgrade_async(url)
    database = SqlDatabase(create_engine(url))
    engine = database.engine
    broker = MemoryBroker(max_lengths={"kubecrawl.metadata": 25, "kubecrawl.pages": 10}, concurrency=1)
    await broker.start()
    settings = Settings(database_url=url)  # type: ignore[arg-type]
    app = create_app(settings, publisher=broker, database=database, manage_lifecycle=False)
    try:
        async with (
            LifespanManager(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client,
        ):
            sent = [f"https://example.com/embedded/{i % 10}" for i in range(30)]
            responses = await asyncio.gather(*(client.post("/metadata", json={"url": u}) for u in sent))
        # The in-process queue holds 25: five requests are refused. A refused request releases the row if it is
        # still its own (the last request for the URL), as one request after the other would: no row is left
        # waiting for a message that does not exist, and the accepted messages are all queued.
        assert sorted(r.status_code for r in responses) == [202] * 25 + [503] * 5
        assert {r.json()["code"] for r in responses if r.status_code == 503} == {"queue_rejected"}
        accepted_ids = {r.json()["request_id"] for r in responses if r.status_code == 202}
        async with engine.connect() as conn:
            rows = {row.url: row.last_request_id for row in await conn.execute(text("SELECT * FROM page_metadata"))}
        assert rows
        assert set(rows.values()) <= accepted_ids
        assert broker.depth("kubecrawl.metadata") == 25
    finally:
        await broker.close()
        await engine.dispose()


# --- readiness and GET /metadata?max_age= -----------------------------------------------------------------------


@ON_EVERY_DATABASE
async def test_ready_is_503_database_unavailable_and_logged_when_the_database_does_not_answer(
    api: ApiHandle, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubecrawl.core.backoff import Backoff
    from kubecrawl.core.errors import StoreUnavailable
    from kubecrawl.store.connection import DatabaseConnection, DatabaseState
    from kubecrawl.store.opening import database_kind, open_database

    # Nothing listens on port 1: the state machine over that handle's ping fails its one try.
    unreachable = open_database(
        "mongodb://127.0.0.1:1/kubecrawl"
        if database_kind(settings.database_url.get_secret_value()) == "mongodb"
        else "postgresql+asyncpg://kubecrawl@127.0.0.1:1/kubecrawl"
    )
    connection = DatabaseConnection(
        unreachable.ping, backoff=Backoff(initial=0.01, multiplier=1.0, maximum=0.01, attempts=1), check_interval=1
    )
    try:
        with pytest.raises(StoreUnavailable):
            await connection.connect()
        assert connection.state is DatabaseState.DISCONNECTED
        monkeypatch.setattr(api.app.state, "connection", connection)
        with capture_logs() as logs:
            ready = await api.client.get("/health/ready")
    finally:
        await connection.close()
        await unreachable.close()
    assert ready.status_code == 503
    assert ready.json()["reason"] == "database_unavailable"
    [line] = [entry for entry in logs if entry["event"] == "readiness_failed"]
    assert line["reason"] == "database_unavailable"
    assert (await api.client.get("/health/live")).status_code == 200


async def _completed(api: ApiHandle, url: str) -> None:
    from kubecrawl.core.models import FetchedPage

    page = FetchedPage(http_status=200, final_url=url, redirects=[], response_headers=[], cookies=[], title="old")
    await api.app.state.pages.complete(url, "fetched-before", page)


async def test_concurrent_stale_reads_serve_the_old_record_and_queue_one_refresh(
    api: ApiHandle, rabbit: RabbitServer, vhost: str
) -> None:
    url = "https://example.com/stale"
    await _completed(api, url)
    responses = await asyncio.gather(
        *(api.client.get("/metadata", params={"url": url, "max_age": 0}) for _ in range(25))
    )
    assert {r.status_code for r in responses} == {200}
    assert {(r.json()["title"], r.json()["stale"]) for r in responses} == {("old", True)}
    refreshes = [r.json()["refresh"] for r in responses if "refresh" in r.json()]
    assert [refresh["status"] for refresh in refreshes] == ["QUEUED"]
    [message] = _queued_messages(rabbit, vhost)
    assert (message["url"], message["request_id"]) == (url, refreshes[0]["request_id"])
    fresh = await api.client.get("/metadata", params={"url": url, "max_age": 3600})
    assert (fresh.status_code, fresh.json()["stale"]) == (200, False)


async def test_a_stale_record_whose_refresh_cannot_be_published_is_still_served_and_retried_next_time(
    api: ApiHandle, rabbit: RabbitServer, vhost: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubecrawl.core.errors import PublishRejected

    url = "https://example.com/stale-if-error"
    await _completed(api, url)

    async def refuse(*_: object, **__: object) -> None:
        raise PublishRejected("queue full")

    with monkeypatch.context() as patched:
        patched.setattr(api.publisher, "publish", refuse)
        refused = await api.client.get("/metadata", params={"url": url, "max_age": 0})
    assert refused.status_code == 200
    assert refused.json()["title"] == "old"
    assert refused.json()["refresh"] == {"status": "FAILED", "code": "queue_rejected"}
    again = await api.client.get("/metadata", params={"url": url, "max_age": 0})
    assert again.json()["refresh"]["status"] == "QUEUED"  # the failed refresh left nothing pending
    assert len(_queued_messages(rabbit, vhost)) == 1


async def test_a_get_miss_that_loses_to_a_concurrent_miss_whose_publish_failed_publishes_itself(
    api: ApiHandle, rabbit: RabbitServer, vhost: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pages = api.app.state.pages
    insert = pages.enqueue_if_missing
    lost: list[str] = []

    async def lose_once(url: str, request_id: str) -> bool:
        if not lost:  # a concurrent miss inserted the row first, failed to publish and released it again
            lost.append(url)
            return False
        return bool(await insert(url, request_id))

    monkeypatch.setattr(pages, "enqueue_if_missing", lose_once)
    response = await api.client.get("/metadata", params={"url": "https://example.com/released"})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "QUEUED"
    [message] = _queued_messages(rabbit, vhost)
    assert (message["url"], message["request_id"]) == (body["url"], body["request_id"])


@pytest.mark.parametrize(
    ("method", "path", "body", "code"),
    [
        ("POST", "/metadata", {"url": "https://example.com/", "note": 1}, "invalid_request"),
        ("PUT", "/sites/default/extra", {"url": "https://example.com/", "note": 1}, "invalid_spec"),
        ("PUT", "/sites/default/extra", {"url": "https://example.com/", "scope": {"maxPagez": 1}}, "invalid_spec"),
        ("POST", "/sites/default/extra/crawls", {"trigger": "manual", "note": 1}, "invalid_request"),
    ],
)
async def test_unknown_body_fields_are_refused_with_400(
    api: ApiHandle, method: str, path: str, body: dict[str, object], code: str
) -> None:
    response = await api.client.request(method, path, json=body)
    assert (response.status_code, response.json()["code"]) == (400, code)
    assert "note" in response.json()["detail"] or "maxPagez" in response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PATCH", "/sites/default/s", "DELETE, GET, PUT"),  # three routes, one per method
        ("DELETE", "/metadata", "GET, POST"),  # FastAPI answers HEAD with 405 too: Allow says so
        ("PUT", "/crawls/0b8a4e0c-0000-4000-8000-000000000000/cancel", "POST"),
    ],
)
async def test_405_names_every_allowed_method(api: ApiHandle, method: str, path: str, allow: str) -> None:
    response = await api.client.request(method, path)
    assert (response.status_code, response.json()["code"]) == (405, "method_not_allowed")
    assert response.headers["allow"] == allow
