"""The kubecrawl image, built for real and run for real: `tools/image/build` makes the OCI archive, `runc` runs it.

The archive is read as a container runtime reads it (index → manifest → config and layers); its layers are
unpacked in order, whiteouts applied, into a bundle's rootfs, and runc starts the image's own entry point, user,
environment and working directory from its config, on a read-only root, as the chart's pods run. A missing tool
raises ``ImageToolUnavailable``: the run fails loudly, never skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "tools" / "image" / "build"
RUNC = Path("/usr/sbin/runc")
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


class ImageToolUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class BuiltImage:
    archive: Path
    meta: dict[str, Any]


def build_image(tag: str = "kubecrawl:dev") -> BuiltImage:
    """Run tools/image/build; its last stdout line is the archive, FILE.json beside it holds the measurements."""
    if os.geteuid() != 0:
        raise ImageToolUnavailable("building and running the image needs root (mmdebstrap, buildah, runc)")
    result = subprocess.run([str(BUILD), tag], cwd=REPO, capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.splitlines()[-40:])
        raise RuntimeError(f"tools/image/build {tag} failed with exit code {result.returncode}:\n{tail}")
    archive = Path(result.stdout.strip().splitlines()[-1])
    meta = json.loads(Path(f"{archive}.json").read_text())
    return BuiltImage(archive=archive, meta=meta)


def _blob(root: Path, digest: str) -> Path:
    algorithm, value = digest.split(":", 1)
    return root / "blobs" / algorithm / value


class OciImage:
    """One image of an OCI archive, opened from a directory the archive was extracted to."""

    def __init__(self, archive: Path, workdir: Path) -> None:
        self.dir = workdir / "oci"
        self.dir.mkdir(parents=True)
        with tarfile.open(archive) as tar:
            _extract(tar, self.dir)
        index = json.loads((self.dir / "index.json").read_text())
        (descriptor,) = index["manifests"]
        self.manifest_digest: str = descriptor["digest"]
        self.manifest: dict[str, Any] = json.loads(_blob(self.dir, self.manifest_digest).read_text())
        self.config: dict[str, Any] = json.loads(_blob(self.dir, self.manifest["config"]["digest"]).read_text())

    @property
    def runtime_config(self) -> dict[str, Any]:
        """The part of the config a runtime applies: User, Env, Entrypoint, Cmd, WorkingDir, Labels."""
        return dict(self.config.get("config") or {})

    def layers(self) -> Iterator[tarfile.TarFile]:
        for layer in self.manifest["layers"]:
            with tarfile.open(_blob(self.dir, layer["digest"]), "r:*") as tar:
                yield tar

    def layer_paths(self) -> set[str]:
        """Every path any layer carries, whiteouts included: what the archive ships, even if hidden later."""
        return {_normal(member.name) for tar in self.layers() for member in tar.getmembers()}

    def unpack(self, rootfs: Path) -> Path:
        """Apply the layers in order onto rootfs, as a runtime's snapshotter does."""
        rootfs.mkdir(parents=True)
        for tar in self.layers():
            members = []
            for member in tar.getmembers():
                path = _normal(member.name)
                parent, name = os.path.split(path)
                if name == OPAQUE:
                    _clear(rootfs / parent)
                elif name.startswith(WHITEOUT):
                    _remove(rootfs / parent / name.removeprefix(WHITEOUT))
                else:
                    # A file replacing a directory (or the reverse) replaces it whole.
                    target = rootfs / path
                    if target.is_dir() and not target.is_symlink() and not member.isdir():
                        shutil.rmtree(target)
                    members.append(member)
            _extract(tar, rootfs, members)
        return rootfs


def _normal(name: str) -> str:
    return os.path.normpath(name.lstrip("/")).removeprefix("./")


