"""The README's set-up on a stock Debian 12: no Python, no pip, an EXTERNALLY-MANAGED system
python once apt installs it (PEP 668). scripts/setup.sh (what `make demo` and `make test` run first)
must leave the project installed in .venv and `harness` runnable.

The container is a bare `debootstrap --variant=minbase` Debian 12 (netlab.deploy.images.build_debian_image:
no registry needed, cached). It reaches the Debian archive and PyPI like the host's own set-up does;
apt and pip download caches live in the image cache folder so a second run is quick. Ubuntu 24.04
cannot be tested here (no registry, only Debian's archive); setup.sh uses only apt and
python3-venv, which Ubuntu has under the same names."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import copy_project, download_cache, host_pip_args

from netlab.deploy.images import build_debian_image

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("stock-debian")]

INSIDE = r"""
set -eux  # -x: a failing line shows in stderr; note: `! cmd` never trips -e, hence the explicit `|| exit 1`
# a stock system: no python3 at all before the set-up
! command -v python3 || exit 1
cp -a /src /root/fauxisp && cd /root/fauxisp
# chromium (for one report test) is optional and large; everything else is the README's set-up
export FAUXISP_OPTIONAL_APT=
./scripts/setup.sh
# PEP 668: the system python is externally managed and the project is not in it
test -f /usr/lib/python3.11/EXTERNALLY-MANAGED
(cd / && ! /usr/bin/python3 -c 'import netlab' 2>/dev/null) || exit 1  # from /: not the checkout
! /usr/bin/python3 -m pip --version 2>/dev/null || exit 1
.venv/bin/python -c 'import netlab, probes, harness, netfilterqueue, fauxisp_dot, oonidata, xdist
print("imports ok")'
# harness by name, from the PATH setup.sh prints
echo "harness at $(command -v harness)"
harness --help | head -3
harness probes list
harness explain scenarios/demo.yaml | tail -2
# make uses the venv too; a second set-up is a no-op
make -s setup
make -n test | grep -q '.venv/bin/python -m pytest'
echo SETUP-OK
"""


def test_setup_on_stock_debian_12(tmp_path: Path) -> None:
    image = build_debian_image(progress=print)
    src = copy_project(tmp_path / "src")
    name = f"h3-setup-{uuid.uuid4().hex[:8]}"
    apt_cache = download_cache("stock-debian-apt")
    (apt_cache / "partial").mkdir(exist_ok=True)
    cmd = ["docker", "run", "--rm", "--name", name, "--label", "org.fauxisp.test=setup",
           "-v", f"{src}:/src:ro", "-v", f"{apt_cache}:/var/cache/apt/archives",
           "-v", f"{download_cache('stock-debian-pip')}:/root/.cache/pip", *host_pip_args(),
           image.tag, "bash", "-c", INSIDE]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    out = res.stdout + res.stderr
    print(out[-3000:])
    assert res.returncode == 0 and "SETUP-OK" in res.stdout, out[-4000:]
    assert "imports ok" in res.stdout
    assert "harness at /usr/local/bin/harness" in res.stdout
    assert "usage: harness" in res.stdout
    assert "dot" in res.stdout  # the example plugin installed by setup, found through its entry point
