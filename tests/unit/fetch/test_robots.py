"""robots.txt per RFC 9309: the RFC's own examples, Google's robots.txt test cases where they agree with it, and
what each kind of robots.txt response means for a crawl."""

from __future__ import annotations

import pytest

from kubecrawl.fetch.robots import DISALLOW_ALL, MAX_ROBOTS_BYTES, Robots, robots_text_for, robots_url

# RFC 9309 section 5.1, "Simple Example" (the empty quxbot group has no rules, so quxbot may fetch all).
RFC_SIMPLE = """\
User-Agent: *
Disallow: *.gif$
Disallow: /example/
Allow: /publications/

User-Agent: foobot
Disallow:/
Allow:/example/page.html
Allow:/example/allowed.gif

User-Agent: barbot
User-Agent: bazbot
Disallow: /example/page.html

User-Agent: quxbot

EOF
"""


@pytest.mark.parametrize(
    ("agent", "path", "allowed"),
    [
        ("anybot/1.0", "/example/page.html", False),
        ("anybot/1.0", "/picture.gif", False),
        ("anybot/1.0", "/picture.gif?x=1", True),  # '$' anchors the end of the path and query
        ("anybot/1.0", "/publications/", True),
        ("anybot/1.0", "/", True),
        ("foobot", "/", False),
        ("foobot", "/example/page.html", True),
        ("foobot", "/example/allowed.gif", True),
        ("foobot", "/example/other.html", False),
        ("FooBot/2.1 (+https://foo.example/bot)", "/example/page.html", True),  # product token, any case
        ("barbot", "/example/page.html", False),
        ("bazbot", "/example/page.html", False),
        ("bazbot", "/example/other.html", True),
        ("quxbot", "/example/page.html", True),
    ],
)
def test_rfc9309_simple_example(agent: str, path: str, allowed: bool) -> None:
    assert Robots(RFC_SIMPLE).allowed(agent, "https://example.com" + path) is allowed


@pytest.mark.parametrize(
    ("path", "allowed"), [("/example/page/", True), ("/example/page/disallowed.gif", False), ("/example/page", True)]
)
def test_rfc9309_longest_match_example(path: str, allowed: bool) -> None:
    text = "User-Agent: foobot\nAllow: /example/page/\nDisallow: /example/page/disallowed.gif\n"
    assert Robots(text).allowed("foobot", "https://example.com" + path) is allowed


@pytest.mark.parametrize(
    ("rule", "path", "disallowed"),
    [
        # RFC 9309 section 2.2.3: '*' is any run of characters, '$' the end of the URL
        ("/*?sessionid=", "/cart?sessionid=42", True),
        ("/*?sessionid=", "/cart?id=42", False),
        ("/*.pdf$", "/docs/manual.pdf", True),
        ("/*.pdf$", "/docs/manual.pdf?download=1", False),
        ("/*.pdf$", "/docs/manual.pdf.html", False),
        ("/this/path/exactly$", "/this/path/exactly", True),
        ("/this/path/exactly$", "/this/path/exactly/not", False),
        ("/this/*/exactly", "/this/long/path/exactly", True),
        # section 2.2.2's encoding table: octets are compared percent-encoded, unreserved ones decoded
        ("/foo/bar/ツ", "/foo/bar/%E3%83%84", True),
        ("/foo/bar/%E3%83%84", "/foo/bar/%E3%83%84", True),
        ("/foo/bar/%62%61%7A", "/foo/bar/baz", True),
        ("/foo/bar?baz=quz", "/foo/bar?baz=quz", True),
        # Google's robots_test.cc (ID_SimplePathSyntax etc.): case-sensitive paths, prefixes unless anchored
        ("/Fish", "/fish", False),
        ("/fish", "/fish.html", True),
        ("/fish", "/fishheads/yummy.html", True),
        ("/fish*", "/fish", True),
        ("/*.php", "/folder/filename.php?parameters", True),
        ("/*.php$", "/filename.php?parameters", False),
        ("/fish*.php", "/fishheads/catfish.php?parameters", True),
        ("/fish*.php", "/Fish.PHP", False),
    ],
)
def test_wildcards_and_encodings_match_as_rfc9309_says(rule: str, path: str, disallowed: bool) -> None:
    robots = Robots(f"User-agent: *\nDisallow: {rule}\n")
    assert robots.allowed("kubecrawl/0.1", "https://example.com" + path) is not disallowed


