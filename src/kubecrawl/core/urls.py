"""URL validation, normalisation and the private-network (SSRF) policy.

``normalise_url`` is the one definition of "the same page": it keys ``page_metadata`` and the crawl frontier.
``is_blocked_address`` is the one definition of an address a fetch must never reach, and ``TargetPolicy`` the
one place it is relaxed (``KUBECRAWL_ALLOW_PRIVATE_TARGETS``, ``KUBECRAWL_ALLOWED_PRIVATE_NETWORKS``); the
fetcher applies the policy to every resolved address of every hop.
"""

from __future__ import annotations

import functools
import ipaddress
import posixpath
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

import idna

from kubecrawl.core.errors import BlockedTarget, InvalidUrl

ALLOWED_SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}
# Browsers and servers cap URLs around 8 KiB; anything longer is not a page address we want to key on.
MAX_URL_LENGTH = 8192

# Cloud metadata endpoints that are not covered by the generic private/link-local ranges.
_METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6
    }
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


def _split(url: str) -> tuple[SplitResult, str, int | None]:
    """The parts of a URL, its host name (as ``urlsplit`` gives it) and port; ``InvalidUrl`` if it is not one."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidUrl("url must be a non-empty string", code="empty_url")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise InvalidUrl(f"url longer than {MAX_URL_LENGTH} characters", code="invalid_url")
    if "\n" in url or "\r" in url or "\t" in url or " " in url:
        raise InvalidUrl("url contains whitespace", code="invalid_url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidUrl(f"malformed url: {exc}", code="invalid_url") from exc
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise InvalidUrl(f"scheme {parts.scheme!r} is not supported; use http or https", code="unsupported_scheme")
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
    try:
        host = _to_ascii(host)
    except UnicodeError as exc:  # idna.IDNAError and its kinds
        raise InvalidUrl(f"invalid host name {hostname!r}: {exc}", code="invalid_url") from exc
    if not host or any(not label or len(label) > 63 for label in host.split(".")):
        raise InvalidUrl(f"invalid host name {hostname!r}", code="invalid_url")
    return host


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


@functools.lru_cache(maxsize=65_536)
def normalise_url(url: str) -> str:
    """Return the canonical form of an http(s) URL or raise ``InvalidUrl``.

    Lower-cases scheme and host, IDNA-encodes the host, drops default ports, the fragment and dot-segments,
    and gives an empty path as ``/``. The query string is kept as sent: reordering it can change the page.
    Memoised: a crawl meets the same links on page after page (errors are not cached; they raise again).
    """
    parts, hostname, port = _split(url)
    scheme = parts.scheme.lower()
    host = _normal_host(hostname)
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    username = parts.username if "@" in parts.netloc else None  # urlsplit gives one exactly when there is an '@'
    if username is not None:
        userinfo = username + (f":{parts.password}" if parts.password is not None else "")
        netloc = f"{userinfo}@{netloc}"
    path = parts.path or "/"
    trailing = path.endswith("/")
    path = posixpath.normpath(path)
    path = path.removeprefix("//")  # posixpath keeps a leading '//' by POSIX rules; URLs do not
    if trailing and not path.endswith("/"):
        path += "/"
    return urlunsplit((scheme, netloc, path, parts.query, ""))


@functools.lru_cache(maxsize=65_536)
def url_host(url: str) -> str:
    """The normalised host of a URL (no port). Memoised like ``normalise_url``."""
    return _normal_host(_split(url)[1])


def is_blocked_address(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for addresses a fetch must not reach: private, loopback, link-local, metadata, reserved."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or ip in _METADATA_ADDRESSES
        or (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT)
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

    def refuses(self, address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if self.allow_private:
            return False
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if any(ip in network for network in self.allowed_networks):
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
