"""A run is scored and given OONI's keys as the campaign writes it (harness.streaming.LiveScorer):
the same verdicts and the same measurements as scoring the folder, then harness.ooni.finalize,
whatever order the vantages' measurements arrive in and wherever they wait."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from test_analysis import keys
from test_gate import NXDOMAIN, A, B, make_results

from harness import ooni, streaming
from harness.analysis import load_fingerprints
from harness.digest import RunDigest
from harness.results import ScoredRun, run_oracle, score_results
from harness.score import ResultsError, VerdictRow
from harness.score import score as score_rows
from netlab.blockpage import declared_fingerprints
from netlab.oracle import Expectation
from netlab.verdict import Verdict
from probes.th import helper_ports

FORGED = "198.18.1.99"  # an address only the ISP's resolver gives: the test helper's pass measures it


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "measurements.jsonl").read_text().splitlines()]


def by_pair(path: Path) -> dict[tuple[str, str], dict]:
    return {(m["x_vantage"], m["input"]): m for m in lines(path)}


def connected(k: dict[str, Any], url: str) -> dict[str, Any]:
    """``k`` with a connect on every helper port of each address it resolved, as a web measurement has."""
    ips = k["x_resolved"]["system"]
    return {**k, "tcp_connect": [{"ip": ip, "port": p, "status": {"success": True, "failure": None}, "tags": []}
                                 for ip in ips for p in helper_ports(url)]}


def live_run(d: Path, order: list[tuple[str, str]] | None = None, th_endpoints: str = "",
             scored: bool = True) -> ScoredRun:
    """Feed the folder's measurements to a LiveScorer as a campaign would (in ``order``), then finish."""
    given = {(m.pop("x_vantage"), m["input"]): m for m in lines(d)}
    oracle = run_oracle([d])
    live = streaming.LiveScorer(d, load_fingerprints(None, declared_fingerprints(oracle.scenario)))
    for vantage, url in order or list(given):
        live.add(vantage, json.dumps(given[(vantage, url)]).encode())
    if th_endpoints:
        (d / ooni.TH_ENDPOINTS).write_text(th_endpoints)
    return oracle.scored(live.finish(oracle.expectations, scored=scored))


def scored_then_finalized(d: Path, th_endpoints: str = "") -> ScoredRun:
    if th_endpoints:
        (d / ooni.TH_ENDPOINTS).write_text(th_endpoints)
    scored = score_results([d])
    ooni.finalize(d, {(r.vantage, r.url): r.observed.value for r in scored.score.rows})
    return scored


def assert_same(live: ScoredRun, live_dir: Path, ref: ScoredRun, ref_dir: Path) -> None:
    assert [r.to_json() for r in live.score.rows] == [r.to_json() for r in ref.score.rows]
    assert live.score.to_json() == ref.score.to_json()
    assert by_pair(live_dir) == by_pair(ref_dir)
    assert len(lines(live_dir)) == len(lines(ref_dir))
    assert not (live_dir / streaming.LATER).exists()


MEASURED = {("control", A): connected(keys(), A), ("control", B): connected(keys(), B),
            ("isp-a", A): connected(keys(), A), ("isp-a", B): NXDOMAIN}


@pytest.mark.parametrize("order", ["control first", "control last", "interleaved"])
def test_live_scoring_equals_scoring_then_finalize(tmp_path: Path, order: str) -> None:
    ref = make_results(tmp_path / "ref", MEASURED)
    new = shutil.copytree(ref, tmp_path / "new")
    pairs = list(MEASURED)
    feed = {"control first": pairs, "control last": pairs[2:] + pairs[:2],
            "interleaved": [pairs[2], pairs[0], pairs[3], pairs[1]]}[order]
    assert_same(live_run(new, feed), new, scored_then_finalized(ref), ref)
    measured = by_pair(new)
    assert measured[("isp-a", B)]["test_keys"]["x_verdict"] == "dns.nxdomain"
    assert measured[("isp-a", A)]["test_keys"]["blocking"] is False  # OONI's keys are there
    assert next(iter(measured)) == ("control", A) or order != "control first"


def test_a_measurement_without_its_control_yet_waits_in_memory_or_in_the_side_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = make_results(tmp_path / "ref", MEASURED)
    new = shutil.copytree(ref, tmp_path / "new")
    monkeypatch.setattr(streaming, "HOLD_BYTES", 0)  # nothing waits in memory
    pairs = list(MEASURED)
    assert_same(live_run(new, pairs[2:] + pairs[:2]), new, scored_then_finalized(ref), ref)


def test_a_forged_address_waits_for_the_test_helpers_endpoints(tmp_path: Path) -> None:
    """The ISP's resolver gives an address the control never connected to: its measurement is
    annotated after the test helper's pass, with what that pass measured (th_endpoints.jsonl)."""
    forged = connected(keys(ips=(FORGED,), stage="tls", failure="ssl_invalid_hostname"), A)
    measured = {**MEASURED, ("isp-a", A): forged}
    th = json.dumps({"url": A, "endpoints": {f"{FORGED}:{p}": {
        "tcp": {"status": True, "failure": None},
        "tls": {"server_name": "a.test", "status": False, "failure": "ssl_invalid_hostname"} if p == 443 else None}
        for p in helper_ports(A)}}) + "\n"
    ref = make_results(tmp_path / "ref", measured)
    new = shutil.copytree(ref, tmp_path / "new")
    assert_same(live_run(new, th_endpoints=th), new, scored_then_finalized(ref, th), ref)
    control = by_pair(new)[("isp-a", A)]["test_keys"]["control"]
    assert f"{FORGED}:443" in control["tcp_connect"]  # the helper's endpoint is in its answer
    assert [(m["x_vantage"], m["input"]) for m in lines(new)][-1] == ("isp-a", A)  # written last


