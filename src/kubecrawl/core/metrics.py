"""Prometheus metrics, all prefixed ``kubecrawl_`` (checked by ``promtool check metrics`` in the tests).

Metrics live in the default registry: one process = one registry, which is what a scrape sees. Label values are
bounded sets (routes are templates, outcomes and reasons are codes), never URLs or ids.
"""

from __future__ import annotations

import enum
import platform
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, Info

from kubecrawl import __version__

# kubecrawl_build_info{version, python_version} 1: which release each process runs (`count by (version)` shows a
# rollout in progress; join on it to label other series with the version). Set once, at import.
BUILD_INFO = Info("kubecrawl_build", "The kubecrawl release and Python version of this process.")
BUILD_INFO.info({"version": __version__, "python_version": platform.python_version()})

# Latency buckets in seconds: an enqueue answers in milliseconds, a page fetch in tenths to tens of seconds.
_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_FETCH = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

API_REQUESTS = Counter("kubecrawl_api_requests", "HTTP requests answered by the API.", ["method", "route", "status"])
API_LATENCY = Histogram(
    "kubecrawl_api_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["method", "route"],
    buckets=_FAST,
)
PUBLISH_TOTAL = Counter("kubecrawl_publish", "Messages published to RabbitMQ by outcome.", ["queue", "outcome"])
PUBLISH_LATENCY = Histogram(
    "kubecrawl_publish_duration_seconds",
    "Time from publish to broker confirm.",
    ["queue"],
    buckets=_FAST,
)
PUBLISHER_STATE = Gauge(
    "kubecrawl_publisher_state", "1 for the publisher's current state, 0 for the others.", ["state"]
)
DATABASE_STATE = Gauge(
    "kubecrawl_database_state", "1 for the database connection's current state, 0 for the others.", ["state"]
)
PUBLISHER_RECONNECTS = Counter("kubecrawl_publisher_reconnects", "Successful publisher reconnections.")
WORKER_MESSAGES = Counter("kubecrawl_worker_messages", "Messages handled by workers by outcome.", ["queue", "outcome"])
WORKER_IN_FLIGHT = Gauge("kubecrawl_worker_in_flight", "Messages being processed right now.", ["queue"])
WORKER_RETRIES = Counter("kubecrawl_worker_retries", "Messages scheduled for a retry.", ["queue", "code"])
WORKER_DEAD_LETTERS = Counter(
    "kubecrawl_worker_dead_letters", "Messages dead-lettered with a reason.", ["queue", "code"]
)
FETCH_DURATION = Histogram(
    "kubecrawl_fetch_duration_seconds", "Time to fetch a page (all redirect hops).", buckets=_FETCH
)
FETCH_BYTES = Counter("kubecrawl_fetch_response_bytes", "Response body bytes read by fetches.")
CRAWL_PAGES = Counter("kubecrawl_crawl_pages", "Crawl pages finished by state.", ["state"])
CRAWL_LINKS_SKIPPED = Counter(
    "kubecrawl_crawl_links_skipped", "Links found in pages and not followed because of their form.", ["reason"]
)

# CrawlWorkerPool scaling (operator). One series per pool: pools are few and named by their owners; a deleted
# pool's series are removed.
POOL_QUEUE_MESSAGES = Gauge(
    "kubecrawl_pool_queue_messages",
    "Messages in a pool's queue by state (ready, unacked).",
    ["namespace", "pool", "state"],
)
POOL_DESIRED_REPLICAS = Gauge(
    "kubecrawl_pool_desired_replicas", "Replicas the pool's scaler wants its Deployment to have.", ["namespace", "pool"]
)
POOL_CURRENT_REPLICAS = Gauge(
    "kubecrawl_pool_current_replicas", "Replicas of the pool's Deployment (its /scale spec).", ["namespace", "pool"]
)
POOL_SCALE = Counter(
    "kubecrawl_pool_scale",
    "Replica changes written by a pool's scaler, by direction and cause.",
    ["namespace", "pool", "direction", "reason"],
)
POOL_METRIC_ERRORS = Counter("kubecrawl_pool_metric_errors", "Failed queue depth reads.", ["namespace", "pool"])
# From the poll that first saw the change to /scale written: well under a second for scale-ups; scale-downs
# include the stabilisation window (minutes by default), hence the long tail of buckets.
POOL_REACTION = Histogram(
    "kubecrawl_pool_reaction_seconds",
    "Time from a depth change seen by the scaler to the Deployment's /scale written.",
    ["direction"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)

# Operator reconciliations that failed, one per failed step (a CrawlSite's CronJob, its API sync, a status refresh;
# a pool's poll or /scale write), by the object's kind and the reason its Warning Event / log names. No object
# names: the CrawlSite's conditions and Events, and the operator's logs, say which object.
OPERATOR_RECONCILE_ERRORS = Counter(
    "kubecrawl_operator_reconcile_errors",
    "Failed operator reconciliation steps by object kind (CrawlSite, CrawlWorkerPool) and reason.",
    ["kind", "reason"],
)

# Per CrawlSite, from the operator (one process: its status refresher reads every site, so there is exactly one
# value per site however many API or worker replicas run). One series per CrawlSite and metric, labelled with the
# site's own namespace and name; a deleted site's series are removed. Bounded by the number of CrawlSites.
SITE_LAST_SUCCESS = Gauge(
    "kubecrawl_site_last_success_timestamp_seconds",
    "When the CrawlSite's latest successful (COMPLETED) crawl finished (status.lastSuccessTime), Unix seconds.",
    ["namespace", "site"],
)
SITE_CREATED = Gauge(
    "kubecrawl_site_created_timestamp_seconds",
    "When the CrawlSite was created, Unix seconds (the freshness alert's reference before a first success).",
    ["namespace", "site"],
)
SITE_SCHEDULE_PERIOD = Gauge(
    "kubecrawl_site_schedule_period_seconds",
    "The longest gap between the next runs of a scheduled, unsuspended CrawlSite's cron schedule.",
    ["namespace", "site"],
)
SITE_CRAWL_ACTIVE = Gauge(
    "kubecrawl_site_crawl_active",
    "1 while the CrawlSite's latest crawl is queued or running, else 0.",
    ["namespace", "site"],
)
# The dead-letter queue's depth, read by the operator (one reader per release, so one value per queue) every
# KUBECRAWL_OPERATOR_DEAD_LETTER_POLL_SECONDS; absent while the queue cannot be read.
DEAD_LETTER_MESSAGES = Gauge(
    "kubecrawl_dead_letter_messages",
    "Messages waiting in the dead-letter queue (dead letters not yet inspected or replayed).",
    ["queue"],
)


def set_state(gauge: Gauge, states: Iterable[enum.Enum], current: enum.Enum) -> None:
    """A state-machine gauge (``kubecrawl_publisher_state``, ``kubecrawl_database_state``): 1 for ``current``,
    0 for every other state, so each state is one series whatever it was before."""
    for state in states:
        gauge.labels(state=state.value).set(1 if state is current else 0)
