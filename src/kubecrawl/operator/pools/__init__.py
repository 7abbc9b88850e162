"""CrawlWorkerPool I/O around the pure rules in ``kubecrawl.operator.scaling``.

    probing.py    the queue: ready/consumers by AMQP passive declare, unacked per connection (management API)
    workloads.py  the Kubernetes API: Deployment /scale, pods and their deletion costs, HPAs/ScaledObjects,
                  the pool's status
    scaler.py     one pool's poll: read, decide, annotate, write /scale, report (Events, status, metrics)

``kubecrawl.operator.handlers.pools`` runs one kopf daemon per pool around :class:`~.scaler.PoolScaler`.
"""
