from __future__ import annotations

import ipaddress

import pytest

from kubecrawl.core.errors import BlockedTarget, InvalidUrl
from kubecrawl.core.urls import TargetPolicy, is_blocked_address, normalise_url


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
        ("http://example.com/" + "x" * 9000, "invalid_url"),
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


def test_user_info_is_kept_and_an_empty_one_too() -> None:
    assert normalise_url("http://u:p@Example.com/") == "http://u:p@example.com/"
    assert normalise_url("http://@example.com/") == "http://@example.com/"
