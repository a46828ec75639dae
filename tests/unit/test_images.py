"""Unit tests of netlab.deploy.images: hashing, caching and path choice, Docker mocked."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest

from netlab.deploy import images
from netlab.deploy.images import (
    HASH_INPUTS,
    IMAGE_REPO,
    IMAGES_DIR,
    LABEL_HASH,
    ImageError,
    build_image,
    dockerfile_changes,
    host_debian_mirror,
    image_hash,
    image_tag,
    read_list,
    requirement_name,
)
from netlab.errors import LabError

REPO = Path(__file__).resolve().parents[2]


# --- a fake Docker client ------------------------------------------------------------

class NotFound(Exception):
    pass


class FakeImage:
    def __init__(self, tag: str, digest: str | None, image_id: str = "sha256:" + "ab" * 32) -> None:
        self.id = image_id
        self.tags = [tag]
        labels = {LABEL_HASH: digest} if digest else {}
        self.attrs = {"Size": 123_000_000, "Config": {"Labels": labels}}
        self.tagged: list[tuple[str, str]] = []

    def tag(self, repo: str, tag: str) -> None:
        self.tagged.append((repo, tag))
        self.tags.append(f"{repo}:{tag}")


class FakeImages:
    def __init__(self, existing: dict[str, FakeImage], pull_error: Exception | None = None) -> None:
        self.existing = existing
        self.pull_error = pull_error
        self.get_calls: list[str] = []
        self.pulls: list[str] = []
        self.removed: list[str] = []

    def get(self, name: str) -> FakeImage:
        self.get_calls.append(name)
        if name not in self.existing:
            raise NotFound(name)
        return self.existing[name]

    def pull(self, repo: str, tag: str) -> None:
        self.pulls.append(f"{repo}:{tag}")
        if self.pull_error:
            raise self.pull_error

    def list(self, name: str) -> list[FakeImage]:
        return list({id(i): i for i in self.existing.values()}.values())

    def remove(self, tag: str) -> None:
        self.removed.append(tag)


class FakeClient:
    def __init__(self, existing: dict[str, FakeImage] | None = None,
                 pull_error: Exception | None = None) -> None:
        self.images = FakeImages(existing or {}, pull_error)

        class Api:
            def build(self, **kwargs: Any) -> Any:
                raise AssertionError("docker build must not run")

            def import_image_from_data(self, *args: Any, **kwargs: Any) -> Any:
                raise AssertionError("docker import must not run")

        self.api = Api()


@pytest.fixture(autouse=True)
def _fake_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the module treat the fake client's NotFound like docker.errors.NotFound."""
    monkeypatch.setattr(images, "_is_not_found", lambda exc: isinstance(exc, NotFound))
    monkeypatch.delenv("FAUXISP_OFFLINE", raising=False)
    monkeypatch.delenv("FAUXISP_DEBIAN_MIRROR", raising=False)


@pytest.fixture
def images_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    shutil.copytree(IMAGES_DIR, folder)
    return folder


# --- hash ---------------------------------------------------------------------------

def test_hash_is_stable_and_tag_is_short() -> None:
    digest = image_hash()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert image_hash() == digest
    assert image_tag(digest) == f"{IMAGE_REPO}:{digest[:16]}"


def test_hash_covers_every_input_file(images_copy: Path) -> None:
    base = image_hash(images_copy)
    assert base == image_hash()  # content, not location
    seen = {base}
    for name in HASH_INPUTS:
        path = images_copy / name
        original = path.read_bytes()
        path.write_bytes(original + b"\n# changed\n")
        changed = image_hash(images_copy)
        assert changed not in seen, name
        seen.add(changed)
        path.write_bytes(original)
    assert image_hash(images_copy) == base
    # files outside the description do not matter
    (images_copy / "README.txt").write_text("notes")
    assert image_hash(images_copy) == base


def test_hash_covers_the_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    base = image_hash()
    monkeypatch.setattr(images, "RECIPE", images.RECIPE + " ")
    assert image_hash() != base


def test_missing_input_is_a_typed_error(images_copy: Path) -> None:
    (images_copy / "packages.txt").unlink()
    with pytest.raises(ImageError, match=r"packages\.txt"):
        image_hash(images_copy)


def test_image_error_is_a_lab_error() -> None:
    assert issubclass(ImageError, LabError)


# --- the image description ----------------------------------------------------------------

def test_package_lists() -> None:
    runtime = read_list(IMAGES_DIR / "packages.txt")
    build = read_list(IMAGES_DIR / "build-packages.txt")
    for pkg in ("nsd", "unbound", "nftables", "iptables", "iproute2", "python3",
                "libnetfilter-queue1", "procps"):
        assert pkg in runtime
    for pkg in ("gcc", "libnetfilter-queue-dev", "python3-dev", "python3-pip"):
        assert pkg in build
    assert not set(runtime) & set(build)
    assert all(not line.startswith("#") and line == line.strip() for line in runtime + build)


