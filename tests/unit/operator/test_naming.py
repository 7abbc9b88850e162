from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from kubecrawl.operator.crawlsite import naming

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@pytest.mark.parametrize("name", ["a", "docs", "x" * 52, "site.example.com"])
def test_cronjob_name_is_the_site_name_when_it_fits(name: str) -> None:
    assert naming.cronjob_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["x" * 53, "a" * 253, ("a" * 40) + "-" + "b" * 20, ("a" * 40) + "." + "b" * 20, "very-long-" * 20 + "tail"],
)
def test_long_site_names_shorten_to_a_valid_52_character_name(name: str) -> None:
    short = naming.cronjob_name(name)
    assert len(short) <= naming.MAX_CRONJOB_NAME
    assert DNS_SUBDOMAIN.fullmatch(short)
    assert short.startswith(name[:30])
    assert naming.cronjob_name(name) == short  # deterministic: a restart finds the same CronJob


def test_long_names_sharing_a_prefix_get_different_cronjobs() -> None:
    a, b = "p" * 60 + "-one", "p" * 60 + "-two"
    assert naming.cronjob_name(a) != naming.cronjob_name(b)


def test_shortening_drops_separators_before_the_hash() -> None:
    assert "--" not in naming.cronjob_name("a" * 40 + "-" + "b" * 30)
    assert ".-" not in naming.cronjob_name("a" * 40 + "." + "b" * 30)


def test_labels_are_valid_label_values_even_for_long_names() -> None:
    for value in naming.labels("z" * 253).values():
        assert len(value) <= 63
        assert LABEL_VALUE.fullmatch(value)


def test_scheduled_time_comes_from_the_job_name_minutes() -> None:
    minute = datetime(2025, 3, 1, 6, 30, tzinfo=UTC)
    job = f"docs-{int(minute.timestamp()) // 60}"
    assert naming.scheduled_time(job, "docs") == minute


@pytest.mark.parametrize(
    ("job", "cronjob"),
    [("manual-1", "docs"), ("docs-manual", "docs"), ("docs", "docs"), ("other-29000000", "docs"), ("docs-", "docs")],
)
def test_jobs_not_named_by_the_cronjob_have_no_scheduled_time(job: str, cronjob: str) -> None:
    assert naming.scheduled_time(job, cronjob) is None


def test_a_cronjob_name_with_dashes_and_digits_still_parses() -> None:
    assert naming.scheduled_time("site-2024-29000000", "site-2024") == datetime.fromtimestamp(29000000 * 60, tz=UTC)


def test_manual_job_key_prefers_the_job_uid() -> None:
    assert naming.manual_job_key("ns", "s", "manual-1", "uid-1") == "site:ns/s:job:uid-1"
    assert naming.manual_job_key("ns", "s", "manual-1", None) == "site:ns/s:job:manual-1"
