"""The HTTP contract of the metadata API against real RabbitMQ and PostgreSQL (no worker running)."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from kubecrawl.core.settings import Settings
from tests.integration.conftest import ApiHandle
from tests.support.servers import RabbitServer
from tests.support.sites import Site


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

    messages = rabbit.api(
        f"/api/queues/{vhost}/kubecrawl.metadata/get",
        method="POST",
        body={"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"},
    )
    assert isinstance(messages, list)
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
    messages = rabbit.api(
        f"/api/queues/{vhost}/kubecrawl.metadata/get",
        method="POST",
        body={"count": 100, "ackmode": "ack_requeue_true", "encoding": "auto"},
    )
    assert isinstance(messages, list)
    assert len(messages) == 1


async def test_get_metadata_without_url_answers_400(api: ApiHandle) -> None:
    response = await api.client.get("/metadata")
    assert response.status_code == 400
    assert response.json()["code"] == "empty_url"


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
