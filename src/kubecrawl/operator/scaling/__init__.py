"""CrawlWorkerPool scaling maths: pure functions over plain dataclasses, no I/O, no kopf.

    policy.py     the pool's spec (camelCase CR dict → :class:`~.policy.PoolSpec`), defaults and checks
    deciding.py   one poll → a :class:`~.deciding.Decision` (recommendation, stabilisation window, rate limits,
                  busy floor, cooldown to zero, fallback) and the next :class:`~.deciding.ScalerState`
    costs.py      pod-deletion-cost annotations so the ReplicaSet removes idle pods first
    reporting.py  conditions, status fields and Kubernetes Events derived from decisions

``kubecrawl.operator.pools`` does the I/O around these (RabbitMQ, the Kubernetes API) and
``kubecrawl.operator.handlers.pools`` runs one polling task per CrawlWorkerPool. docs/autoscaling.md explains the
rules for users.
"""
