from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from kubecrawl.operator.crawlsite.syncing import ApiRejected, ApiUnavailable, SiteApi
from kubecrawl.operator.crawlsite.triggering import parse_site, run_trigger, trigger_request

MINUTE = datetime(2025, 6, 1, 8, 15, tzinfo=UTC)
JOB = f"docs-{int(MINUTE.timestamp()) // 60}"


def test_a_cronjob_made_job_is_a_scheduled_trigger_keyed_by_its_minute() -> None:
    request = trigger_request("team-a/docs", job_name=JOB, cronjob="docs", job_uid="u1")
    assert (request.namespace, request.name, request.trigger) == ("team-a", "docs", "schedule")
    assert request.idempotency_key == "site:team-a/docs:cron:2025-06-01T08:15:00+00:00"


def test_the_same_job_name_always_gives_the_same_key() -> None:
    a = trigger_request("team-a/docs", job_name=JOB, cronjob="docs", job_uid="pod-1")
    b = trigger_request("team-a/docs", job_name=JOB, cronjob="docs", job_uid="pod-2")
    assert a == b


def test_without_the_cronjob_env_the_name_rule_is_used() -> None:
    assert trigger_request("team-a/docs", job_name=JOB, cronjob=None).trigger == "schedule"


def test_a_hand_made_job_is_a_manual_trigger_keyed_by_the_job() -> None:
    request = trigger_request("ns/docs", job_name="docs-manual-run", cronjob="docs", job_uid="0f0e")
    assert (request.trigger, request.idempotency_key) == ("manual", "site:ns/docs:job:0f0e")


def test_outside_a_job_every_run_is_a_new_manual_crawl() -> None:
    request = trigger_request("ns/docs", job_name=None, cronjob=None)
    assert (request.trigger, request.idempotency_key) == ("manual", None)


@pytest.mark.parametrize("value", ["docs", "/docs", "ns/", "a/b/c", ""])
def test_site_must_be_namespace_slash_name(value: str) -> None:
    with pytest.raises(ValueError, match="NAMESPACE/NAME"):
        parse_site(value)


def _api(handler: httpx.MockTransport) -> SiteApi:
    return SiteApi("http://api.test", timeout=1, retry_delays=(0, 0), transport=handler)


async def test_site_api_retries_5xx_then_succeeds() -> None:
    calls: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) < 3:
            return httpx.Response(503, json={"code": "database_unavailable", "detail": "down"})
        return httpx.Response(202, json={"id": "c1"})

    api = _api(httpx.MockTransport(handle))
    crawl, created = await api.trigger_crawl("ns", "s", trigger="schedule", idempotency_key="k")
    await api.aclose()
    assert (crawl["id"], created, len(calls)) == ("c1", True, 3)


async def test_site_api_gives_up_after_its_retries_as_transient() -> None:
    api = _api(httpx.MockTransport(lambda _: httpx.Response(503)))
    with pytest.raises(ApiUnavailable, match="3 attempts"):
        await api.put_site("ns", "s", {"url": "https://e.com/"})
    await api.aclose()


async def test_site_api_does_not_retry_a_4xx_and_keeps_the_api_code() -> None:
    calls: list[int] = []

    def handle(_: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(400, json={"code": "invalid_spec", "detail": "spec.scope.include: bad regex"})

    api = _api(httpx.MockTransport(handle))
    with pytest.raises(ApiRejected) as caught:
        await api.put_site("ns", "s", {"url": "https://e.com/"})
    await api.aclose()
    assert (caught.value.code, len(calls)) == ("invalid_spec", 1)
    assert "bad regex" in caught.value.detail


async def test_site_api_maps_connection_errors_to_transient() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    api = _api(httpx.MockTransport(handle))
    with pytest.raises(ApiUnavailable, match="ConnectError"):
        await api.latest_crawl("ns", "s")
    await api.aclose()


async def test_a_duplicate_trigger_is_reported_as_not_created() -> None:
    api = _api(httpx.MockTransport(lambda _: httpx.Response(200, json={"id": "c1"})))
    _, created = await api.trigger_crawl("ns", "s", trigger="schedule", idempotency_key="k")
    await api.aclose()
    assert created is False


async def test_a_run_the_api_skipped_for_overlap_policy_succeeds() -> None:
    # overlapPolicy Forbid: the API answers 200 with the crawl still running, marked skipped; the Job succeeds.
    body = {"id": "c1", "state": "RUNNING", "skipped": "crawl_overlap"}
    api = _api(httpx.MockTransport(lambda _: httpx.Response(200, json=body)))
    request = trigger_request("ns/docs", job_name=JOB, job_uid="u", cronjob="docs")
    with capture_logs() as logs:
        assert await run_trigger(api, request) == 0
    assert [(e["event"], e.get("crawl_id")) for e in logs] == [("crawl_trigger_skipped", "c1")]


@pytest.mark.parametrize(("code", "exit_code"), [("crawl_overlap", 0), ("idempotency_key_conflict", 1)])
async def test_a_scheduled_run_skipped_by_overlap_policy_is_not_a_failed_job(code: str, exit_code: int) -> None:
    # The CronJob's Job must not fail (and be retried, and alert) because overlapPolicy Forbid skipped its run.
    api = _api(httpx.MockTransport(lambda _: httpx.Response(409, json={"code": code, "detail": "still RUNNING"})))
    request = trigger_request("ns/docs", job_name=JOB, job_uid="u", cronjob="docs")
    assert await run_trigger(api, request) == exit_code


async def test_the_token_file_is_read_for_every_request_and_a_missing_one_fails_the_run(tmp_path: Path) -> None:
    seen: list[str | None] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(202, json={"id": "c1"})

    token = tmp_path / "token"
    api = SiteApi(
        "http://api.test", timeout=1, retry_delays=(), transport=httpx.MockTransport(handle), token_file=token
    )
    token.write_text("first\n")
    await api.trigger_crawl("ns", "s", trigger="manual", idempotency_key=None)
    token.write_text("second")  # the kubelet renewed it
    await api.trigger_crawl("ns", "s", trigger="manual", idempotency_key=None)
    assert seen == ["Bearer first", "Bearer second"]
    token.unlink()
    assert await run_trigger(api, trigger_request("ns/s", job_name=None, cronjob=None)) == 1
