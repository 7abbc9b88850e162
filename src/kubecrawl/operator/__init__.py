"""The kopf operator (``kubecrawl operator``), one package per custom resource:

    crawlsite/     CrawlSite → owned CronJob + site spec synced to the API (and ``kubecrawl trigger``)
    pool/          CrawlWorkerPool → the worker Deployment's replicas from its queue's backlog

over what both share: ``kube.py`` (the Kubernetes client: log-in, raw calls, ``KubernetesUnavailable``),
``group.py`` (the API group and version), ``conditions.py`` (conditions, Events, status patches),
``failures.py`` (the reconcile-errors metric), ``settings.py`` (``KUBECRAWL_OPERATOR_*``). ``main.py`` sets kopf up
and calls each package's ``handlers.register``. In each package the decision modules are pure and unit-tested
without I/O; the handlers are thin adapters to kopf.

Imports only ``kubecrawl.core`` from the rest of the product (import-linter enforces it): the API is reached over
HTTP (``crawlsite/syncing.py``), RabbitMQ directly for queue depths (``pool/probing.py``).
"""
