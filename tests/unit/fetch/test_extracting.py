"""Metadata extraction on tricky HTML: encodings, duplicates, relative URLs, missing structure."""

from __future__ import annotations

import codecs

import pytest

from kubecrawl.fetch.extracting import PageMeta, decode_body, detect_charset, extract_metadata, robots_directives

BASE = "https://example.com/section/page.html"


def extract(body: bytes | str, content_type: str | None = "text/html", base_url: str = BASE) -> PageMeta:
    raw = body.encode() if isinstance(body, str) else body
    return extract_metadata(raw, content_type=content_type, base_url=base_url)


# --- encodings ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/html; charset=no-such-charset", "text/html; charset=", 'text/html; charset=""'],
)
def test_unknown_header_charset_label_is_ignored_and_utf8_is_used(content_type: str) -> None:
    meta = extract("<title>café</title>".encode(), content_type)
    assert meta.title == "café"
    assert meta.charset == "utf-8"


def test_unknown_meta_charset_label_is_ignored_and_utf8_is_used() -> None:
    meta = extract("<meta charset='x-klingon'><title>café</title>".encode())
    assert meta.title == "café"
    assert meta.charset == "utf-8"


def test_unknown_header_charset_falls_back_to_the_meta_declaration() -> None:
    body = b"<meta charset='windows-1251'><title>\xcf\xf0\xe8\xe2\xe5\xf2</title>"
    meta = extract(body, "text/html; charset=bogus")
    assert meta.title == "Привет"
    assert meta.charset == "cp1251"


def test_charset_declared_only_in_meta_charset_is_used() -> None:
    meta = extract(b"<html><head><meta charset='windows-1251'><title>\xcf\xf0\xe8\xe2\xe5\xf2</title></head></html>")
    assert meta.title == "Привет"


def test_charset_declared_only_in_meta_http_equiv_is_used() -> None:
    body = (
        b"<html><head><meta http-equiv='Content-Type' content='text/html; charset=koi8-r'>"
        b"<title>\xf0\xd2\xc9\xd7\xc5\xd4</title></head></html>"
    )
    assert extract(body).title == "Привет"


def test_meta_charset_after_a_long_comment_is_still_found() -> None:
    body = b"<!--" + b"x" * 2000 + b"--><meta charset='windows-1251'><title>\xcf\xf0\xe8\xe2\xe5\xf2</title>"
    assert extract(body).title == "Привет"


def test_header_charset_overrides_the_meta_declaration() -> None:
    body = "<meta charset='windows-1251'><title>café</title>".encode()
    meta = extract(body, "text/html; charset=UTF-8")
    assert meta.title == "café"
    assert meta.charset == "utf-8"


def test_quoted_header_charset_is_understood() -> None:
    assert extract(b"<title>caf\xe9</title>", 'text/html; charset="windows-1252"').title == "café"


def test_latin1_bytes_without_any_declaration_fall_back_to_windows_1252() -> None:
    meta = extract(b"<title>caf\xe9 \x93quoted\x94 \x96 dash</title>")
    assert meta.title == "café “quoted” – dash"
    assert meta.charset == "cp1252"


def test_iso_8859_1_label_decodes_as_windows_1252_like_browsers() -> None:
    meta = extract(b"<meta charset='iso-8859-1'><title>\x93smart\x94</title>")
    assert meta.title == "“smart”"
    assert meta.charset == "cp1252"


def test_utf16_declared_in_meta_of_an_ascii_compatible_page_is_read_as_utf8() -> None:
    meta = extract("<meta charset='utf-16'><title>café</title>".encode())
    assert meta.title == "café"
    assert meta.charset == "utf-8"


def test_utf7_label_is_not_a_web_encoding_and_is_ignored() -> None:
    assert detect_charset(b"<meta charset='utf-7'>", "text/html; charset=utf-7") is None


def test_utf8_bom_wins_over_a_conflicting_header_charset() -> None:
    meta = extract(codecs.BOM_UTF8 + "<title>café</title>".encode(), "text/html; charset=iso-8859-1")
    assert meta.title == "café"
    assert meta.charset == "utf-8"


