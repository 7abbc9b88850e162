"""deploy/crds/crawlsite.yaml against kubecrawl.core.sites.CrawlSiteSpec and the issue's contract (no cluster)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from croniter import croniter

from kubecrawl.core.sites import CrawlSiteSpec
from tests.support.crds import preserved_unknown_fields

ROOT = Path(__file__).resolve().parents[3]
CRD = yaml.safe_load((ROOT / "deploy" / "crds" / "crawlsite.yaml").read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
SPEC = SCHEMA["properties"]["spec"]

# Bounds the CRD has and the pydantic model does not: CEL needs bounded strings to estimate rule costs, and the
# time zone pattern only catches typos early (the API server checks the name against its tz database).
CRD_ONLY = {
    ("url", "maxLength"),
    ("url", "minLength"),
    ("schedule", "maxLength"),
    ("timeZone", "maxLength"),
    ("timeZone", "pattern"),
}


def _cron_regex() -> str:
    """The schedule rule, rebuilt from readable parts: the CRD must hold exactly this."""
    minute = "([0-5]?[0-9])"
    hour = "([01]?[0-9]|2[0-3])"
    day = "(0?[1-9]|[12][0-9]|3[01])"
    month = "(0?[1-9]|1[0-2]|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec))"
    weekday = "([0-6]|(?i:sun|mon|tue|wed|thu|fri|sat))"
    step = "(/[1-9][0-9]?)?"

    def field(value: str) -> str:
        item = f"([*]|{value}(-{value})?){step}"
        return f"{item}(,{item})*"

    fields = " +".join(field(v) for v in (minute, hour, day, month, weekday))
    return f"^(@(annually|yearly|monthly|weekly|daily|midnight|hourly)|{fields})$"


def _schedule_rule() -> str:
    (rule,) = SPEC["properties"]["schedule"]["x-kubernetes-validations"]
    match = re.fullmatch(r"self\.matches\('(.*)'\)", rule["rule"])
    assert match is not None
    return match[1]


def test_crd_names_scope_and_version() -> None:
    assert CRD["metadata"]["name"] == "crawlsites.kubecrawl.io"
    names = CRD["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"], names["categories"]) == (
        "CrawlSite",
        "crawlsites",
        ["csite"],
        ["kubecrawl"],
    )
    assert CRD["spec"]["scope"] == "Namespaced"
    assert (VERSION["name"], VERSION["served"], VERSION["storage"]) == ("v1alpha1", True, True)
    assert VERSION["subresources"] == {"status": {}}


def test_printer_columns_show_url_schedule_suspend_last_state_pages_age() -> None:
    columns = {c["name"]: c for c in VERSION["additionalPrinterColumns"] if c.get("priority", 0) == 0}
    assert list(columns) == ["URL", "Schedule", "Suspend", "Last", "State", "Pages", "Age"]
    assert columns["Last"]["jsonPath"] == ".status.lastScheduleTime"
    assert columns["State"]["jsonPath"] == ".status.lastCrawl.state"
    assert columns["Pages"]["jsonPath"] == ".status.lastCrawl.pages"


def test_schema_is_structural_with_no_preserved_unknown_fields() -> None:
    assert preserved_unknown_fields(SCHEMA) == []
    assert SPEC["required"] == ["url"]


def _compare(path: str, crd: dict[str, Any], model: dict[str, Any], problems: list[str]) -> None:
    if set(crd["properties"]) != set(model["properties"]):
        problems.append(f"{path}: CRD {sorted(crd['properties'])} vs model {sorted(model['properties'])}")
        return
    for name, crd_prop in crd["properties"].items():
        model_prop = _resolve_model(model["properties"][name])
        where = f"{path}.{name}".lstrip(".")
        if crd_prop["type"] != model_prop.get("type", crd_prop["type"]):
            problems.append(f"{where}: type {crd_prop['type']} vs {model_prop.get('type')}")
        for key in ("minimum", "maximum", "enum", "default", "minLength", "maxLength", "pattern"):
            crd_value, model_value = crd_prop.get(key), model_prop.get(key)
            if key == "default" and crd_prop["type"] == "object":
                continue  # `default: {}` lets the API server fill the nested defaults
            if crd_value != model_value and (name, key) not in CRD_ONLY:
                problems.append(f"{where}: {key} {crd_value!r} (CRD) vs {model_value!r} (model)")
        if crd_prop["type"] == "object":
            _compare(where, crd_prop, model_prop, problems)


_DEFS = CrawlSiteSpec.model_json_schema(by_alias=True)["$defs"]


def _resolve_model(prop: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in prop:
        return {**_DEFS[prop["$ref"].rsplit("/", 1)[1]], **{k: v for k, v in prop.items() if k != "$ref"}}
    if "anyOf" in prop:
        (inner,) = [p for p in prop["anyOf"] if p.get("type") != "null"]
        outer = {k: v for k, v in prop.items() if k != "anyOf" and not (k == "default" and v is None)}
        return {**inner, **outer}
    if "enum" not in prop and "const" in prop:
        return {**prop, "enum": [prop["const"]]}
    return prop


def test_crd_spec_matches_the_pydantic_model_field_by_field() -> None:
    problems: list[str] = []
    model = {"properties": CrawlSiteSpec.model_json_schema(by_alias=True)["properties"]}
    _compare("spec", SPEC, model, problems)
    assert problems == []


def test_objects_default_to_empty_so_nested_defaults_apply() -> None:
    for name in ("scope", "politeness", "fetch"):
        assert SPEC["properties"][name]["default"] == {}


def test_schedule_rule_is_the_documented_cron_grammar() -> None:
    assert _schedule_rule() == _cron_regex()


VALID_CRONS = [
    "* * * * *",
    "0 3 * * *",
    "*/15 * * * *",
    "0 0 1 1 *",
    "30 6 * * MON-FRI",
    "0 9-17/2 * * 1-5",
    "5,35 0,12 1,15 jan,jul sun",
    "59 23 31 12 6",
    "0  3  *  *  *",
    "@hourly",
    "@daily",
    "@midnight",
    "@weekly",
    "@monthly",
    "@yearly",
    "@annually",
]
INVALID_CRONS = [
    "bad cron",
    "",
    "* * * *",
    "* * * * * *",
    "60 * * * *",
    "* 24 * * *",
    "* * 0 * *",
    "* * 32 * *",
    "* * * 13 *",
    "* * * * 7",
    "*/0 * * * *",
    "@every 1h",
    "@reboot",
    "TZ=UTC 0 3 * * *",
    "0 3 * * * ",
    " 0 3 * * *",
    "0 3 * * MONDAY",
    "0 3 L * *",
    "0 3 * * 1#2",
    "a b c d e",
]


@pytest.mark.parametrize("cron", VALID_CRONS)
def test_schedule_rule_accepts_cron_the_controller_and_croniter_accept(cron: str) -> None:
    assert re.fullmatch(_cron_regex(), cron)
    assert croniter.is_valid(cron)  # the embedded scheduler (kubecrawl.scheduling) uses croniter


@pytest.mark.parametrize("cron", INVALID_CRONS)
def test_schedule_rule_refuses_malformed_or_out_of_range_cron(cron: str) -> None:
    assert not re.fullmatch(_cron_regex(), cron)


def test_overlap_policy_is_an_enum_defaulting_to_forbid() -> None:
    prop = SPEC["properties"]["overlapPolicy"]
    assert (prop["enum"], prop["default"]) == (["Forbid", "Replace", "Allow"], "Forbid")


def test_url_rule_allows_only_http_and_https() -> None:
    (rule,) = SPEC["properties"]["url"]["x-kubernetes-validations"]
    assert "getScheme() in ['http', 'https']" in rule["rule"]
    assert rule["message"]


def test_status_conditions_are_a_map_list_keyed_by_type() -> None:
    conditions = SCHEMA["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("crawlsite-*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid_site_specs(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == "kubecrawl.io/v1alpha1"
    assert doc["kind"] == "CrawlSite"
    spec = CrawlSiteSpec.model_validate(doc["spec"])
    if spec.schedule:
        assert re.fullmatch(_cron_regex(), spec.schedule)
