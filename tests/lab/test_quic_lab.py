"""QUIC and HTTP/3 in real labs: the origins serve HTTP/3 and advertise it, the quic probe's
verdicts equal the oracle's for every QUIC scenario on compose (on netns, with its records' failure
strings: tests/lab/test_scenarios.py), and a client whose ClientHello spans two datagrams gets past
the GFW replay (as measured in the wild)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, assert_no_leftovers

from harness.campaign import CampaignConfig
from harness.runner import run_scenario

QUIC_SCENARIOS = ["quic.yaml", "gfw-quic-2024.yaml", "tspu-quic-2022.yaml"]


def measurements(folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for line in (folder / "measurements.jsonl").read_text().splitlines():
        m = json.loads(line)
        out[(m["x_vantage"], m["input"])] = m["test_keys"]
    return out


def mismatches(outcome) -> list[tuple]:  # type: ignore[no-untyped-def]
    assert outcome.campaign.errors == [] and outcome.scored is not None
    return [(r.vantage, r.url, r.observed.value, r.expected.verdict.value if r.expected else None, r.why)
            for r in outcome.scored.score.mismatches]


def test_a_split_client_hello_evades_the_gfw_replay(lab_name: str, tmp_path: Path) -> None:
    text = (ROOT / "scenarios" / "gfw-quic-2024.yaml").read_text()
    path = tmp_path / "gfw-split.yaml"
    path.write_text(text + "\nprobe: {quic_split_hello: true}\n")
    outcome = run_scenario(path, out=tmp_path / "out", name=lab_name, config=CampaignConfig(probe="quic"))
    assert mismatches(outcome) == []
    keys = measurements(tmp_path / "out")
    assert all(k["failure"] is None for k in keys.values())  # every fetch, the listed names' included
    # Each client Initial flight was two datagrams (two write_to before the first read_from).
    events = keys[("gfw", "https://search.test/again")]["network_events"]
    ops = [e["operation"] for e in events if e["operation"] in ("write_to", "read_from")]
    assert ops[:2] == ["write_to", "write_to"]
    assert_no_leftovers(lab_name)


def test_origins_advertise_http3_over_tcp(lab_name: str, tmp_path: Path) -> None:
    outcome = run_scenario(ROOT / "scenarios" / "quic.yaml", out=tmp_path, name=lab_name,
                           config=CampaignConfig(probe="web", vantages=["control"]))
    assert outcome.campaign.errors == []
    keys = measurements(tmp_path)

    def alt_svc(url: str) -> str | None:
        response = next(r["response"] for r in keys[("control", url)]["requests"] if r["failure"] is None)
        return {k.lower(): v for k, v in response["headers"].items()}.get("alt-svc")

    assert alt_svc("https://clean.test/") == 'h3=":443"; ma=86400'
    assert alt_svc("https://tcp-only.test/") is None  # quic: false


def _docker_ok() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.mark.docker
@pytest.mark.skipif(not _docker_ok(), reason="no Docker Engine")
@pytest.mark.parametrize("scenario", QUIC_SCENARIOS)
def test_quic_scenarios_on_compose(scenario: str, lab_name: str, tmp_path: Path) -> None:
    outcome = run_scenario(ROOT / "scenarios" / scenario, out=tmp_path, name=lab_name + "c", backend="compose",
                           config=CampaignConfig(probe="quic"))
    assert mismatches(outcome) == []