def test_requirements_pin_every_project_dependency() -> None:
    from packaging.requirements import Requirement

    pins = {}
    for line in read_list(IMAGES_DIR / "requirements.txt"):
        name, _, version = line.partition("==")
        assert version, f"unpinned: {line}"
        pins[requirement_name(name)] = version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in project:
        req = Requirement(dep)
        name = requirement_name(req.name)
        assert name in pins, f"{name} missing from images/requirements.txt"
        assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} does not satisfy {dep}"
    for name in images.SDIST_ONLY:
        assert name in pins


def test_requirement_name() -> None:
    assert requirement_name("PyYAML==6.0.3") == "pyyaml"
    assert requirement_name("typing_extensions>=4") == "typing-extensions"
    assert requirement_name("markdown-it-py==4.3.0") == "markdown-it-py"
    assert requirement_name("netfilterqueue>=1.1; sys_platform == 'linux'") == "netfilterqueue"


def test_dockerfile_shape() -> None:
    text = (IMAGES_DIR / "Dockerfile").read_text()
    assert re.search(r"^FROM debian:bookworm-slim$", text, re.M)
    assert "FAUXISP_IMAGE_HASH" in text and LABEL_HASH in text
    copy = re.search(r"^COPY (.*) /tmp/fauxisp-image/$", text, re.M)
    assert copy is not None
    assert set(copy.group(1).split()) == set(HASH_INPUTS) - {"Dockerfile"}
    for name in images.SDIST_ONLY:
        assert name in text
    assert "--break-system-packages" in (IMAGES_DIR / "install-python.sh").read_text()
    # no project code in the image
    assert not re.search(r"^(COPY|ADD) .*(netlab|probes|harness)", text, re.M)


def test_dockerfile_changes_match_the_dockerfile() -> None:
    changes = dockerfile_changes((IMAGES_DIR / "Dockerfile").read_text(), "f" * 64)
    assert "ENV PYTHONPATH=/opt/fauxisp" in changes
    assert "WORKDIR /opt/fauxisp" in changes
    assert any(c.startswith("CMD [") for c in changes)
    assert any(c.startswith("ENV PATH=") for c in changes)
    assert changes[-1].startswith("LABEL ") and f'{LABEL_HASH}="{"f" * 64}"' in changes[-1]
    assert not any(c.startswith(("RUN", "COPY", "FROM", "ARG")) for c in changes)


def test_dockerfile_changes_final_stage_and_one_line_rule() -> None:
    text = "FROM a AS build\nENV A=1\nFROM b\n# c\nENV B=2\nCMD [\"x\"]\n"
    assert dockerfile_changes(text, "0" * 64)[:2] == ["ENV B=2", 'CMD ["x"]']
    with pytest.raises(ImageError, match="one line"):
        dockerfile_changes("FROM b\nENV A=1 \\\n    B=2\n", "0" * 64)


# --- the host's mirror -----------------------------------------------------------------------

