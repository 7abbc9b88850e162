from __future__ import annotations

import ipaddress

import pytest

from kubecrawl.core.errors import BlockedTarget, InvalidUrl
from kubecrawl.core.urls import TargetPolicy, is_blocked_address, normalise_url, normalise_url_and_host, url_host


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("HTTP://Example.COM", "http://example.com/"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("http://example.com:80/a", "http://example.com/a"),
        ("http://example.com:8080/a", "http://example.com:8080/a"),
        ("http://example.com/a/./b/../c", "http://example.com/a/c"),
        ("http://example.com/a/b/", "http://example.com/a/b/"),
        ("http://example.com/a#frag", "http://example.com/a"),
        ("http://example.com/?b=2&a=1", "http://example.com/?b=2&a=1"),
        ("http://bücher.example/", "http://xn--bcher-kva.example/"),
        ("http://[::1]:8080/", "http://[::1]:8080/"),
        ("  https://example.com/x  ", "https://example.com/x"),
        ("http://example.com.", "http://example.com/"),
    ],
)
def test_normalise_url_gives_the_canonical_form(raw: str, expected: str) -> None:
    assert normalise_url(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "HTTP://Example.COM",
        "http://example.com:8080/a/./b/../c#x",
        "http://bücher.example/",
        "http://[::1]:8080/",
        "http://0x7f.1/",
        "http://EXAMPLE.com./a?q=1",
        "https://xn--bcher-kva.example:443/",
    ],
)
def test_normalise_url_and_host_give_the_normal_url_and_the_host_parsed_from_it(raw: str) -> None:
    normal, host = normalise_url_and_host(raw)
    assert (normal, host) == (normalise_url(raw), url_host(normalise_url(raw)))


@pytest.mark.parametrize(
    ("host", "ascii_host"),
    [
        # UTS 46 non-transitional, as browsers (WHATWG URL) encode hosts; IDNA 2003 made the first two other hosts
        ("faß.de", "xn--fa-hia.de"),
        ("ß.example", "xn--zca.example"),
        ("Bücher.Example", "xn--bcher-kva.example"),
        ("日本.jp", "xn--wgv71a.jp"),
        ("café.fr", "xn--caf-dma.fr"),
        ("ＥＸＡＭＰＬＥ。com", "example.com"),  # full-width letters and the ideographic full stop are mapped
        ("ﬀ.example", "ff.example"),
        ("XN--FA-HIA.de", "xn--fa-hia.de"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("my_host.example", "my_host.example"),  # WHATWG applies no STD3 rules: intranet names with '_' stay
    ],
)
def test_hosts_are_encoded_per_uts46_non_transitional(host: str, ascii_host: str) -> None:
    assert normalise_url(f"https://{host}/p") == f"https://{ascii_host}/p"


@pytest.mark.parametrize(
    "host",
    [
        "xn--zz.example",  # not Punycode of anything valid
        "xn--fa-hia-.de",
        "b\u200cc.example",  # a zero-width non-joiner outside the context UTS 46 allows it in
        "\u0300a.example",  # a label may not start with a combining mark
        "\u0627b.example",  # a right-to-left label may not hold left-to-right letters
        "a..example",
    ],
)
def test_invalid_international_hosts_are_refused_as_invalid_urls(host: str) -> None:
    with pytest.raises(InvalidUrl) as info:
        normalise_url(f"https://{host}/")
    assert info.value.code == "invalid_url"
    assert "invalid host name" in info.value.detail


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("", "empty_url"),
        ("ftp://x.org/", "unsupported_scheme"),
        ("mailto:a@b.c", "unsupported_scheme"),
        ("http:///path", "invalid_url"),
        ("http://exa mple.com", "invalid_url"),
        ("http://example.com:99999/", "invalid_url"),
        ("http://" + "a" * 70 + ".com/", "invalid_url"),
        ("http://example.com/" + "x" * 9000, "url_too_long"),
        ("http://example.com/" + "x" * 2030, "url_too_long"),
        ("http://example.com/" + "é" * 1020, "url_too_long"),  # 2,040 characters, 2,059 bytes of UTF-8
        ("http://example.com/a\x00b", "invalid_url"),
        ("http://example.com/a\x7fb", "invalid_url"),
        ("http://example.com/a\x85b", "invalid_url"),
        ("http://u:p@example.com/", "url_userinfo"),
        ("http://u@example.com/", "url_userinfo"),
        ("http://@example.com/", "url_userinfo"),
        ("http://1.2.3.4.5/", "invalid_url"),
        ("http://256.1/", "invalid_url"),
        ("http://1.256.0.0/", "invalid_url"),
        ("http://08/", "invalid_url"),
        ("http://example.0x/", "invalid_url"),
        ("http://4294967296/", "invalid_url"),
        ("http://０x7f.1/", "invalid_url"),  # a full-width label before a numeric one
    ],
)
def test_normalise_url_refuses_bad_input_with_a_code(raw: str, code: str) -> None:
    with pytest.raises(InvalidUrl) as info:
        normalise_url(raw)
    assert info.value.code == code


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.0.1",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "fc00::1",
        "0.0.0.0",
        "100.64.0.1",
        "::ffff:10.0.0.1",
        "fd00:ec2::254",
        "224.0.0.1",
    ],
)
def test_private_loopback_link_local_and_metadata_addresses_are_blocked(address: str) -> None:
    assert is_blocked_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_not_blocked(address: str) -> None:
    assert not is_blocked_address(address)


