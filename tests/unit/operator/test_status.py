from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kubecrawl.operator.conditions import Outcome, status_patch
from kubecrawl.operator.crawlsite import status as st
from kubecrawl.operator.crawlsite.handlers import MAX_DELAY_SECONDS, handler_retry_delay
from kubecrawl.operator.crawlsite.reconciler import Result

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
OK = st.scheduled_ok("docs", "0 3 * * *", None, suspended=False)
SYNCED = st.synced_ok(2)


def by_type(conditions: list[dict[str, object]]) -> dict[object, dict[str, object]]:
    return {c["type"]: c for c in conditions}


def test_all_good_means_ready() -> None:
    conditions = by_type(st.conditions([], scheduled=OK, synced=SYNCED, generation=2, now=T0))
    assert [conditions[t]["status"] for t in ("Scheduled", "Synced", "Ready")] == ["True", "True", "True"]
    assert conditions["Ready"]["observedGeneration"] == 2
    assert conditions["Ready"]["lastTransitionTime"] == "2025-01-01T12:00:00Z"


def test_no_schedule_is_not_scheduled_but_still_ready() -> None:
    conditions = by_type(st.conditions([], scheduled=st.no_schedule(), synced=SYNCED, generation=1, now=T0))
    assert (conditions["Scheduled"]["status"], conditions["Scheduled"]["reason"]) == ("False", "NoSchedule")
    assert conditions["Ready"]["status"] == "True"


def test_a_failed_sync_makes_the_site_not_ready_with_the_reason() -> None:
    failed = Outcome("False", "SyncFailed", "retrying: connection refused")
    conditions = by_type(st.conditions([], scheduled=OK, synced=failed, generation=1, now=T0))
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False", "NotSynced")
    assert "connection refused" in str(conditions["Ready"]["message"])


def test_a_rejected_cronjob_makes_the_site_not_ready() -> None:
    rejected = Outcome("False", "CronJobRejected", "unknown time zone Mars/Base")
    conditions = by_type(st.conditions([], scheduled=rejected, synced=SYNCED, generation=1, now=T0))
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False", "NotScheduled")


def test_transition_time_moves_only_when_the_status_changes() -> None:
    first = st.conditions([], scheduled=OK, synced=SYNCED, generation=1, now=T0)
    same = by_type(st.conditions(first, scheduled=OK, synced=SYNCED, generation=2, now=T1))
    assert same["Synced"]["lastTransitionTime"] == "2025-01-01T12:00:00Z"
    assert same["Synced"]["observedGeneration"] == 2
    failed = Outcome("False", "SyncFailed", "down")
    moved = by_type(st.conditions(first, scheduled=OK, synced=failed, generation=2, now=T1))
    assert moved["Synced"]["lastTransitionTime"] == "2025-01-01T12:05:00Z"
    assert moved["Scheduled"]["lastTransitionTime"] == "2025-01-01T12:00:00Z"


def test_conditions_of_other_types_are_kept() -> None:
    foreign = {"type": "Audited", "status": "True", "reason": "x", "message": "", "lastTransitionTime": "t"}
    conditions = st.conditions([foreign], scheduled=OK, synced=SYNCED, generation=1, now=T0)
    assert conditions[-1] == foreign
    assert [c["type"] for c in conditions[:3]] == ["Scheduled", "Synced", "Ready"]


def test_suspended_is_scheduled_with_its_own_reason() -> None:
    outcome = st.scheduled_ok("docs", "@daily", "Europe/Berlin", suspended=True)
    assert (outcome.status, outcome.reason) == ("True", "Suspended")


def test_last_crawl_maps_the_api_crawl() -> None:
    crawl = {
        "id": "c1",
        "state": "RUNNING",
        "counters": {"fetched": 12, "failed": 1, "changed": 3, "discovered": 40},
        "started_at": "2025-01-01T12:00:01.123456+00:00",
        "finished_at": None,
    }
    assert st.last_crawl(crawl) == {
        "id": "c1",
        "state": "RUNNING",
        "pages": 12,
        "failed": 1,
        "changed": 3,
        "startedAt": "2025-01-01T12:00:01Z",
        "finishedAt": None,
    }
    assert st.last_crawl(None) is None


def test_last_schedule_time_comes_from_the_cronjob_status() -> None:
    assert st.last_schedule_time({"status": {"lastScheduleTime": "2025-01-01T12:00:00Z"}}) == "2025-01-01T12:00:00Z"
    assert st.last_schedule_time({"status": {}}) is None
    assert st.last_schedule_time(None) is None


