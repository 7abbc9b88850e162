"""Pure reconciliation logic: plain functions over plain data (dicts as the Kubernetes API speaks them)."""
