"""No source file grows past 450 lines: past that a file holds more than one concept (issue 17)."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "kubecrawl"
LIMIT = 450


def test_every_source_file_is_at_most_450_lines() -> None:
    sizes = {path.relative_to(PACKAGE).as_posix(): len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")}
    assert {name: lines for name, lines in sizes.items() if lines > LIMIT} == {}
