"""The lab's container image: ``fauxisp/base:<hash>``.

One base image carries every program the lab's roles run (NSD, Unbound,
nftables, iptables-nft, iproute2/tc, procps, Python 3 with the project's
dependencies). It holds no project code: the source tree is bind-mounted
read-only at ``/opt/fauxisp`` at run time and ``PYTHONPATH`` points there.

The image is described by the files in ``images/`` (the Dockerfile and three
package lists) and by this module's build recipe (``RECIPE``). Their sha256 is
the image's *hash*; the image is tagged ``fauxisp/base:<hash[:16]>`` (and
``fauxisp/base:latest``) and labelled with the full hash. A build whose tag
already exists returns at once.

Two ways to build the same contents:

* **registry**: ``docker build`` of ``images/Dockerfile`` (``FROM
  debian:bookworm-slim``), for hosts that can pull from a registry;
* **offline**: for hosts without a registry (air-gapped labs, CI machines with
  only a Debian mirror): ``debootstrap --variant=minbase`` from the Debian
  mirror the host's apt uses, the Python wheels downloaded by the host's pip
  and installed by pip run from its own wheel, then ``docker import`` with the
  Dockerfile's ENV/WORKDIR/CMD. ``netfilterqueue`` (no wheel on PyPI) is built
  into a wheel by the host's pip when the host is Debian bookworm with its
  CPython 3.11 (the image's own C library and Python); on any other host it is
  compiled inside the rootfs, with build tools installed and purged again. The debootstrap
  package tarball, the wheelhouse and the finished rootfs are kept in the cache
  folder (``/var/cache/fauxisp``, or ``$FAUXISP_CACHE_DIR``), so building
  again after ``docker rmi`` only re-imports.

The offline path is chosen when ``debian:bookworm-slim`` is neither present
nor pullable, or when ``FAUXISP_OFFLINE=1``. ``FAUXISP_OFFLINE=0`` forces
the registry path.

Command line: ``python -m netlab.deploy.images build [--offline|--registry] [--force]``.

If you change what the offline recipe does, bump ``RECIPE_VERSION``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netlab.errors import LabError

__all__ = [
    "BASE_IMAGE",
    "IMAGES_DIR",
    "IMAGE_REPO",
    "LABEL_HASH",
    "LAB_REPO",
    "ImageError",
    "ImageInfo",
    "build_debian_image",
    "build_image",
    "build_lab_image",
    "dockerfile_changes",
    "host_debian_mirror",
    "image_hash",
    "image_tag",
    "main",
]

IMAGE_REPO = "fauxisp/base"
BASE_IMAGE = "debian:bookworm-slim"
LABEL_HASH = "org.fauxisp.image-hash"
LABEL_BUILD = "org.fauxisp.build"
IMAGES_DIR = Path(__file__).resolve().parents[2] / "images"
HASH_INPUTS = ("Dockerfile", "packages.txt", "build-packages.txt", "requirements.txt", "install-python.sh")
DEFAULT_CACHE_DIR = Path("/var/cache/fauxisp")
# in images/: the pip both images' builds run from its wheel, and the lab image's extras
LAB_REQUIREMENTS = "lab-requirements.txt"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

# --- the offline build recipe (part of the image hash) -----------------------
RECIPE_VERSION = 2
SUITE = "bookworm"
VARIANT = "minbase"
TARGET_PYTHON = "3.11"  # Debian bookworm's python3
PIP_PLATFORMS = ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64",
                 "manylinux_2_34_x86_64")
SDIST_ONLY = ("netfilterqueue",)  # no wheel on PyPI: built by the host's pip, else inside the rootfs
TRIM = ("var/lib/apt/lists", "var/cache/apt", "var/cache/debconf/*-old", "var/log",
        "usr/share/man", "usr/share/info", "usr/share/doc (except copyright)", "usr/share/locale",
        "tmp", "root/.cache")
RECIPE = json.dumps({
    "version": RECIPE_VERSION, "suite": SUITE, "variant": VARIANT, "python": TARGET_PYTHON,
    "pip_platforms": PIP_PLATFORMS, "sdist_only": SDIST_ONLY, "sdist_wheels": "host pip on the same suite",
    "trim": TRIM,
}, sort_keys=True)

PULL_PROBE_SECONDS = 20.0
# without these, apt keeps build-only packages that something merely recommends (binutils)
_NO_RECOMMENDS = "-o APT::AutoRemove::RecommendsImportant=false -o APT::AutoRemove::SuggestsImportant=false"
_CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}

Progress = Callable[[str], None]


class ImageError(LabError):
    """The lab's container image could not be found or built."""


@dataclass(frozen=True)
class ImageInfo:
    """The lab's base image, as found or built by :func:`build_image`."""

    tag: str            # fauxisp/base:<hash[:16]>
    image_id: str       # sha256:...
    hash: str           # full sha256 of the image's description
    size: int           # bytes, as the engine reports it
    method: str         # "cached", "registry" or "offline"
    seconds: float      # wall time of this call

    @property
    def built(self) -> bool:
        return self.method != "cached"

    @property
    def latest(self) -> str:
        return f"{IMAGE_REPO}:latest"


# --- hashing -----------------------------------------------------------------

def image_hash(images_dir: Path | str | None = None) -> str:
    """sha256 over the Dockerfile, the package lists and this module's recipe."""
    folder = Path(images_dir) if images_dir is not None else IMAGES_DIR
    digest = hashlib.sha256()
    for name in HASH_INPUTS:
        path = folder / name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageError(f"image description file missing: {path} ({exc.strerror})") from exc
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    digest.update(b"recipe\0" + RECIPE.encode())
    return digest.hexdigest()


