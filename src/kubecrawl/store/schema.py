"""SQL tables (SQLAlchemy Core). Alembic migrations in ``store/migrations`` create them; the app never does
in production. The same tables serve PostgreSQL (production, tests) and SQLite (the embedded default)."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class JsonDocument(TypeDecorator[Any]):
    """JSONB on PostgreSQL (indexable, compact), plain JSON text elsewhere: ``JSON().with_variant(JSONB(), …)`` as
    the migrations write it, but PostgreSQL's type is looked up when a PostgreSQL engine first uses a column, so a
    SQLite process (the embedded crawl) never imports PostgreSQL's dialect (docs/crawls.md, "Start-up")."""

    impl = JSON
    cache_ok = True
    # As JSON's default (none_as_null=False): a Python None is stored as the JSON null, not as SQL NULL.
    should_evaluate_none = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())


Json = JsonDocument()
# SQLite only auto-increments INTEGER PRIMARY KEY, not BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")

page_metadata = Table(
    "page_metadata",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("url", Text, nullable=False, unique=True),
    Column("status", String(32), nullable=False),
    Column("http_status", Integer),
    Column("final_url", Text),
    Column("redirects", Json),
    Column("response_headers", Json),
    Column("cookies", Json),
    Column("title", Text),
    Column("description", Text),
    Column("canonical", Text),
    Column("language", String(64)),
    Column("robots", Text),
    Column("opengraph", Json),
    Column("twitter", Json),
    Column("content_type", Text),
    Column("content_length", BigInteger),
    Column("content_hash", String(64)),
    Column("charset", String(64)),
    Column("body_bytes", BigInteger),
    Column("truncated", Boolean),
    Column("page_source", Text),
    Column("timings", Json),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text),
    Column("last_error_code", String(64)),
    Column("last_request_id", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("queued_at", DateTime(timezone=True)),
    Column("fetched_at", DateTime(timezone=True)),
    # Leases (migration 0006): set while a worker holds the record (begin_attempt), cleared by its outcome.
    Column("lease_until", DateTime(timezone=True)),
    # The latest failure (lease_expired among them), kept by a later success, unlike last_error.
    Column("last_failure_code", String(64)),
    Column("last_failure", Text),
    Index("ix_page_metadata_created_at", "created_at"),
)

