"""URL validation, normalisation and the private-network (SSRF) policy.

``normalise_url`` is the one definition of "the same page": it keys ``page_metadata`` and the crawl frontier.
It refuses what no page address needs and what an attacker uses: URLs over ``MAX_URL_BYTES``, control
characters, userinfo (``user:pass@`` would be stored, logged and sent upstream as Basic auth). Every IPv4
spelling a resolver or an HTTP library may accept (``2130706433``, ``0x7f.1``, ``017700000001``, ``127.1``,
``0``) is rewritten to its dotted quad, so the policy judges — and the HTTP library connects to — the address
the URL really names, whatever that library parses (docs/security.md).

``is_blocked_address`` is the one definition of an address a fetch must never reach: an allow-list (globally
reachable, not reserved, shared, benchmark or 192.0.0.0/24), with the IPv4 address inside mapped, NAT64 and
6to4 IPv6 addresses judged instead of its wrapper. ``TargetPolicy`` is the one place it is relaxed
(``KUBECRAWL_ALLOW_PRIVATE_TARGETS``, ``KUBECRAWL_ALLOWED_PRIVATE_NETWORKS``); the fetcher applies the policy
to every resolved address and to the peer actually connected, on every hop.
"""

from __future__ import annotations

import functools
import ipaddress
import posixpath
import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

import idna

from kubecrawl.core.errors import BlockedTarget, InvalidUrl

ALLOWED_SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}
# In UTF-8 bytes, as the database's unique indexes hold them: 2,048 is what sitemaps (sitemaps.org) and most CDNs
# accept, and leaves a normalised URL far inside PostgreSQL's B-tree entry limit (about 2,700 bytes).
MAX_URL_BYTES = 2048
# C0 controls, DEL and C1 controls: never part of a URL (WHATWG URL strips or rejects them), and a NUL is refused
# by PostgreSQL's text type. Space is refused separately (a typed URL with a space is a typo).
_CONTROL = re.compile(r"[\x00-\x20\x7f-\x9f]")

