"""OONI probe-cli's Web Connectivity QA cases as lab scenarios (qa/README.md): every case comes
up for real, its verdicts equal the oracle's, the OONI keys it pins (blocking, accessible,
dns_consistency, the failures) are the ones OONI expects, the keys OONI's analysis reads have the
shape OONI's QA suite gives the case (qa_shapes.py), every measurement loads in OONI's own
``oonidata``, and nothing is left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, assert_no_leftovers
from qa_shapes import EXPECTED, KNOWN_DIFFERENCES, compare, shape_of

from harness.runner import run_scenario
from netlab.loader import load_scenario

CASES = sorted(p.name for p in (ROOT / "qa").glob("*.yaml"))


def load_with_oonidata(path: Path) -> list[dict]:
    """Every measurement of a results folder, each loaded by oonidata's strict models."""
    from oonidata.dataclient import load_measurement

    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        m = json.loads(line)
        load_measurement(msmt=m)
        out.append(m)
    return out


def test_at_least_48_cases() -> None:
    assert len(CASES) >= 48


@pytest.mark.parametrize("case", CASES)
def test_qa_case(case: str, lab_name: str, tmp_path: Path) -> None:
    pytest.importorskip("oonidata")
    scenario = load_scenario(ROOT / "qa" / case)
    outcome = run_scenario(ROOT / "qa" / case, out=tmp_path, name=lab_name)
    assert_no_leftovers(lab_name)
    assert outcome.campaign.errors == []
    assert outcome.scored is not None
    bad = [(r.vantage, r.url, r.observed.value, r.expected.verdict.value if r.expected else None, r.why)
           for r in outcome.scored.score.mismatches]
    assert bad == []
    keys = {(m["x_vantage"], m["input"]): m["test_keys"] for m in load_with_oonidata(tmp_path / "measurements.jsonl")}
    for vantage, urls in scenario.expect_ooni.items():
        for url, want in urls.items():
            tk = keys[(vantage, url)]
            got = {k: tk.get(k) for k in want}
            assert got == want, f"{case} {vantage} {url}: verdict {tk.get('x_verdict')}"
            # The keys OONI's analysis reads, in the shape OONI's QA suite gives this case.
            name = case.removesuffix(".yaml")
            assert name in EXPECTED, f"{case}: give its OONI shape in tests/lab/qa_shapes.py"
            diff = compare(shape_of(tk), EXPECTED[name])
            known = {k: (got, want) for k, (got, want, _why) in KNOWN_DIFFERENCES.get(name, {}).items()}
            assert diff == known, f"{case} {vantage} {url}: {diff}"
