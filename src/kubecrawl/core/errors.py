"""The kubecrawl exception tree.

Every error we raise on purpose carries a stable snake_case ``code``. Transports map them in exactly one place:
HTTP in ``api/errors.py``, ack/retry/dead-letter in the worker pipeline, kopf errors in operator handlers.

    KubecrawlError
    ├── TransientError            retry later: the same input may succeed
    │   ├── PublisherNotReady     (publisher_not_ready)
    │   ├── PublishRejected       (queue_rejected: broker NACK, e.g. x-overflow=reject-publish)
    │   ├── ConnectionLost        (connection_lost)
    │   ├── PublishTimeout        (publish_timeout)
    │   ├── FetchTransient        (dns_failure, connect_error, timeout, http_5xx, http_408, http_429, ...)
    │   ├── TooManyRequests       (too_many_subscribers, too_many_crawls: a bounded resource is full; HTTP 429)
    │   └── StoreUnavailable      (database_unavailable)
    └── PermanentError            never retry: the input itself is wrong
        ├── InvalidUrl            (invalid_url, empty_url, unsupported_scheme)
        ├── BlockedTarget         (blocked_target: private/loopback/link-local/metadata address)
        ├── FetchPermanent        (http_4xx, invalid_response, too_many_redirects, ...)
        ├── InvalidMessage        (invalid_message: poison message on a queue)
        ├── InvalidValue          (invalid_value: the database refused a value, e.g. a NUL byte)
        ├── BodyTooLarge          (body_too_large: a request body over the limit; HTTP 413)
        ├── NotFound              (site_not_found, crawl_not_found, ...)
        ├── Conflict              (key_exists, idempotency_key_conflict: the state refuses it; HTTP 409)
        └── Forbidden             (forbidden: the caller may not do this; HTTP 403)
"""

from __future__ import annotations


class KubecrawlError(Exception):
    """Root of every error kubecrawl raises on purpose."""

    code: str = "internal_error"

    def __init__(self, detail: str = "", *, code: str | None = None) -> None:
        super().__init__(detail or self.__class__.__name__)
        self.detail = detail or self.__class__.__name__
        if code is not None:
            self.code = code


class TransientError(KubecrawlError):
    """The operation may succeed if retried later."""

    code = "transient_error"

    def __init__(self, detail: str = "", *, code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(detail, code=code)
        self.retry_after = retry_after


class PermanentError(KubecrawlError):
    """Retrying cannot help."""

    code = "permanent_error"


class PublisherNotReady(TransientError):
    code = "publisher_not_ready"


class PublishRejected(TransientError):
    code = "queue_rejected"


class ConnectionLost(TransientError):
    code = "connection_lost"


class PublishTimeout(TransientError):
    code = "publish_timeout"


class FetchTransient(TransientError):
    code = "fetch_transient"


class TooManyRequests(TransientError):
    """A bounded resource (SSE subscribers, ...) is full: come back later."""

    code = "too_many_requests"


class StoreUnavailable(TransientError):
    code = "database_unavailable"


class InvalidUrl(PermanentError):
    code = "invalid_url"


class BlockedTarget(PermanentError):
    code = "blocked_target"


class FetchPermanent(PermanentError):
    code = "fetch_permanent"


class InvalidMessage(PermanentError):
    code = "invalid_message"


class InvalidValue(PermanentError):
    """The database refused a value of this request or page (a data or constraint error): the input is wrong,
    not the database, so it is never ``database_unavailable``."""

    code = "invalid_value"


class BodyTooLarge(PermanentError):
    code = "body_too_large"


class NotFound(PermanentError):
    code = "not_found"


class Conflict(PermanentError):
    """The request is well formed but the stored state refuses it (a key name taken, an idempotency key of another
    site's crawl)."""

    code = "conflict"


class Forbidden(PermanentError):
    """The caller is known but may not do this (api/auth.py answers most of these before a route runs)."""

    code = "forbidden"
