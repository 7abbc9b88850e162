"""ServiceAccount tokens at the API (KUBECRAWL_AUTH=kubernetes) on the real control plane: the API process checks
tokens with TokenReview (audience ``kubecrawl``) and decides with SubjectAccessReview against RBAC, as an identity
holding only ``system:auth-delegator``; the operator's client sends the token from its file.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from kubecrawl.operator.crawlsite.syncing import ApiRejected, SiteApi
from kubecrawl.store.database import create_engine
from kubecrawl.store.keys import KeyStore
from kubecrawl.store.migrating import upgrade
from tests.support.controlplane import free_port
from tests.support.servers import PostgresServer, RabbitServer
from tests.support.stack import Cluster, Process, service_env, start_api, stop_all

pytestmark = pytest.mark.e2e

SITE = {"url": "https://example.org/"}


@dataclass
class Reviewing:
    """What an API process reviewing tokens needs: the identity (system:auth-delegator) and a database."""

    kubeconfig: Path
    database_url: str
    rabbitmq_url: str
    logs: Path

    def start(self, **env: str) -> tuple[str, Process]:
        settings = {
            "KUBECRAWL_AUTH": "kubernetes",
            "KUBECRAWL_AUTH_CACHE_SECONDS": "0",  # every request reviewed: RBAC changes show at once
            "KUBECONFIG": str(self.kubeconfig),
            **env,
        }
        port = free_port()
        api = start_api(service_env(self.database_url, self.rabbitmq_url, **settings), port, self.logs / f"{port}.log")
        return f"http://127.0.0.1:{port}", api


@pytest.fixture(scope="module")
def reviewing(
    cluster: Cluster, postgres: PostgresServer, rabbit: RabbitServer, tmp_path_factory: pytest.TempPathFactory
) -> Reviewing:
    cp = cluster.controlplane
    kubeconfig = cp.mint_user("kubecrawl-api")
    cp.bind_cluster_role("kubecrawl-api", "system:auth-delegator")
    database_url = postgres.create_database("sa_" + uuid.uuid4().hex[:8])
    upgrade(database_url)
    vhost = rabbit.add_vhost("sa_" + uuid.uuid4().hex[:8])
    return Reviewing(kubeconfig, database_url, vhost, tmp_path_factory.mktemp("reviewing-api"))


@pytest.fixture(scope="module")
def api_url(reviewing: Reviewing) -> Iterator[str]:
    url, api = reviewing.start()
    yield url
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


async def test_with_both_a_key_and_a_service_account_token_are_accepted(
    reviewing: Reviewing, cluster: Cluster, namespace: str
) -> None:
    engine = create_engine(reviewing.database_url)
    key = await KeyStore(engine).create("both-" + uuid.uuid4().hex[:6], ["read"], None)
    await engine.dispose()
    grant(
        cluster, namespace, "reader", [{"apiGroups": ["kubecrawl.io"], "resources": ["crawlsites"], "verbs": ["get"]}]
    )
    url, api = reviewing.start(KUBECRAWL_AUTH="api_keys+kubernetes")
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            assert (await client.get("/sites", headers=bearer(key))).status_code == 200
            site = f"/sites/{namespace}/docs"
            assert (await client.get(site, headers=bearer(token(cluster, namespace, "reader")))).status_code == 404
            assert (await client.get(site, headers=bearer("kc_revoked-or-made-up"))).status_code == 401
            assert (await client.get(site, headers=bearer("garbage"))).status_code == 401
    finally:
        stop_all(api)


def test_an_unreachable_kubernetes_api_is_503_not_401(reviewing: Reviewing, tmp_path: Path) -> None:
    config = yaml.safe_load(reviewing.kubeconfig.read_text())
    for cluster_entry in config["clusters"]:
        cluster_entry["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(yaml.safe_dump(config))
    url, api = reviewing.start(KUBECONFIG=str(dead))
    try:
        answer = httpx.get(f"{url}/sites", headers=bearer("any-token"), timeout=30)
        assert (answer.status_code, answer.json()["code"]) == (503, "auth_unavailable"), answer.text
        assert answer.headers["retry-after"] == "1"
    finally:
        stop_all(api)
