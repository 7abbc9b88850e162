"""ServiceAccount tokens at the API (KUBECRAWL_AUTH=kubernetes) on the real control plane: the API process checks
tokens with TokenReview (audience ``kubecrawl``) and decides with SubjectAccessReview against RBAC, as an identity
holding only ``system:auth-delegator``; the operator's client sends the token from its file.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kubecrawl.operator.crawlsite.syncing import ApiRejected, SiteApi
from kubecrawl.store.migrating import upgrade
from tests.e2e.conftest import Cluster
from tests.e2e.stack import service_env, start_api, stop_all
from tests.support.controlplane import free_port
from tests.support.servers import PostgresServer, RabbitServer

pytestmark = pytest.mark.e2e

SITE = {"url": "https://example.org/"}


@pytest.fixture(scope="module")
def api_url(
    cluster: Cluster, postgres: PostgresServer, rabbit: RabbitServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("reviewing-api")
    cp = cluster.controlplane
    kubeconfig = cp.mint_user("kubecrawl-api")
    cp.bind_cluster_role("kubecrawl-api", "system:auth-delegator")
    database_url = postgres.create_database("sa_" + uuid.uuid4().hex[:8])
    upgrade(database_url)
    env = service_env(
        database_url,
        rabbit.add_vhost("sa_" + uuid.uuid4().hex[:8]),
        KUBECRAWL_AUTH="kubernetes",
        KUBECRAWL_AUTH_CACHE_SECONDS="0",  # every request reviewed: RBAC changes show at once
        KUBECONFIG=str(kubeconfig),
    )
    port = free_port()
    api = start_api(env, port, logs / "api.log")
    yield f"http://127.0.0.1:{port}"
    stop_all(api)


def grant(cluster: Cluster, namespace: str, account: str, rules: list[dict[str, object]]) -> None:
    """A ServiceAccount with a Role of ``rules`` bound to it."""
    cluster.admin.run("create", "serviceaccount", account, "-n", namespace)
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": account, "namespace": namespace},
        "rules": rules,
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": account, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }
    for manifest in (role, binding):
        cluster.admin.run("apply", "-f", "-", stdin=json.dumps(manifest))


def token(cluster: Cluster, namespace: str, account: str, audience: str = "kubecrawl") -> str:
    made = cluster.admin.run("create", "token", account, "-n", namespace, f"--audience={audience}")
    return made.stdout.strip()


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


def test_rbac_decides_what_a_service_account_token_may_do(api_url: str, cluster: Cluster, namespace: str) -> None:
    rules = [
        {"apiGroups": ["kubecrawl.io"], "resources": ["crawlsites/sync"], "verbs": ["update"]},
        {"apiGroups": ["kubecrawl.io"], "resources": ["crawlsites"], "verbs": ["get"]},
        {
            "apiGroups": ["kubecrawl.io"],
            "resources": ["crawlsites/trigger"],
            "resourceNames": ["docs"],
            "verbs": ["create"],
        },
    ]
    grant(cluster, namespace, "crawler", rules)
    cluster.admin.run("create", "serviceaccount", "stranger", "-n", namespace)
    allowed, stranger = token(cluster, namespace, "crawler"), token(cluster, namespace, "stranger")
    with httpx.Client(base_url=api_url, timeout=30) as api:
        assert api.put(f"/sites/{namespace}/docs", json=SITE, headers=bearer(allowed)).status_code == 201
        assert api.put(f"/sites/{namespace}/blog", json=SITE, headers=bearer(allowed)).status_code == 201
        started = api.post(f"/sites/{namespace}/docs/crawls", json={}, headers=bearer(allowed))
        assert started.status_code == 202, started.text
        crawl = started.json()["id"]
        assert api.get(f"/crawls/{crawl}", headers=bearer(allowed)).status_code == 200

        # resourceNames: the Role lets it trigger docs only.
        other = api.post(f"/sites/{namespace}/blog/crawls", json={}, headers=bearer(allowed))
        assert (other.status_code, other.json()["code"]) == (403, "forbidden")
        # Not granted: deleting the site, cancelling the crawl, /metadata.
        assert api.delete(f"/sites/{namespace}/docs", headers=bearer(allowed)).status_code == 403
        assert api.post(f"/crawls/{crawl}/cancel", headers=bearer(allowed)).status_code == 403
        assert api.post("/metadata", json=SITE, headers=bearer(allowed)).status_code == 403

        # Another account of the same namespace, without a Role: 403, and the crawl does not exist for it.
        assert api.post(f"/sites/{namespace}/docs/crawls", json={}, headers=bearer(stranger)).status_code == 403
        assert api.get(f"/sites/{namespace}/docs", headers=bearer(stranger)).status_code == 403
        assert api.get(f"/crawls/{crawl}", headers=bearer(stranger)).status_code == 404


def test_garbage_and_wrong_audience_tokens_are_401(api_url: str, cluster: Cluster, namespace: str) -> None:
    grant(cluster, namespace, "crawler", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}])
    for_kubernetes = token(cluster, namespace, "crawler", audience=cluster.controlplane.server)
    for_someone_else = token(cluster, namespace, "crawler", audience="vault")
    with httpx.Client(base_url=api_url, timeout=30) as api:
        for refused in ("garbage", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln", for_kubernetes, for_someone_else):
            answer = api.get(f"/sites/{namespace}/docs", headers=bearer(refused))
            assert answer.status_code == 401, answer.text
            assert answer.headers["www-authenticate"].startswith("Bearer")
        assert api.get("/sites").status_code == 401
        # The same account with the right audience passes authentication (404: no such site).
        assert (
            api.get(f"/sites/{namespace}/docs", headers=bearer(token(cluster, namespace, "crawler"))).status_code == 404
        )


async def test_the_operator_client_sends_the_token_from_its_file(
    api_url: str, cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    rules = [
        {"apiGroups": ["kubecrawl.io"], "resources": ["crawlsites/sync"], "verbs": ["update", "delete"]},
        {"apiGroups": ["kubecrawl.io"], "resources": ["crawlsites"], "verbs": ["get"]},
    ]
    grant(cluster, namespace, "operator", rules)
    token_file = tmp_path / "token"
    token_file.write_text(token(cluster, namespace, "operator") + "\n")
    api = SiteApi(api_url, timeout=30, retry_delays=(), token_file=token_file)
    try:
        assert await api.put_site(namespace, "synced", SITE)
        assert await api.has_site(namespace, "synced")
        # The kubelet rotates the file: the next call reads the new token.
        token_file.write_text("rotated-to-garbage")
        with pytest.raises(ApiRejected) as refused:
            await api.delete_site(namespace, "synced")
        assert refused.value.status == 401
    finally:
        await api.aclose()
