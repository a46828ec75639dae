"""The Compose file and the compose backend are one description of a lab (lab_spec); the top-level
docker-compose.yml is the demo's, as `harness compose` writes it."""

from __future__ import annotations

from importlib.metadata import entry_points
from ipaddress import IPv4Network
from pathlib import Path

import pytest
import yaml

from harness.compose_file import compose_dict, compose_yaml
from netlab.addressing import CARRIER_RANGE, LAB_INTERNET, carrier_subnets
from netlab.backends.compose import INNER_PLUGINS, lab_spec
from netlab.compile import compile_lab
from netlab.loader import load_scenario

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scenarios/demo.yaml"
HOST_KEYS = {"image", "container_name", "hostname", "labels", "cap_add", "environment", "depends_on", "sysctls",
             "volumes", "networks", "command"}


def demo_file(lab: str = "demo", probe: str = "web") -> dict:
    return compose_dict(compile_lab(load_scenario(DEMO), lab), DEMO, ROOT, probe)


def test_top_level_compose_file_is_in_sync_with_the_demo() -> None:
    plan = compile_lab(load_scenario(DEMO))
    expected = compose_yaml(plan, DEMO, ROOT)
    assert (ROOT / "docker-compose.yml").read_text() == expected, (
        "docker-compose.yml is stale: run `harness compose scenarios/demo.yaml -o docker-compose.yml`")


def test_every_network_is_internal_and_no_host_publishes_ports() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert doc["networks"] and all(n["internal"] is True for n in doc["networks"].values())
    for name, svc in doc["services"].items():
        assert "ports" not in svc
        if name not in ("lab", "score"):
            assert set(svc["networks"]) <= set(doc["networks"])
    assert doc["services"]["score"]["network_mode"] == "none"


def test_the_file_writes_the_backends_description_of_every_container_and_network() -> None:
    plan = compile_lab(load_scenario(DEMO))
    backend = lab_spec(plan, image="censorlab/base:latest", lab_source="/run/netlab/demo", src_source="/src",
                       plugins=[], subnets=carrier_subnets(len(plan.links), [], "demo"))
    doc = demo_file()
    for c in backend.containers:
        svc = doc["services"][c.host]
        assert set(svc) == HOST_KEYS
        assert (svc["container_name"], svc["command"], svc["networks"], svc["sysctls"], svc["environment"]) == (
            c.name, c.command, c.networks, c.sysctls, c.environment)
        # Only where the mounted folders are on the Docker host differs (the file's are relative to it).
        assert [v.split(":", 1)[1] for v in svc["volumes"]] == [
            f"{m.target}" + (":ro" if m.read_only else "") for m in c.mounts]
    for n in backend.networks:
        net = doc["networks"][n.name]
        assert net["driver_opts"] == {"com.docker.network.bridge.name": n.bridge,
                                      "com.docker.network.container_iface_prefix": n.iface_prefix}
        assert "ipam" not in net  # Docker chooses the file's carrier subnets: never two labs on one


def test_names_follow_the_lab_naming_rule_and_two_labs_share_nothing() -> None:
    a, b = demo_file("h4a"), demo_file("h4b")
    assert all(n.startswith("nl-h4a.") for n in a["networks"])
    assert {s["container_name"] for s in a["services"].values() if "container_name" in s} == {
        f"nl-h4a.{h}" for h in ("inet", "control", "isp-a", "isp-a.gw", "isp-b", "isp-b.gw")}
    names = lambda d: {*d["networks"], *(n["driver_opts"]["com.docker.network.bridge.name"]  # noqa: E731
                                         for n in d["networks"].values())}
    assert not names(a) & names(b)
    assert a["services"]["inet"]["volumes"][1] == "./.censorlab/h4a:/lab/h4a"


def test_each_host_names_its_docker_interfaces_after_its_plan_interfaces() -> None:
    plan = compile_lab(load_scenario(DEMO))
    doc = demo_file()
    prefixes = [n["driver_opts"]["com.docker.network.container_iface_prefix"] for n in doc["networks"].values()]
    assert len(set(prefixes)) == len(prefixes)
    for host in plan.hosts.values():
        cmd = doc["services"][host.name]["command"]
        pairs = dict(cmd[i + 1].split("=") for i, a in enumerate(cmd) if a == "--interface")
        assert sorted(pairs.values()) == sorted(i.name for i in host.interfaces)
        assert all(d[:-1] in prefixes and d.endswith("_0") for d in pairs)


def test_the_campaign_runs_the_chosen_probe() -> None:
    assert demo_file()["services"]["score"]["command"][-2:] == ["--probe", "web"]


@pytest.mark.skipif(not any(ep.name == "dot" for ep in entry_points(group="harness.probes")),
                    reason="examples/dot-probe is not installed")
def test_a_third_party_probe_is_mounted_with_its_entry_point() -> None:
    doc = demo_file(probe="dot")
    inet = doc["services"]["inet"]
    plugin = [v for v in inet["volumes"] if INNER_PLUGINS in v]
    assert any(v.endswith("/censorlab_dot.py:ro") for v in plugin)
    assert any(".dist-info:" in v for v in plugin)  # where importlib.metadata finds entry points
    assert inet["environment"]["PYTHONPATH"] == f"/opt/censorlab:{INNER_PLUGINS}/censorlab-dot-probe"
    assert doc["services"]["score"]["command"][-2:] == ["--probe", "dot"]
    assert not any(INNER_PLUGINS in v for v in demo_file()["services"]["inet"]["volumes"])


def test_carrier_subnets_avoid_what_is_taken_and_the_lab_addresses() -> None:
    first = carrier_subnets(5, [], "demo")
    assert first == carrier_subnets(5, [], "demo") and len(set(first)) == 5
    assert all(n.prefixlen == 29 and n.subnet_of(CARRIER_RANGE) and not n.overlaps(LAB_INTERNET)
               and not n.overlaps(IPv4Network("10.0.0.0/8")) for n in first)
    second = carrier_subnets(5, first, "demo")  # another lab got there first
    assert not any(a.overlaps(b) for a in first for b in second)
    assert len(carrier_subnets(499, [], "big")) == 499  # the most links a scenario can have
