"""``parse_set_cookie``: a Set-Cookie header as user agents read it (RFC 6265 §5.2), attributes included; and how
a response's headers are decoded and read."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import httpx
import pytest

from kubecrawl.fetch.cookies import Cookie, parse_set_cookie
from kubecrawl.fetch.fetching import _decode_headers, _header

URL = "https://example.com/login"


def parse(header: str) -> Cookie:
    cookie = parse_set_cookie(header, URL)
    assert cookie is not None
    return cookie


def test_every_attribute_is_reported() -> None:
    cookie = parse(
        "sid=abc123; Domain=.Example.com; Path=/app; Expires=Wed, 21 Oct 2037 07:28:00 GMT; "
        "Secure; HttpOnly; SameSite=Strict"
    )
    assert cookie.as_dict() == {
        "name": "sid",
        "value": "abc123",
        "domain": ".Example.com",
        "path": "/app",
        "expires": "Wed, 21 Oct 2037 07:28:00 GMT",
        "max_age": None,
        "secure": True,
        "http_only": True,
        "same_site": "Strict",
        "set_by": URL,
    }


def test_cookie_without_attributes_has_defaults() -> None:
    cookie = parse("theme=dark")
    assert (cookie.name, cookie.value) == ("theme", "dark")
    assert (cookie.domain, cookie.path, cookie.expires, cookie.max_age, cookie.same_site) == (None,) * 5
    assert (cookie.secure, cookie.http_only) == (False, False)


def test_attribute_names_are_case_insensitive_and_spacing_is_free() -> None:
    cookie = parse("a=b;path=/x;DOMAIN=example.com;httponly;SECURE;samesite=lax")
    assert (cookie.path, cookie.domain, cookie.http_only, cookie.secure, cookie.same_site) == (
        "/x",
        "example.com",
        True,
        True,
        "lax",
    )


def test_flags_with_a_value_still_count() -> None:
    cookie = parse("a=1; Secure=yes; HttpOnly=false")
    assert cookie.secure is True
    assert cookie.http_only is True


def test_max_age_sets_max_age_and_an_absolute_expiry() -> None:
    before = time.time()
    cookie = parse("a=1; Max-Age=3600")
    assert cookie.max_age == 3600
    assert cookie.expires is not None
    expires = parsedate_to_datetime(cookie.expires).timestamp()
    assert before + 3600 - 1 <= expires <= time.time() + 3600 + 1


def test_max_age_wins_over_expires() -> None:
    cookie = parse("a=1; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Max-Age=60")
    assert cookie.max_age == 60
    assert cookie.expires is not None
    assert parsedate_to_datetime(cookie.expires).timestamp() <= time.time() + 61


@pytest.mark.parametrize("value", ["0", "-1", "-0"])
def test_non_positive_max_age_expires_at_once(value: str) -> None:
    cookie = parse(f"a=1; Max-Age={value}")
    assert cookie.expires == "Thu, 01 Jan 1970 00:00:00 GMT"


@pytest.mark.parametrize("value", ["", "abc", "1.5", "1e3", "+5", "٣", "5 s"])
def test_malformed_max_age_is_ignored(value: str) -> None:
    cookie = parse(f"a=1; Max-Age={value}; Expires=Wed, 21 Oct 2037 07:28:00 GMT")
    assert cookie.max_age is None
    assert cookie.expires == "Wed, 21 Oct 2037 07:28:00 GMT"


@pytest.mark.parametrize("value", ["99999999999999999999999", "9" * 5000])
def test_huge_max_age_is_capped_at_400_days_instead_of_crashing(value: str) -> None:
    cookie = parse(f"a=1; Max-Age={value}")
    assert cookie.max_age == 400 * 86_400
    assert cookie.expires is not None


def test_unparseable_expires_is_reported_as_sent() -> None:
    assert parse("a=1; Expires=whenever").expires == "whenever"


def test_last_occurrence_of_an_attribute_wins() -> None:
    cookie = parse("a=1; Path=/first; Path=/second; SameSite=Lax; SameSite=None")
    assert (cookie.path, cookie.same_site) == ("/second", "None")


@pytest.mark.parametrize("header", ["a=1; Domain=; Path=", "a=1; Domain; Path"])
def test_empty_domain_and_path_are_none(header: str) -> None:
    cookie = parse(header)
    assert (cookie.domain, cookie.path) == (None, None)


def test_unknown_attributes_do_not_hide_known_ones() -> None:
    cookie = parse("sid=abc; Partitioned; Priority=High; Version=1; Comment=x; Path=/; HttpOnly; Secure")
    assert (cookie.path, cookie.http_only, cookie.secure) == ("/", True, True)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ('prefs={"theme":"dark","n":1}; Path=/; HttpOnly', '{"theme":"dark","n":1}'),
        ("msg=hello world; Path=/; HttpOnly", "hello world"),
        ('q="quoted"; Path=/; HttpOnly', '"quoted"'),
        ("b64=YWJj==; Path=/; HttpOnly", "YWJj=="),
        ("p=a\\b:c,d; Path=/; HttpOnly", "a\\b:c,d"),
        ("empty=; Path=/; HttpOnly", ""),
    ],
)
def test_unusual_values_are_kept_as_sent_with_their_attributes(header: str, value: str) -> None:
    cookie = parse(header)
    assert cookie.value == value
    assert (cookie.path, cookie.http_only) == ("/", True)


def test_name_and_value_are_trimmed() -> None:
    cookie = parse("  sid  =  abc  ; Path=/")
    assert (cookie.name, cookie.value) == ("sid", "abc")


@pytest.mark.parametrize("header", ["", ";", "novalue", "=value", "  =value; Path=/", "; Path=/"])
def test_headers_without_a_name_value_pair_are_ignored(header: str) -> None:
    assert parse_set_cookie(header, URL) is None


def test_set_by_records_the_hop_that_sent_the_cookie() -> None:
    cookie = parse_set_cookie("a=1", "https://example.com/redirect")
    assert cookie is not None
    assert cookie.set_by == "https://example.com/redirect"


def test_headers_are_decoded_as_sent_and_read_as_httpx_reads_them() -> None:
    raw = [
        (b"Content-Type", b"text/html"),
        (b"content-type", b"charset=utf-8"),
        (b"Set-Cookie", b"a=1"),
        (b"SET-COOKIE", b"b=2"),
        (b"X-Name", "caf\u00e9".encode()),
    ]
    headers = httpx.Headers(raw)
    sent, read = _decode_headers(headers)
    assert sent == [("Content-Type", "text/html"), ("content-type", "charset=utf-8"), ("Set-Cookie", "a=1"),
                    ("SET-COOKIE", "b=2"), ("X-Name", "caf\u00e9")]  # fmt: skip
    assert _header(read, b"content-type") == headers.get("content-type")
    assert read[b"set-cookie"] == headers.get_list("set-cookie")
    assert _header(read, b"location") is None
    assert _header(read, b"content-length") is None


def test_headers_outside_utf8_are_decoded_as_latin1_like_httpx() -> None:
    headers = httpx.Headers([(b"Content-Type", b"text/\xe9")])
    sent, read = _decode_headers(headers)
    assert sent == [("Content-Type", "text/\u00e9")]
    assert _header(read, b"content-type") == headers.get("content-type")