@pytest.mark.parametrize(("codec", "expected"), [("utf-16-le", "utf-16-le"), ("utf-16-be", "utf-16-be")])
def test_utf16_bom_selects_utf16_and_is_stripped(codec: str, expected: str) -> None:
    text, charset = decode_body(("\ufeff<title>café</title>").encode(codec), "text/html")
    assert charset == expected
    assert text == "<title>café</title>"


def test_utf8_bom_is_not_part_of_the_decoded_text() -> None:
    text, _ = decode_body(codecs.BOM_UTF8 + b"<p>x</p>", None)
    assert text == "<p>x</p>"


def test_wrong_declared_charset_still_yields_text_with_replacement_characters() -> None:
    text, charset = decode_body(b"<title>\xff\xfe\xfd</title>", "text/html; charset=utf-8")
    assert charset == "utf-8"
    assert "\ufffd" in text


# --- duplicates, structure, whitespace ----------------------------------------------------------------------


def test_first_of_duplicate_opengraph_and_twitter_tags_wins() -> None:
    meta = extract(
        "<head><meta property='og:title' content='first'><meta property='og:title' content='second'>"
        "<meta name='twitter:title' content='t1'><meta name='twitter:title' content='t2'>"
        "<meta property='OG:Image' content='/a.png'></head>"
    )
    assert meta.opengraph == {"og:title": "first", "og:image": "/a.png"}
    assert meta.twitter == {"twitter:title": "t1"}


def test_empty_duplicate_og_tag_does_not_hide_a_later_filled_one() -> None:
    meta = extract("<meta property='og:title' content='  '><meta property='og:title' content='real'>")
    assert meta.opengraph == {"og:title": "real"}


def test_first_description_wins_over_later_ones() -> None:
    meta = extract("<meta name='description' content='one'><meta name='Description' content='two'>")
    assert meta.description == "one"


def test_page_without_head_still_yields_title_language_and_links() -> None:
    meta = extract("<html lang='fr'><title>Sans tête</title><body><a href='/x'>x</a></body></html>")
    assert meta.title == "Sans tête"
    assert meta.language == "fr"
    assert meta.links == ["https://example.com/x"]


def test_fragment_without_html_or_head_is_parsed() -> None:
    meta = extract("<p>just a paragraph <a href='next.html'>next</a></p>")
    assert meta.is_html is True
    assert meta.title is None
    assert meta.links == ["https://example.com/section/next.html"]


def test_title_whitespace_is_collapsed_and_trimmed() -> None:
    assert extract("<title>\n   Hello \t\n  wide\u00a0  world \r\n</title>").title == "Hello wide world"


def test_blank_title_is_none() -> None:
    assert extract("<title>  \n </title>").title is None


def test_language_falls_back_to_content_language_meta() -> None:
    assert extract("<head><meta http-equiv='Content-Language' content='pt-BR'></head>").language == "pt-BR"


# --- canonical and base ---------------------------------------------------------------------------------------


def test_relative_canonical_is_resolved_against_the_final_url() -> None:
    meta = extract("<link rel='canonical' href='../other/page'>", base_url="https://example.com/a/b/final")
    assert meta.canonical == "https://example.com/a/other/page"


def test_relative_canonical_is_resolved_against_base_href() -> None:
    meta = extract(
        "<head><base href='https://cdn.example.org/root/'><link rel='canonical' href='page'></head>",
        base_url="https://example.com/a/b",
    )
    assert meta.canonical == "https://cdn.example.org/root/page"


def test_relative_base_href_is_itself_resolved_against_the_final_url() -> None:
    meta = extract("<base href='/docs/'><link rel='canonical' href='intro'>", base_url="https://example.com/x/y")
    assert meta.canonical == "https://example.com/docs/intro"


def test_canonical_among_several_rel_tokens_is_found() -> None:
    meta = extract("<link rel='alternate'  href='/alt'><link rel='Canonical nofollow' href='/canon'>")
    assert meta.canonical == "https://example.com/canon"