def image_tag(digest: str) -> str:
    return f"{IMAGE_REPO}:{digest[:16]}"


def read_list(path: Path) -> list[str]:
    """Lines of a package list, without comments and blank lines."""
    items = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            items.append(line)
    return items


def requirement_name(line: str) -> str:
    """The normalised project name of a requirements line (``Foo_Bar==1`` -> ``foo-bar``)."""
    name = re.split(r"[\s<>=!~;\[@]", line.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


# --- Dockerfile <-> docker import --------------------------------------------

_CHANGE_INSTRUCTIONS = ("ENV", "WORKDIR", "CMD", "ENTRYPOINT", "USER", "EXPOSE", "STOPSIGNAL")


def dockerfile_changes(dockerfile_text: str, digest: str, method: str = "offline") -> list[str]:
    """The ``docker import --change`` list that gives an imported rootfs the same
    configuration as the Dockerfile: its single-line ENV/WORKDIR/CMD/... of the
    final stage, plus the hash labels."""
    changes: list[str] = []
    for raw in dockerfile_text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word = line.split(None, 1)[0].upper()
        if word == "FROM":
            changes = []  # only the final stage counts
        elif word in _CHANGE_INSTRUCTIONS:
            if line.endswith("\\"):
                raise ImageError(f"images/Dockerfile: keep {word} on one line (the offline build copies it)")
            changes.append(line)
    changes.append(f'LABEL org.fauxisp.image="base" {LABEL_HASH}="{digest}" {LABEL_BUILD}="{method}"')
    return changes


# --- host configuration -------------------------------------------------------

def _sources_entries(root: Path = Path("/")) -> Iterator[tuple[str, list[str], list[str]]]:
    """(uri, suites, components) of every ``deb`` source the host's apt uses."""
    etc = root / "etc/apt"
    files = [etc / "sources.list"]
    listd = etc / "sources.list.d"
    if listd.is_dir():
        files += sorted(listd.iterdir())
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.name.endswith(".sources"):
            for para in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                key = None
                for line in para.splitlines():
                    if line.startswith("#") or not line.strip():
                        continue
                    if line[0].isspace() and key:
                        fields[key] += " " + line.strip()
                        continue
                    key, _, value = line.partition(":")
                    key = key.strip().lower()
                    fields[key] = value.strip()
                if "deb" not in fields.get("types", "").split():
                    continue
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                for uri in fields.get("uris", "").split():
                    yield uri, fields.get("suites", "").split(), fields.get("components", "").split()
        elif path.name == "sources.list" or path.name.endswith(".list"):
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                line = re.sub(r"\[[^\]]*\]", " ", line)
                parts = line.split()
                if len(parts) >= 3 and parts[0] == "deb":
                    yield parts[1], [parts[2]], parts[3:]


def host_debian_mirror(root: Path | str = "/") -> str:
    """The Debian mirror the host's apt uses for ``bookworm main``.

    ``$FAUXISP_DEBIAN_MIRROR`` overrides; without a matching apt source the
    answer is deb.debian.org.
    """
    override = os.environ.get("FAUXISP_DEBIAN_MIRROR")
    if override:
        return override.rstrip("/")
    fallback = None
    for uri, suites, components in _sources_entries(Path(root)):
        if "main" not in components:
            continue
        if SUITE in suites:
            return uri.rstrip("/")
        if fallback is None and any(s.startswith(SUITE) and "security" not in s for s in suites) \
                and "security" not in uri:
            fallback = uri.rstrip("/")
    return fallback or DEFAULT_MIRROR


def cache_dir() -> Path:
    return Path(os.environ.get("FAUXISP_CACHE_DIR") or DEFAULT_CACHE_DIR)


# --- progress and subprocesses -------------------------------------------------

class _Clock:
    def __init__(self, progress: Progress | None) -> None:
        self.start = time.monotonic()
        self.progress = progress

    def say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(f"[{time.monotonic() - self.start:7.1f}s] {message}")

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        self.say(f"{name} ...")
        yield
        self.say(f"{name} done ({time.monotonic() - t0:.1f}s)")


def _run(cmd: Sequence[str], clock: _Clock, log: Path, *, env: dict[str, str] | None = None,
         what: str = "") -> None:
    """Run ``cmd``, its output appended to ``log``; a heartbeat every 15 s."""
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        try:
            proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    env=env, text=True, errors="replace")
        except FileNotFoundError as exc:
            raise ImageError(f"{what or cmd[0]}: command not found: {cmd[0]}") from exc
        assert proc.stdout is not None
        tail: list[str] = []
        last = time.monotonic()
        for line in proc.stdout:
            out.write(line)
            tail = [*tail[-19:], line.rstrip()]
            if time.monotonic() - last > 15:
                last = time.monotonic()
                clock.say(f"  ... {line.strip()[:100]}")
        rc = proc.wait()
    if rc != 0:
        lines = "\n    ".join(tail)
        raise ImageError(f"{what or cmd[0]} failed (exit {rc}); full log: {log}\n  last output:\n    {lines}")


# --- Docker helpers ------------------------------------------------------------

def _docker_client() -> Any:
    try:
        import docker  # optional dependency (fauxisp[compose])
    except ImportError as exc:
        raise ImageError("the Docker SDK for Python is missing: pip install docker "
                         "(or pip install 'fauxisp[compose]')") from exc
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        raise ImageError(f"cannot reach the Docker Engine ({exc}); is dockerd running and "
                         "DOCKER_HOST right?") from exc
    return client


def _is_not_found(exc: BaseException) -> bool:
    try:
        import docker.errors
    except ImportError:
        return False
    return isinstance(exc, docker.errors.NotFound)