sites = Table(
    "sites",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("namespace", String(253), nullable=False),
    Column("name", String(253), nullable=False),
    Column("spec", Json, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("namespace", "name", name="uq_sites_namespace_name"),
)

crawls = Table(
    "crawls",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("site_namespace", String(253), nullable=False),
    Column("site_name", String(253), nullable=False),
    Column("trigger", String(16), nullable=False),
    Column("idempotency_key", String(512), unique=True),
    Column("state", String(16), nullable=False),
    Column("config", Json, nullable=False),
    Column("previous_crawl_id", String(36)),
    Column("discovered", Integer, nullable=False, server_default="0"),
    Column("queued", Integer, nullable=False, server_default="0"),
    Column("fetched", Integer, nullable=False, server_default="0"),
    Column("failed", Integer, nullable=False, server_default="0"),
    Column("changed", Integer, nullable=False, server_default="0"),
    Column("unchanged", Integer, nullable=False, server_default="0"),
    Column("skipped_robots", Integer, nullable=False, server_default="0"),
    # pages published and not yet finished: the cluster-wide politeness.maxConcurrency window
    Column("in_flight", Integer, nullable=False, server_default="0"),
    # bumped on every page outcome; SSE event ids, so Last-Event-ID resumes without gaps
    Column("version", Integer, nullable=False, server_default="0"),
    Column("error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    # who the crawl counts against for the per-identity limit of concurrent crawls (docs/security.md, "Crawl
    # quotas"): "key:NAME", "user:NAME" (a Kubernetes user), "site:NS/NAME" (a scheduled run); null without auth
    Column("started_by", String(320)),
    Index("ix_crawls_site_created", "site_namespace", "site_name", "created_at"),
    Index("ix_crawls_started_by_state", "started_by", "state"),
)

crawl_pages = Table(
    "crawl_pages",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("crawl_id", String(36), ForeignKey("crawls.id", ondelete="CASCADE"), nullable=False),
    Column("url", Text, nullable=False),
    Column("depth", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("http_status", Integer),
    Column("content_hash", String(64)),
    Column("changed", Boolean),
    Column("etag", Text),
    Column("last_modified", Text),
    Column("title", Text),
    Column("description", Text),
    Column("canonical", Text),
    Column("noindex", Boolean),
    Column("nofollow", Boolean),
    Column("links", Integer),
    # In-scope links found on the page: a later crawl that gets 304 Not Modified follows these.
    Column("outlinks", Json),
    Column("error_code", String(64)),
    Column("error", Text),
    Column("seq", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("fetched_at", DateTime(timezone=True)),
    # Leases (migration 0006): a FETCHING page's claim holds until then; the sweep gives it back after.
    Column("lease_until", DateTime(timezone=True)),
    # The latest failure (a retry's, lease_expired), kept by a later success, unlike error_code/error.
    Column("last_failure_code", String(64)),
    Column("last_failure", Text),
    UniqueConstraint("crawl_id", "url", name="uq_crawl_pages_crawl_id_url"),
    Index("ix_crawl_pages_crawl_state", "crawl_id", "state", "depth", "id"),
)

crawl_hosts = Table(
    "crawl_hosts",
    metadata,
    Column("crawl_id", String(36), ForeignKey("crawls.id", ondelete="CASCADE"), primary_key=True),
    Column("host", String(300), primary_key=True),
    Column("robots_state", String(16), nullable=False),  # PENDING | READY
    Column("robots_txt", Text),
    # A PENDING claim holds until then; after it, the next worker takes the fetch over (migration 0006).
    Column("robots_claimed_until", DateTime(timezone=True)),
    # READY until then (a complete disallow for an unreachable robots.txt lasts a while); null: for the crawl.
    Column("robots_expires_at", DateTime(timezone=True)),
    Column("crawl_delay", Float),
    Column("next_fetch_at", DateTime(timezone=True)),
    # A spaced host's request in flight holds its turn until then, or until its answer (migration 0008).
    Column("turn_until", DateTime(timezone=True)),
)

# API keys (docs/security.md): only a SHA-256 of each key is stored. Keys are 256 random bits, so a fast hash is
# enough (no dictionary to try); the table never holds anything that authenticates by itself.
api_keys = Table(
    "api_keys",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("scopes", Json, nullable=False),
    Column("namespaces", Json),  # null: every namespace
    # the key's own crawl quotas (docs/security.md); null: the API's settings
    Column("max_concurrent_crawls", Integer),
    Column("max_pages", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)


@functools.cache
def add_partial_indexes() -> None:
    """The partial indexes, added to the tables where the schema's DDL matters (Alembic's env). Their WHERE
    clause is a dialect option, and SQLAlchemy imports a dialect to check its options: PostgreSQL's took some
    25 ms of a SQLite process's start-up (docs/crawls.md, "Start-up"). The stores never read indexes."""
    Index(
        "ix_page_metadata_leases",
        page_metadata.c["lease_until"],
        postgresql_where=text("lease_until IS NOT NULL"),
        sqlite_where=text("lease_until IS NOT NULL"),
    )
    # The lost-record sweep's look-up: records waiting for a fetch only.
    Index(
        "ix_page_metadata_waiting",
        page_metadata.c["updated_at"],
        postgresql_where=text("status IN ('QUEUED', 'FAILED_RETRYABLE')"),
        sqlite_where=text("status IN ('QUEUED', 'FAILED_RETRYABLE')"),
    )
    # Partial (migration 0004): settled pages only, what the SSE resume reads.
    Index(
        "ix_crawl_pages_crawl_seq",
        crawl_pages.c["crawl_id"],
        crawl_pages.c["seq"],
        postgresql_where=text("seq IS NOT NULL"),
        sqlite_where=text("seq IS NOT NULL"),
    )
    # The refill's order (shallowest PENDING first), without a sort however large the crawl.
    Index(
        "ix_crawl_pages_pending",
        crawl_pages.c["crawl_id"],
        crawl_pages.c["depth"],
        crawl_pages.c["id"],
        postgresql_where=text("state = 'PENDING'"),
        sqlite_where=text("state = 'PENDING'"),
    )
    # The lease sweep's look-up: FETCHING pages only.
    Index(
        "ix_crawl_pages_leases",
        crawl_pages.c["lease_until"],
        postgresql_where=text("state = 'FETCHING'"),
        sqlite_where=text("state = 'FETCHING'"),
    )
