"""Scoring a run writes OONI's keys in the same pass (harness.results.score_and_annotate): the same
verdicts and the same measurements.jsonl as scoring, then harness.ooni.finalize, in two more passes."""

from __future__ import annotations

import json
import shutil
from itertools import pairwise
from pathlib import Path

import pytest
from test_gate import GOOD, NXDOMAIN, A, B, make_results

from harness import ooni, results, score
from harness.digest import RunDigest
from harness.results import score_and_annotate, score_results
from harness.score import ResultsError, VerdictRow
from harness.score import score as score_rows
from netlab.oracle import Expectation
from netlab.verdict import Verdict


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "measurements.jsonl").read_text().splitlines()]


def test_one_pass_equals_scoring_then_finalize(tmp_path: Path) -> None:
    measured = {**GOOD, ("isp-a", A): NXDOMAIN}  # a mismatch too
    old = make_results(tmp_path / "old", measured)
    new = shutil.copytree(old, tmp_path / "new")

    scored_old = score_results([old])
    ooni.finalize(old, {(r.vantage, r.url): r.observed.value for r in scored_old.score.rows})
    scored_new = score_and_annotate(new)

    assert [r.to_json() for r in scored_new.score.rows] == [r.to_json() for r in scored_old.score.rows]
    assert scored_new.score.to_json() == scored_old.score.to_json()
    assert lines(new) == lines(old)
    by_pair = {(m["x_vantage"], m["input"]): m["test_keys"] for m in lines(new)}
    assert by_pair[("isp-a", B)]["x_verdict"] == "dns.nxdomain"
    assert by_pair[("isp-a", A)]["blocking"] == "dns"  # OONI's keys are there
    assert not (new / "measurements.jsonl.tmp").exists()


def test_each_measurement_is_read_once_after_the_controls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = make_results(tmp_path / "r", GOOD)
    passes: list[str | None] = []
    real = score.iter_measurements

    def counting(paths, vantage=None):  # type: ignore[no-untyped-def]
        passes.append(vantage)
        return real(paths, vantage)

    monkeypatch.setattr(score, "iter_measurements", counting)
    score_and_annotate(d)
    assert passes == ["control", None]


def test_a_folder_that_does_not_score_is_left_as_it_was(tmp_path: Path) -> None:
    d = make_results(tmp_path / "r", GOOD)
    path = d / "measurements.jsonl"
    path.write_text(path.read_text() + path.read_text().splitlines()[0] + "\n")  # a pair measured twice
    before = path.read_bytes()
    with pytest.raises(ResultsError, match="more than once"):
        score_and_annotate(d)
    assert path.read_bytes() == before
    assert not (d / "measurements.jsonl.tmp").exists()


def test_with_the_campaigns_digest_there_is_one_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the campaign gathered (harness.digest) stands in for the control pass: the same rows and
    the same file, from one read of the measurements; the test helper's jobs come from it too."""
    measured = {**GOOD, ("isp-a", A): NXDOMAIN}
    old = make_results(tmp_path / "old", measured)
    new = shutil.copytree(old, tmp_path / "new")
    digest = RunDigest()
    for m in lines(new):
        digest.add(m["x_vantage"], json.dumps(m).encode())
    assert ooni.th_jobs(new / "measurements.jsonl", digest) == ooni.th_jobs(old / "measurements.jsonl")

    scored_old = score_and_annotate(old)
    passes: list[str | None] = []
    real = score.iter_measurements

    def counting(paths, vantage=None):  # type: ignore[no-untyped-def]
        passes.append(vantage)
        return real(paths, vantage)

    monkeypatch.setattr(score, "iter_measurements", counting)
    scored_new = score_and_annotate(new, digest=digest)
    assert passes == [None]
    assert [r.to_json() for r in scored_new.score.rows] == [r.to_json() for r in scored_old.score.rows]
    assert lines(new) == lines(old)


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
            "x_body_seconds": 0.1, "x_body_sha256": "ab", "x_quic_failure": None, "requests": [{"body": "x" * 99}],
            "x_resolved": {"system": ["198.18.1.1"], "public": []},
            "queries": [{"engine": "system", "failure": None, "answers": [{"ipv4": "198.18.1.1"}]}]}
    summary = ControlSummary.of(keys)
    assert summary.status_code == 200 and summary.system == ("198.18.1.1",)
    assert summary.test_keys() == {**{k: v for k, v in keys.items() if k not in ("requests", "queries")},
                                   "queries": [{"engine": "system", "failure": None}]}
    digest = RunDigest()
    digest.add_measurement("control", {"input": "https://a.test/", "test_name": "x", "test_keys": keys})
    assert type(digest.controls["https://a.test/"]) is ControlSummary and digest.controls["https://a.test/"] == summary


def _digest(d: Path) -> RunDigest:
    digest = RunDigest()
    for m in lines(d):
        digest.add(m["x_vantage"], json.dumps(m).encode())
    return digest


def test_two_processes_write_what_one_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large measurements.jsonl is scored on two cores (harness.results._annotate_in_two): the same
    rows, and the same file byte for byte (the lines keep their order)."""
    measured = {**GOOD, ("isp-a", A): NXDOMAIN, ("isp-b", A): GOOD[("isp-a", A)], ("isp-b", B): NXDOMAIN}
    one = make_results(tmp_path / "one", measured)
    two = shutil.copytree(one, tmp_path / "two")
    scored_one = score_and_annotate(one, digest=_digest(one))
    monkeypatch.setattr(results, "SPLIT_BYTES", 0)
    scored_two = score_and_annotate(two, digest=_digest(two))
    assert [r.to_json() for r in scored_two.score.rows] == [r.to_json() for r in scored_one.score.rows]
    assert (two / "measurements.jsonl").read_bytes() == (one / "measurements.jsonl").read_bytes()
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())


@pytest.mark.parametrize("broken", ["truncated", "twice"])
def test_two_processes_refuse_what_one_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken: str) -> None:
    """A line that is no measurement in the second half is named by its number in the file; a pair
    in both halves is measured twice; the folder is left as it was."""
    d = make_results(tmp_path / "r", GOOD)
    digest = _digest(d)
    path = d / "measurements.jsonl"
    first = path.read_text().splitlines()[0]
    path.write_text(path.read_text() + (first[:40] if broken == "truncated" else first) + "\n")
    before = path.read_bytes()
    monkeypatch.setattr(results, "SPLIT_BYTES", 0)
    with pytest.raises(ResultsError, match=":5: not a JSON measurement" if broken == "truncated" else "twice in"):
        score_and_annotate(d, digest=digest)
    assert path.read_bytes() == before
    assert sorted(p.name for p in d.iterdir()) == ["measurements.jsonl", "run.json", "scenario.yaml"]


def test_line_ranges_start_at_lines(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"".join(b"x" * n + b"\n" for n in (5, 1, 30, 2, 7)))
    for parts in (1, 2, 3, 7):
        ranges = score.line_ranges(path, parts)
        assert ranges[0][0] == 0 and ranges[-1][1] == path.stat().st_size
        assert all(a[1] == b[0] for a, b in pairwise(ranges))
        assert all(start == 0 or path.read_bytes()[start - 1:start] == b"\n" for start, _ in ranges)