def find_image(client: Any, digest: str) -> Any | None:
    """The image tagged for ``digest`` if it exists and carries that hash."""
    try:
        image = client.images.get(image_tag(digest))
    except Exception as exc:
        if _is_not_found(exc):
            return None
        raise ImageError(f"cannot query the Docker Engine: {exc}") from exc
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    if labels.get(LABEL_HASH) != digest:
        return None
    return image


def _info(image: Any, digest: str, method: str, clock: _Clock) -> ImageInfo:
    return ImageInfo(tag=image_tag(digest), image_id=image.id, hash=digest,
                     size=int(image.attrs.get("Size") or 0), method=method,
                     seconds=time.monotonic() - clock.start)


def registry_reachable(client: Any, clock: _Clock, timeout: float = PULL_PROBE_SECONDS) -> bool:
    """True if ``debian:bookworm-slim`` is present or can be pulled (a failed pull
    returns within a fraction of a second where no registry resolves)."""
    try:
        client.images.get(BASE_IMAGE)
        return True
    except Exception as exc:
        if not _is_not_found(exc):
            return False
    result: dict[str, Any] = {}

    def pull() -> None:
        try:
            repo, tag = BASE_IMAGE.split(":")
            client.images.pull(repo, tag=tag)
            result["ok"] = True
        except Exception as exc:
            result["error"] = exc

    clock.say(f"probing the registry: pulling {BASE_IMAGE} ...")
    worker = threading.Thread(target=pull, daemon=True)
    worker.start()
    worker.join(timeout)
    if result.get("ok"):
        return True
    error = result.get("error")
    reason = (getattr(error, "explanation", None) or str(error)) if error else f"no answer in {timeout:.0f}s"
    clock.say(f"no registry ({str(reason).strip()[:160]}): building offline from the Debian archive")
    return False


def _decide_offline(offline: bool | None, client: Any, clock: _Clock) -> bool:
    if offline is not None:
        return offline
    env = os.environ.get("FAUXISP_OFFLINE", "").strip().lower()
    if env:
        return env not in ("0", "false", "no", "off")
    return not registry_reachable(client, clock)


def _tag_latest(client: Any, image: Any) -> None:
    image.tag(IMAGE_REPO, "latest")


def _drop_stale(client: Any, keep_id: str) -> None:
    """Remove other fauxisp/base images (older hashes, or the one a forced build
    replaced); an image a container still uses is left alone."""
    try:
        images = client.images.list(name=IMAGE_REPO)
    except Exception:
        return
    for image in images:
        if image.id == keep_id:
            continue
        for tag in image.tags or [image.id]:
            with contextlib.suppress(Exception):
                client.images.remove(tag)


# --- registry path --------------------------------------------------------------

def _build_registry(client: Any, digest: str, clock: _Clock, images_dir: Path, force: bool) -> Any:
    tag = image_tag(digest)
    with clock.stage(f"docker build {images_dir / 'Dockerfile'} -> {tag}"):
        last = time.monotonic()
        try:
            stream = client.api.build(path=str(images_dir), dockerfile="Dockerfile", tag=tag, rm=True,
                                      forcerm=True, pull=False, nocache=force, decode=True,
                                      buildargs={"FAUXISP_IMAGE_HASH": digest},
                                      labels={LABEL_BUILD: "registry"})
            tail: list[str] = []
            for chunk in stream:
                if "error" in chunk:
                    lines = "\n    ".join(tail[-15:])
                    raise ImageError(f"docker build failed: {chunk['error'].strip()}\n  last output:\n"
                                     f"    {lines}")
                text = (chunk.get("stream") or "").rstrip()
                if text:
                    tail.append(text)
                    if text.startswith("Step ") or time.monotonic() - last > 15:
                        last = time.monotonic()
                        clock.say("  " + text.splitlines()[-1][:110])
        except ImageError:
            raise
        except Exception as exc:
            raise ImageError(f"docker build failed: {exc}") from exc
    return client.images.get(tag)


# --- offline path ---------------------------------------------------------------

def _check_offline_tools() -> None:
    if os.geteuid() != 0:
        raise ImageError("the offline image build needs root (debootstrap, chroot): run it as root, "
                         "or on a host with a registry use the registry build")
    if shutil.which("debootstrap") is None:
        raise ImageError("debootstrap is not installed: apt-get install debootstrap")
    for tool in ("chroot", "tar"):
        if shutil.which(tool) is None:
            raise ImageError(f"{tool} is not installed (coreutils / tar)")


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    found = []
    try:
        with open("/proc/self/mounts") as fh:
            for line in fh:
                point = line.split()[1].replace("\\040", " ")
                if point.startswith(prefix) or point == prefix.rstrip("/"):
                    found.append(point)
    except OSError:
        pass
    return sorted(found, key=len, reverse=True)


def _remove_tree(path: Path) -> None:
    """Remove a (possibly half-built) rootfs, never following a mount out of it."""
    if not path.exists():
        return
    for point in _mounts_under(path):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    if _mounts_under(path):
        raise ImageError(f"cannot unmount everything under {path}; remove it by hand")
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False, capture_output=True)
    if path.exists():
        raise ImageError(f"cannot remove {path}")


