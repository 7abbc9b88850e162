"""The hand-written SQL of POST /metadata's batch upsert names the same statuses as the models."""

from __future__ import annotations

import re

from kubecrawl.core.models import FINAL_PAGE_STATUSES, PageStatus
from kubecrawl.store.request_writing import _RECORD_REQUESTS


def test_batch_upsert_keeps_exactly_the_final_statuses_and_queues_everything_else() -> None:
    kept = re.search(r"status IN \(([^)]*)\) THEN page_metadata\.status", _RECORD_REQUESTS)
    assert kept is not None
    assert {value.strip(" '") for value in kept.group(1).split(",")} == {s.value for s in FINAL_PAGE_STATUSES}
    assert re.findall(r"ELSE '(\w+)' END", _RECORD_REQUESTS) == [PageStatus.QUEUED.value]
    assert f"batch.url, '{PageStatus.QUEUED.value}', 0, batch.request_id" in _RECORD_REQUESTS
