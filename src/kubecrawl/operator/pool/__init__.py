"""CrawlWorkerPool: keep a worker Deployment sized to the backlog of one RabbitMQ queue (docs/autoscaling.md).

The rules, pure (plain functions over plain dataclasses: no kopf, no Kubernetes client, no I/O; import-linter
enforces it):

    spec.py        the pool's spec (camelCase CR dict → :class:`~.spec.PoolSpec`), defaults and checks
    deciding.py    one poll → a :class:`~.deciding.Decision` (recommendation, stabilisation window, rate limits,
                   busy floor, cooldown to zero, fallback) and the next :class:`~.deciding.ScalerState`
    costs.py       pod-deletion-cost annotations so the ReplicaSet removes idle pods first
    conflicts.py   HPAs and KEDA ScaledObjects that target the same Deployment
    reporting.py   conditions, status fields and Kubernetes Events derived from decisions

The I/O around them:

    probing.py     the queue: ready/consumers by AMQP passive declare, unacked per connection (management API)
    workloads.py   the Kubernetes API: Deployment /scale, pods and their deletion costs, HPAs/ScaledObjects,
                   the pool's status and Events
    scaler.py      one pool's poll: read, decide, annotate, write /scale, report (Events, status, metrics)
    supervising.py one polling task per pool, started and stopped from a kopf index (no finalizer)
    handlers.py    kopf: the index, the wake-up on pool events, start-up and clean-up (``register``)

Shared with CrawlSites: ``operator.kube`` (client, errors), ``operator.group`` (API group), ``operator.conditions``.
"""
