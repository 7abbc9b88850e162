"""The kubecrawl.io API group and version both custom resources (CrawlSite, CrawlWorkerPool) belong to.

Plain constants in a module of their own, so the pure modules that derive names, labels and owner references from
them (``crawlsite.naming``) import no Kubernetes client; the client edge is ``kube.py``.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "kubecrawl.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
