"""The Compose file and the compose backend are one description of a lab's container (lab_spec); the
top-level docker-compose.yml is the demo's, as `harness compose` writes it."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

from harness.compose_file import compose_dict, compose_yaml
from netlab.backends.compose import INNER_PLUGINS, lab_spec
from netlab.compile import compile_lab
from netlab.loader import load_scenario

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scenarios/demo.yaml"

def demo_file(lab: str = "demo", probe: str = "web") -> dict:
    return compose_dict(compile_lab(load_scenario(DEMO), lab), DEMO, ROOT, probe)


def test_top_level_compose_file_is_in_sync_with_the_demo() -> None:
    plan = compile_lab(load_scenario(DEMO))
    expected = compose_yaml(plan, DEMO, ROOT)
    assert (ROOT / "docker-compose.yml").read_text() == expected, (
        "docker-compose.yml is stale: run `harness compose scenarios/demo.yaml -o docker-compose.yml`")


def test_no_service_has_a_network_or_publishes_ports() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert set(doc["services"]) == {"lab", "score"} and "networks" not in doc
    for svc in doc["services"].values():
        assert svc["network_mode"] == "none" and "ports" not in svc and "networks" not in svc


def test_the_lab_service_is_the_backends_description_of_the_lab_container() -> None:
    plan = compile_lab(load_scenario(DEMO))
    backend = lab_spec(plan, image="fauxisp/base:latest", lab_source="/run/netlab/demo", src_source="/src",
                       plugins=[])
    lab = demo_file()["services"]["lab"]
    assert (lab["container_name"], lab["cap_add"], lab["labels"], lab["environment"]) == (
        backend.name, backend.caps, backend.labels, backend.environment)
    # Only where the mounted folders are on the Docker host differs (the file's are relative to it);
    # the scenario's folder comes last, for the compile that precedes hostd.
    assert [v.split(":", 1)[1] for v in lab["volumes"]] == [
        f"{m.target}" + (":ro" if m.read_only else "") for m in backend.mounts] + ["/scenario:ro"]
    assert lab["command"][:4] == ["python3", "-m", "harness.incompose", "lab"]
    assert backend.command == ["python3", "-m", "netlab.services.hostd", "--lab-dir", "/lab/demo"]


def test_names_follow_the_lab_naming_rule_and_two_labs_share_nothing() -> None:
    a, b = demo_file("h4a"), demo_file("h4b")
    assert a["services"]["lab"]["container_name"] == "nl-h4a"
    assert b["services"]["lab"]["container_name"] == "nl-h4b"
    assert a["services"]["lab"]["volumes"][1] == "./.fauxisp/h4a:/lab/h4a"
    assert a["services"]["score"]["volumes"][1] == "./.fauxisp/h4a:/lab/h4a"


def test_the_campaign_runs_the_chosen_probe() -> None:
    assert demo_file()["services"]["score"]["command"][-2:] == ["--probe", "web"]


@pytest.mark.skipif(not any(ep.name == "dot" for ep in entry_points(group="harness.probes")),
                    reason="examples/dot-probe is not installed")
def test_a_third_party_probe_is_mounted_with_its_entry_point() -> None:
    doc = demo_file(probe="dot")
    inet = doc["services"]["lab"]
    plugin = [v for v in inet["volumes"] if INNER_PLUGINS in v]
    assert any(v.endswith("/fauxisp_dot.py:ro") for v in plugin)
    assert any(".dist-info:" in v for v in plugin)  # where importlib.metadata finds entry points
    assert inet["environment"]["PYTHONPATH"] == f"/opt/fauxisp:{INNER_PLUGINS}/fauxisp-dot-probe"
    assert doc["services"]["score"]["command"][-2:] == ["--probe", "dot"]
    assert not any(INNER_PLUGINS in v for v in demo_file()["services"]["lab"]["volumes"])
