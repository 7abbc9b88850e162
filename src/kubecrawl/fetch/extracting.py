"""Page metadata extraction (pure): bytes + content type → title, description, links, OpenGraph, …

HTML is parsed with selectolax's lexbor backend (``selectolax.lexbor``; the old ``selectolax.parser`` module is
gone in selectolax 1.x). The text encoding is chosen the way browsers do, in this order: a byte-order mark, the
``charset`` of the Content-Type header, a ``<meta charset>`` / ``http-equiv`` declaration near the top of the
document, then UTF-8 — and if the bytes are not valid UTF-8, windows-1252 (the web's historical default). An
unknown charset label is ignored rather than trusted, and labels are read as the WHATWG Encoding Standard
reads them (``iso-8859-1`` means windows-1252; ``<meta charset=utf-16>`` means UTF-8). The first of duplicated
OpenGraph/Twitter properties wins, as Facebook's and Twitter's own parsers do.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from selectolax.lexbor import LexborHTMLParser, LexborNode

# The HTML spec's encoding prescan looks at the first 1024 bytes; real pages put long comments and scripts
# before <meta charset>, so look a little further.
_PRESCAN_BYTES = 4096
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_\-:.]+)""", re.IGNORECASE)
_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?([^"';\s]+)""", re.IGNORECASE)
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
_HTML_TYPES = ("text/html", "application/xhtml+xml")
# The WHATWG Encoding Standard decodes these labels with a superset: a page that says iso-8859-1 (or ascii) is
# decoded as windows-1252 by every browser, so its 0x80-0x9F bytes are curly quotes and dashes, not C1 controls.
_WHATWG_SUPERSETS = {
    "ascii": "cp1252",
    "iso8859-1": "cp1252",
    "iso8859-9": "cp1254",
    "iso8859-11": "cp874",
    "tis-620": "cp874",
    "gb2312": "gbk",
    "euc_kr": "cp949",
    "shift_jis": "cp932",
}
# Python knows these labels, browsers do not (UTF-7 was an XSS vector); a page declaring one is decoded as if it
# had declared nothing.
_NOT_WEB_ENCODINGS = frozenset({"utf-7", "utf-32", "utf-32-le", "utf-32-be"})
# A <meta> found by an ASCII scan proves the bytes are ASCII-compatible, so a UTF-16 declaration there is wrong;
# the HTML spec's prescan reads it as UTF-8.
_UTF16 = frozenset({"utf-16", "utf-16-le", "utf-16-be"})
# Link targets that are not pages.
_NON_PAGE_SCHEMES = ("mailto:", "javascript:", "tel:", "data:", "ftp:", "#")


@dataclass(slots=True)
class PageMeta:
    is_html: bool
    charset: str | None = None
    title: str | None = None
    description: str | None = None
    canonical: str | None = None
    language: str | None = None
    robots: str | None = None
    opengraph: dict[str, str] = field(default_factory=dict)
    twitter: dict[str, str] = field(default_factory=dict)
    # Absolute URLs of followable links (``rel=nofollow`` anchors excluded), in document order, with duplicates.
    links: list[str] = field(default_factory=list)


def _known_codec(label: str | None) -> str | None:
    """The codec a browser would use for a charset label, or ``None`` for a label browsers ignore."""
    if not label:
        return None
    try:
        name = codecs.lookup(label.strip().lower()).name
    except LookupError:
        return None
    if name in _NOT_WEB_ENCODINGS:
        return None
    return _WHATWG_SUPERSETS.get(name, name)


def detect_charset(body: bytes, content_type: str | None) -> str | None:
    """The declared encoding (BOM, header, meta), or ``None`` when nothing usable is declared."""
    for bom, name in _BOMS:
        if body.startswith(bom):
            return name
    header = _HEADER_CHARSET.search(content_type or "")
    codec = _known_codec(header.group(1)) if header else None
    if codec:
        return codec
    meta = _META_CHARSET.search(body[:_PRESCAN_BYTES])
    codec = _known_codec(meta.group(1).decode("ascii", errors="ignore")) if meta else None
    return "utf-8" if codec in _UTF16 else codec


def decode_body(body: bytes, content_type: str | None) -> tuple[str, str]:
    """Decode a response body; returns ``(text, charset used)``. Never raises."""
    declared = detect_charset(body, content_type)
    if declared:
        # A declared-but-wrong charset still yields text: replacement characters beat losing the page.
        return body.decode(declared, errors="replace").removeprefix("\ufeff"), declared
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return body.decode("cp1252", errors="replace"), "cp1252"


def is_html_type(content_type: str | None, body: bytes) -> bool:
    if content_type:
        return content_type.split(";", 1)[0].strip().lower() in _HTML_TYPES
    head = body[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = " ".join(value.split())
    return value or None


def _origin(base: str) -> str | None:
    try:
        parts = urlsplit(base)
    except ValueError:
        return None
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def _absolute(base: str, href: str | None, origin: str | None = None) -> str | None:
    href = _clean(href)
    if not href or href.lower().startswith(_NON_PAGE_SCHEMES):
        return None
    # Most links are root-relative ("/docs/x"): joining them is the origin plus the href, without urljoin's
    # general algorithm (a quarter of extraction's time on link-heavy pages). Dot segments take the slow path.
    if origin is not None and href[0] == "/" and not href.startswith("//") and "/." not in href and "\\" not in href:
        return origin + href
    try:
        return urljoin(base, href)
    except ValueError:
        return None


def extract_metadata(body: bytes, *, content_type: str | None, base_url: str) -> PageMeta:
    """Metadata of one response body; a non-HTML body gives ``is_html=False`` and nothing else."""
    if not is_html_type(content_type, body):
        return PageMeta(is_html=False, charset=detect_charset(body, content_type))
    text, charset = decode_body(body, content_type)
    tree = LexborHTMLParser(text)
    meta = PageMeta(is_html=True, charset=charset)
    # Elements are found by tag name (``tags``), not CSS selectors: the first ``css`` call on a parsed page sets up
    # lexbor's CSS engine for that page: on the bench's pages, 80 µs more than a 63 µs parse, against 12 µs by tag
    # name (docs/crawls.md, "Kept: prebuilt statements and extraction by tag name").
    base_node = _first(tree, "base", "href")
    base = _absolute(base_url, base_node.attributes.get("href")) if base_node else None
    base = base or base_url
    origin = _origin(base)

    title = _first(tree, "title")
    meta.title = _clean(title.text()) if title else None
    html = _first(tree, "html")
    meta.language = _clean(html.attributes.get("lang")) if html else None

    _read_meta_tags(tree, meta)
    for node in tree.tags("link"):
        attributes = node.attributes
        if "href" in attributes and "canonical" in (attributes.get("rel") or "").lower().split():
            meta.canonical = _absolute(base, attributes.get("href"), origin)
            break

    for node in _anchors(tree):
        attributes = node.attributes
        if "href" not in attributes or "nofollow" in (attributes.get("rel") or "").lower().split():
            continue
        link = _absolute(base, attributes.get("href"), origin)
        if link is not None:
            meta.links.append(link)
    return meta


def _first(tree: LexborHTMLParser, tag: str, attribute: str | None = None) -> LexborNode | None:
    """The first ``tag`` element in document order (that has ``attribute``, if one is named)."""
    for node in tree.tags(tag):
        if attribute is None or attribute in node.attributes:
            return node
    return None


def _anchors(tree: LexborHTMLParser) -> list[LexborNode]:
    """The ``a`` and ``area`` elements in document order (image maps are rare: then, and only then, a selector)."""
    if not tree.tags("area"):
        return tree.tags("a")
    return tree.css("a, area")


def _read_meta_tags(tree: LexborHTMLParser, meta: PageMeta) -> None:
    content_language: LexborNode | None = None  # the first <meta http-equiv="content-language">
    for node in tree.tags("meta"):
        attrs = node.attributes
        if content_language is None and (attrs.get("http-equiv") or "").lower() == "content-language":
            content_language = node
        key = (attrs.get("property") or attrs.get("name") or "").strip().lower()
        content = _clean(attrs.get("content"))
        if not key or content is None:
            continue
        if key == "description" and meta.description is None:
            meta.description = content
        elif key == "robots" and meta.robots is None:
            meta.robots = content
        elif key.startswith("og:"):
            meta.opengraph.setdefault(key, content)
        elif key.startswith("twitter:"):
            meta.twitter.setdefault(key, content)
    if meta.language is None and content_language is not None:
        meta.language = _clean(content_language.attributes.get("content"))


def robots_directives(meta_robots: str | None, x_robots_tag: str | None) -> tuple[bool, bool]:
    """``(noindex, nofollow)`` from the robots meta tag and the ``X-Robots-Tag`` header.

    ``none`` means both. Header values may name a user agent (``googlebot: noindex``); we honour every
    directive regardless of the agent named, which errs on the polite side.
    """
    tokens: set[str] = set()
    for value in (meta_robots, x_robots_tag):
        for part in (value or "").lower().replace(";", ",").split(","):
            token = part.rsplit(":", 1)[-1].strip()
            if token:
                tokens.add(token)
    none = "none" in tokens
    return none or "noindex" in tokens, none or "nofollow" in tokens
