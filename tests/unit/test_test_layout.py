"""The test harness's own rules: helpers and fakes live in tests/support/, never in a conftest or a test module,
and benchmarks borrow only from tests/support/ (tests never borrow from bench/)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def offending(paths: list[Path], allowed: tuple[str, ...], watched: tuple[str, ...]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in paths:
        bad = sorted(m for m in imported_modules(path) if m.startswith(watched) and not m.startswith(allowed))
        if bad:
            found[path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name] = bad
    return found


def test_tests_import_test_code_only_from_tests_support() -> None:
    tests = sorted((ROOT / "tests").rglob("*.py"))
    assert offending(tests, ("tests.support",), ("tests.", "bench")) == {}


def test_benchmarks_import_test_code_only_from_tests_support() -> None:
    benches = sorted((ROOT / "bench").rglob("*.py"))
    assert offending(benches, ("tests.support",), ("tests",)) == {}


def test_the_layout_check_sees_an_import_of_a_conftest(tmp_path: Path) -> None:
    bad = tmp_path / "test_probe.py"
    bad.write_text("from tests.integration.conftest import ApiHandle\nimport bench.publish\n")
    assert offending([bad], ("tests.support",), ("tests.", "bench")) == {
        "test_probe.py": ["bench.publish", "tests.integration.conftest"]
    }
