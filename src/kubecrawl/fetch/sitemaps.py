"""sitemap.xml (pure): page URLs and nested sitemap indexes, plain or gzip-compressed.

Parsed with the standard library's ElementTree after a size cap (50 MiB uncompressed, the sitemap protocol's
own limit), so a hostile gzip bomb cannot exhaust memory.
"""

from __future__ import annotations

import gzip
import io
import xml.etree.ElementTree as ET
from dataclasses import dataclass

MAX_SITEMAP_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Sitemap:
    pages: list[str]
    sitemaps: list[str]


def _decompress(body: bytes) -> bytes:
    if body[:2] != b"\x1f\x8b":
        return body[:MAX_SITEMAP_BYTES]
    with gzip.GzipFile(fileobj=io.BytesIO(body)) as stream:
        return stream.read(MAX_SITEMAP_BYTES)


def parse_sitemap(body: bytes) -> Sitemap:
    """URLs in a ``<urlset>`` (pages) or a ``<sitemapindex>`` (more sitemaps); garbage gives nothing."""
    try:
        root = ET.fromstring(_decompress(body))  # noqa: S314 - see module docstring
    except (ET.ParseError, OSError, EOFError):
        return Sitemap([], [])
    locs = [el.text.strip() for el in root.iter() if el.tag.endswith("loc") and el.text and el.text.strip()]
    if root.tag.endswith("sitemapindex"):
        return Sitemap([], locs)
    return Sitemap(locs, [])