def test_javascript_canonical_is_dropped() -> None:
    assert extract("<link rel='canonical' href='javascript:alert(1)'>").canonical is None


# --- non-HTML ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "text/plain; charset=utf-8", "image/png", "application/pdf", "text/css"],
)
def test_non_html_content_types_give_is_html_false_and_nothing_else(content_type: str) -> None:
    meta = extract("<html><head><title>looks like html</title></head></html>", content_type)
    assert meta.is_html is False
    assert meta.title is None
    assert meta.links == []


@pytest.mark.parametrize("content_type", ["TEXT/HTML", "text/html;charset=utf-8", "application/xhtml+xml"])
def test_html_content_types_are_recognised_case_insensitively(content_type: str) -> None:
    assert extract("<title>t</title>", content_type).is_html is True


def test_missing_content_type_is_sniffed_from_the_doctype() -> None:
    assert extract("  <!DOCTYPE html><title>t</title>", None).title == "t"
    assert extract('{"json": true}', None).is_html is False


# --- links ------------------------------------------------------------------------------------------------------


def test_links_exclude_nofollow_mailto_javascript_tel_and_fragments() -> None:
    meta = extract(
        "<a href='/keep'>k</a>"
        "<a href='/nf' rel='nofollow'>n</a>"
        "<a href='/nf2' rel='noopener NoFollow'>n</a>"
        "<a href='mailto:someone@example.com'>m</a>"
        "<a href='JavaScript:void(0)'>j</a>"
        "<a href='tel:+123'>t</a>"
        "<a href='#top'>f</a>"
        "<a>no href</a>"
        "<area href='map.html'>"
        "<a href='https://other.example/abs'>a</a>"
    )
    assert meta.links == [
        "https://example.com/keep",
        "https://example.com/section/map.html",
        "https://other.example/abs",
    ]


def test_links_keep_document_order_and_duplicates() -> None:
    meta = extract("<a href='/b'></a><a href='/a'></a><a href='/b'></a>")
    assert meta.links == ["https://example.com/b", "https://example.com/a", "https://example.com/b"]


def test_links_resolve_against_base_href() -> None:
    assert extract("<base href='/root/'><a href='child'></a>").links == ["https://example.com/root/child"]


# --- robots -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meta_robots", "x_robots_tag", "expected"),
    [
        (None, None, (False, False)),
        ("index, follow", None, (False, False)),
        ("noindex", None, (True, False)),
        ("NOFOLLOW", None, (False, True)),
        ("none", None, (True, True)),
        (None, "none", (True, True)),
        (None, "noindex, nofollow", (True, True)),
        ("index", "googlebot: noindex", (True, False)),
        ("noindex", "nofollow", (True, True)),
        (None, "unavailable_after: 25 Jun 2010 15:00:00 PST", (False, False)),
        ("max-snippet:50, noindex", None, (True, False)),
    ],
)
def test_robots_directives_combine_meta_and_x_robots_tag(
    meta_robots: str | None, x_robots_tag: str | None, expected: tuple[bool, bool]
) -> None:
    assert robots_directives(meta_robots, x_robots_tag) == expected


def test_robots_meta_content_is_reported() -> None:
    assert extract("<meta name='robots' content='noindex,  nofollow'>").robots == "noindex, nofollow"


def test_the_first_content_language_declaration_gives_the_language_when_html_has_no_lang() -> None:
    meta = extract(
        "<html><head><meta http-equiv='Content-Language' content=' de-AT '>"
        "<meta http-equiv='content-language' content='fr'></head></html>"
    )
    assert meta.language == "de-AT"
    assert extract("<html lang='en'><meta http-equiv='content-language' content='fr'></html>").language == "en"


def test_base_link_and_canonical_need_their_href() -> None:
    meta = extract(
        "<base target='_blank'><base href='/b/'>"
        "<link rel='canonical'><link rel='alternate' href='/alt'><link rel='Canonical' href='page'>"
        "<a href='x'></a>"
    )
    assert meta.canonical == "https://example.com/b/page"
    assert meta.links == ["https://example.com/b/x"]
