"""CrawlWorkerPool I/O around the pure rules in ``kubecrawl.operator.scaling``.

    probing.py    the queue: ready/consumers by AMQP passive declare, unacked per connection (management API)
    workloads.py  the Kubernetes API: Deployment /scale, pods and their deletion costs, HPAs/ScaledObjects,
                  the pool's status
    scaler.py     one pool's poll: read, decide, annotate, write /scale, report (Events, status, metrics)

    supervising.py one polling task per pool, started and stopped from a kopf index (no finalizer)

``kubecrawl.operator.handlers.pools`` feeds the index and runs the supervisor.
"""