@contextlib.contextmanager
def _lock(folder: Path, name: str = "build.lock") -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / name).open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _short(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def host_builds_image_wheels() -> bool:
    """Whether a wheel compiled by this host's Python runs in the image: the same CPython minor
    version on the same Debian release (the same glibc and libnetfilter-queue). Then
    netfilterqueue is built on the host (pip caches the wheel it built for the venv) and the rootfs
    needs no compiler, headers or Cython, most of what an offline build downloads and installs."""
    if sys.implementation.name != "cpython" or f"{sys.version_info[0]}.{sys.version_info[1]}" != TARGET_PYTHON:
        return False
    try:
        release = platform.freedesktop_os_release()
    except OSError:
        return False
    return release.get("ID") == "debian" and release.get("VERSION_CODENAME") == SUITE


def _build_pip(images_dir: Path) -> str:
    """The pinned pip that installs wheels into an image, run from its own wheel (images have no
    pip): the ``pip==`` line of lab-requirements.txt, so both images' builds use the same pip."""
    for line in read_list(images_dir / LAB_REQUIREMENTS):
        if requirement_name(line) == "pip":
            return line
    raise ImageError(f"{images_dir / LAB_REQUIREMENTS}: no pip== line (the builds run pip from its wheel)")


def _wheelhouse(cache: Path, images_dir: Path, clock: _Clock, log: Path) -> Path:
    """The Python packages of requirements.txt, fetched by the host's pip (its index, proxy and
    CA configuration apply): wheels for Debian's CPython, pip's own wheel to install them with,
    and the SDIST_ONLY projects as wheels built here when :func:`host_builds_image_wheels`, else
    as sdists for the rootfs to compile."""
    reqs_text = (images_dir / "requirements.txt").read_text()
    host_built = host_builds_image_wheels()
    pip_pin = _build_pip(images_dir)
    folder = cache / f"wheels-{_short(reqs_text, RECIPE, pip_pin, 'host-built' if host_built else 'sdists')}"
    if (folder / ".complete").exists():
        clock.say(f"python packages: cached in {folder}")
        return folder
    reqs = read_list(images_dir / "requirements.txt")
    binary = [r for r in reqs if requirement_name(r) not in SDIST_ONLY]
    source = [r for r in reqs if requirement_name(r) in SDIST_ONLY]
    tmp = cache / f"{folder.name}.tmp"
    _remove_tree(tmp)
    tmp.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "PIP_REQUIRE_VIRTUALENV"}
    with clock.stage("pip download (host pip)"):
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(tmp)]
        _run([*pip, *_image_platform(), *binary, pip_pin], clock, log, env=env, what="pip download (wheels)")
    if source and host_built:
        try:
            with clock.stage(f"pip wheel {' '.join(source)} (host pip, for the image's CPython {TARGET_PYTHON})"):
                _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(tmp), *source],
                     clock, log, env=env, what="pip wheel (compiled on the host)")
        except ImageError as exc:  # no compiler or headers here: the rootfs compiles it instead
            clock.say(f"the host could not build {' '.join(source)} ({str(exc).splitlines()[0]}); "
                      "compiling inside the rootfs instead")
            host_built = False
    if source and not host_built:
        # The sdist itself, but its build dependencies (setuptools, wheel, Cython: pip prepares
        # the sdist's metadata in a build environment) as wheels: --no-binary=:all: would
        # compile Cython from source first, minutes of CPU for a file we only download.
        # Order matters: --only-binary=:all: after --no-binary=NAME would clear NAME again.
        with clock.stage("pip download (sdists, compiled inside the rootfs)"):
            _run([*pip, "--only-binary=:all:", f"--no-binary={','.join(SDIST_ONLY)}", *source], clock, log,
                 env=env, what="pip download (sdists)")
    (tmp / "requirements.txt").write_text(reqs_text)
    (tmp / ".complete").write_text("")
    _remove_tree(folder)
    tmp.rename(folder)
    return folder


def _image_platform() -> list[str]:
    """pip options that select wheels for the image's CPython on manylinux x86_64."""
    plat = ["--only-binary=:all:", "--python-version", TARGET_PYTHON, "--implementation", "cp",
            "--abi", "cp" + TARGET_PYTHON.replace(".", ""), "--abi", "abi3", "--abi", "none"]
    for p in PIP_PLATFORMS:
        plat += ["--platform", p]
    return plat


def _debs_tarball(cache: Path, packages: list[str], mirror: str, clock: _Clock, log: Path) -> Path:
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=False).stdout.strip() or "amd64"
    tarball = cache / f"debs-{SUITE}-{arch}-{_short(RECIPE, ','.join(packages))}.tgz"
    if tarball.exists():
        clock.say(f"debian packages: cached in {tarball}")
        return tarball
    work = cache / "debootstrap-download.tmp"
    tmp_tar = cache / (tarball.name + ".tmp")
    _remove_tree(work)
    tmp_tar.unlink(missing_ok=True)
    with clock.stage(f"debootstrap: downloading {SUITE} {VARIANT} + {len(packages)} packages from {mirror}"):
        _run(["debootstrap", f"--variant={VARIANT}", f"--arch={arch}", "--components=main",
              f"--include={','.join(packages)}", f"--make-tarball={tmp_tar}", SUITE, str(work), mirror],
             clock, log, what="debootstrap --make-tarball")
    _remove_tree(work)
    tmp_tar.rename(tarball)
    return tarball


def _chroot(root: Path, args: Sequence[str], clock: _Clock, log: Path, what: str) -> None:
    _run(["chroot", str(root), "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in _CHROOT_ENV.items()
                                                         if v), *args],
         clock, log, what=what)


@contextlib.contextmanager
def _proc_mounted(root: Path) -> Iterator[None]:
    target = root / "proc"
    target.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "proc", "proc", str(target)], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)


