"""The kopf operator (``kubecrawl operator``): CrawlSite → owned CronJob + site spec synced to the API.

``main`` registers handlers and kopf settings; ``handlers/`` are thin adapters between kopf and the modules that do
the work; ``reconcile/`` is pure (manifests, names, status) and unit-tested without I/O. Never imports
``kubecrawl.api`` or ``kubecrawl.worker``: the API is reached over HTTP (``syncing``).
"""
