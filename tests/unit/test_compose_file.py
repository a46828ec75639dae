"""The top-level docker-compose.yml is the demo's, as `harness compose` writes it."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.compose_file import compose_yaml
from netlab.compile import compile_lab
from netlab.loader import load_scenario

ROOT = Path(__file__).resolve().parents[2]


def test_top_level_compose_file_is_in_sync_with_the_demo() -> None:
    plan = compile_lab(load_scenario(ROOT / "scenarios/demo.yaml"))
    expected = compose_yaml(plan, ROOT / "scenarios/demo.yaml", ROOT)
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
