"""Helpers for tests that read the CRD manifests in deploy/crds."""

from __future__ import annotations

from typing import Any


def preserved_unknown_fields(schema: dict[str, Any], path: str = "") -> list[str]:
    """Paths in an OpenAPI schema marked ``x-kubernetes-preserve-unknown-fields`` (a structural schema has none)."""
    found = [path] if schema.get("x-kubernetes-preserve-unknown-fields") else []
    for name, sub in (schema.get("properties") or {}).items():
        found += preserved_unknown_fields(sub, f"{path}.{name}")
    if "items" in schema:
        found += preserved_unknown_fields(schema["items"], f"{path}[]")
    return found
