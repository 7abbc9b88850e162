"""Both CRDs' status.conditions follow metav1.Condition, and what the operator writes fits that schema."""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubecrawl.operator.conditions import Outcome, condition

ROOT = Path(__file__).resolve().parents[3]
CRDS = ("crawlsite.yaml", "crawlworkerpool.yaml")
# k8s.io/apimachinery/pkg/apis/meta/v1 Condition, as controller-gen renders it into every built-in-style CRD.
METAV1_CONDITION: dict[str, Any] = {
    "required": ["type", "status", "lastTransitionTime", "reason", "message"],
    "type": {"maxLength": 316},
    "status": {"enum": ["True", "False", "Unknown"]},
    "reason": {"minLength": 1, "maxLength": 1024, "pattern": r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"},
    "message": {"maxLength": 32768},
    "lastTransitionTime": {"format": "date-time"},
    "observedGeneration": {"format": "int64", "minimum": 0},
}


def conditions_items(name: str) -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "deploy" / "crds" / name).read_text())
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    items: dict[str, Any] = status["properties"]["conditions"]["items"]
    return items


@pytest.mark.parametrize("name", CRDS)
def test_conditions_follow_metav1_condition(name: str) -> None:
    items = conditions_items(name)
    assert sorted(items["required"]) == sorted(METAV1_CONDITION["required"])
    for field, wanted in METAV1_CONDITION.items():
        if field == "required":
            continue
        prop = items["properties"][field]
        assert {key: prop.get(key) for key in wanted} == wanted, f"{name}: {field}"
    assert items["properties"]["type"]["pattern"]


def reasons_in_the_operator() -> set[str]:
    """Every literal reason the operator's code gives an ``Outcome``/``_Limit``/``Event`` (second argument)."""
    reasons: set[str] = set()
    for path in (ROOT / "src" / "kubecrawl" / "operator").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in {"Outcome", "_Limit"}:
                argument = node.args[1] if getattr(node.func, "id", "") == "Outcome" else node.args[0]
                if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                    reasons.add(argument.value)
    return reasons


def test_every_reason_the_operator_writes_matches_the_reason_pattern() -> None:
    pattern = re.compile(METAV1_CONDITION["reason"]["pattern"])
    reasons = reasons_in_the_operator()
    assert len(reasons) > 10  # the walk finds them
    assert [reason for reason in reasons if not pattern.fullmatch(reason)] == []


def test_a_written_condition_has_every_required_field() -> None:
    written = condition("Ready", Outcome("True", "Ready", ""), [], generation=3, now=datetime(2026, 1, 1, tzinfo=UTC))
    assert set(METAV1_CONDITION["required"]) <= set(written)
