"""The lab's base image for real: build it (offline where no registry is
reachable, or reuse the cached one), run a container from it on an internal
Docker network, and check every program the roles need is inside.

Run with ``pytest -s tests/lab/test_images.py`` to see the build timings.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from netlab.deploy.images import IMAGE_REPO, LABEL_HASH, build_image

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TEST_LABEL = "org.fauxisp.test"

CHECKS = [
    (["unbound", "-V"], "Version 1."),
    (["nsd", "-v"], "NSD version"),
    (["nft", "--version"], "nftables v"),
    (["iptables", "--version"], "nf_tables"),
    (["tc", "-V"], "iproute2"),
    (["ps", "--version"], "procps"),
    (["python3", "-c", "import dns, httpx, httpcore, trustme, cryptography, rich, pyroute2, "
      "netfilterqueue, yaml; print('imports ok')"], "imports ok"),
    (["python3", "-c", "import pyroute2; v = pyroute2.__version__; "
      "assert tuple(map(int, v.split('.')[:2])) >= (0, 9), v; print('pyroute2', v)"], "pyroute2 0."),
    # the project itself comes from the read-only bind mount, through PYTHONPATH
    (["python3", "-c", "import netlab.deploy.images, sys; print(netlab.deploy.images.__file__)"],
     "/opt/fauxisp/netlab/deploy/images.py"),
]


@pytest.fixture(scope="module")
def client() -> Any:
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        pytest.skip(f"no Docker Engine: {exc}")
    return client


def _ours(client: Any, tag: str) -> tuple[list[Any], list[Any]]:
    flt = {"label": f"{TEST_LABEL}={tag}"}
    return client.containers.list(all=True, filters=flt), client.networks.list(filters=flt)


def test_image_builds_caches_and_runs(client: Any) -> None:
    lines: list[str] = []

    def progress(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    first = build_image(progress=progress)
    second = build_image()
    image = client.images.get(first.tag)

    print(f"\nimage {first.tag}: first call {first.method} in {first.seconds:.1f}s, "
          f"second call {second.method} in {second.seconds:.3f}s, size {first.size / 1e6:.0f} MB")
    assert second.method == "cached", "a second build_image() must not rebuild"
    assert second.seconds < 1.0
    assert second.image_id == first.image_id
    assert image.attrs["Config"]["Labels"][LABEL_HASH] == first.hash
    assert f"{IMAGE_REPO}:latest" in client.images.get(f"{IMAGE_REPO}:latest").tags
    assert client.images.get(f"{IMAGE_REPO}:latest").id == first.image_id
    env = dict(e.split("=", 1) for e in image.attrs["Config"]["Env"])
    assert env["PYTHONPATH"] == "/opt/fauxisp"

    run_id = uuid.uuid4().hex[:8]
    labels = {TEST_LABEL: run_id}
    network = container = None
    try:
        # an internal network: no gateway, no route to the host's network
        network = client.networks.create(f"fauxisp-imgtest-{run_id}", driver="bridge", internal=True,
                                         labels=labels)
        assert client.networks.get(network.id).attrs["Internal"] is True
        t0 = time.monotonic()
        container = client.containers.run(
            first.tag, name=f"fauxisp-imgtest-{run_id}", detach=True, labels=labels,
            network=network.name,
            volumes={str(ROOT): {"bind": "/opt/fauxisp", "mode": "ro"}},
        )
        container.reload()
        assert container.status == "running"
        print(f"container started in {time.monotonic() - t0:.2f}s")

        # Docker 20.10 still gives containers on an internal network a default
        # route to the bridge; the isolation is the engine's DROP rules for any
        # packet entering or leaving the bridge from/to outside its subnet.
        # Checked on the host's ruleset, without sending a packet.
        bridge = f"br-{network.id[:12]}"
        if shutil.which("iptables"):
            rules = subprocess.run(["iptables", "-w", "-S", "DOCKER-ISOLATION-STAGE-1"], capture_output=True,
                                   text=True, check=False).stdout
            drops = [r for r in rules.splitlines() if bridge in r and r.endswith("-j DROP")]
            assert len(drops) >= 2, f"no isolation rules for {bridge}:\n{rules}"

        for cmd, expected in CHECKS:
            result = container.exec_run(cmd)
            out = result.output.decode(errors="replace")
            assert result.exit_code == 0, f"{' '.join(cmd)} -> {result.exit_code}: {out}"
            assert expected in out, f"{' '.join(cmd)}: {expected!r} not in {out!r}"
            print(f"  {cmd[0]:8} {out.strip().splitlines()[0][:90]}")
        # no compilers or package tools left from the build
        left = container.exec_run(["sh", "-c", "command -v gcc cc cython3 pip3 || true"])
        assert left.output.strip() == b"", left.output
    finally:
        if container is not None:
            container.remove(force=True)
        if network is not None:
            network.remove()
    containers, networks = _ours(client, run_id)
    assert containers == [] and networks == [], "test containers or networks left behind"
