"""Series every kubecrawl process exports whatever its role."""

from __future__ import annotations

import platform

from prometheus_client import REGISTRY, generate_latest

from kubecrawl import __version__
from kubecrawl.core import metrics  # noqa: F401  # the module registers the series


def test_build_info_names_the_release_and_python_version() -> None:
    text = generate_latest(REGISTRY).decode()
    wanted = f'kubecrawl_build_info{{python_version="{platform.python_version()}",version="{__version__}"}} 1.0'
    assert wanted in text