def _trim(root: Path) -> None:
    def clear(rel: str) -> None:
        folder = root / rel
        if folder.is_dir():
            for child in folder.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()

    for rel in ("var/lib/apt/lists", "var/cache/apt", "usr/share/man", "usr/share/info",
                "usr/share/locale", "tmp", "root/.cache"):
        clear(rel)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    for old in (root / "var/cache/debconf").glob("*-old"):
        old.unlink()
    for path in (root / "var/log").rglob("*"):
        if path.is_file():
            path.write_bytes(b"")
    doc = root / "usr/share/doc"
    if doc.is_dir():
        for path in sorted(doc.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_dir() and not path.is_symlink():
                if not any(path.iterdir()):
                    path.rmdir()
            elif path.name != "copyright":
                path.unlink()
    # debootstrap copies the host's name and resolver; the engine provides its own
    (root / "etc/hostname").write_text("fauxisp\n")
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    machine_id = root / "etc/machine-id"
    if machine_id.exists():
        machine_id.write_text("")


def _build_rootfs(cache: Path, digest: str, images_dir: Path, mirror: str, clock: _Clock,
                  log: Path, force: bool) -> Path:
    root = cache / f"rootfs-{digest[:16]}"
    done = cache / f"rootfs-{digest[:16]}.complete"
    if done.exists() and root.is_dir() and not force:
        clock.say(f"rootfs: cached in {root}")
        return root
    runtime = read_list(images_dir / "packages.txt")
    wheels = _wheelhouse(cache, images_dir, clock, log)
    # Only a project left as an sdist needs the build-only packages (compiler, headers, Cython)
    compile_inside = any(wheels.glob("*.tar.gz"))
    build = read_list(images_dir / "build-packages.txt") if compile_inside else []
    packages = sorted({*runtime, *build})
    tarball = _debs_tarball(cache, packages, mirror, clock, log)
    done.unlink(missing_ok=True)
    _remove_tree(root)
    with clock.stage(f"debootstrap: installing into {root}"):
        _run(["debootstrap", f"--variant={VARIANT}", "--components=main", f"--include={','.join(packages)}",
              f"--unpack-tarball={tarball}", SUITE, str(root), mirror], clock, log,
             what="debootstrap --unpack-tarball")
    inner = root / "tmp/fauxisp-wheels"
    _remove_tree(inner)
    shutil.copytree(wheels, inner)
    shutil.copy2(images_dir / "install-python.sh", inner / "install-python.sh")
    with _proc_mounted(root):
        how = "compiling netfilterqueue" if compile_inside else "wheels only"
        with clock.stage(f"pip install (inside the rootfs, {how})"):
            _chroot(root, ["sh", "/tmp/fauxisp-wheels/install-python.sh", "/tmp/fauxisp-wheels",
                           "--no-index"], clock, log, what="pip install in the rootfs")
        if build:
            with clock.stage("purging build-only packages"):
                # debootstrap marks every package as manually installed: mark all but
                # the required base system and the runtime list as automatic, so that
                # purging the build packages takes their dependencies with them.
                keep = " ".join(runtime)
                script = (
                    "set -e; "
                    "dpkg-query -W -f='${Package} ${Priority} ${Essential}\\n' "
                    "| awk '$2 != \"required\" && $3 != \"yes\" {print $1}' | xargs apt-mark auto >/dev/null; "
                    f"apt-mark manual {keep} >/dev/null; "
                    f"apt-get purge -y --auto-remove {_NO_RECOMMENDS} {' '.join(build)}; "
                    "apt-get clean"
                )
                _chroot(root, ["sh", "-c", script], clock, log, what="apt-get purge in the rootfs")
        with clock.stage("checking the rootfs"):
            _chroot(root, ["python3", "-c", "import dns, httpx, httpcore, trustme, cryptography, rich, "
                           "pyroute2, netfilterqueue, yaml"], clock, log, what="import check")
            for tool in ("unbound", "nsd", "nft", "iptables", "tc", "ps", "dig", "curl"):
                if not any((root / d / tool).exists() for d in ("usr/sbin", "usr/bin", "sbin", "bin")):
                    raise ImageError(f"rootfs check: {tool} missing after the build; see {log}")
    _remove_tree(inner)
    _trim(root)
    done.write_text(digest + "\n")
    _prune(cache, keep={root.name, done.name, wheels.name, tarball.name, f"build-{digest[:16]}.log",
                        "build.lock"})
    return root


def _prune(cache: Path, keep: set[str]) -> None:
    """The cache holds the current build only: drop rootfs, package tarballs,
    wheelhouses and logs of other image hashes."""
    for path in cache.iterdir():
        if path.name in keep or not path.name.startswith(("rootfs-", "debs-", "wheels-", "build-",
                                                          "debootstrap-")):
            continue
        if path.is_dir() and not path.is_symlink():
            _remove_tree(path)
        else:
            path.unlink(missing_ok=True)


def _tar_stream(root: Path, chunk: int = 1 << 20) -> Iterator[bytes]:
    proc = subprocess.Popen(
        ["tar", "--numeric-owner", "--xattrs", "--one-file-system", "-C", str(root), "-cf", "-",
         "--exclude=./proc/*", "--exclude=./sys/*", "--exclude=./dev/*", "."],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        while True:
            data = proc.stdout.read(chunk)
            if not data:
                break
            yield data
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        rc = proc.wait()
    if rc != 0:
        raise ImageError(f"tar of {root} failed (exit {rc}): {err.strip()[-500:]}")


def _build_offline(client: Any, digest: str, clock: _Clock, images_dir: Path, force: bool) -> Any:
    _check_offline_tools()
    cache = cache_dir()
    mirror = host_debian_mirror()
    tag = image_tag(digest)
    repo, version = tag.split(":")
    with _lock(cache):
        existing = find_image(client, digest)
        if existing is not None and not force:
            return existing
        log = cache / f"build-{digest[:16]}.log"
        clock.say(f"offline build from {mirror}; cache {cache}; log {log}")
        root = _build_rootfs(cache, digest, images_dir, mirror, clock, log, force)
        changes = dockerfile_changes((images_dir / "Dockerfile").read_text(), digest, "offline")
        with clock.stage(f"docker import {root} -> {tag}"):
            try:
                client.api.import_image_from_data(_tar_stream(root), repository=repo, tag=version,
                                                  changes=changes)
            except ImageError:
                raise
            except Exception as exc:
                raise ImageError(f"docker import failed: {exc}") from exc
        return client.images.get(tag)


# --- entry point ------------------------------------------------------------------

def build_image(*, offline: bool | None = None, force: bool = False, progress: Progress | None = None,
                client: Any = None, images_dir: Path | str | None = None) -> ImageInfo:
    """Return the lab's base image, building it if its tag does not exist yet.

    ``offline``: True builds from the Debian archive (debootstrap + docker import),
    False with ``docker build``; None (default) decides: ``$FAUXISP_OFFLINE``,
    else registry if ``debian:bookworm-slim`` is present or pullable.
    ``force`` rebuilds even if the tag exists (download caches are kept).
    ``progress`` receives one line per stage, prefixed with the elapsed time.
    """
    clock = _Clock(progress)
    folder = Path(images_dir) if images_dir is not None else IMAGES_DIR
    digest = image_hash(folder)
    if client is None:
        client = _docker_client()
    existing = find_image(client, digest)
    if existing is not None and not force:
        if f"{IMAGE_REPO}:latest" not in (existing.tags or []):
            _tag_latest(client, existing)
        return _info(existing, digest, "cached", clock)
    use_offline = _decide_offline(offline, client, clock)
    if use_offline:
        image = _build_offline(client, digest, clock, folder, force)
    else:
        image = _build_registry(client, digest, clock, folder, force)
    _tag_latest(client, image)
    _drop_stale(client, image.id)
    info = _info(image, digest, "offline" if use_offline else "registry", clock)
    clock.say(f"{info.tag} ({info.image_id[:19]}, {info.size / 1e6:.0f} MB) built {info.method} "
              f"in {info.seconds:.1f}s")
    return info


# --- the lab image: the base image plus the project and probe plugins --------------

LAB_REPO = "fauxisp/lab"
LAB_RECIPE_VERSION = 1
PROJECT_ROOT = IMAGES_DIR.parent
DEFAULT_PLUGINS = (PROJECT_ROOT / "examples" / "dot-probe",)
# Never copied into the lab image: version control, local environments, caches, lab output.
_SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis",
              ".fauxisp", "results", "build", "dist"}
_LAB_INNER = "/tmp/fauxisp-lab"


def _tree_files(root: Path) -> list[str]:
    """Relative paths of a source tree's files: what git tracks or would track (untracked files
    a user just added count, ignored ones do not), or a walk without the usual clutter."""
    if (root / ".git").exists() and shutil.which("git"):
        res = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], capture_output=True, check=False)
        if res.returncode == 0:
            names = {n for n in res.stdout.decode(errors="surrogateescape").split("\0") if n}
            return sorted(n for n in names if (root / n).is_file()
                          and not any(part in _SKIP_DIRS or part.endswith(".egg-info")
                                      for part in Path(n).parts))
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.endswith(".egg-info"))
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file():
                found.append(str(path.relative_to(root)))
    return sorted(found)