# Ranges Python's ``is_global`` may still call global, depending on its version, that a fetch must not reach.
_NOT_GLOBAL = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",  # "this network"
        "100.64.0.0/10",  # shared address space (CGNAT), RFC 6598
        "192.0.0.0/24",  # IETF protocol assignments, RFC 6890 (whole block, the "global" /32s in it included)
        "192.0.2.0/24",  # TEST-NET-1
        "192.88.99.0/24",  # deprecated 6to4 relay anycast, RFC 7526
        "198.18.0.0/15",  # benchmarking, RFC 2544
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "100.100.100.200/32",  # Alibaba Cloud metadata (inside shared space already; named for the record)
        "64:ff9b:1::/48",  # local-use NAT64, RFC 8215
        "2001::/23",  # IETF protocol assignments, Teredo (2001::/32) included: tunnels are refused whole
        "2001:db8::/32",  # documentation
        "fd00:ec2::254/128",  # AWS metadata over IPv6 (inside fc00::/7 already; named for the record)
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix: the last 32 bits are the IPv4 target

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _split(url: str) -> tuple[SplitResult, str, int | None]:
    """The parts of a URL, its host name (as ``urlsplit`` gives it) and port; ``InvalidUrl`` if it is not one."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidUrl("url must be a non-empty string", code="empty_url")
    url = url.strip()
    if len(url) > MAX_URL_BYTES or len(url.encode("utf-8", "surrogatepass")) > MAX_URL_BYTES:
        raise InvalidUrl(f"url longer than {MAX_URL_BYTES} bytes", code="url_too_long")
    if _CONTROL.search(url):
        raise InvalidUrl("url contains whitespace or a control character", code="invalid_url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidUrl(f"malformed url: {exc}", code="invalid_url") from exc
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise InvalidUrl(f"scheme {parts.scheme!r} is not supported; use http or https", code="unsupported_scheme")
    if "@" in parts.netloc:
        raise InvalidUrl("url carries a user name or password; kubecrawl never sends credentials", code="url_userinfo")
    hostname = parts.hostname
    if not hostname:
        raise InvalidUrl("url has no host", code="invalid_url")
    return parts, hostname, port


def _normal_host(hostname: str) -> str:
    # No DNS name is longer than 253 characters: leaving such hosts out keeps the memo small whatever pages link to.
    return _memo_host(hostname) if len(hostname) <= 253 else _normalise_host(hostname)


def _normalise_host(hostname: str) -> str:
    host = hostname.rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    ipv4 = ipv4_number_host(host)
    if ipv4 is not None:
        return ipv4
    try:
        host = _to_ascii(host)
    except UnicodeError as exc:  # idna.IDNAError and its kinds
        raise InvalidUrl(f"invalid host name {hostname!r}: {exc}", code="invalid_url") from exc
    if not host or any(not label or len(label) > 63 for label in host.split(".")):
        raise InvalidUrl(f"invalid host name {hostname!r}", code="invalid_url")
    # IDNA maps full-width digits and dots to ASCII ("０x7f.1" is "0x7f.1"): judge the mapped host as well.
    return ipv4_number_host(host) or host


_IPV4_PART = re.compile(r"0[xX][0-9a-fA-F]*|[0-9]+")


def ipv4_number_host(host: str) -> str | None:
    """The dotted quad a host written as IPv4 numbers means, ``None`` when it is a name; ``InvalidUrl`` if invalid.

    The WHATWG URL parser's IPv4 rules, which ``inet_aton`` (glibc's resolver) and browsers follow: a host whose
    last label is a number is an IPv4 address of 1 to 4 parts, each decimal, octal (leading ``0``) or hex
    (``0x``); the last part fills the remaining bytes (``127.1`` is 127.0.0.1, ``2130706433`` too, ``0`` is
    0.0.0.0). ``ipaddress`` accepts only the dotted-decimal quad, so without this step ``http://0x7f.1/`` would be
    judged a host name by us and connected to as 127.0.0.1 by the library.
    """
    labels = host.rstrip(".").split(".")
    if not _IPV4_PART.fullmatch(labels[-1]):
        return None  # a name (its last label is not a number)
    if len(labels) > 4 or not all(_IPV4_PART.fullmatch(label) for label in labels):
        raise InvalidUrl(f"host {host!r} looks like an IPv4 address but is not one", code="invalid_url")
    numbers = [
        int(label[2:] or "0", 16) if label[:2].lower() == "0x" else _decimal_or_octal(label, host) for label in labels
    ]
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        raise InvalidUrl(f"host {host!r} is an IPv4 address out of range", code="invalid_url")
    value = last
    for index, number in enumerate(head):
        value += number << (8 * (3 - index))
    return str(ipaddress.IPv4Address(value))


def _decimal_or_octal(label: str, host: str) -> int:
    if len(label) > 1 and label.startswith("0"):
        try:
            return int(label, 8)
        except ValueError:
            raise InvalidUrl(f"host {host!r} has an invalid octal IPv4 part {label!r}", code="invalid_url") from None
    return int(label)


def _to_ascii(host: str) -> str:
    """A host name as browsers send it: UTS 46 non-transitional processing, as the WHATWG URL standard does.

    ``faß.de`` is ``xn--fa-hia.de`` (IDNA 2003, Python's ``"idna"`` codec, made it ``fass.de``: another host).
    ASCII labels other than ``xn--`` ones are kept as they are (WHATWG does not apply the STD3 rules, so
    ``my_host.example`` is a host); others are mapped and encoded by the ``idna`` package, which refuses what
    cannot be a host name (disallowed code points, a bad ``xn--`` label, bidi and joiner violations).
    """
    if host.isascii() and "xn--" not in host:
        return host
    mapped = idna.uts46_remap(host, std3_rules=False, transitional=False)
    return ".".join(
        label if label.isascii() and not label.startswith("xn--") else idna.alabel(label).decode("ascii")
        for label in mapped.split(".")
    )


# A crawl's links name few hosts (its site and the sites it links to), and parsing an IP literal or
# IDNA-encoding a name is half the cost of normalising a URL. Errors are not cached; they raise again.
_memo_host = functools.lru_cache(maxsize=4096)(_normalise_host)


# Memo bounds: only URLs up to _MEMO_URL_LENGTH characters are remembered (a crawl's navigation links, the
# ones met page after page, are short), at most _MEMO_SIZE of them: at most about 12 MB whatever the pages or
# the API's callers send. Errors are not cached; they raise again.
_MEMO_SIZE = 16_384
_MEMO_URL_LENGTH = 256


def normalise_url(url: str) -> str:
    """Return the canonical form of an http(s) URL or raise ``InvalidUrl``.

    Lower-cases scheme and host, IDNA-encodes the host, writes IPv4 hosts as dotted quads, drops default ports,
    the fragment and dot-segments, and gives an empty path as ``/``. The query string is kept as sent: reordering
    it can change the page. Memoised for short URLs: a crawl meets the same links on page after page.
    """
    return normalise_url_and_host(url)[0]


def normalise_url_and_host(url: str) -> tuple[str, str]:
    """``normalise_url(url)`` and its normalised host (no port), from one parse. The crawl scope needs both for
    every link a page holds; parsing the normalised URL again for its host was a quarter of the scope's cost
    with 200 crawls at once, whose links are new to each crawl (docs/scaling.md, "Many hosts")."""
    if isinstance(url, str) and len(url) <= _MEMO_URL_LENGTH:
        return _memo_normalise(url)
    return _normalise_url(url)


def _normalise_url(url: str) -> tuple[str, str]:
    parts, hostname, port = _split(url)
    scheme = parts.scheme.lower()
    host = _normal_host(hostname)
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    path = parts.path or "/"
    trailing = path.endswith("/")
    path = posixpath.normpath(path)
    path = path.removeprefix("//")  # posixpath keeps a leading '//' by POSIX rules; URLs do not
    if trailing and not path.endswith("/"):
        path += "/"
    return urlunsplit((scheme, netloc, path, parts.query, "")), host


_memo_normalise = functools.lru_cache(maxsize=_MEMO_SIZE)(_normalise_url)


def url_host(url: str) -> str:
    """The normalised host of a URL (no port). Memoised like ``normalise_url``."""
    if isinstance(url, str) and len(url) <= _MEMO_URL_LENGTH:
        return _memo_url_host(url)
    return _url_host(url)


def _url_host(url: str) -> str:
    return _normal_host(_split(url)[1])


_memo_url_host = functools.lru_cache(maxsize=_MEMO_SIZE)(_url_host)


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries to (mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4
    ``2002::/16``), ``None`` for any other address. Teredo is not decoded: 2001::/23 is refused whole."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def is_blocked_address(address: str | IPAddress) -> bool:
    """True unless the address is one a fetch may reach: globally reachable, and not multicast, reserved,
    shared, benchmark, documentation, protocol-assignment or metadata space. IPv6 addresses that carry an IPv4
    address are judged by that IPv4 address (where the packets end up)."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    inner = embedded_ipv4(ip)
    if inner is not None:
        return is_blocked_address(inner)
    return (
        not ip.is_global
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or any(ip in network for network in _NOT_GLOBAL)
    )


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    """Which addresses a fetch may reach.

    ``allow_private`` lifts the guard entirely (tests, laptops); ``allowed_networks`` opens chosen private
    ranges (an intranet site) while every other blocked address stays refused.
    """

    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    def refuses(self, address: str | IPAddress) -> bool:
        if self.allow_private:
            return False
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        inner = embedded_ipv4(ip)
        if any(ip in network or (inner is not None and inner in network) for network in self.allowed_networks):
            return False
        return is_blocked_address(ip)

    def check_literal(self, url: str) -> None:
        """Refuse a URL whose host is an IP literal (or ``localhost``) this policy refuses.

        Host names are checked after DNS resolution by the fetcher; this catches what needs no resolution,
        so the API can answer 400 at once.
        """
        if self.allow_private:
            return
        refusal = _literal_refusal(self, url_host(url))
        if refusal is not None:
            raise BlockedTarget(refusal)


# Memoised per (policy, host): both are immutable, so a verdict never goes stale, and a crawl fetches page after
# page from the same few hosts; 4096 hosts is far more than one process crawls at a time.
@functools.lru_cache(maxsize=4096)
def _literal_refusal(policy: TargetPolicy, host: str) -> str | None:
    """Why ``policy`` refuses ``host`` without resolving it (a loopback name, a blocked IP literal), else ``None``."""
    if host == "localhost" or host.endswith(".localhost"):
        return f"target {host} is a loopback name"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if policy.refuses(ip):
        return f"target address {ip} is private, loopback, link-local or reserved"
    return None
