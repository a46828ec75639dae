"""netlab.deploy.images without Docker: the sdist download keeps build dependencies as wheels, and the
lab image's hash and file selection (fauxisp/lab, `harness image build --with-project`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from netlab.deploy import images


def test_sdist_download_takes_build_dependencies_as_wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--no-binary=:all: made pip compile Cython from source just to read netfilterqueue's metadata."""
    calls: list[list[str]] = []
    monkeypatch.setattr(images, "_run", lambda cmd, *a, **k: calls.append(list(cmd)))
    images._wheelhouse(tmp_path, images.IMAGES_DIR, images._Clock(None), tmp_path / "log")
    sdist = next(c for c in calls if any(a.startswith("netfilterqueue") for a in c))
    assert "--no-binary=:all:" not in sdist
    # pip's last word on :all: wins, so the per-project --no-binary must come after --only-binary=:all:
    assert sdist.index("--only-binary=:all:") < sdist.index("--no-binary=netfilterqueue")


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
