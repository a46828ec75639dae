"""The pytest plugin with a real lab: a downstream-style test file run by pytester, in a
subprocess, with the session-scoped `lab` fixture, measure() and assert_verdicts."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT, assert_no_leftovers

pytest_plugins = ["pytester"]

FIREWALL = ROOT / "scenarios" / "firewall.yaml"

DOWNSTREAM = f'''
import pytest
from harness.pytest_plugin import assert_verdicts

pytestmark = pytest.mark.lab_scenario({str(FIREWALL)!r})


def test_every_verdict_matches_the_oracle(lab):
    run = lab.measure()
    assert len(run.measurements) == len(lab.scenario.targets) * len(lab.vantages)
    assert_verdicts(run, lab.expected())


def test_subset_and_a_readable_failure(lab):
    run = lab.measure(probe="web", vantages=["fwisp"],
                      targets=["https://dropped.test/", "https://clean.test/other/page"])
    assert {{v for v, _ in run.verdicts}} == {{"fwisp"}}
    assert run.verdicts[("fwisp", "https://clean.test/other/page")] == "ok"
    with pytest.raises(AssertionError) as info:
        assert_verdicts(run, {{"fwisp": {{"https://dropped.test/": "tcp.reset"}}}})
    text = str(info.value)
    assert "✗ tcp.timeout (expected tcp.reset)" in text
    assert "oracle: tcp.timeout (firewall rule line" in text
    assert "measurements.jsonl" in text and "generic_timeout_error" in text


def test_the_lab_is_shared(lab):
    import os
    assert os.path.isdir(f"/run/netlab/{{lab.name}}")
'''


def test_downstream_test_file_with_a_real_lab(pytester: pytest.Pytester, lab_name: str, tmp_path: Path) -> None:
    pytester.makepyfile(test_downstream=DOWNSTREAM)
    result = pytester.runpytest_subprocess("-o", f"lab_name={lab_name}", "-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=3)
    assert_no_leftovers(lab_name)
