"""robots.txt (pure): parse once per crawl and host, answer can-fetch, Crawl-delay and Sitemap lines.

Rules follow RFC 9309 through Protego (Scrapy's default parser since 2.0): ``*`` matches any run of characters,
``$`` anchors the end, the longest matching rule wins and ``Allow`` wins a tie. ``urllib.robotparser`` knows
neither wildcard: ``Disallow: /*.pdf$`` let every PDF through.

What a response means (RFC 9309 section 2.3.1): 2xx is the rules (the first 500 KiB, section 2.5); a 4xx means
no robots.txt, so everything is allowed; a 5xx, or a host that cannot be reached, is a complete disallow for this
crawl: a site that cannot serve robots.txt may be in trouble and should not be crawled hard. The fetcher follows
redirects (at least the five the RFC asks for) before the status is read here.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from protego import Protego

# RFC 9309 section 2.5: a crawler must read at least 500 KiB; rules after that may be ignored.
MAX_ROBOTS_BYTES = 500 * 1024
DISALLOW_ALL = "User-agent: *\nDisallow: /\n"


def robots_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, "/robots.txt", "", ""))


def robots_text_for(status: int, body: bytes) -> str:
    """What to remember for a robots.txt response: its text, allow-all on 4xx, disallow-all on 5xx."""
    if 200 <= status < 300:
        return body[:MAX_ROBOTS_BYTES].decode("utf-8", errors="replace")
    if 400 <= status < 500:
        return ""
    return DISALLOW_ALL  # 5xx, and any status a server should not answer to a GET after redirects


class Robots:
    def __init__(self, text: str | None) -> None:
        self._parser = Protego.parse(text or "")

    def allowed(self, user_agent: str, url: str) -> bool:
        return self._parser.can_fetch(url, user_agent)

    def crawl_delay(self, user_agent: str) -> float | None:
        return self._parser.crawl_delay(user_agent)

    def sitemaps(self) -> list[str]:
        return list(self._parser.sitemaps)
