"""The top-level layers contract (pyproject.toml, docs/architecture.md) names every module of the package: a
module it does not name would be left unchecked by lint-imports."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "kubecrawl"


def top_level_modules() -> set[str]:
    found = {f"kubecrawl.{path.stem}" for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    found |= {f"kubecrawl.{path.name}" for path in PACKAGE.iterdir() if (path / "__init__.py").exists()}
    return found


def layered_modules() -> set[str]:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    [layers] = [c["layers"] for c in contracts if c["name"].startswith("layers: cli >")]
    return {module.strip() for layer in layers for module in layer.split("|")}


def test_every_top_level_module_has_a_layer() -> None:
    assert top_level_modules() - layered_modules() == set()


def test_the_layers_name_no_module_that_does_not_exist() -> None:
    assert layered_modules() - top_level_modules() == set()