def _tree_digest(root: Path, files: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for rel in files:
        data = (root / rel).read_bytes()
        digest.update(f"{rel}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _plugin_paths(plugins: Sequence[Path | str] | None) -> list[Path]:
    """The probe plugins for the lab image: the defaults, plus ``$FAUXISP_PLUGINS``
    (paths separated by ':'), plus the ``plugins`` argument; each a project folder or a wheel."""
    paths = [*DEFAULT_PLUGINS]
    env = os.environ.get("FAUXISP_PLUGINS", "")
    paths += [Path(p) for p in env.split(os.pathsep) if p.strip()]
    paths += [Path(p) for p in plugins or ()]
    out: list[Path] = []
    for path in paths:
        path = path.resolve()
        if not (path.is_file() and path.suffix == ".whl") and not (path.is_dir() and (
                (path / "pyproject.toml").exists() or (path / "setup.py").exists())):
            raise ImageError(f"plugin {path}: not a wheel (.whl) nor a Python project folder "
                             "(pyproject.toml or setup.py)")
        if path not in out:
            out.append(path)
    return out


def lab_image_hash(plugins: Sequence[Path], base_digest: str, project: Path = PROJECT_ROOT,
                   images_dir: Path = IMAGES_DIR) -> str:
    """sha256 over the base image's hash, the project's files, each plugin and the recipe."""
    digest = hashlib.sha256()
    digest.update(f"lab-recipe {LAB_RECIPE_VERSION}\0base {base_digest}\0".encode())
    digest.update((images_dir / LAB_REQUIREMENTS).read_bytes())
    digest.update(b"\0project " + _tree_digest(project, _tree_files(project)).encode())
    for path in plugins:
        if path.is_file():
            digest.update(b"\0wheel " + path.name.encode() + b" " + hashlib.sha256(path.read_bytes()).digest())
        else:
            digest.update(b"\0plugin " + path.name.encode() + b" " + _tree_digest(path, _tree_files(path)).encode())
    return digest.hexdigest()


def _copy_tree(src: Path, dest: Path) -> None:
    for rel in _tree_files(src):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, target)


def _wheel_requirements(wheel: Path) -> list[str]:
    """A wheel's unconditional Requires-Dist lines (extras and markers are left to pip)."""
    import zipfile
    from email.parser import HeaderParser

    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        headers = HeaderParser().parsestr(zf.read(meta).decode())
    return [r for r in headers.get_all("Requires-Dist") or [] if "extra ==" not in r.replace("extra==", "extra ==")]


def _lab_context(ctx: Path, base_tag: str, digest: str, plugins: Sequence[Path], project: Path,
                 images_dir: Path, clock: _Clock, log: Path) -> None:
    """The docker build context of the lab image: the project's files, wheels of the project and
    the plugins (built by the host's pip; pure Python) and the wheels they need that the base
    image lacks (downloaded for the image's CPython, like the base image's wheelhouse)."""
    wheels = ctx / "wheels"
    wheels.mkdir(parents=True)
    _copy_tree(project, ctx / "src")
    env = {k: v for k, v in os.environ.items() if k != "PIP_REQUIRE_VIRTUALENV"}
    pip = [sys.executable, "-m", "pip"]
    sources = [ctx / "src"]
    for i, path in enumerate(plugins):
        if path.is_file():
            shutil.copy2(path, wheels / path.name)
        else:
            copy = ctx / "plugins" / f"{i}-{path.name}"
            _copy_tree(path, copy)
            sources.append(copy)
    with clock.stage(f"pip wheel: the project and {len(plugins)} plugin(s)"):
        _run([*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), *map(str, sources)], clock, log, env=env,
             what="pip wheel (project and plugins)")
    # in-tree builds leave build/ and *.egg-info behind; they are not part of the image
    for leftover in [*(ctx / "src").glob("build"), *(ctx / "src").glob("*.egg-info")]:
        _remove_tree(leftover)
    _remove_tree(ctx / "plugins")
    project_wheel = next(wheels.glob("fauxisp-*.whl"))
    plugin_wheels = sorted(w for w in wheels.glob("*.whl") if w != project_wheel)
    reqs = read_list(images_dir / LAB_REQUIREMENTS)
    for wheel in plugin_wheels:
        reqs += [r for r in _wheel_requirements(wheel) if requirement_name(r) != "fauxisp"]
    with clock.stage("pip download: pip, extras and the plugins' dependencies (host pip)"):
        # -c pins whatever the base image already has to the very version it has
        _run([*pip, "download", "--dest", str(wheels), *_image_platform(), "-c",
              str(images_dir / "requirements.txt"), *reqs], clock, log, env=env, what="pip download (lab image)")
    pip_wheel = next(wheels.glob("pip-*.whl"))
    targets = [f"{_LAB_INNER}/{project_wheel.name}[fast]", *(f"{_LAB_INNER}/{w.name}" for w in plugin_wheels)]
    # pip runs from its own wheel (the base image has no pip) and resolves against what the base
    # image holds plus the wheels here, with no index: a missing dependency fails the build.
    install = (f"python3 {_LAB_INNER}/{pip_wheel.name}/pip install --no-index --find-links {_LAB_INNER} "
               "--no-cache-dir --break-system-packages --no-warn-script-location --root-user-action=ignore "
               f"--disable-pip-version-check {' '.join(targets)}")
    (ctx / "Dockerfile").write_text(f"""# generated by netlab.deploy.images.build_lab_image: {LAB_REPO} on {base_tag}
FROM {base_tag}
COPY wheels {_LAB_INNER}/
RUN {install} && rm -rf {_LAB_INNER} /root/.cache && harness probes list
COPY src /opt/fauxisp
LABEL org.fauxisp.image="lab" {LABEL_HASH}="{digest}" org.fauxisp.base="{base_tag}"
""")


