"""Response bodies decoded here, not by httpx, and never past the body cap: httpx's gzip decoder inflates each
16 KiB read whole (a 16 KiB bomb is 16 MiB); ``BoundedDecoder`` hands ``zlib`` the bytes the cap still allows."""

from __future__ import annotations

import zlib
from typing import Any

from kubecrawl.core.errors import FetchPermanent


class BoundedDecoder:
    """Undo ``Content-Encoding`` gzip/deflate layers without ever producing more than ``budget`` bytes.

    Each ``zlib`` step is given ``max_length``, so a compressed chunk that would inflate to gigabytes yields at most
    what the body cap still allows; the rest stays compressed in ``unconsumed_tail`` and is dropped. Unknown
    encodings are passed through as sent (httpx does the same). Layers are undone in reverse order (RFC 9110 §8.4).
    """

    def __init__(self, content_encoding: str | None) -> None:
        codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
        self._layers = [
            zlib.decompressobj(_WBITS[coding]) if coding in ("gzip", "x-gzip") else _Deflate()
            for coding in reversed(codings)
            if coding in _WBITS or coding == "deflate"
        ]

    def decode(self, data: bytes, budget: int) -> bytes:
        for layer in self._layers:
            if not data:
                break
            try:
                data = layer.decompress(data, budget)
            except zlib.error as exc:
                raise FetchPermanent(f"invalid compressed body: {exc}", code="invalid_response") from exc
        return data


_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS}


class _Deflate:
    """``deflate`` as servers send it: zlib-wrapped (RFC 9110), or raw (old IIS), told apart by the first byte."""

    def __init__(self) -> None:
        self._inner: Any = None

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._inner is None:
            zlib_wrapped = (data[0] & 0x0F) == 8 and (data[0] << 8 | data[1]) % 31 == 0 if len(data) > 1 else True
            self._inner = zlib.decompressobj(zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS)
        return bytes(self._inner.decompress(data, max_length))
