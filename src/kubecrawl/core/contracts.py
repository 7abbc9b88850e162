"""Queue message contracts: the only thing producers and consumers share about a queue.

Every message carries ``schema_version``; a consumer refuses (dead-letters) versions it does not know.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kubecrawl.core.clock import utcnow


def new_request_id() -> str:
    return uuid.uuid4().hex


class MetadataTask(BaseModel):
    """Fetch one URL's metadata and upsert it into ``page_metadata``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    kind: Literal["metadata"] = "metadata"
    request_id: str = Field(default_factory=new_request_id)
    url: str
    enqueued_at: datetime = Field(default_factory=utcnow)


class PageTask(BaseModel):
    """Fetch one page of one crawl (one message = one page, never a whole crawl)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    kind: Literal["page"] = "page"
    crawl_id: str
    page_id: int
    url: str
    depth: int = Field(ge=0)
    enqueued_at: datetime = Field(default_factory=utcnow)