def build_lab_image(*, plugins: Sequence[Path | str] | None = None, offline: bool | None = None,
                    force: bool = False, progress: Progress | None = None, client: Any = None) -> ImageInfo:
    """``fauxisp/lab:<hash>``: the base image (built first if needed) with this project
    installed and its files at /opt/fauxisp, plus probe plugins (examples/dot-probe,
    ``$FAUXISP_PLUGINS`` and ``plugins``: project folders or wheels). No registry is needed:
    the build is a ``docker build`` FROM the local base image; a tag that exists returns at once."""
    clock = _Clock(progress)
    if client is None:
        client = _docker_client()
    base = build_image(offline=offline, progress=progress, client=client)
    paths = _plugin_paths(plugins)
    digest = lab_image_hash(paths, base.hash)
    tag = f"{LAB_REPO}:{digest[:16]}"

    def found() -> Any | None:
        try:
            image = client.images.get(tag)
        except Exception as exc:
            if _is_not_found(exc):
                return None
            raise ImageError(f"cannot query the Docker Engine: {exc}") from exc
        labels = (image.attrs.get("Config") or {}).get("Labels") or {}
        return image if labels.get(LABEL_HASH) == digest else None

    def info(image: Any, method: str) -> ImageInfo:
        if f"{LAB_REPO}:latest" not in (image.tags or []):
            image.tag(LAB_REPO, "latest")
        return ImageInfo(tag=tag, image_id=image.id, hash=digest, size=int(image.attrs.get("Size") or 0),
                         method=method, seconds=time.monotonic() - clock.start)

    image = found()
    if image is not None and not force:
        return info(image, "cached")
    cache = cache_dir()
    with _lock(cache, "lab.lock"):
        image = found()
        if image is not None and not force:
            return info(image, "cached")
        log = cache / f"lab-{digest[:16]}.log"
        ctx = cache / f"lab-{digest[:16]}.context"
        _remove_tree(ctx)
        try:
            _lab_context(ctx, base.tag, digest, paths, PROJECT_ROOT, IMAGES_DIR, clock, log)
            with clock.stage(f"docker build -> {tag} (FROM {base.tag}, no registry)"):
                try:
                    stream = client.api.build(path=str(ctx), tag=tag, rm=True, forcerm=True, pull=False,
                                              nocache=force, decode=True)
                    with log.open("a") as out:
                        for chunk in stream:
                            if "error" in chunk:
                                raise ImageError(f"docker build of {tag} failed: {chunk['error'].strip()}; "
                                                 f"log: {log}")
                            out.write(chunk.get("stream") or "")
                except ImageError:
                    raise
                except Exception as exc:
                    raise ImageError(f"docker build of {tag} failed: {exc}") from exc
        finally:
            _remove_tree(ctx)
        image = client.images.get(tag)
        result = info(image, "docker build")
        # older lab images (other hashes) go, unless a container still uses them
        with contextlib.suppress(Exception):
            for old in client.images.list(name=LAB_REPO):
                if old.id != image.id:
                    for old_tag in old.tags or [old.id]:
                        with contextlib.suppress(Exception):
                            client.images.remove(old_tag)
    clock.say(f"{tag} ({result.size / 1e6:.0f} MB) built in {result.seconds:.1f}s")
    return result


