"""``sites``: the CrawlSite specs the operator syncs (``PUT /sites/{ns}/{name}``) and the embedded default loads."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select

from kubecrawl.core.clock import utcnow
from kubecrawl.store.dialects import as_utc, dialect_insert
from kubecrawl.store.engines import SqlEngine
from kubecrawl.store.schema import sites


def site_json(row: Any) -> dict[str, Any]:
    return {
        "namespace": row.namespace,
        "name": row.name,
        "spec": row.spec,
        "created_at": as_utc(row.created_at),
        "updated_at": as_utc(row.updated_at),
    }


class SqlSiteStore:
    """``SiteStore`` (store/contract.py) on PostgreSQL or SQLite."""

    def __init__(self, engine: SqlEngine) -> None:
        self._engine = engine
        self._insert = dialect_insert(engine)

    async def put(self, namespace: str, name: str, spec: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create or replace; True when it was created."""
        now = utcnow()
        async with self._engine.begin() as conn:
            existed = (
                await conn.execute(select(sites.c.id).where(sites.c.namespace == namespace, sites.c.name == name))
            ).first() is not None
            stmt = (
                self._insert(sites)
                .values(namespace=namespace, name=name, spec=spec, created_at=now, updated_at=now)
                .on_conflict_do_update(index_elements=["namespace", "name"], set_={"spec": spec, "updated_at": now})
                .returning(*sites.c)
            )
            row = (await conn.execute(stmt)).one()
        return site_json(row), not existed

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(sites).where(sites.c.namespace == namespace, sites.c.name == name))
            ).first()
        return None if row is None else site_json(row)

    async def delete(self, namespace: str, name: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(sites).where(sites.c.namespace == namespace, sites.c.name == name))
        return bool(result.rowcount)

    async def list(self) -> list[dict[str, Any]]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(sites).order_by(sites.c.namespace, sites.c.name))).all()
        return [site_json(row) for row in rows]