def _clear(directory: Path) -> None:
    if directory.is_dir():
        for child in directory.iterdir():
            _remove(child)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _extract(tar: tarfile.TarFile, dest: Path, members: list[tarfile.TarInfo] | None = None) -> None:
    # Our own archive, extracted as root: ownership, modes and absolute symlinks exactly as the layers say
    # (the "data" filter would refuse /usr/lib/ssl/certs -> /etc/ssl/certs).
    tar.extractall(dest, members=members, filter="fully_trusted")


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


class Bundle:
    """An OCI runtime bundle of the image: its rootfs read-only, its config's process, run by runc."""

    def __init__(self, image: OciImage, rootfs: Path, workdir: Path) -> None:
        if not RUNC.exists():
            raise ImageToolUnavailable(f"{RUNC} not found: apt-get install -y --no-install-recommends runc")
        self.image = image
        self.rootfs = rootfs
        self.dir = workdir / "bundle"
        self.state = workdir / "runc-state"
        self.dir.mkdir(parents=True)
        self.state.mkdir()
        # runc's own default spec (namespaces, masked paths, minimal capabilities, no new privileges); each run
        # puts the image's process and a read-only root into a copy.
        defaults = workdir / "runc-defaults"
        defaults.mkdir()
        subprocess.run([str(RUNC), "spec", "--bundle", str(defaults)], check=True, capture_output=True)
        self.defaults: dict[str, Any] = json.loads((defaults / "config.json").read_text())

    def user(self) -> tuple[int, int]:
        """The config's User as a runtime resolves it: a numeric UID, its group from the image's /etc/passwd."""
        user = str(self.image.runtime_config.get("User") or "0")
        name, _, group = user.partition(":")
        passwd = [line.split(":") for line in (self.rootfs / "etc/passwd").read_text().splitlines() if line]
        entry = next((row for row in passwd if name in (row[0], row[2])), None)
        if entry is None and not name.isdigit():
            raise AssertionError(f"image User {user!r} is not in its /etc/passwd")
        uid = int(entry[2]) if entry else int(name)
        gid = int(group) if group.isdigit() else (int(entry[3]) if entry else 0)
        return uid, gid

    def run(self, args: list[str] | None = None, *, entrypoint: list[str] | None = None, timeout: float = 120) -> Run:
        """Run the image's Entrypoint (or `entrypoint`, like `docker run --entrypoint`) with `args` (default: the
        image's Cmd), as its User, in its WorkingDir, with its Env, on a read-only root."""
        config = self.image.runtime_config
        if entrypoint is None:
            entrypoint = list(config.get("Entrypoint") or [])
        elif args is None:
            args = []
        process_args = entrypoint + list(args if args is not None else config.get("Cmd") or [])
        if not process_args:
            raise AssertionError("the image has neither Entrypoint nor Cmd")
        spec = self._spec(process_args)
        (self.dir / "config.json").write_text(json.dumps(spec, indent=2))
        container = "kubecrawl-image-" + uuid.uuid4().hex[:12]
        try:
            result = subprocess.run(
                [str(RUNC), "--root", str(self.state), "run", "--bundle", str(self.dir), container],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        finally:
            subprocess.run(
                [str(RUNC), "--root", str(self.state), "delete", "--force", container],
                capture_output=True,
                check=False,
            )
        return Run(result.returncode, result.stdout, result.stderr)

    def _spec(self, process_args: list[str]) -> dict[str, Any]:
        # No network namespace: nothing here listens or dials out.
        spec: dict[str, Any] = json.loads(json.dumps(self.defaults))
        config = self.image.runtime_config
        uid, gid = self.user()
        spec["root"] = {"path": str(self.rootfs), "readonly": True}
        spec["hostname"] = "kubecrawl-image-test"
        spec["process"].update(
            terminal=False,
            args=process_args,
            env=list(config.get("Env") or []),
            cwd=config.get("WorkingDir") or "/",
            user={"uid": uid, "gid": gid},
        )
        spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"] if ns["type"] != "network"]
        return spec