def _etc(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / "etc/apt" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_mirror_from_deb822(tmp_path: Path) -> None:
    root = _etc(tmp_path, {"sources.list.d/debian.sources": (
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb\n# snapshot\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"),
        "sources.list.d/other.sources": "Types: deb\nURIs: https://x.example/apt\nSuites: nodistro\n"
                                         "Components: main\n"})
    assert host_debian_mirror(root) == "http://mirror.example/debian"


def test_mirror_from_one_line_format(tmp_path: Path) -> None:
    root = _etc(tmp_path, {"sources.list": (
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main non-free\n")})
    assert host_debian_mirror(root) == "http://one.example/debian"


def test_mirror_override_and_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert host_debian_mirror(tmp_path) == images.DEFAULT_MIRROR
    monkeypatch.setenv("FAUXISP_DEBIAN_MIRROR", "http://local.example/debian/")
    assert host_debian_mirror(tmp_path) == "http://local.example/debian"


def test_mirror_of_this_host_parses() -> None:
    assert host_debian_mirror().startswith(("http://", "https://", "file:/"))


# --- caching and path choice -------------------------------------------------------------------

def _calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def fake_build(kind: str):
        def build(client: FakeClient, digest: str, clock: Any, folder: Path, force: bool) -> FakeImage:
            calls.append(kind)
            image = FakeImage(image_tag(digest), digest, "sha256:" + "cd" * 32)
            client.images.existing[image_tag(digest)] = image
            return image
        return build

    monkeypatch.setattr(images, "_build_offline", fake_build("offline"))
    monkeypatch.setattr(images, "_build_registry", fake_build("registry"))
    return calls


def test_cached_image_is_returned_without_building(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _calls(monkeypatch)
    digest = image_hash()
    cached = FakeImage(image_tag(digest), digest)
    client = FakeClient({image_tag(digest): cached})
    lines: list[str] = []
    info = build_image(client=client, progress=lines.append)
    assert calls == []
    assert info.method == "cached" and not info.built
    assert info.tag == image_tag(digest) and info.hash == digest and info.size == 123_000_000
    assert info.seconds < 1
    assert client.images.pulls == []  # no registry probe on the fast path
    assert (IMAGE_REPO, "latest") in cached.tagged


def test_tag_with_a_different_hash_label_is_rebuilt(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _calls(monkeypatch)
    digest = image_hash()
    client = FakeClient({image_tag(digest): FakeImage(image_tag(digest), "0" * 64)})
    info = build_image(client=client, offline=True)
    assert calls == ["offline"] and info.method == "offline"


def test_second_call_does_not_rebuild(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _calls(monkeypatch)
    client = FakeClient()
    first = build_image(client=client, offline=True)
    second = build_image(client=client, offline=True)
    assert calls == ["offline"]
    assert first.built and second.method == "cached" and second.image_id == first.image_id


def test_force_rebuilds(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _calls(monkeypatch)
    digest = image_hash()
    client = FakeClient({image_tag(digest): FakeImage(image_tag(digest), digest)})
    build_image(client=client, offline=False, force=True)
    assert calls == ["registry"]


def test_offline_env_forces_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _calls(monkeypatch)
    monkeypatch.setenv("FAUXISP_OFFLINE", "1")
    client = FakeClient({images.BASE_IMAGE: FakeImage(images.BASE_IMAGE, None)})
    build_image(client=client)
    assert calls == ["offline"] and client.images.pulls == []


def test_offline_env_zero_forces_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _calls(monkeypatch)
    monkeypatch.setenv("FAUXISP_OFFLINE", "0")
    build_image(client=FakeClient())
    assert calls == ["registry"]


def test_auto_uses_registry_when_base_image_is_present(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _calls(monkeypatch)
    client = FakeClient({images.BASE_IMAGE: FakeImage(images.BASE_IMAGE, None)})
    build_image(client=client)
    assert calls == ["registry"] and client.images.pulls == []


def test_auto_goes_offline_when_the_pull_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _calls(monkeypatch)
    client = FakeClient(pull_error=RuntimeError("lookup registry-1.docker.io: no such host"))
    lines: list[str] = []
    build_image(client=client, progress=lines.append)
    assert client.images.pulls == [images.BASE_IMAGE]
    assert calls == ["offline"]
    assert any("no registry" in line for line in lines)
    assert all(re.match(r"\[\s*\d+\.\ds\] ", line) for line in lines)


def test_auto_uses_registry_when_the_pull_works(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _calls(monkeypatch)
    client = FakeClient()
    build_image(client=client)
    assert client.images.pulls == [images.BASE_IMAGE] and calls == ["registry"]


def test_stale_images_are_removed_after_a_build(monkeypatch: pytest.MonkeyPatch) -> None:
    _calls(monkeypatch)
    old = FakeImage(f"{IMAGE_REPO}:0123456789abcdef", "1" * 64, "sha256:" + "ee" * 32)
    client = FakeClient({old.tags[0]: old})
    build_image(client=client, offline=True)
    assert client.images.removed == [f"{IMAGE_REPO}:0123456789abcdef"]


# --- offline prerequisites ----------------------------------------------------------------------

def test_missing_debootstrap_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images.os, "geteuid", lambda: 0)
    monkeypatch.setattr(images.shutil, "which", lambda tool: None if tool == "debootstrap" else "/bin/x")
    with pytest.raises(ImageError, match="apt-get install debootstrap"):
        images._check_offline_tools()


def test_offline_build_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images.os, "geteuid", lambda: 1000)
    with pytest.raises(ImageError, match="root"):
        images._check_offline_tools()


def test_missing_docker_engine_is_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    docker = pytest.importorskip("docker")

    def broken() -> Any:
        raise docker.errors.DockerException("Error while fetching server API version")

    monkeypatch.setattr(docker, "from_env", broken)
    with pytest.raises(ImageError, match="Docker Engine"):
        images._docker_client()


def test_failed_command_reports_its_output(tmp_path: Path) -> None:
    clock = images._Clock(None)
    with pytest.raises(ImageError, match=r"(?s)demo failed \(exit 3\).*boom"):
        images._run(["sh", "-c", "echo boom; exit 3"], clock, tmp_path / "log", what="demo")
    assert "boom" in (tmp_path / "log").read_text()


# --- command line -----------------------------------------------------------------------------

def test_cli_hash(capsys: pytest.CaptureFixture[str]) -> None:
    assert images.main(["hash"]) == 0
    out = capsys.readouterr().out
    assert image_tag(image_hash()) in out


def test_cli_build_cached(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    digest = image_hash()
    client = FakeClient({image_tag(digest): FakeImage(image_tag(digest), digest)})
    monkeypatch.setattr(images, "_docker_client", lambda: client)
    assert images.main(["build"]) == 0
    assert "cached, not rebuilt" in capsys.readouterr().out


def test_cli_build_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def broken() -> Any:
        raise ImageError("cannot reach the Docker Engine")

    monkeypatch.setattr(images, "_docker_client", broken)
    assert images.main(["build", "--offline"]) == 1
    assert "error: cannot reach the Docker Engine" in capsys.readouterr().err