def test_a_control_that_never_comes_leaves_no_comparison(tmp_path: Path) -> None:
    d = make_results(tmp_path / "r", {k: v for k, v in MEASURED.items() if k != ("control", A)})
    run = live_run(d)
    assert by_pair(d)[("isp-a", A)]["test_keys"]["control_failure"] == ooni.NO_CONTROL
    assert {(r.vantage, r.url): r.no_measurement for r in run.score.rows}[("control", A)] == "missing"


def test_without_the_control_vantage_nothing_waits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A campaign of some vantages only (--vantages isp-a): each measurement is written at once."""
    monkeypatch.setattr(streaming, "HOLD_BYTES", 0)  # a measurement that waited would be put aside
    live = streaming.LiveScorer(tmp_path, [], control=False)
    live.add("isp-a", json.dumps({"input": A, "test_name": "web_connectivity", "test_keys": keys()}).encode())
    assert not (tmp_path / streaming.LATER).exists()
    assert len(live.finish({})) == 1
    assert [m["test_keys"]["control_failure"] for m in lines(tmp_path)] == [ooni.NO_CONTROL]


def test_an_unscored_run_has_oonis_keys_and_no_verdicts(tmp_path: Path) -> None:
    d = make_results(tmp_path / "r", MEASURED)
    live_run(d, scored=False)
    assert all("x_verdict" not in m["test_keys"] and "blocking" in m["test_keys"] for m in lines(d))


def test_a_pair_measured_twice_is_refused(tmp_path: Path) -> None:
    d = make_results(tmp_path / "r", MEASURED)
    pairs = list(MEASURED)
    with pytest.raises(ResultsError, match="more than once"):
        live_run(d, pairs + pairs[:1])


@pytest.mark.parametrize("hold", [0, 1 << 20])
def test_an_interrupted_run_keeps_what_waited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hold: int) -> None:
    """close() without finish() (Ctrl-C, a lab fault mid-way): what waited, in memory or in the side
    file, is appended as it came; the side file is gone."""
    monkeypatch.setattr(streaming, "HOLD_BYTES", hold)
    live = streaming.LiveScorer(tmp_path, [])
    for url in (A, B):
        live.add("isp-a", json.dumps({"input": url, "test_name": "web_connectivity", "test_keys": keys()}).encode())
    assert (tmp_path / streaming.LATER).exists() == (hold == 0)
    live.close()
    assert not (tmp_path / streaming.LATER).exists()
    assert [(m["x_vantage"], m["input"], "x_verdict" in m["test_keys"]) for m in lines(tmp_path)] == [
        ("isp-a", A, False), ("isp-a", B, False)]


def test_the_digest_gives_the_test_helper_the_same_jobs_as_the_file(tmp_path: Path) -> None:
    measured = {**MEASURED, ("isp-a", A): connected(keys(ips=(FORGED,)), A)}
    d = make_results(tmp_path / "r", measured)
    digest = RunDigest()
    for m in lines(d):
        digest.add(m["x_vantage"], json.dumps(m).encode())
    assert ooni.th_jobs(d / "measurements.jsonl", digest) == ooni.th_jobs(d / "measurements.jsonl") \
        == [{"url": A, "addresses": [FORGED]}]


def test_technique_tallies_per_row_as_the_definition_says() -> None:
    """score() touches only the techniques a row names; the tallies are the definition's: a match is
    a true positive of its technique, a mismatch a false positive of the observed one and a miss of
    the expected one."""
    verdicts = list(Verdict)
    rows = [VerdictRow("v", f"u{i}-{j}", o, Expectation(e, "rule"), "") for i, e in enumerate(verdicts)
            for j, o in enumerate(verdicts)]
    got = score_rows(rows)
    for tech, ts in got.techniques.items():
        pairs = [(r.expected.verdict, r.observed) for r in rows if r.expected is not None]
        assert ts.tp == sum(1 for e, o in pairs if e == o and e.technique == tech)
        assert ts.fp == sum(1 for e, o in pairs if e != o and o.technique == tech)
        assert ts.fn == sum(1 for e, o in pairs if e != o and e.technique == tech)


def test_control_summary_gives_back_the_keys_the_analysis_reads() -> None:
    from harness.score import ControlSummary

    keys = {"x_failed_stage": None, "failure": None, "x_status_code": 200, "x_title": "t", "x_body_length": 5,
            "x_body_seconds": 0.1, "x_body_stall_seconds": 0.05, "x_body_sha256": "ab", "x_quic_failure": None,
            "requests": [{"body": "x" * 99}],
            "x_resolved": {"system": ["198.18.1.1"], "public": []},
            "queries": [{"engine": "system", "failure": None, "answers": [{"ipv4": "198.18.1.1"}]}]}
    summary = ControlSummary.of(keys)
    assert summary.status_code == 200 and summary.system == ("198.18.1.1",)
    assert summary.test_keys() == {**{k: v for k, v in keys.items() if k not in ("requests", "queries")},
                                   "queries": [{"engine": "system", "failure": None}]}
    digest = RunDigest()
    digest.add_measurement("control", {"input": "https://a.test/", "test_name": "x", "test_keys": keys})
    assert type(digest.controls["https://a.test/"]) is ControlSummary and digest.controls["https://a.test/"] == summary
