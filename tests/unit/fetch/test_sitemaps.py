"""Sitemaps per sitemaps.org: which ``loc`` is a page, indexes, gzip, the 50,000-URL and 50 MiB limits."""

from __future__ import annotations

import gzip
import zlib

from kubecrawl.fetch.sitemaps import MAX_SITEMAP_BYTES, MAX_SITEMAP_URLS, parse_sitemap

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'

# Google's documented image and video sitemap extensions, with an hreflang alternate.
EXTENDED = f"""<?xml version="1.0" encoding="UTF-8"?>
<urlset {NS}
        xmlns:image="http://www.google.com/schemas/sitemap-image/1.1"
        xmlns:video="http://www.google.com/schemas/sitemap-video/1.1"
        xmlns:xhtml="http://www.w3.org/1999/xhtml">
  <url>
    <loc>https://example.com/gallery</loc>
    <lastmod>2026-11-01</lastmod>
    <xhtml:link rel="alternate" hreflang="de" href="https://example.com/de/gallery"/>
    <image:image><image:loc>https://example.com/photo.jpg</image:loc></image:image>
  </url>
  <url>
    <loc> https://example.com/videos/grilling </loc>
    <video:video>
      <video:thumbnail_loc>https://example.com/thumbs/1.jpg</video:thumbnail_loc>
      <video:title>Grilling steaks</video:title>
      <video:content_loc>https://streams.example.com/video1.mp4</video:content_loc>
      <video:player_loc>https://example.com/player?video=1</video:player_loc>
    </video:video>
  </url>
</urlset>
"""


def urlset(count: int, *, start: int = 0, ns: str = NS) -> str:
    entries = "".join(f"<url><loc>https://example.com/p/{i}</loc></url>" for i in range(start, start + count))
    return f"<urlset {ns}>{entries}</urlset>"


def test_only_url_loc_are_pages_not_image_or_video_locations() -> None:
    sitemap = parse_sitemap(EXTENDED.encode())
    assert sitemap.pages == ["https://example.com/gallery", "https://example.com/videos/grilling"]
    assert sitemap.sitemaps == []
    assert not sitemap.truncated


def test_a_sitemap_index_names_sitemaps_not_pages() -> None:
    index = (
        f"<sitemapindex {NS}><sitemap><loc>https://example.com/s1.xml.gz</loc><lastmod>2026-11-01</lastmod>"
        "</sitemap><sitemap><loc>https://example.com/s2.xml</loc></sitemap></sitemapindex>"
    )
    sitemap = parse_sitemap(index.encode())
    assert sitemap.sitemaps == ["https://example.com/s1.xml.gz", "https://example.com/s2.xml"]
    assert sitemap.pages == []


def test_a_sitemap_without_the_namespace_is_read_like_one_with_it() -> None:
    assert parse_sitemap(urlset(2, ns="").encode()).pages == ["https://example.com/p/0", "https://example.com/p/1"]


def test_loc_elements_elsewhere_or_in_other_namespaces_are_not_pages() -> None:
    body = (
        f'<urlset {NS} xmlns:x="urn:other"><loc>https://example.com/stray</loc>'
        "<url><x:loc>https://example.com/foreign</x:loc><loc>https://example.com/page</loc></url>"
        "<url><sitemap><loc>https://example.com/nested</loc></sitemap></url></urlset>"
    )
    assert parse_sitemap(body.encode()).pages == ["https://example.com/page"]


def test_a_gzip_sitemap_is_inflated() -> None:
    assert parse_sitemap(gzip.compress(urlset(3).encode())).pages == [f"https://example.com/p/{i}" for i in range(3)]


def test_only_the_first_50000_urls_are_taken() -> None:
    sitemap = parse_sitemap(gzip.compress(urlset(MAX_SITEMAP_URLS + 5).encode()))
    assert len(sitemap.pages) == MAX_SITEMAP_URLS
    assert sitemap.pages[-1] == f"https://example.com/p/{MAX_SITEMAP_URLS - 1}"
    assert sitemap.truncated


def test_a_gzip_bomb_is_inflated_no_further_than_50_mib() -> None:
    # 50 MiB + 1 MiB of whitespace between two entries, 52 KiB compressed: the entry after it is past the cut
    deflate = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    parts = [deflate.compress(f"<urlset {NS}><url><loc>https://example.com/before</loc></url>".encode())]
    padding = b" " * (1024 * 1024)
    parts += [deflate.compress(padding) for _ in range(MAX_SITEMAP_BYTES // len(padding) + 1)]
    parts += [deflate.compress(b"<url><loc>https://example.com/after</loc></url></urlset>"), deflate.flush()]
    bomb = b"".join(parts)
    assert len(bomb) < MAX_SITEMAP_BYTES // 100
    sitemap = parse_sitemap(bomb)
    assert sitemap.pages == ["https://example.com/before"]
    assert sitemap.truncated


def test_a_plain_sitemap_over_50_mib_is_cut_there() -> None:
    head = f"<urlset {NS}><url><loc>https://example.com/before</loc></url>".encode()
    body = head + b" " * MAX_SITEMAP_BYTES + b"<url><loc>https://example.com/after</loc></url></urlset>"
    sitemap = parse_sitemap(body)
    assert sitemap.pages == ["https://example.com/before"]
    assert sitemap.truncated


def test_a_file_cut_short_keeps_the_urls_before_the_cut() -> None:
    body = gzip.compress(urlset(100).encode())[:-200]
    sitemap = parse_sitemap(body)
    assert 0 < len(sitemap.pages) < 100
    assert sitemap.pages[0] == "https://example.com/p/0"
    assert sitemap.truncated


def test_garbage_gives_nothing() -> None:
    for body in (b"", b"not xml at all", b"\x1f\x8bnot gzip", b"<html><body><loc>x</loc></body></html>"):
        sitemap = parse_sitemap(body)
        assert (sitemap.pages, sitemap.sitemaps) == ([], [])


def test_entity_expansion_bombs_are_refused() -> None:
    entities = '<!ENTITY a "aaaaaaaaaa">' + "".join(
        f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8)
    )
    body = f'<?xml version="1.0"?><!DOCTYPE urlset [{entities}]><urlset><url><loc>&i;</loc></url></urlset>'
    assert parse_sitemap(body.encode()).pages == []
