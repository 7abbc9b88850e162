"""Readiness and publishing tell the truth while RabbitMQ is down, and recover without an API restart."""

from __future__ import annotations

import time

from kubecrawl.core.settings import Settings
from tests.integration.conftest import ApiHandle
from tests.support.polling import eventually
from tests.support.servers import RabbitServer


async def test_broker_stopped_makes_ready_and_post_503_within_2s_and_restart_recovers(
    api: ApiHandle, rabbit: RabbitServer
) -> None:
    assert (await api.client.get("/health/ready")).status_code == 200
    rabbit.stop_app()
    try:
        stopped = time.monotonic()

        async def ready_fails() -> bool:
            return (await api.client.get("/health/ready")).status_code == 503

        await eventually(ready_fails, timeout=2, interval=0.05, what="readiness 503 after broker stop")
        post = await api.client.post("/metadata", json={"url": "https://example.com/during-outage"})
        assert time.monotonic() - stopped < 2
        assert post.status_code == 503
        assert post.json()["code"] in {"publisher_not_ready", "connection_lost"}
        ready = await api.client.get("/health/ready")
        assert ready.json()["reason"] == "publisher_not_ready"
        # the failed request left nothing behind that would make GET wait forever
        get = await api.client.get("/metadata", params={"url": "https://example.com/during-outage"})
        assert get.status_code == 503
    finally:
        rabbit.start_app()

    async def ready_again() -> bool:
        return (await api.client.get("/health/ready")).status_code == 200

    await eventually(ready_again, timeout=30, what="readiness 200 after broker restart")
    post = await api.client.post("/metadata", json={"url": "https://example.com/after-outage"})
    assert post.status_code == 202


async def test_full_queue_answers_503_queue_rejected(rabbit: RabbitServer, vhost: str, settings: Settings) -> None:
    import httpx
    from asgi_lifespan import LifespanManager

    from kubecrawl.api.app import create_app
    from kubecrawl.broker.publishing import RabbitPublisher
    from kubecrawl.store.database import create_engine

    small = settings.model_copy(update={"metadata_queue_max_length": 2})
    publisher = RabbitPublisher(
        small.rabbitmq_url.get_secret_value(), small.publisher, metadata_max_length=2, pages_max_length=10
    )
    app = create_app(small, publisher=publisher, engine=create_engine(small.database_url.get_secret_value()))
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client,
    ):
        codes = [
            (await client.post("/metadata", json={"url": f"https://example.com/{i}"})).status_code for i in range(2)
        ]
        assert codes == [202, 202]
        rejected = await client.post("/metadata", json={"url": "https://example.com/overflow"})
        assert rejected.status_code == 503
        assert rejected.json()["code"] == "queue_rejected"
        # the publisher is still READY: a full queue is not a broken connection
        assert (await client.get("/health/ready")).status_code == 200
        # and the rejected URL is not left QUEUED: GET tries to publish again (and is rejected again)
        again = await client.get("/metadata", params={"url": "https://example.com/overflow"})
        assert again.status_code == 503
        assert again.json()["code"] == "queue_rejected"
    info = rabbit.queue(vhost, "kubecrawl.metadata")
    assert info["arguments"]["x-overflow"] == "reject-publish"