def test_literal_check_refuses_localhost_and_private_ips_unless_allowed() -> None:
    for url in ("http://localhost/", "http://127.0.0.1/", "http://[::1]/", "http://10.1.2.3/"):
        with pytest.raises(BlockedTarget):
            TargetPolicy().check_literal(url)
        TargetPolicy(allow_private=True).check_literal(url)
    TargetPolicy().check_literal("http://example.com/")


def test_allowed_networks_open_only_the_named_private_range() -> None:
    policy = TargetPolicy(allowed_networks=(ipaddress.ip_network("10.20.0.0/16"),))
    policy.check_literal("http://10.20.1.2/")
    assert not policy.refuses("10.20.255.1")
    assert policy.refuses("10.21.0.1")
    assert policy.refuses("169.254.169.254")
    with pytest.raises(BlockedTarget):
        policy.check_literal("http://127.0.0.1/")


def test_literal_verdicts_are_remembered_per_policy_not_shared_between_policies() -> None:
    opened = TargetPolicy(allowed_networks=(ipaddress.ip_network("10.0.0.0/8"),))
    for _ in range(2):  # the second round is answered from the memo, and must answer the same
        opened.check_literal("http://10.1.2.3/a")
        with pytest.raises(BlockedTarget):
            TargetPolicy().check_literal("http://10.1.2.3/b")
        with pytest.raises(BlockedTarget):
            opened.check_literal("http://a.localhost/")
        TargetPolicy().check_literal("http://93.184.216.34/")


def test_hosts_too_long_for_the_memo_normalise_the_same() -> None:
    host = ".".join(["Label"] * 60)  # 359 characters: past what any DNS name can be
    assert normalise_url(f"http://{host}/x") == f"http://{host.lower()}/x"
    with pytest.raises(InvalidUrl):
        normalise_url(f"http://{host}.{'a' * 64}/")


def test_a_url_of_exactly_the_limit_is_accepted() -> None:
    url = "http://example.com/" + "x" * (2048 - len("http://example.com/"))
    assert normalise_url(url) == url


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("http://2130706433/", "http://127.0.0.1/"),
        ("http://127.1/", "http://127.0.0.1/"),
        ("http://127.0.1/", "http://127.0.0.1/"),
        ("http://0/", "http://0.0.0.0/"),
        ("http://017700000001/", "http://127.0.0.1/"),
        ("http://0177.0.0.01/", "http://127.0.0.1/"),
        ("http://0x7f000001/", "http://127.0.0.1/"),
        ("http://0X7F.0x0.0.0x1/", "http://127.0.0.1/"),
        ("http://0x7f.1:8080/a", "http://127.0.0.1:8080/a"),
        ("http://2852039166/", "http://169.254.169.254/"),
        ("http://0xa9.0xfe.0xa9.0xfe/", "http://169.254.169.254/"),
        ("http://127.0.0.1./", "http://127.0.0.1/"),
        ("http://4294967295/", "http://255.255.255.255/"),
        ("http://1.2.3.com/", "http://1.2.3.com/"),  # a name: its last label is not a number
        ("http://１２７．０．０．１/", "http://127.0.0.1/"),  # full-width, mapped by IDNA
    ],
)
def test_every_ipv4_spelling_is_rewritten_as_its_dotted_quad(raw: str, expected: str) -> None:
    assert normalise_url(raw) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",
        "http://127.1/",
        "http://0/",
        "http://017700000001/",
        "http://0x7f.1/",
        "http://2852039166/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[64:ff9b::7f00:1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:7f00:1::]/",
        "http://[2002:a9fe:a9fe::1]/",
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo
        "http://[::127.0.0.1]/",  # IPv4-compatible (deprecated)
        "http://[64:ff9b:1::8.8.8.8]/",
    ],
)
def test_numeric_and_ipv6_embedded_forms_of_private_addresses_are_refused(url: str) -> None:
    with pytest.raises(BlockedTarget):
        TargetPolicy().check_literal(url)


@pytest.mark.parametrize(
    "address",
    [
        "192.0.0.9",  # "globally reachable" per IANA, inside 192.0.0.0/24 all the same
        "192.0.0.170",
        "198.18.0.1",
        "198.19.255.255",
        "100.64.0.1",
        "100.100.100.200",
        "192.0.2.1",
        "203.0.113.9",
        "192.88.99.1",
        "240.0.0.1",
        "255.255.255.255",
        "2001:db8::1",
        "100::1",
    ],
)
def test_reserved_shared_benchmark_and_documentation_ranges_are_refused(address: str) -> None:
    assert is_blocked_address(address)


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8"])
def test_ipv6_wrappers_of_public_ipv4_addresses_are_allowed(address: str) -> None:
    assert not is_blocked_address(address)


def test_an_allowed_network_also_opens_its_addresses_mapped_into_ipv6() -> None:
    policy = TargetPolicy(allowed_networks=(ipaddress.ip_network("10.20.0.0/16"),))
    assert not policy.refuses("::ffff:10.20.0.1")
    assert policy.refuses("::ffff:10.21.0.1")


def test_rejected_urls_do_not_grow_the_memo() -> None:
    from kubecrawl.core import urls

    before = urls._memo_normalise.cache_info().currsize
    for i in range(200):
        with pytest.raises(InvalidUrl):
            normalise_url(f"http://example.com/{i}/" + "x" * 3000)
        normalise_url(f"http://example.com/{i}/" + "y" * 1000)  # accepted, too long to be remembered
    assert urls._memo_normalise.cache_info().currsize == before
    assert urls._memo_normalise.cache_info().maxsize == urls._MEMO_SIZE
