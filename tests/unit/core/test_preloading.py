"""A preloaded module is imported on a daemon thread; a failed import is left to the caller's own import."""

from __future__ import annotations

import importlib
import sys

import pytest

from kubecrawl.core.preloading import preload


def test_a_preloaded_module_is_imported_on_a_daemon_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    thread = preload("colorsys")
    assert thread.daemon  # the process never waits for it at exit
    thread.join(timeout=30)
    assert "colorsys" in sys.modules


def test_a_module_that_fails_to_import_fails_in_the_callers_import_and_the_rest_still_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    thread = preload("kubecrawl.no_such_module", "colorsys")
    thread.join(timeout=30)
    assert "colorsys" in sys.modules
    with pytest.raises(ModuleNotFoundError, match=r"kubecrawl\.no_such_module"):
        importlib.import_module("kubecrawl.no_such_module")
