"""The middlebox's worker processes in a real router (needs root): how the kernel spreads flows over
them, residual blocking across them, and a dead worker as a lab fault."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from dpi_topology import SITES, DpiLab
from test_dpi_lab import (
    alive,
    lab,  # noqa: F401 - the fixture, shared with the other DPI lab tests
    with_dpi,
)

from netlab.backends.base import wait_until as poll
from netlab.compile.router import DPI_QUEUE, DPI_WORKERS
from netlab.model import Match, Rule

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("iptables-restore"),
                       reason="needs root, iproute2 and iptables-nft"),
]
ROOT = Path(__file__).resolve().parents[2]


def queued(dl: DpiLab) -> dict[int, int]:
    """Packets each of the router's queues has taken so far (nfnetlink_queue's id sequence)."""
    out = dl.exec(dl.router, ["cat", "/proc/net/netfilter/nfnetlink_queue"]).stdout
    return {int(f[0]): int(f[7]) for f in (line.split() for line in out.splitlines())}


def queues_of(dl: DpiLab, *args: str) -> set[int]:
    before = queued(dl)
    dl.client_cmd(*args)
    after = queued(dl)
    return {q for q in after if after[q] != before.get(q, 0)}


def worker_pids(pid: int) -> list[int]:
    return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_flows_of_a_pair_meet_one_worker_and_residual_spans_workers(lab):  # noqa: F811
    with_dpi(lab, Rule(Match(sni="social.test"), "reset", residual=60), Rule(Match(keyword="never-kw"), "drop"))
    assert sorted(queued(lab)) == list(range(DPI_QUEUE, DPI_QUEUE + DPI_WORKERS))
    split = None
    for site in SITES:
        # 5 UDP flows (5 source ports) and a TCP flow: ports are not in the kernel's hash
        udp = queues_of(lab, "udp-rtt", "--count", "5", "--addr", site)
        tcp = queues_of(lab, "tls", "ok.test", site)
        assert len(udp) == len(tcp) == 1, (site, udp, tcp)
        if udp != tcp and split is None:
            split = site
    # the kernel hashes (addresses, protocol) with a per-boot seed: 8 sites all alike is a 1/256 case
    assert split is not None, "no site whose TCP and UDP flows meet different workers"
    assert lab.client_cmd("tls", "social.test", split)["result"] == "handshake:connection_reset"
    # the pair's UDP meets the other worker, which finds the block in the shared table
    assert lab.client_cmd("udp-rtt", "--count", "3", "--addr", split)["rtts_us"] == []
    assert lab.client_cmd("tls", "ok.test", split)["result"] == "handshake:connection_reset"
    other = next(s for s in SITES if s != split)
    assert len(lab.client_cmd("udp-rtt", "--count", "3", "--addr", other)["rtts_us"]) == 3
    assert alive(lab)


def test_a_dead_worker_stops_the_middlebox(lab):  # noqa: F811
    with_dpi(lab, Rule(Match(sni="social.test"), "reset"))
    pid = lab.procs["dpi"].pid
    workers = worker_pids(pid)
    assert len(workers) == DPI_WORKERS
    os.kill(workers[0], signal.SIGKILL)
    assert lab.procs["dpi"].wait(5) == 1
    assert poll(lambda: not any(Path(f"/proc/{w}").exists() for w in workers), 5)
    assert "exited (-9): the middlebox stops" in lab.log("dpi")
    # no queue is left served: fail closed, every pair times out (a half-served router would pass some)
    for site in SITES[:4]:
        assert lab.client_cmd("tls", "ok.test", site, "--timeout", "1")["result"] == "connect:timeout"


def harness(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "CI": "true"})


def test_a_dead_worker_is_a_lab_fault(tmp_path: Path) -> None:
    name = f"{os.environ.get('FAUXISP_TEST_LAB_PREFIX', 't')}w{uuid.uuid4().hex[:5]}"
    scenario = ROOT / "scenarios" / "dpi-sni.yaml"
    try:
        up = harness("up", str(scenario), "--name", name)
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((Path("/run/netlab") / name / "state.json").read_text())
        dpi = next(s for s in state["services"] if s["name"] == "dpi")
        workers = worker_pids(dpi["pid"])
        assert len(workers) == DPI_WORKERS
        os.kill(workers[-1], signal.SIGKILL)
        assert poll(lambda: bool(json.loads((Path("/run/netlab") / name / "state.json").read_text())["faults"]),
                    30)
        run = harness("run", str(scenario), "--name", name, "--check", "--out", str(tmp_path / "r"))
        assert run.returncode == 3, run.stdout + run.stderr
        assert f"{dpi['host']}/dpi (router) exited with status 1" in run.stdout, run.stdout
    finally:
        assert harness("down", name).returncode == 0


def test_a_flow_decided_to_pass_leaves_the_queue(lab):  # noqa: F811
    with_dpi(lab, Rule(Match(sni="social.test"), "reset"))
    before = sum(queued(lab).values())
    assert lab.client_cmd("bulk", SITES[2], "--size", str(1 << 20))["bytes"] == 1 << 20
    # SYN, ACK and the request; the ~20 ACKs after it stay in the kernel (10 were queued before)
    assert sum(queued(lab).values()) - before <= 4
    assert lab.client_cmd("tls", "social.test", SITES[2])["result"] == "handshake:connection_reset"
