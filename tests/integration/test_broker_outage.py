"""Readiness and publishing tell the truth while RabbitMQ is down, and recover without an API restart."""

from __future__ import annotations

import asyncio

from kubecrawl.broker.base import Outgoing, PublisherState
from kubecrawl.broker.publishing import RabbitPublisher
from kubecrawl.core.errors import ConnectionLost, PublishRejected, PublishTimeout
from kubecrawl.core.settings import PublisherSettings, Settings
from tests.support.api import ApiHandle
from tests.support.polling import eventually
from tests.support.servers import RabbitServer


async def test_broker_stopped_makes_ready_and_post_503_within_2s_and_restart_recovers(
    api: ApiHandle, rabbit: RabbitServer
) -> None:
    assert (await api.client.get("/health/ready")).status_code == 200
    rabbit.stop_app()
    try:

        async def ready_fails() -> bool:
            return (await api.client.get("/health/ready")).status_code == 503

        # Deadlines, not measured gaps: readiness turns within 2 s, and a POST is answered at once, not held.
        await eventually(ready_fails, timeout=2, interval=0.05, what="readiness 503 after broker stop")
        async with asyncio.timeout(2):
            post = await api.client.post("/metadata", json={"url": "https://example.com/during-outage"})
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
    from kubecrawl.store.opening import open_database

    small = settings.model_copy(update={"metadata_queue_max_length": 2})
    publisher = RabbitPublisher(
        small.rabbitmq_url.get_secret_value(), small.publisher, metadata_max_length=2, pages_max_length=10
    )
    app = create_app(small, publisher=publisher, database=open_database(small.database_url.get_secret_value()))
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


async def test_concurrent_posts_beyond_a_full_queue_are_rejected_and_their_records_released(
    rabbit: RabbitServer, vhost: str, settings: Settings
) -> None:
    import asyncio

    import httpx
    from asgi_lifespan import LifespanManager
    from sqlalchemy import text

    from kubecrawl.api.app import create_app
    from kubecrawl.broker.publishing import RabbitPublisher
    from kubecrawl.store.opening import open_database

    small = settings.model_copy(update={"metadata_queue_max_length": 3})
    publisher = RabbitPublisher(
        small.rabbitmq_url.get_secret_value(), small.publisher, metadata_max_length=3, pages_max_length=10
    )
    database = open_database(small.database_url.get_secret_value())
    engine = database.engine
    app = create_app(small, publisher=publisher, database=database)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client,
    ):
        responses = await asyncio.gather(
            *(client.post("/metadata", json={"url": f"https://example.com/burst/{i}"}) for i in range(20))
        )
        accepted = {r.json()["url"] for r in responses if r.status_code == 202}
        rejected = [r for r in responses if r.status_code != 202]
        assert len(accepted) == 3
        assert {(r.status_code, r.json()["code"]) for r in rejected} == {(503, "queue_rejected")}
        # the rejected requests were released together: only the accepted URLs have a record
        async with engine.connect() as conn:
            urls = set((await conn.execute(text("SELECT url FROM page_metadata"))).scalars())
        assert urls == accepted


# --- the publisher's batches against the real broker: every outcome of a confirm --------------------------------


async def _publisher(rabbit: RabbitServer, vhost: str, **settings: float) -> RabbitPublisher:
    publisher = RabbitPublisher(
        rabbit.url(vhost), PublisherSettings(**settings), metadata_max_length=1000, pages_max_length=10
    )
    await publisher.start()
    return publisher


async def test_a_batch_is_confirmed_message_by_message_in_order_and_bodies_arrive_whole(
    rabbit: RabbitServer, vhost: str
) -> None:
    publisher = await _publisher(rabbit, vhost)
    try:
        # one body larger than a frame (frame_max 128 KiB): it goes out as several body frames
        bodies = [b'{"n": %d}' % i for i in range(20)] + [b'{"big": "' + b"x" * 300_000 + b'"}']
        confirmed: list[int] = []
        outcomes = await publisher.publish_batch(
            "kubecrawl.metadata",
            [Outgoing(body, f"m{i}") for i, body in enumerate(bodies)],
            on_confirmed=confirmed.append,
        )
        assert outcomes == [None] * len(bodies)
        assert sorted(confirmed) == list(range(len(bodies)))
        messages = rabbit.peek(vhost, "kubecrawl.metadata")
        assert [m["payload"].encode() for m in messages] == bodies
        assert [m["properties"]["message_id"] for m in messages] == [f"m{i}" for i in range(len(bodies))]
        assert {m["properties"]["delivery_mode"] for m in messages} == {2}
    finally:
        await publisher.close()


async def test_an_unroutable_message_comes_back_and_is_refused_while_the_rest_of_its_batch_is_confirmed(
    rabbit: RabbitServer, vhost: str
) -> None:
    publisher = await _publisher(rabbit, vhost)
    try:
        routed = await publisher.publish_batch("kubecrawl.metadata", [Outgoing(b"{}", "routed")])
        returned = await publisher.publish_batch("kubecrawl.no-such-queue", [Outgoing(b"{}", "returned")])
        assert routed == [None]
        assert [type(outcome) for outcome in returned] == [PublishRejected]
        assert publisher.state is PublisherState.READY
    finally:
        await publisher.close()


async def test_confirms_later_than_the_timeout_answer_publish_timeout_and_the_publisher_stays_ready(
    rabbit: RabbitServer, vhost: str
) -> None:
    publisher = await _publisher(rabbit, vhost, confirm_timeout_seconds=1e-6)
    try:
        outcomes = await publisher.publish_batch("kubecrawl.metadata", [Outgoing(b"{}", f"t{i}") for i in range(5)])
        assert {type(outcome) for outcome in outcomes} == {PublishTimeout}
        assert {outcome.code for outcome in outcomes if outcome is not None} == {"publish_timeout"}
        assert publisher.state is PublisherState.READY
    finally:
        await publisher.close()


async def test_a_connection_lost_before_the_confirms_answers_connection_lost_and_reconnects(
    rabbit: RabbitServer, vhost: str
) -> None:
    publisher = await _publisher(rabbit, vhost, initial_backoff_seconds=0.1, max_backoff_seconds=0.5)
    try:
        pending = asyncio.ensure_future(
            publisher.publish_batch("kubecrawl.metadata", [Outgoing(b"{}", f"l{i}") for i in range(5)])
        )
        await asyncio.sleep(0)  # the frames are queued; their confirms cannot have arrived yet
        connection = publisher._connection  # the test breaks it on purpose
        assert connection is not None
        assert connection.transport is not None
        # The AMQP connection under aio-pika's, closed with an error as a dropped TCP connection is.
        await connection.transport.connection.close(ConnectionResetError("cut"))
        outcomes = await pending
        assert {type(outcome) for outcome in outcomes} == {ConnectionLost}

        async def ready_again() -> bool:
            return publisher.state is PublisherState.READY

        await eventually(ready_again, timeout=30, what="publisher READY again")
        assert await publisher.publish_batch("kubecrawl.metadata", [Outgoing(b"{}", "after")]) == [None]
    finally:
        await publisher.close()
