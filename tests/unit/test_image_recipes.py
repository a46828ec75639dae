"""netlab.deploy.images without Docker: the sdist download keeps build dependencies as wheels, and the
lab image's hash and file selection (fauxisp/lab, `harness image build --with-project`)."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest

from netlab.deploy import images


def _wheelhouse_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host_built: bool) -> list[list[str]]:
    calls: list[list[str]] = []
    monkeypatch.setattr(images, "_run", lambda cmd, *a, **k: calls.append(list(cmd)))
    monkeypatch.setattr(images, "host_builds_image_wheels", lambda: host_built)
    images._wheelhouse(tmp_path, images.IMAGES_DIR, images._Clock(None), tmp_path / "log")
    return calls


def test_sdist_download_takes_build_dependencies_as_wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--no-binary=:all: made pip compile Cython from source just to read netfilterqueue's metadata."""
    calls = _wheelhouse_calls(tmp_path, monkeypatch, host_built=False)
    sdist = next(c for c in calls if any(a.startswith("netfilterqueue") for a in c))
    assert "download" in sdist and "--no-binary=:all:" not in sdist
    # pip's last word on :all: wins, so the per-project --no-binary must come after --only-binary=:all:
    assert sdist.index("--only-binary=:all:") < sdist.index("--no-binary=netfilterqueue")


