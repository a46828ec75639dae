"""Every shipped scenario, brought up for real: each verdict equals the oracle, the OONI failure
strings are the ones the technique produces, and nothing is left behind."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, assert_no_leftovers

from harness.runner import run_scenario

SCENARIOS = sorted(p.name for p in (ROOT / "scenarios").glob("*.yaml"))
Keys = dict[tuple[str, str], dict[str, Any]]  # (vantage, url) -> test_keys


def udp_answers(k: dict[str, Any]) -> list[list[str]]:
    return [[a["ipv4"] for a in q["answers"] if a.get("ipv4")] for q in k["queries"] if q["engine"] == "udp"]


def check_demo(keys: Keys) -> None:
    assert keys[("isp-a", "https://news.test/")]["dns_experiment_failure"] == "dns_nxdomain_error"
    assert keys[("isp-a", "https://chat.test/")]["dns_experiment_failure"] == "dns_servfail_error"
    assert keys[("isp-a", "https://video.test/")]["tcp_connect"][0]["status"] == {
        "failure": "generic_timeout_error", "success": False, "blocked": False}
    assert keys[("isp-a", "https://www.blog.test/")]["tcp_connect"][0]["status"]["failure"] == "connection_refused"
    assert keys[("isp-b", "https://social.test/")]["tls_handshakes"][0]["failure"] == "connection_reset"
    assert keys[("isp-b", "https://chat.test/")]["tls_handshakes"][0]["failure"] == "generic_timeout_error"
    assert udp_answers(keys[("isp-b", "https://video.test/")]) == [["10.10.34.35"], ["198.18.1.3"]]
    page = keys[("isp-b", "http://news.test/")]["requests"][0]["response"]
    assert page["code"] == 451 and "netlab-blockpage" in page["body"]
    assert keys[("isp-b", "https://ok.test/")]["x_body_seconds"] > 1.0
    assert keys[("control", "https://ok.test/")]["x_body_seconds"] < 0.5


def check_gfw(keys: Keys) -> None:
    assert udp_answers(keys[("gfw", "https://search.test/")]) == [["10.10.34.36"], ["198.18.1.1"]]
    assert keys[("gfw", "https://news.test/")]["tls_handshakes"][0]["failure"] == "connection_reset"
    # residual: the plain-HTTP fetch to the same server, measured after, is reset on its request
    assert keys[("gfw", "http://news.test/")]["requests"][0]["failure"] == "connection_reset"
    assert keys[("gfw", "http://wiki.test/falun")]["requests"][0]["failure"] == "connection_reset"
    assert keys[("gfw", "http://wiki.test/")]["requests"][0]["failure"] is None
    assert keys[("gfw", "http://mail.test/")]["requests"][0]["failure"] == "generic_timeout_error"
    assert len(udp_answers(keys[("open", "https://search.test/")])) == 1


def check_dpi_dns(keys: Keys) -> None:
    injected = [q for q in keys[("dnsisp", "https://injected.test/")]["queries"] if q["engine"] == "udp"]
    assert len(injected) == 2 and injected[0]["transaction_id"] == injected[1]["transaction_id"]
    assert injected[0]["t"] <= injected[1]["t"]
    dropped = [q for q in keys[("dnsisp", "https://dropped.test/")]["queries"] if q["engine"] == "udp"]
    assert [q["failure"] for q in dropped] == ["generic_timeout_error"]


CHECKS: dict[str, Callable[[Keys], None]] = {"demo.yaml": check_demo, "gfw-like.yaml": check_gfw,
                                              "dpi-dns.yaml": check_dpi_dns}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_verdicts_equal_the_oracle(scenario: str, lab_name: str, tmp_path: Path) -> None:
    outcome = run_scenario(ROOT / "scenarios" / scenario, out=tmp_path, name=lab_name)
    assert outcome.campaign.errors == []
    assert outcome.scored is not None
    bad = [(r.vantage, r.url, r.observed.value, r.expected.verdict.value if r.expected else None, r.why)
           for r in outcome.scored.score.mismatches]
    assert bad == []
    assert outcome.scored.impact_matches  # collateral damage and effectiveness equal the oracle's
    assert outcome.campaign.measurements == len(outcome.scored.scenario.targets) * len(outcome.scored.vantages)
    assert_no_leftovers(lab_name)
    if scenario in CHECKS:
        keys = {}
        for line in (tmp_path / "measurements.jsonl").read_text().splitlines():
            m = json.loads(line)
            keys[(m["x_vantage"], m["input"])] = m["test_keys"]
        CHECKS[scenario](keys)


def test_same_scenario_same_verdicts(lab_name: str, tmp_path: Path) -> None:
    """Determinism: two runs of the demo give identical verdicts."""
    runs = [run_scenario(ROOT / "scenarios/demo.yaml", out=tmp_path / str(i), name=f"{lab_name}{i}").verdicts
            for i in range(2)]
    assert runs[0] == runs[1]
