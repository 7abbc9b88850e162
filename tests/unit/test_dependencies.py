"""Declared dependency ranges (pyproject.toml) that must not admit releases we know to be abandoned."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def requirement(name: str) -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(line) for line in project["dependencies"] if Requirement(line).name == name]
    assert len(found) == 1, name
    return found[0]


def test_croniter_range_admits_only_the_maintained_line() -> None:
    # croniter 2.x–6.x are the abandoned line (6.0 was announced as the last before pallets-eco took it over).
    specifier = requirement("croniter").specifier
    assert not any(specifier.contains(Version(v)) for v in ("2.0.7", "3.0.4", "5.0.1", "6.0.0"))
    assert specifier.contains(Version("7.0.0"))
