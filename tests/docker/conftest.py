"""Docker tests that need no lab on the host: the set-up on a stock Debian, the lab image with the
project, the README's Compose lines. Each builds or reuses a cached image, so the tests of one
file stay on one xdist worker (xdist_group) and never build the same image twice at once."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from netlab.deploy.images import _copy_tree, cache_dir

ROOT = Path(__file__).resolve().parents[2]


def docker_ok() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/docker" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.docker)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="builds images offline (debootstrap): needs root"))
            elif not docker_ok():
                item.add_marker(pytest.mark.skip(reason="no Docker Engine"))


def copy_project(dest: Path) -> Path:
    """The repository as a fresh clone would have it (tracked and new files; no .venv, no caches)."""
    _copy_tree(ROOT, dest)
    return dest


def host_pip_args() -> list[str]:
    """`docker run` arguments that give a container the host's pip configuration: index, proxy and
    the CA bundle pip trusts here (a container's own bundle may lack a proxy's CA)."""
    args: list[str] = []
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT",
                 "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        if os.environ.get(name):
            args += ["-e", f"{name}={os.environ[name]}"]
    cert = os.environ.get("PIP_CERT")
    if not cert:
        conf = subprocess.run(["python3", "-m", "pip", "config", "get", "global.cert"], capture_output=True,
                              text=True, check=False)
        cert = conf.stdout.strip() if conf.returncode == 0 else ""
    if cert and Path(cert).is_file():
        args += ["-v", f"{Path(cert).resolve()}:/etc/fauxisp-host-ca.pem:ro", "-e",
                 "PIP_CERT=/etc/fauxisp-host-ca.pem"]
    return args


def download_cache(name: str) -> Path:
    """A download cache kept between runs (apt archives, pip), in the image cache folder."""
    folder = cache_dir() / "test-caches" / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# What `--privileged` grants, flag by flag, less CAP_SYS_RESOURCE. Used only where the Docker
# daemon itself lacks a capability (a daemon in a sandbox, as on the machine this was written on):
# there runc refuses --privileged outright ("unable to apply caps").
PRIVILEGED_EQUIVALENT = ["--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--security-opt", "seccomp=unconfined",
                         "--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined"]
_privileged: list[str] = []


def privileged_flags(image: str) -> list[str]:
    """["--privileged"] where the engine can give it, else PRIVILEGED_EQUIVALENT (with a warning)."""
    if not _privileged:
        res = subprocess.run(["docker", "run", "--rm", "--privileged", image, "true"], capture_output=True, text=True,
                             timeout=120)
        if res.returncode == 0:
            _privileged[:] = ["--privileged"]
        elif "unable to apply caps" in res.stderr:
            import warnings

            warnings.warn("this Docker daemon cannot grant --privileged (it lacks a capability itself): the "
                          "commands run with the equivalent capability flags instead", stacklevel=2)
            _privileged[:] = PRIVILEGED_EQUIVALENT
        else:
            raise AssertionError(f"docker run --privileged {image} true: {res.stderr.strip()}")
    return list(_privileged)
