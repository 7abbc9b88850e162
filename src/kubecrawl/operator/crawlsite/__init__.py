"""CrawlSite: an owned CronJob that triggers crawls on the site's schedule, and the site's spec synced to the
kubecrawl API (docs/operator.md).

The rules, pure (plain functions over plain data: no kopf, no Kubernetes client, no HTTP; import-linter enforces
it):

    naming.py      names, labels and keys derived from a CrawlSite (the CronJob's ≤ 52-character name)
    manifest.py    the CronJob manifest built from the spec, owner reference, ``controlled_by``
    status.py      conditions (Scheduled, Synced, Ready), lastCrawl, lastScheduleTime

The I/O around them:

    cronjobs.py    CronJobs through the Kubernetes API (read, server-side apply, delete)
    patching.py    CrawlSite writes outside kopf's handlers (status, the resync annotation)
    syncing.py     the kubecrawl API over HTTP (``SiteApi``), with in-call retries
    reconciler.py  one CrawlSite's reconciliation (CronJob + API sync) and its status refresh, kopf-free
    refresher.py   the status refresher: one loop over all CrawlSites (a kopf index), no per-object timer
    handlers.py    kopf: create/update/resume/resync, the index, the deletion event, start-up (``register``)
    triggering.py  ``kubecrawl trigger``: what the CronJob's pod runs to start one crawl through the API

Shared with CrawlWorkerPools: ``operator.kube`` (client, errors), ``operator.group`` (API group),
``operator.conditions``.
"""