def test_a_bookworm_host_builds_the_sdist_wheel_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the image's own Debian release and CPython, the host's pip compiles netfilterqueue (its
    cache already holds the wheel it built for the venv), so the rootfs needs no compiler."""
    calls = _wheelhouse_calls(tmp_path, monkeypatch, host_built=True)
    wheel = next(c for c in calls if any(a.startswith("netfilterqueue") for a in c))
    assert wheel[wheel.index("pip") + 1] == "wheel" and "--no-deps" in wheel
    downloads = [c for c in calls if "download" in c]
    assert len(downloads) == 1, "no sdist is downloaded when the host builds its wheel"
    # the wheels of every other requirement, and pip itself (the rootfs has no pip: it runs from its wheel)
    pip_pin = next(line for line in images.read_list(images.IMAGES_DIR / images.LAB_REQUIREMENTS)
                   if line.startswith("pip=="))
    assert pip_pin in downloads[0] and "cryptography==48.0.0" in downloads[0]
    # the two kinds of wheelhouse are cached apart: a host that changes kind does not mix them
    names = {p.name for p in tmp_path.glob("wheels-*")}
    _wheelhouse_calls(tmp_path, monkeypatch, host_built=False)
    assert len({p.name for p in tmp_path.glob("wheels-*")} - names) == 1


def test_a_host_that_cannot_compile_leaves_it_to_the_rootfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    said: list[str] = []

    def run(cmd: list[str], *a: object, **k: object) -> None:
        calls.append(list(cmd))
        if "wheel" in cmd:
            raise images.ImageError("pip wheel (compiled on the host) failed (exit 1); full log: x")

    monkeypatch.setattr(images, "_run", run)
    monkeypatch.setattr(images, "host_builds_image_wheels", lambda: True)
    images._wheelhouse(tmp_path, images.IMAGES_DIR, images._Clock(said.append), tmp_path / "log")
    assert "--no-binary=netfilterqueue" in calls[-1], "the sdist is fetched for the rootfs to compile"
    assert any("compiling inside the rootfs instead" in line for line in said)


def test_host_builds_image_wheels_only_on_the_images_release(monkeypatch: pytest.MonkeyPatch) -> None:
    bookworm = {"ID": "debian", "VERSION_CODENAME": "bookworm"}
    monkeypatch.setattr(images.platform, "freedesktop_os_release", lambda: bookworm)
    assert images.host_builds_image_wheels() == (images.sys.version_info[:2] == (3, 11))
    noble = {"ID": "ubuntu", "VERSION_CODENAME": "noble"}
    monkeypatch.setattr(images.platform, "freedesktop_os_release", lambda: noble)
    assert not images.host_builds_image_wheels()

    def missing() -> dict[str, str]:
        raise OSError("no os-release")

    monkeypatch.setattr(images.platform, "freedesktop_os_release", missing)
    assert not images.host_builds_image_wheels()


@pytest.mark.parametrize("compile_inside", [False, True])
def test_rootfs_takes_build_packages_only_to_compile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    compile_inside: bool) -> None:
    """A wheelhouse of wheels only: debootstrap gets the runtime packages alone and nothing is purged."""
    wheels = tmp_path / "wheels-x"
    wheels.mkdir()
    if compile_inside:
        (wheels / "netfilterqueue-1.1.0.tar.gz").write_bytes(b"")
    asked: list[list[str]] = []
    chroots: list[str] = []
    monkeypatch.setattr(images, "_wheelhouse", lambda *a: wheels)
    monkeypatch.setattr(images, "_debs_tarball", lambda cache, packages, *a: asked.append(packages) or tmp_path / "t")
    monkeypatch.setattr(images, "_run", lambda cmd, *a, **k: (tmp_path / "rootfs-0000000000000000" / "tmp").mkdir(
        parents=True, exist_ok=True))
    monkeypatch.setattr(images, "_chroot", lambda root, args, clock, log, what: chroots.append(what))
    monkeypatch.setattr(images, "_proc_mounted", lambda root: contextlib.nullcontext())
    monkeypatch.setattr(images, "_trim", lambda root: None)
    with pytest.raises(images.ImageError, match="missing after the build"):  # the fake rootfs has no unbound
        images._build_rootfs(tmp_path, "0" * 64, images.IMAGES_DIR, "http://mirror", images._Clock(None),
                             tmp_path / "log", force=False)
    runtime = images.read_list(images.IMAGES_DIR / "packages.txt")
    build = images.read_list(images.IMAGES_DIR / "build-packages.txt")
    assert asked == [sorted({*runtime, *build})] if compile_inside else asked == [sorted(runtime)]
    assert ("apt-get purge in the rootfs" in chroots) == compile_inside


def _project(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (root / "pkg" / "a.py").write_text("A = 1\n")
    for junk in (".venv/bin/python", "pkg/__pycache__/a.pyc", "x.egg-info/PKG-INFO", "results/r.json"):
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_text("junk")
    return root


def test_tree_files_leave_out_environments_and_caches(tmp_path: Path) -> None:
    root = _project(tmp_path / "p")
    assert images._tree_files(root) == ["pkg/a.py", "pyproject.toml"]
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".gitignore").write_text("ignored.txt\n")
    (root / "ignored.txt").write_text("no")
    (root / "new.py").write_text("untracked but not ignored: a plugin a user just added")
    assert images._tree_files(root) == [".gitignore", "new.py", "pkg/a.py", "pyproject.toml"]


def test_lab_image_hash_follows_project_plugins_and_base(tmp_path: Path) -> None:
    project = _project(tmp_path / "p")
    plugin = _project(tmp_path / "plugin")
    base = "0" * 64
    h = images.lab_image_hash([plugin], base, project=project)
    assert h == images.lab_image_hash([plugin], base, project=project)
    assert h != images.lab_image_hash([plugin], "1" * 64, project=project)
    assert h != images.lab_image_hash([], base, project=project)
    (plugin / "pkg" / "a.py").write_text("A = 2\n")
    h2 = images.lab_image_hash([plugin], base, project=project)
    assert h2 != h
    (project / ".venv" / "bin" / "python").write_text("changed")  # not part of the image
    assert images.lab_image_hash([plugin], base, project=project) == h2


def test_plugin_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAUXISP_PLUGINS", raising=False)
    assert images._plugin_paths(None) == [p.resolve() for p in images.DEFAULT_PLUGINS]
    plugin = _project(tmp_path / "plugin")
    wheel = tmp_path / "w-1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK")
    monkeypatch.setenv("FAUXISP_PLUGINS", str(wheel))
    assert images._plugin_paths([plugin])[1:] == [wheel, plugin]
    with pytest.raises(images.ImageError, match="not a wheel"):
        images._plugin_paths([tmp_path])


def test_image_cli_has_the_project_build(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        images.main(["build", "--help"])
    out = capsys.readouterr().out
    assert "--with-project" in out and "--plugin" in out
