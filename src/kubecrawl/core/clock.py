"""The one definition of "now": timezone-aware UTC, for the stores, the message contracts and the operator."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