def test_status_patch_sends_only_changes_and_clears_stale_keys() -> None:
    current = {
        "observedGeneration": 2,
        "lastCrawl": {"id": "old", "state": "COMPLETED", "pages": 5, "finishedAt": "2025-01-01T00:00:00Z"},
    }
    new_crawl = {"id": "new", "state": "RUNNING", "pages": 0, "failed": 0, "changed": 0, "startedAt": None}
    patch = status_patch(current, {"observedGeneration": 2, "lastCrawl": {**new_crawl, "finishedAt": None}})
    assert patch == {"lastCrawl": {**new_crawl, "finishedAt": None}}
    assert status_patch(current, {"observedGeneration": 2}) == {}
    assert status_patch({"cronJobName": "docs"}, {"cronJobName": None}) == {"cronJobName": None}
    assert status_patch({}, {"cronJobName": None}) == {}


def test_handler_retry_delay_grows_and_is_capped() -> None:
    delays = [handler_retry_delay(n) for n in range(10)]
    assert delays[:3] == [5.0, 10.0, 20.0]
    assert delays == sorted(delays)
    assert handler_retry_delay(1000) == MAX_DELAY_SECONDS


def test_a_failed_cronjob_step_leaves_cronjob_name_and_last_schedule_untouched() -> None:
    failed = Result(scheduled=Outcome("Unknown", "CronJobError", "timeout"), synced=SYNCED)
    desired = failed.status({}, 3, T0)
    assert set(desired) == {"observedGeneration", "conditions"}
    previous = {"cronJobName": "docs", "lastScheduleTime": "2025-01-01T00:00:00Z", "observedGeneration": 2}
    assert "cronJobName" not in status_patch(previous, desired)


def test_an_applied_cronjob_sets_name_and_last_schedule_and_a_removed_one_clears_them() -> None:
    cronjob = {"metadata": {"name": "docs"}, "status": {"lastScheduleTime": "2025-01-01T03:00:00Z"}}
    applied = Result(scheduled=OK, synced=SYNCED, cronjob=cronjob, cronjob_settled=True).status({}, 1, T0)
    assert (applied["cronJobName"], applied["lastScheduleTime"]) == ("docs", "2025-01-01T03:00:00Z")
    removed = Result(scheduled=st.no_schedule(), synced=SYNCED, cronjob_settled=True).status({}, 2, T0)
    previous = {"cronJobName": "docs", "lastScheduleTime": "2025-01-01T03:00:00Z"}
    patch = status_patch(previous, removed)
    assert (patch["cronJobName"], patch["lastScheduleTime"]) == (None, None)


# -- a scheduled run overlapPolicy Forbid skipped ---------------------------------------------------------------

FIRED = "2025-01-01T12:05:00Z"  # the CronJob's lastScheduleTime
LATER = T1 + timedelta(minutes=2)  # the refresher looks two minutes after the run fired


def crawl(**fields: object) -> dict[str, object]:
    """The site's latest crawl as the API answers it: by default the run of 12:00, still running."""
    previous_run = "site:ns/docs:cron:2025-01-01T12:00:00+00:00"
    return {"id": "c1", "idempotency_key": previous_run, "created_at": T0.isoformat(), "finished_at": None, **fields}


def test_a_run_that_found_the_last_crawl_running_and_started_nothing_is_told_once_with_its_minute() -> None:
    event = st.skipped_run("ns", "docs", {}, FIRED, crawl(), LATER)  # overlapPolicy defaults to Forbid
    assert event is not None
    assert (event.type, event.reason) == ("Normal", "ScheduledRunSkipped")
    assert "2025-01-01T12:05:00Z" in event.message
    assert "c1" in event.message


def test_a_run_is_not_judged_skipped_when_it_started_its_crawl_or_could_not_have_overlapped() -> None:
    own = crawl(id="c2", idempotency_key="site:ns/docs:cron:2025-01-01T12:05:00+00:00", created_at=T1.isoformat())
    assert st.skipped_run("ns", "docs", {}, FIRED, own, LATER) is None  # it started its crawl
    finished = crawl(finished_at=(T0 + timedelta(minutes=1)).isoformat())
    assert st.skipped_run("ns", "docs", {}, FIRED, finished, LATER) is None  # nothing ran: it failed otherwise
    assert st.skipped_run("ns", "docs", {}, FIRED, crawl(), T1 + timedelta(seconds=10)) is None  # too soon
    assert st.skipped_run("ns", "docs", {"overlapPolicy": "Allow"}, FIRED, crawl(), LATER) is None
    assert st.skipped_run("ns", "docs", {}, None, crawl(), LATER) is None  # never fired
    manual_after = crawl(idempotency_key=None, created_at=(T1 + timedelta(seconds=5)).isoformat())
    assert st.skipped_run("ns", "docs", {}, FIRED, manual_after, LATER) is None  # a later crawl: no evidence
