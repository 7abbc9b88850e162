"""What a request asks to do, decided from its method and path alone (pure): the API-key scope it needs and the
Kubernetes RBAC attributes a ServiceAccount needs for it (``api/auth.py`` enforces both).

The RBAC model (docs/security.md, "Kubernetes identities") uses the CrawlSite resource and virtual subresources of
the ``kubecrawl.io`` group; no object of them exists, RBAC rules name them like any other:

| request | API-key scope | RBAC (group kubecrawl.io) |
|---|---|---|
| ``GET /sites`` | read | ``list crawlsites`` cluster-wide |
| ``GET /sites/{ns}/{name}``, ``…/crawls``, ``GET /crawls/{id}…`` | read | ``get crawlsites`` (``{name}``) in ``{ns}`` |
| ``POST /sites/{ns}/{name}/crawls`` | write | ``create crawlsites/trigger`` (``{name}``) in ``{ns}`` |
| ``POST /crawls/{id}/cancel`` | write | ``delete crawlsites/trigger`` on the crawl's site |
| ``PUT``/``DELETE /sites/{ns}/{name}`` | admin | ``update``/``delete crawlsites/sync`` (``{name}``) in ``{ns}`` |
| ``POST``/``GET /metadata`` | write | ``create metadata`` cluster-wide |
| ``GET /docs``, ``/openapi.json``, ``/metrics`` | read | the non-resource URL and verb (``get /metrics``) |
| any other request (routes added later) | admin | the non-resource URL and verb |

``/crawls/{id}`` routes name no site: the middleware lets an authenticated identity through and
``routes/crawls.py`` checks the crawl's site once it has read it (``crawl_access``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GROUP = "kubecrawl.io"
_SITE = re.compile(r"^/sites/([^/]+)/([^/]+)(/crawls)?$")
_CRAWL = re.compile(r"^/crawls/[^/]+(/[^/]+)?$")
_DOCUMENTS = re.compile(r"^/(docs|redoc|openapi\.json|docs/oauth2-redirect|metrics)$")
PUBLIC_PREFIXES = ("/health/",)


@dataclass(frozen=True, slots=True)
class Access:
    """``scope`` for API keys; for RBAC either a resource (``resource``, ``subresource``, ``namespace``, ``name``)
    or a non-resource URL (``resource`` None, ``path``). ``deferred``: the route decides the site (crawls)."""

    scope: str
    verb: str
    resource: str | None = None
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""
    deferred: bool = False


READ_CRAWLS = Access("read", "get", "crawlsites", deferred=True)


def request_access(method: str, path: str, *, metrics_public: bool) -> Access | None:  # noqa: PLR0911 - one per route
    """What ``method path`` needs; ``None`` for public routes (``/health/*``, ``/metrics`` unless told)."""
    if path.startswith(PUBLIC_PREFIXES) or (path == "/metrics" and metrics_public):
        return None
    verb = "GET" if method == "HEAD" else method
    if path == "/metadata":  # GET too: it enqueues a fetch on a miss
        return Access("write", "create", "metadata")
    if _CRAWL.match(path):
        if verb == "GET":
            return READ_CRAWLS
        return Access("write", "delete", "crawlsites", "trigger", deferred=True)
    if path == "/sites" and verb == "GET":
        return Access("read", "list", "crawlsites")
    if site := _SITE.match(path):
        namespace, name, crawls = site.groups()
        if verb == "GET":
            return Access("read", "get", "crawlsites", namespace=namespace, name=name)
        if crawls and verb == "POST":
            return Access("write", "create", "crawlsites", "trigger", namespace, name)
        if not crawls and verb in ("PUT", "DELETE"):
            rbac_verb = "update" if verb == "PUT" else "delete"
            return Access("admin", rbac_verb, "crawlsites", "sync", namespace, name)
    scope = "read" if verb == "GET" and _DOCUMENTS.match(path) else "admin"
    return Access(scope, verb.lower(), path=path)


def crawl_access(access: Access, site: str) -> Access:
    """A deferred crawl access, for the crawl's site (``NS/NAME``)."""
    namespace, _, name = site.partition("/")
    return Access(access.scope, access.verb, access.resource, access.subresource, namespace, name)