# --- a stock Debian image (minbase), for testing the set-up on a bare system -------------

DEBIAN_REPO = "fauxisp/debian"
DEBIAN_RECIPE_VERSION = 1


def build_debian_image(*, progress: Progress | None = None, client: Any = None) -> ImageInfo:
    """``fauxisp/debian:bookworm-minbase-<hash>``: a bare Debian 12 (``debootstrap
    --variant=minbase`` from the host's mirror, then ``docker import``), the closest thing to a
    stock Debian that can be had without a registry. The rootfs stays in the cache folder, so a
    second build after ``docker rmi`` only re-imports."""
    clock = _Clock(progress)
    if client is None:
        client = _docker_client()
    digest = hashlib.sha256(f"debian {DEBIAN_RECIPE_VERSION} {SUITE} {VARIANT}".encode()).hexdigest()
    tag = f"{DEBIAN_REPO}:{SUITE}-{VARIANT}-{digest[:12]}"
    try:
        image = client.images.get(tag)
        return ImageInfo(tag=tag, image_id=image.id, hash=digest, size=int(image.attrs.get("Size") or 0),
                         method="cached", seconds=time.monotonic() - clock.start)
    except Exception as exc:
        if not _is_not_found(exc):
            raise ImageError(f"cannot query the Docker Engine: {exc}") from exc
    _check_offline_tools()
    cache = cache_dir()
    mirror = host_debian_mirror()
    root = cache / f"debian-{SUITE}-{VARIANT}-{digest[:12]}"
    done = root.with_name(root.name + ".complete")
    log = cache / f"debian-{digest[:12]}.log"
    with _lock(cache, "debian.lock"):
        if not (done.exists() and root.is_dir()):
            done.unlink(missing_ok=True)
            _remove_tree(root)
            with clock.stage(f"debootstrap --variant={VARIANT} {SUITE} from {mirror}"):
                _run(["debootstrap", f"--variant={VARIANT}", "--components=main", SUITE, str(root), mirror],
                     clock, log, what="debootstrap (stock Debian)")
            _trim(root)
            (root / "etc/hostname").write_text("debian\n")
            done.write_text(digest + "\n")
        repo, version = tag.split(":")
        changes = ['CMD ["bash"]', f'LABEL org.fauxisp.image="debian" {LABEL_HASH}="{digest}"']
        with clock.stage(f"docker import {root} -> {tag}"):
            try:
                client.api.import_image_from_data(_tar_stream(root), repository=repo, tag=version, changes=changes)
            except Exception as exc:
                raise ImageError(f"docker import failed: {exc}") from exc
        image = client.images.get(tag)
    return ImageInfo(tag=tag, image_id=image.id, hash=digest, size=int(image.attrs.get("Size") or 0),
                     method="offline", seconds=time.monotonic() - clock.start)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netlab.deploy.images",
                                     description="Build or inspect the lab's container image.")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build fauxisp/base (cached: a no-op when it exists)")
    how = build.add_mutually_exclusive_group()
    how.add_argument("--offline", action="store_const", const=True, dest="offline", default=None,
                     help="build from the Debian archive (debootstrap + docker import)")
    how.add_argument("--registry", action="store_const", const=False, dest="offline",
                     help="docker build from images/Dockerfile (needs debian:bookworm-slim)")
    build.add_argument("--force", action="store_true", help="rebuild even if the image exists")
    build.add_argument("--with-project", action="store_true",
                       help=f"then build {LAB_REPO}: the base image with this project installed and its files "
                       "at /opt/fauxisp, plus probe plugins (examples/dot-probe and --plugin)")
    build.add_argument("--plugin", action="append", default=[], metavar="PATH",
                       help="with --with-project: a probe plugin to install (a project folder or a wheel); "
                       "repeatable; $FAUXISP_PLUGINS adds more (':'-separated)")
    build.add_argument("--quiet", "-q", action="store_true", help="print only the result")
    sub.add_parser("hash", help="print the image hash and tag")
    args = parser.parse_args(argv)

    if args.command == "hash":
        try:
            digest = image_hash()
        except ImageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{digest}  {image_tag(digest)}")
        return 0

    def say(line: str) -> None:
        print(line, flush=True)

    if args.plugin and not args.with_project:
        parser.error("--plugin needs --with-project")
    try:
        if args.with_project:
            info = build_lab_image(plugins=args.plugin, offline=args.offline, force=args.force,
                                   progress=None if args.quiet else say)
        else:
            info = build_image(offline=args.offline, force=args.force, progress=None if args.quiet else say)
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    what = "cached, not rebuilt" if info.method == "cached" else f"built ({info.method})"
    print(f"{info.tag}  {info.image_id[:19]}  {info.size / 1e6:.0f} MB  {what}  {info.seconds:.2f}s")
    if args.with_project:
        print(f"also tagged {LAB_REPO}:latest; run: docker run --rm --privileged {LAB_REPO}:latest "
              "harness run scenarios/demo.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
