"""An example a downstream project can copy: its detection logic tested against the lab.

Run as root (network namespaces): `pytest example_test_lab.py`. The `lab` fixture comes from the
fauxisp pytest plugin, installed with fauxisp (entry point pytest11).
"""

from __future__ import annotations

import pytest

from harness.pytest_plugin import LabRun, assert_verdicts

# The scenario the session's lab runs (relative to this file, else to the rootdir).
pytestmark = pytest.mark.lab_scenario("../scenarios/demo.yaml")


def my_detector(measurement: dict) -> str:
    """Stand-in for your own logic: a verdict from one OONI measurement."""
    keys = measurement["test_keys"]
    if keys.get("dns_experiment_failure") == "dns_nxdomain_error":
        return "dns.nxdomain"
    return "ok" if not keys.get("x_failed_stage") else f"{keys['x_failed_stage']}.failed"


@pytest.fixture(scope="module")
def web(lab) -> LabRun:
    """One campaign of the built-in web probe, shared by the tests of this module."""
    return lab.measure(probe="web")


def test_the_lab_agrees_with_its_ground_truth(web: LabRun, lab) -> None:
    assert_verdicts(web, lab.expected())


def test_my_detector_finds_the_nxdomain_blocking(web: LabRun) -> None:
    mine = {(m["x_vantage"], m["input"]): my_detector(m) for m in web.measurements}
    truth = {k: v for k, v in web.expected.items() if v == "dns.nxdomain"}
    assert_verdicts(mine, truth, run=web)  # run: mismatches name the rule, the measurement, what it saw


def test_one_vantage_some_urls(lab) -> None:
    run = lab.measure(vantages=["isp-b"], targets=["https://social.test/", "https://ok.test/"])
    assert_verdicts(run, {"isp-b": {"https://social.test/": "tls.reset", "https://ok.test/": "throttled"}})