@pytest.mark.parametrize(
    ("rules", "path", "allowed"),
    [
        # Google's ID_LongestMatch cases, which RFC 9309 section 2.2.2 states the same way
        ("allow: /\ndisallow: /\n", "/page", True),  # a tie goes to the least restrictive rule: allow
        ("allow: /page\ndisallow: /*.html\n", "/page.html", False),
        ("allow: /page\ndisallow: /*.html\n", "/page", True),
        ("allow: /x/page.html\ndisallow: /*.html\n", "/x/page.html", True),
        ("allow: /folder/page\ndisallow: /folder/\n", "/folder/page", True),
        ("allow: /folder/page\ndisallow: /folder/\n", "/folder/other", False),
        ("allow: /$\ndisallow: /\n", "/", True),
        ("allow: /$\ndisallow: /\n", "/page.html", False),
    ],
)
def test_the_most_specific_rule_wins(rules: str, path: str, allowed: bool) -> None:
    assert Robots("user-agent: FooBot\n" + rules).allowed("FooBot", "https://example.com" + path) is allowed


def test_groups_for_the_same_agent_are_combined() -> None:
    # RFC 9309 section 2.2.1: several groups naming one agent are one group
    robots = Robots(
        "user-agent: foobot\ndisallow: /a\n\nuser-agent: barbot\ndisallow: /c\n\nuser-agent: foobot\ndisallow: /b\n"
    )
    assert not robots.allowed("foobot", "https://example.com/a")
    assert not robots.allowed("foobot", "https://example.com/b")
    assert robots.allowed("foobot", "https://example.com/c")


def test_robots_txt_itself_is_always_allowed() -> None:
    # RFC 9309 section 2.2.2: "/robots.txt" is implicitly allowed
    assert Robots(DISALLOW_ALL).allowed("kubecrawl", "https://example.com/robots.txt")
    assert not Robots(DISALLOW_ALL).allowed("kubecrawl", "https://example.com/")


def test_crawl_delay_and_sitemap_lines_are_read() -> None:
    robots = Robots(
        "Sitemap: https://example.com/a.xml\nUser-agent: *\nCrawl-delay: 2.5\nSitemap: https://example.com/b.xml.gz\n"
    )
    assert robots.crawl_delay("kubecrawl/0.1") == 2.5
    assert robots.sitemaps() == ["https://example.com/a.xml", "https://example.com/b.xml.gz"]


def test_no_robots_txt_allows_everything() -> None:
    assert Robots(None).allowed("kubecrawl", "https://example.com/private")
    assert Robots(None).crawl_delay("kubecrawl") is None
    assert Robots("").sitemaps() == []


@pytest.mark.parametrize(
    ("status", "allowed"),
    [(200, False), (404, True), (403, True), (410, True), (429, True), (500, False), (503, False)],
)
def test_the_response_status_decides_what_robots_txt_means(status: int, allowed: bool) -> None:
    # RFC 9309 section 2.3.1: 4xx is "unavailable" (no rules), 5xx "unreachable" (complete disallow)
    text = robots_text_for(status, b"User-agent: *\nDisallow: /\n")
    assert Robots(text).allowed("kubecrawl", "https://example.com/page") is allowed


def test_rules_beyond_500_kib_are_ignored() -> None:
    # RFC 9309 section 2.5: crawlers must read at least 500 KiB and may ignore what follows
    filler = b"# " + b"x" * MAX_ROBOTS_BYTES + b"\n"
    body = b"User-agent: *\nDisallow: /early\n" + filler + b"Disallow: /late\n"
    robots = Robots(robots_text_for(200, body))
    assert not robots.allowed("kubecrawl", "https://example.com/early")
    assert robots.allowed("kubecrawl", "https://example.com/late")


def test_robots_url_is_at_the_root_of_the_origin() -> None:
    assert robots_url("https://example.com:8443/a/b?c=d#e") == "https://example.com:8443/robots.txt"
