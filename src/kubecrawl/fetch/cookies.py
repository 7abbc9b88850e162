"""``Set-Cookie`` as user agents read it (RFC 6265 §5.2): each cookie a fetch was sent, attributes included."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Cookie:
    """One ``Set-Cookie`` as the server sent it, attributes included."""

    name: str
    value: str
    domain: str | None
    path: str | None
    expires: str | None
    max_age: int | None
    secure: bool
    http_only: bool
    same_site: str | None
    set_by: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "domain": self.domain,
            "path": self.path,
            "expires": self.expires,
            "max_age": self.max_age,
            "secure": self.secure,
            "http_only": self.http_only,
            "same_site": self.same_site,
            "set_by": self.set_by,
        }


def parse_set_cookie(header: str, url: str) -> Cookie | None:
    """Parse one ``Set-Cookie`` value the way user agents do (RFC 6265 §5.2); ``None`` when it has no name.

    Not ``http.cookies.SimpleCookie``: that parses the *Cookie* request grammar, and on anything it does not
    expect (a space or a JSON value in the cookie, an attribute it does not know such as ``Partitioned``)
    it silently drops the attributes. Here the value is kept as sent (quotes included, as browsers keep
    them), attribute names are case-insensitive, unknown attributes are ignored, and the last occurrence of an
    attribute wins. ``expires`` is the effective expiry: ``Max-Age`` wins over ``Expires`` (§5.3).
    """
    pair, _, attributes = header.partition(";")
    name, sep, value = pair.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name:
        return None
    attrs: dict[str, str] = {}
    for attribute in attributes.split(";"):
        key, _, attr_value = attribute.partition("=")
        key = key.strip().lower()
        if key:
            attrs[key] = attr_value.strip()
    max_age = _max_age(attrs.get("max-age"))
    expires = attrs.get("expires") or None
    if max_age is not None:
        expires = _expiry(max_age)
    return Cookie(
        name=name,
        value=value,
        domain=attrs.get("domain") or None,
        path=attrs.get("path") or None,
        expires=expires,
        max_age=max_age,
        secure="secure" in attrs,
        http_only="httponly" in attrs,
        same_site=attrs.get("samesite") or None,
        set_by=url,
    )


_MAX_AGE = re.compile(r"(-?)0*([0-9]+)")
# RFC 6265bis §5.6.2: user agents cap a cookie's lifetime at 400 days, whatever the server asked. Capping the
# reported Max-Age too keeps it a small integer (a 20-digit one would not fit the JSON column's int64).
_MAX_COOKIE_LIFETIME_SECONDS = 400 * 86_400


def _max_age(value: str | None) -> int | None:
    """``Max-Age`` as delta-seconds (an optional ``-`` and ASCII digits only, §5.2.2), else ignored."""
    match = _MAX_AGE.fullmatch(value or "")
    if match is None:
        return None
    sign, digits = match.groups()
    # Compare lengths before converting: int() of thousands of digits is slow, and refused past 4300.
    too_long = len(digits) > len(str(_MAX_COOKIE_LIFETIME_SECONDS))
    seconds = _MAX_COOKIE_LIFETIME_SECONDS if too_long else min(int(digits), _MAX_COOKIE_LIFETIME_SECONDS)
    return -seconds if sign else seconds


def _expiry(max_age: int) -> str:
    if max_age <= 0:  # §5.2.2: "the earliest representable date and time"
        return "Thu, 01 Jan 1970 00:00:00 GMT"
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + max_age))
