"""The alert rules and the Grafana dashboard against promtool and against the metrics kubecrawl really exports.

promtool is the real binary (Debian's `prometheus`, installed by scripts/install-deps). The exposition is what every
kubecrawl process serves on /metrics: ``prometheus_client.generate_latest`` over the default registry after importing
the API, worker and operator, so a renamed metric, a dropped label or a misspelt state fails here.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from kubecrawl.broker.base import PublisherState
from kubecrawl.core import metrics
from kubecrawl.core.models import CrawlPageState
from kubecrawl.operator.failures import Kind

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yaml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "rules_test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "kubecrawl.json"
OPERATIONS = ROOT / "docs" / "operations.md"
# What `kubecrawl api|worker|operator` import: together, every metric any kubecrawl /metrics serves.
PROCESSES = ("kubecrawl.api.app", "kubecrawl.worker.runtime", "kubecrawl.operator.main")
RUNBOOK_BASE = "https://github.com/kubecrawl/kubecrawl/blob/main/docs/operations.md#"

# Labels Prometheus adds when scraping (Kubernetes service discovery, ServiceMonitor targetLabels).
TARGET_LABELS = {"namespace", "pod", "instance", "job", "service", "container", "endpoint"}
# Label values the code takes from enums: a matcher on any other value can never match.
ENUM_VALUES = {
    ("kubecrawl_publisher_state", "state"): {s.value for s in PublisherState},
    ("kubecrawl_crawl_pages_total", "state"): {s.value for s in CrawlPageState},
    ("kubecrawl_pool_queue_messages", "state"): {"ready", "unacked"},
    ("kubecrawl_pool_scale_total", "direction"): {"up", "down"},
    ("kubecrawl_operator_reconcile_errors_total", "kind"): set(get_args(Kind)),
}
_SELECTOR = re.compile(r"\b(kubecrawl_[a-z0-9_]+)(?:\{([^}]*)\})?")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def promtool() -> str:
    path = shutil.which("promtool")
    assert path is not None, "promtool is missing: scripts/install-deps installs Debian's prometheus"
    return path


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def rule_expressions() -> list[str]:
    return [rule["expr"] for rule in rules()]


def exported_series() -> dict[str, set[str]]:
    """Every series name a kubecrawl /metrics can show → the label names it carries (bucket series add `le`)."""
    for module in PROCESSES:
        importlib.import_module(module)  # each process registers its metrics when its modules load
    exposition = generate_latest(REGISTRY).decode()
    labels = {
        wrapper._name: set(wrapper._labelnames)
        for wrapper in vars(metrics).values()
        if isinstance(wrapper, MetricWrapperBase)
    }
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        if not family.name.startswith("kubecrawl_"):
            continue
        own = labels.get(family.name, set())
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
        for suffix in suffixes.get(family.type, ("",)):
            series[family.name + suffix] = own | ({"le"} if suffix == "_bucket" else set())
    return series


def grafana_to_promql(expression: str) -> str:
    """Grafana's variables → values Prometheus accepts, so promtool can parse the dashboard's queries."""
    for variable, value in (("$__rate_interval", "5m"), ("$__range", "1h"), ("$namespace", ".*"), ("$pool", ".*")):
        expression = expression.replace(variable, value)
    return expression


def test_rules_pass_promtool_check_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_rules_pass_their_promtool_unit_tests() -> None:
    result = subprocess.run([promtool(), "test", "rules", str(RULES_TEST)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested() -> None:
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for case in test["alert_rule_test"]
    }
    assert {rule["alert"] for rule in rules()} <= tested


def test_every_alert_has_for_severity_summary_description_and_runbook() -> None:
    for rule in rules():
        assert re.fullmatch(r"[0-9]+[smh]", rule.get("for", "")), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"], rule["alert"]
        assert annotations["description"], rule["alert"]
        assert annotations["runbook_url"] == RUNBOOK_BASE + rule["alert"].lower(), rule["alert"]


def test_every_runbook_link_has_a_section_in_operations_md() -> None:
    headings = {
        line.lstrip("#").strip().lower() for line in OPERATIONS.read_text().splitlines() if line.startswith("#")
    }
    missing = [rule["alert"] for rule in rules() if rule["alert"].lower() not in headings]
    assert not missing, f"docs/operations.md has no section for {missing}"


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    # promtool has no query parser of its own; a rules file of recording rules makes it parse each expression.
    recording = [
        {"record": f"kubecrawl:dashboard_query_{index}", "expr": grafana_to_promql(expression)}
        for index, expression in enumerate(dashboard_expressions())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recording}]}))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_uses_a_datasource_variable() -> None:
    board = json.loads(DASHBOARD.read_text())
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert all(target["datasource"]["uid"] == "${datasource}" for target in panel["targets"])


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_metric_queried_is_exported_by_kubecrawl(source: str) -> None:
    expressions = rule_expressions() if source == "rules" else dashboard_expressions()
    exported = exported_series()
    used = {match.group(1) for expression in expressions for match in _SELECTOR.finditer(expression)}
    assert used, "no kubecrawl_ metric found: the expression pattern is broken"
    assert not used - exported.keys(), f"not exported by kubecrawl: {sorted(used - exported.keys())}"


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_label_matched_exists_on_its_metric(source: str) -> None:
    expressions = rule_expressions() if source == "rules" else dashboard_expressions()
    exported = exported_series()
    problems = []
    for expression in expressions:
        for selector in _SELECTOR.finditer(expression):
            name, matchers = selector.group(1), selector.group(2) or ""
            for label, operator, value in _MATCHER.findall(matchers):
                if label not in exported.get(name, set()) | TARGET_LABELS:
                    problems.append(f"{name} has no label {label}")
                allowed = ENUM_VALUES.get((name, label))
                if allowed is not None and operator in {"=", "!="} and value not in allowed:
                    problems.append(f"{name}{{{label}={value!r}}} never exists (values: {sorted(allowed)})")
    assert not problems, problems
