"""sitemap.xml (pure): page URLs and nested sitemap indexes, plain or gzip-compressed, per sitemaps.org.

Only ``urlset/url/loc`` are pages and only ``sitemapindex/sitemap/loc`` are sitemaps, in the sitemap namespace
(or none, as many sites write them): the extensions' own URLs (``image:loc``, ``video:content_loc``,
``video:player_loc``, ``xhtml:link``) name media and alternates, not pages to crawl.

The protocol's limits hold: 50,000 URLs and 50 MiB uncompressed per file. The body is inflated in 64 KiB steps
and fed to an incremental parser, so a gzip bomb is never inflated past 50 MiB and memory stays bounded; a file
over a limit gives the URLs before the cut (``truncated``), as does a file cut short. ElementTree's expat
(2.4 and later) refuses entity-expansion bombs and resolves no external entities.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

# sitemaps.org: "no more than 50,000 URLs and must be no larger than 50MB (52,428,800 bytes)" uncompressed.
MAX_SITEMAP_BYTES = 50 * 1024 * 1024
MAX_SITEMAP_URLS = 50_000
_NAMESPACES = frozenset(
    {"", "http://www.sitemaps.org/schemas/sitemap/0.9", "https://www.sitemaps.org/schemas/sitemap/0.9"}
)
# Inflate and parse this much at a time: small enough to bound memory, large enough that the loop costs nothing.
_CHUNK_BYTES = 64 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_ENTRIES = {"urlset": "url", "sitemapindex": "sitemap"}


@dataclass(frozen=True, slots=True)
class Sitemap:
    pages: list[str]
    sitemaps: list[str]
    # a limit (50,000 URLs, 50 MiB) cut the file, or it ended early: the URLs before the cut are kept
    truncated: bool = False


def _inflated(body: bytes) -> Iterator[bytes]:
    """The document in chunks, gzip inflated step by step; ends after ``MAX_SITEMAP_BYTES + 1`` bytes at most."""
    if body[:2] != _GZIP_MAGIC:
        for start in range(0, min(len(body), MAX_SITEMAP_BYTES + 1), _CHUNK_BYTES):
            yield body[start : min(start + _CHUNK_BYTES, MAX_SITEMAP_BYTES + 1)]
        return
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)  # +16: a gzip header and trailer
    pending, produced = body, 0
    while pending and produced <= MAX_SITEMAP_BYTES and not inflater.eof:
        try:
            chunk = inflater.decompress(pending, min(_CHUNK_BYTES, MAX_SITEMAP_BYTES + 1 - produced))
        except zlib.error:
            return
        pending = inflater.unconsumed_tail
        produced += len(chunk)
        if not chunk:
            return
        yield chunk


def _name(tag: str) -> tuple[str, str]:
    """(namespace, local name) of an ElementTree tag ``{ns}local``."""
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        return namespace, local
    return "", tag


class _Reader:
    """Collects the ``loc`` of each entry from the parser's events, tracking the path from the root."""

    def __init__(self) -> None:
        self.path: list[str] = []  # local names from the root down; "" for elements outside the sitemap namespace
        self.root: ET.Element | None = None
        self.kind = ""  # the root: urlset or sitemapindex
        self.locs: list[str] = []

    def read(self, parser: ET.XMLPullParser[ET.Element]) -> bool:
        """Take the parser's start and end events; False once the file holds more URLs than the protocol allows."""
        for item in parser.read_events():
            event, element = item[0], item[-1]
            assert isinstance(element, ET.Element)  # only start/end events are asked for: (event, element)
            namespace, local = _name(element.tag)
            if event == "start":
                self.path.append(local if namespace in _NAMESPACES else "")
                if self.root is None:
                    self.root, self.kind = element, self.path[0]
                continue
            if self.path[1:] == [_ENTRIES.get(self.kind), "loc"] and element.text and element.text.strip():
                if len(self.locs) == MAX_SITEMAP_URLS:
                    return False
                self.locs.append(element.text.strip())
            self.path.pop()
            if len(self.path) == 1 and self.root is not None:
                self.root.clear()  # entries already read: memory stays one entry deep whatever the file's size
        return True


def parse_sitemap(body: bytes) -> Sitemap:
    """URLs in a ``<urlset>`` (pages) or a ``<sitemapindex>`` (more sitemaps); garbage gives nothing."""
    parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
    reader = _Reader()
    size = 0
    truncated = False
    try:
        for chunk in _inflated(body):
            size += len(chunk)
            truncated = size > MAX_SITEMAP_BYTES
            parser.feed(chunk[: len(chunk) - max(0, size - MAX_SITEMAP_BYTES)])
            if not reader.read(parser):
                truncated = True
            if truncated:
                break
        else:
            parser.close()
            reader.read(parser)
    except ET.ParseError:  # garbage, or a file cut short: what was read before the fault counts
        truncated = bool(reader.locs)
    if reader.kind == "sitemapindex":
        return Sitemap([], reader.locs, truncated)
    if reader.kind == "urlset":
        return Sitemap(reader.locs, [], truncated)
    return Sitemap([], [], truncated)
