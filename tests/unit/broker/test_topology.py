from __future__ import annotations

from kubecrawl.broker.topology import (
    DEAD_LETTER_QUEUE,
    METADATA_QUEUE,
    RETRY_TIERS_SECONDS,
    queue_specs,
    retry_queue_name,
    retry_tier,
)


def test_metadata_queue_is_bounded_rejects_publish_and_dead_letters() -> None:
    specs = {s.name: s for s in queue_specs(metadata_max_length=1000, pages_max_length=5)}
    args = specs[METADATA_QUEUE].arguments
    assert args["x-max-length"] == 1000
    assert args["x-overflow"] == "reject-publish"
    assert args["x-dead-letter-routing-key"] == DEAD_LETTER_QUEUE


def test_retry_tiers_expire_back_into_their_work_queue() -> None:
    specs = {s.name: s for s in queue_specs(metadata_max_length=1, pages_max_length=1)}
    for tier in RETRY_TIERS_SECONDS:
        args = specs[retry_queue_name(METADATA_QUEUE, tier)].arguments
        assert args["x-message-ttl"] == tier * 1000
        assert args["x-dead-letter-routing-key"] == METADATA_QUEUE


def test_retry_tier_rounds_up_and_caps() -> None:
    assert retry_tier(0.2) == 1
    assert retry_tier(1.0) == 1
    assert retry_tier(3) == 5
    assert retry_tier(61) == 300
    assert retry_tier(10_000) == 300


def test_quorum_makes_work_queues_and_tiers_quorum_with_at_least_once_dead_letters_and_leaves_dead_classic() -> None:
    specs = {s.name: s for s in queue_specs(metadata_max_length=10, pages_max_length=10, queue_type="quorum")}
    work = specs[METADATA_QUEUE].arguments
    assert (work["x-queue-type"], work["x-dead-letter-strategy"], work["x-overflow"]) == (
        "quorum",
        "at-least-once",
        "reject-publish",
    )
    assert work["x-delivery-limit"] > 0
    for tier in RETRY_TIERS_SECONDS:
        args = specs[retry_queue_name(METADATA_QUEUE, tier)].arguments
        assert (args["x-queue-type"], args["x-overflow"]) == ("quorum", "reject-publish")
    assert specs[DEAD_LETTER_QUEUE].arguments == {}
    classic = queue_specs(metadata_max_length=10, pages_max_length=10)
    assert not any("x-queue-type" in spec.arguments for spec in classic)
