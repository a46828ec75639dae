"""The compose backend: same verdicts as netns, `docker compose up` for real, lab faults, isolation."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, WHERE_AM_I, assert_no_leftovers

from harness.campaign import CampaignConfig, run_campaign
from harness.runner import run_scenario
from netlab.backends.compose import LABEL, ComposeBackend
from netlab.backends.netns import ns_name
from netlab.compile import compile_lab
from netlab.errors import LabFault
from netlab.loader import load_scenario

pytestmark = pytest.mark.docker
DEMO = ROOT / "scenarios" / "demo.yaml"
LAB_NETS = "{ 10.0.0.0/8, 198.18.0.0/15 }"


def docker_ok() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


if not docker_ok():
    pytestmark = [pytest.mark.docker, pytest.mark.skip(reason="no Docker Engine")]


def docker_leftovers(lab: str) -> dict[str, list[str]]:
    def ls(*args: str) -> list[str]:
        return subprocess.run(["docker", *args, "--filter", f"label={LABEL}={lab}", "-q"], capture_output=True,
                              text=True).stdout.split()

    rules = subprocess.run(["iptables", "-S", "DOCKER-USER"], capture_output=True, text=True).stdout
    return {"containers": ls("ps", "-a"), "networks": ls("network", "ls"), "volumes": ls("volume", "ls"),
            "rules": [r for r in rules.splitlines() if f"fauxisp:{lab}" in r]}


def assert_docker_clean(lab: str) -> None:
    left = docker_leftovers(lab)
    assert not any(left.values()), f"compose lab {lab} left: {left}"


def compose_cmd() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"]


def test_compose_gives_the_same_verdicts_as_netns(lab_name: str, tmp_path: Path) -> None:
    netns = run_scenario(DEMO, out=tmp_path / "netns", name=lab_name + "n")
    compose = run_scenario(DEMO, out=tmp_path / "compose", name=lab_name + "c", backend="compose")
    assert compose.scored is not None and not compose.scored.score.mismatches
    assert compose.verdicts == netns.verdicts
    assert_docker_clean(lab_name + "c")
    assert_no_leftovers(lab_name + "c")


def test_telegram_2018_through_compose_equals_the_oracle(lab_name: str, tmp_path: Path) -> None:
    outcome = run_scenario(ROOT / "scenarios/telegram-2018.yaml", out=tmp_path, name=lab_name, backend="compose")
    assert outcome.scored is not None and not outcome.scored.score.mismatches
    assert outcome.scored.impact_matches
    assert_docker_clean(lab_name)


class HostCounters:
    """An nftables table on the Docker host counting lab packets that reach the host at all: on an
    interface named like a lab bridge of old (``nl*``), forwarded anywhere from one, delivered to
    the host, or sent by the host from a lab address. A lab's hosts are namespaces inside its
    container, which has no network from Docker: every count must stay 0."""

    def __init__(self, lab: str) -> None:
        # A table of its own: another run of this test on the machine must not delete ours.
        self.TABLE = f"fauxisp_isolation_{lab.replace('-', '_')}"

    def __enter__(self) -> HostCounters:
        rules = f"""table inet {self.TABLE} {{
  chain lab_seen {{
    type filter hook forward priority -401;
    iifname "nl*" counter comment "lab-traffic-seen"
  }}
  chain leak_forward {{
    type filter hook forward priority -400;
    iifname "nl*" oifname != "nl*" counter comment "leaves-lab-bridge"
    iifname "nl*" ip daddr != {LAB_NETS} counter comment "to-non-lab-address"
  }}
  chain leak_input {{
    type filter hook input priority -400;
    meta nfproto ipv4 iifname "nl*" counter comment "to-the-host"
  }}
  chain leak_output {{
    type filter hook output priority -400;
    ip saddr {LAB_NETS} ip daddr != {LAB_NETS} ip daddr != 224.0.0.0/4 counter comment "lab-source-out"
  }}
}}
"""
        subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
        return self

    def counts(self) -> dict[str, int]:
        out = json.loads(subprocess.run(["nft", "-j", "list", "table", "inet", self.TABLE], capture_output=True,
                                        text=True, check=True).stdout)
        counts = {}
        for item in out["nftables"]:
            rule = item.get("rule")
            if rule:
                counter = next(e["counter"] for e in rule["expr"] if "counter" in e)
                counts[rule["comment"]] = counter["packets"]
        return counts

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["nft", "delete", "table", "inet", self.TABLE], capture_output=True)


def test_docker_compose_up_runs_the_demo_and_is_isolated(lab_name: str, tmp_path: Path) -> None:
    out = tmp_path / "docker-compose.yml"
    subprocess.run([sys.executable, "-m", "harness", "compose", str(DEMO), "-o", str(out), "--name", lab_name],
                   check=True, cwd=ROOT, capture_output=True)
    cmd = [*compose_cmd(), "-f", str(out), "-p", lab_name]
    with HostCounters(lab_name) as counters:
        try:
            up = subprocess.run([*cmd, "up", "--exit-code-from", "score"], capture_output=True, text=True,
                                timeout=600)
            counts = counters.counts()
        finally:
            down = subprocess.run([*cmd, "down"], capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    assert down.returncode == 0, down.stderr
    assert "21/21 verdicts match the ground truth" in up.stdout
    verdicts = [json.loads(x) for x in (tmp_path / "results" / "verdicts.jsonl").read_text().splitlines()]
    assert len(verdicts) == 21 and all(v["match"] for v in verdicts)
    assert (tmp_path / "results" / "verdicts.txt").read_text().count("dns.nxdomain") >= 2
    # The lab measured (above), and not one of its packets passed through the Docker host.
    assert counts == {"lab-traffic-seen": 0, "leaves-lab-bridge": 0, "to-non-lab-address": 0, "to-the-host": 0,
                      "lab-source-out": 0}
    assert_docker_clean(lab_name)


def test_the_lab_container_killed_mid_run_is_a_lab_fault(lab_name: str, tmp_path: Path) -> None:
    scenario = load_scenario(DEMO)
    lab = ComposeBackend().up(compile_lab(scenario, lab_name))
    killed: list[str] = []

    def kill_lab(vantage: str, line: dict) -> None:
        if not killed:  # every host goes down after the first measurement arrives
            killed.append(lab.state.hosts["isp-b.gw"])  # the lab's one container
            subprocess.run(["docker", "kill", killed[0]], capture_output=True, check=True)

    try:
        try:
            reported = asyncio.run(run_campaign(lab, scenario, tmp_path, CampaignConfig(),
                                                on_result=kill_lab)).lab_faults
        except LabFault as exc:  # a worker cut off mid-campaign (the CLI: exit 3)
            reported = [str(exc)]
        dead = lab.dead_services()
    finally:
        lab.down()
    assert killed and reported
    assert {f.host for f in dead} == set(lab.state.hosts), dead  # no host answers any more
    assert_docker_clean(lab_name)


def link_names(ip_o_link: str) -> set[str]:
    """The interface names in `ip -o link` output ("2: eth0@if3: <...>")."""
    return {line.split(":")[1].strip().split("@")[0] for line in ip_o_link.splitlines()}


def test_a_dead_service_in_a_container_is_named_with_its_exit_status(lab_name: str) -> None:
    # hostd writes faults/<host> ("<service> exited with status N") and takes that host down.
    plan = compile_lab(load_scenario(DEMO), lab_name)
    lab = ComposeBackend().up(plan)
    container = lab.state.hosts["isp-b.gw"]
    try:
        assert lab.dead_services() == []
        # Isolation: the lab's container has no network from Docker, its own namespace only loopback;
        # each host (a namespace in it) has exactly its plan's interfaces.
        info = json.loads(subprocess.run(["docker", "inspect", container], capture_output=True, text=True,
                                         check=True).stdout)[0]
        assert info["HostConfig"]["NetworkMode"] == "none" and list(info["NetworkSettings"]["Networks"]) == ["none"]
        assert link_names(subprocess.run(["docker", "exec", container, "ip", "-o", "link"], capture_output=True,
                                         text=True, check=True).stdout) == {"lo"}
        for host in plan.hosts.values():
            got = link_names(subprocess.run(lab.command(host.name, ["ip", "-o", "link"]), capture_output=True,
                                            text=True, timeout=60).stdout)
            assert got == {"lo", *(i.name for i in host.interfaces)}, host.name
        # The probes recognise a lab host from inside it, and the container's own namespace as none.
        where = subprocess.run(lab.command("isp-a", WHERE_AM_I), capture_output=True, text=True, timeout=60)
        assert where.stdout.split() == [ns_name(lab_name, "isp-a")], where.stderr
        outside = subprocess.run(["docker", "exec", container, *WHERE_AM_I], capture_output=True, text=True)
        assert outside.stdout.split() == ["None"], outside.stderr
        subprocess.run(["docker", "exec", lab.state.hosts["isp-b.gw"], "pkill", "-KILL", "-f", "netlab.services.dpi"],
                       check=True, capture_output=True)
        deadline = time.monotonic() + 30
        while not (dead := lab.dead_services()) and time.monotonic() < deadline:
            time.sleep(0.2)
        # The router went down with its DPI: its client's link went with it, no path around the DPI.
        client_links = link_names(subprocess.run(lab.command("isp-b", ["ip", "-o", "link"]), capture_output=True,
                                                 text=True, timeout=60).stdout)
    finally:
        lab.down()
    assert [(f.host, f.service, f.role, f.status) for f in dead] == [("isp-b.gw", "dpi", "router", -9)]
    assert client_links == {"lo"}
    assert_docker_clean(lab_name)


def test_netns_service_killed_mid_run_is_a_lab_fault(lab_name: str, tmp_path: Path) -> None:
    from harness.runner import measure_and_score
    from netlab.backends.netns import NetnsBackend

    scenario = load_scenario(DEMO)
    lab = NetnsBackend().up(compile_lab(scenario, lab_name))
    dpi = next(s for s in lab.state.services if s["host"] == "isp-b.gw" and s["name"] == "dpi")
    os.kill(dpi["pid"], 9)
    try:
        outcome = measure_and_score(lab, scenario, tmp_path, CampaignConfig())
    finally:
        lab.down()
    assert outcome.scored is None and len(outcome.campaign.lab_faults) == 1
    assert outcome.campaign.lab_faults[0].startswith("isp-b.gw/dpi (router) exited with status -9")
    assert_no_leftovers(lab_name)


def test_status_lists_compose_labs_and_down_removes_them(lab_name: str) -> None:
    # (`harness down --all` is list_labs + down for each; it is not run here, as it would also
    # remove labs that are none of this test's business.)
    def harness(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=ROOT,
                              timeout=300, env={**os.environ, "CI": "true"})

    up = harness("up", str(ROOT / "scenarios/firewall.yaml"), "--backend", "compose", "--name", lab_name)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        status = harness("status", "--json")
        assert status.returncode == 0, status.stderr
        labs = {(s["lab"], s["backend"]): s for s in json.loads(status.stdout)}
        assert labs[(lab_name, "compose")]["state"] == "up"
        assert_listing_survives_containers_coming_and_going(lab_name)
        run = harness("run", str(ROOT / "scenarios/firewall.yaml"), "--name", lab_name, "--backend", "compose",
                      "--check", "--out", "/tmp/" + lab_name)
        assert run.returncode == 0 and "24/24" in run.stdout, run.stdout + run.stderr
    finally:
        down = harness("down", lab_name, "--backend", "compose")
    assert down.returncode == 0 and f"lab {lab_name} removed" in down.stdout
    assert_docker_clean(lab_name)
    assert_no_leftovers(lab_name)


def assert_listing_survives_containers_coming_and_going(lab_name: str) -> None:
    """Other labs' containers come and go while `status` lists labs (as when tests run side by side):
    the listing once failed when one was removed between Docker's list and its inspection of it."""
    image = subprocess.run(["docker", "ps", "--filter", f"label={LABEL}={lab_name}", "--format", "{{.Image}}"],
                           capture_output=True, text=True, check=True).stdout.split()[0]
    other = lab_name + "z"
    done = threading.Event()

    def churn() -> None:
        try:
            for _ in range(40):
                cid = subprocess.run(["docker", "create", "--label", f"{LABEL}={other}", image, "true"],
                                     capture_output=True, text=True, check=True).stdout.strip()
                subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=True)
        finally:
            done.set()

    t = threading.Thread(target=churn)
    t.start()
    listings = 0
    try:
        while not done.is_set():
            assert (lab_name, "compose") in {(st.lab, st.backend) for st in ComposeBackend().list_labs()}
            listings += 1
    finally:
        t.join()
        left = docker_leftovers(other)["containers"]  # the churn's own, if it stopped midway
        if left:
            subprocess.run(["docker", "rm", "-f", *left], capture_output=True)
    assert listings > 0
    assert_docker_clean(other)
