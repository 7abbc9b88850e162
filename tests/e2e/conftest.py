"""Session fixtures for the e2e tests: the local control plane (tools/controlplane), the CrawlSite CRD, a real API
and worker on the session's PostgreSQL and RabbitMQ, and `kubecrawl operator` running as the ServiceAccount bound
to deploy/rbac's ClusterRole. Each test gets its own namespace.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubecrawl.store.migrating import upgrade
from tests.support.controlplane import ControlPlane, Node, ensure_built, free_port
from tests.support.servers import PostgresServer, RabbitServer
from tests.support.stack import (
    ROOT,
    Cluster,
    Kube,
    NodeCluster,
    OperatorProcess,
    Services,
    install_crds,
    operator_kubeconfig,
    service_env,
    start_api,
    start_worker,
    stop_all,
)

# Status is refreshed every 2 s in tests (30 s in production), so lastCrawl/lastScheduleTime checks stay quick.
STATUS_INTERVAL_SECONDS = "2"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    bin_dir = ensure_built()
    controlplane = ControlPlane(tmp_path_factory.mktemp("controlplane"), bin_dir)
    kubeconfig = controlplane.start()
    admin = Kube(Path(kubeconfig))
    install_crds(admin)
    yield Cluster(controlplane, admin)
    controlplane.stop()


@pytest.fixture(scope="session")
def services(
    postgres: PostgresServer, rabbit: RabbitServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    logs = tmp_path_factory.mktemp("services")
    database_url = postgres.create_database("e2e_" + uuid.uuid4().hex[:8])
    upgrade(database_url)
    rabbitmq_url = rabbit.add_vhost("e2e_" + uuid.uuid4().hex[:8])
    env = service_env(database_url, rabbitmq_url)
    port = free_port()
    api = start_api(env, port, logs / "api.log")
    worker = start_worker(env, logs / "worker.log")
    yield Services(f"http://127.0.0.1:{port}", api, worker)
    stop_all(worker, api)


@pytest.fixture(scope="session")
def operator(
    cluster: Cluster, services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    logs = tmp_path_factory.mktemp("operator")
    cp = cluster.controlplane
    kubeconfig = operator_kubeconfig(cluster.admin, cp.server, cp.pki.ca_cert, logs / "operator.kubeconfig")
    process = OperatorProcess(
        kubeconfig,
        services.api_url,
        free_port(),
        logs / "operator.log",
        KUBECRAWL_OPERATOR_STATUS_INTERVAL_SECONDS=STATUS_INTERVAL_SECONDS,
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = "t-" + uuid.uuid4().hex[:10]
    cluster.admin.run("create", "namespace", name)
    yield name
    cluster.admin.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def image_archive() -> Path:
    """tools/image/build: the Dockerfile built with buildah (cached base), as an OCI archive. Never skipped."""
    result = subprocess.run([str(ROOT / "tools" / "image" / "build")], stdout=subprocess.PIPE, text=True, check=False)
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0, f"tools/image/build failed ({result.returncode}); its output is above"
    assert lines, "tools/image/build printed no archive path"
    return Path(lines[-1])


@pytest.fixture(scope="session")
def node_cluster(tmp_path_factory: pytest.TempPathFactory, image_archive: Path) -> Iterator[NodeCluster]:
    node = Node(tmp_path_factory.mktemp("node"), ensure_built())
    kubeconfig = node.start(images=[image_archive])
    yield NodeCluster(node, Kube(Path(kubeconfig)), node.host_ip, "localhost/kubecrawl", "dev")
    node.stop()
