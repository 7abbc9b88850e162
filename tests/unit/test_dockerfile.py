"""The Dockerfile's image metadata (no build: tests/integration/test_image.py builds and runs the image)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The pre-defined annotation keys of the OCI image spec a registry or scanner shows (annotations.md); `authors`
# and `ref.name`/`base.*` are left to whoever publishes the image.
OCI_KEYS = {
    "title",
    "description",
    "url",
    "documentation",
    "source",
    "vendor",
    "licenses",
    "version",
    "revision",
    "created",
}


def labels() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found: dict[str, str] = {}
    for line in re.findall(r"^LABEL (.+)$", text, re.MULTILINE):
        found.update(re.findall(r'(\S+?)="([^"]*)"', line))
    return found


def test_image_carries_the_oci_annotations() -> None:
    oci = {key.removeprefix("org.opencontainers.image."): value for key, value in labels().items()}
    assert set(oci) >= OCI_KEYS
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert oci["licenses"] == project["license"]
    # Filled at build time (tools/image/build passes the version, the commit and its time).
    assert (oci["version"], oci["revision"], oci["created"]) == ("${VERSION}", "${REVISION}", "${CREATED}")
