"""robots.txt (pure): parse once per crawl and host, answer can-fetch and Crawl-delay.

Uses the standard library's ``urllib.robotparser`` (the same rules Scrapy's default parser used for years).
A missing robots.txt (4xx) allows everything; a server error (5xx) disallows everything for this crawl, as
Google does: a site that cannot serve robots.txt may be in trouble and should not be crawled hard.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

# Longer robots files are cut: Google reads the first 500 KiB.
MAX_ROBOTS_BYTES = 500 * 1024
DISALLOW_ALL = "User-agent: *\nDisallow: /\n"


def robots_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, "/robots.txt", "", ""))


def robots_text_for(status: int, body: bytes) -> str:
    """What to remember for a robots.txt response: its text, allow-all on 4xx, disallow-all on 5xx."""
    if 200 <= status < 300:
        return body[:MAX_ROBOTS_BYTES].decode("utf-8", errors="replace")
    if status >= 500:
        return DISALLOW_ALL
    return ""


class Robots:
    def __init__(self, text: str | None) -> None:
        self._parser = RobotFileParser()
        self._parser.parse((text or "").splitlines())

    def allowed(self, user_agent: str, url: str) -> bool:
        return self._parser.can_fetch(user_agent, url)

    def crawl_delay(self, user_agent: str) -> float | None:
        delay = self._parser.crawl_delay(user_agent)
        return float(delay) if delay is not None else None

    def sitemaps(self) -> list[str]:
        return list(self._parser.site_maps() or [])
