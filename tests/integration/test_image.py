"""The container image: built once per session by tools/image/build (buildah, from the repository's Dockerfile),
read from its OCI archive and run for real with runc, as the chart runs it: user 10001, read-only root filesystem.
"""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.image import REPO, BuiltImage, Bundle, OciImage, build_image

# A cold build (Debian base with mmdebstrap, dependencies from PyPI) takes one to two minutes on 2 cores; it
# happens in the first test's setup, which pytest-timeout counts.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"
PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


@pytest.fixture(scope="session")
def built() -> BuiltImage:
    return build_image()


# The extracted archive and the unpacked rootfs are 400 MB together: gone at the end of the session rather than
# kept in pytest's last three basetemps.
@pytest.fixture(scope="session")
def image(built: BuiltImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OciImage]:
    workdir = tmp_path_factory.mktemp("image")
    yield OciImage(built.archive, workdir)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def rootfs(image: OciImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    workdir = tmp_path_factory.mktemp("unpacked")
    yield image.unpack(workdir / "rootfs")
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def bundle(image: OciImage, rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return Bundle(image, rootfs, tmp_path_factory.mktemp("runc"))


def site_packages(rootfs: Path) -> Path:
    (path,) = (rootfs / "opt/kubecrawl/lib").glob("python3.*/site-packages")
    return path


def certificates(data: bytes) -> set[bytes]:
    return {b"".join(pem.split()) for pem in PEM.findall(data)}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_image_config_runs_kubecrawl_as_uid_10001(image: OciImage) -> None:
    config = image.runtime_config
    assert config["User"] == "10001"
    assert config["Entrypoint"] == ["kubecrawl"]
    assert "PYTHONDONTWRITEBYTECODE=1" in config["Env"]


def test_image_labels_name_its_source_and_version(image: OciImage) -> None:
    labels = image.runtime_config["Labels"]
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert labels["org.opencontainers.image.source"] == "https://github.com/kubecrawl/kubecrawl"
    assert labels["org.opencontainers.image.version"] == version


def test_kubecrawl_help_exits_0_as_uid_10001_on_a_read_only_root(bundle: Bundle) -> None:
    assert bundle.user() == (10001, 10001)
    run = bundle.run()  # the image's own Entrypoint and Cmd: kubecrawl --help
    assert run.returncode == 0, run.stderr
    assert "Usage: kubecrawl" in run.stdout


def test_every_kubecrawl_module_ships_precompiled_bytecode(rootfs: Path) -> None:
    package = site_packages(rootfs) / "kubecrawl"
    tag = "cpython-3" + package.parent.parent.name.removeprefix("python3.")
    sources = sorted(package.rglob("*.py"))
    assert len(sources) > 50
    missing = [
        str(source.relative_to(package))
        for source in sources
        if not (source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc").is_file()
    ]
    assert missing == []
    # Unchecked-hash .pyc (PEP 552 flags 0b01): valid whatever the files' mtimes become in a layer or a snapshot.
    flags = {int.from_bytes(pyc.read_bytes()[4:8], "little") for pyc in package.rglob(f"*.{tag}.pyc")}
    assert flags == {0b01}


IMPORT_EVERYTHING = """
import importlib, importlib._bootstrap_external as loaders, json, os, pkgutil, sys
compiled = []
source_to_code = loaders.SourceLoader.source_to_code
def spy(self, data, path, *, _optimize=-1):
    compiled.append(path)
    return source_to_code(self, data, path, _optimize=_optimize)
loaders.SourceLoader.source_to_code = spy
import kubecrawl
# __main__ runs its command when imported (python -m kubecrawl.cli): compiled by the image, not imported here.
names = [m.name for m in pkgutil.walk_packages(kubecrawl.__path__, "kubecrawl.")
         if ".migrations" not in m.name and not m.name.endswith(".__main__")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"uid": os.getuid(), "modules": len(sys.modules), "kubecrawl": len(names), "compiled": compiled}))
"""


def test_kubecrawl_and_its_dependencies_import_without_compiling_any_source(bundle: Bundle) -> None:
    # Every kubecrawl module (hence every role's dependencies) imported on the read-only root: a module whose
    # bytecode were missing or stale would go through the loader's source_to_code, at every process start.
    run = bundle.run(["-c", IMPORT_EVERYTHING], entrypoint=["python"])
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["uid"] == 10001
    assert result["kubecrawl"] > 50
    assert result["modules"] > 1000
    assert result["compiled"] == []


def test_default_tls_context_trusts_the_image_ca_bundle(bundle: Bundle, rootfs: Path) -> None:
    assert (rootfs / CA_BUNDLE).is_file()
    script = (
        "import json, os, ssl; ctx = ssl.create_default_context();"
        "print(json.dumps({'stats': ctx.cert_store_stats(),"
        " 'cafile': os.path.realpath(ssl.get_default_verify_paths().openssl_cafile)}))"
    )
    run = bundle.run(["-c", script], entrypoint=["python"])
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["cafile"] == "/" + CA_BUNDLE
    assert result["stats"]["x509_ca"] > 100
    assert result["stats"]["x509"] == len(certificates((rootfs / CA_BUNDLE).read_bytes()))


def test_ca_bundle_is_the_image_own_and_not_the_build_host(rootfs: Path) -> None:
    # The build mounts the host's bundle (it may hold a proxy's CA) over this path for its RUN steps only: the
    # image must keep the bundle Debian's ca-certificates generated from its own certificates.
    bundle = certificates((rootfs / CA_BUNDLE).read_bytes())
    debian = set().union(*(certificates(p.read_bytes()) for p in (rootfs / "usr/share/ca-certificates").rglob("*.crt")))
    assert len(bundle) > 100
    assert bundle <= debian
    host_local = set().union(
        set(), *(certificates(p.read_bytes()) for p in Path("/usr/local/share/ca-certificates").glob("*.crt"))
    )
    assert not bundle & host_local
    assert not list((rootfs / "usr/local/share/ca-certificates").glob("*.crt"))


def test_archive_carries_no_build_time_configuration(image: OciImage) -> None:
    paths = image.layer_paths()
    leftovers = {"etc/pip.conf", "etc/uv", "etc/uv/uv.toml", "root/.config", "root/.cache", "src", "opt/uv"}
    assert not paths & leftovers
    assert not [path for path in paths if path.startswith(("etc/xdg/pip", "root/.config/", "src/"))]


def test_image_carries_no_build_host_network_identity(rootfs: Path) -> None:
    # Runtimes bind-mount their own /etc/resolv.conf and /etc/hostname; the build machine's must not be baked in.
    assert (rootfs / "etc/resolv.conf").read_text() == ""
    assert (rootfs / "etc/hostname").read_text() == ""


def test_image_installs_exactly_the_locked_runtime_dependencies(rootfs: Path) -> None:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    locked = {(normalise(p["name"]), p["version"]) for p in lock["package"]}
    (project,) = (p for p in lock["package"] if p["name"] == "kubecrawl")
    runtime = {normalise(d["name"]) for d in project["dependencies"]}
    test_only = {normalise(d["name"]) for d in project["optional-dependencies"]["test"]} - runtime

    installed = set()
    for metadata in site_packages(rootfs).glob("*.dist-info/METADATA"):
        fields = dict(
            line.split(": ", 1) for line in metadata.read_text().splitlines() if ": " in line and not line[0].isspace()
        )
        installed.add((normalise(fields["Name"]), fields["Version"]))
    names = {name for name, _ in installed}
    assert installed - locked == set()
    assert runtime <= names
    assert not names & test_only


def test_image_size_is_recorded_beside_the_archive(
    built: BuiltImage, image: OciImage, capsys: pytest.CaptureFixture[str]
) -> None:
    meta = built.meta
    assert meta["manifest_digest"] == image.manifest_digest
    assert meta["image_id"] == image.manifest["config"]["digest"]
    assert meta["compressed_layers_bytes"] == sum(layer["size"] for layer in image.manifest["layers"])
    assert meta["unpacked_rootfs_bytes"] > meta["compressed_layers_bytes"]
    with capsys.disabled():
        print(
            f"\nimage {meta['image']}: {meta['compressed_layers_bytes'] / 1e6:.1f} MB compressed layers,"
            f" {meta['unpacked_rootfs_bytes'] / 1e6:.1f} MB unpacked, {meta['layers']} layers,"
            f" built in {meta['build_seconds']} s ({built.archive})"
        )


def test_image_and_ci_install_with_the_same_uv() -> None:
    # One resolver version for both installs of uv.lock: the Dockerfile's build stage and scripts/test.
    dockerfile = re.search(r"^ARG UV_VERSION=(\S+)$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    script = re.search(r"pip install -q uv==(\S+) ", (REPO / "scripts/test").read_text())
    assert dockerfile is not None
    assert script is not None
    assert dockerfile.group(1) == script.group(1)
