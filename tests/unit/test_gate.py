"""Issue 12, "a gate you can trust": scoring counts every (vantage, target) the oracle expects, so a
run that measured little or nothing is never green; folders of a lab fault, folders given twice
and broken inputs are named, with the right exit code, instead of being scored.

Results folders are built by hand: run.json, scenario.yaml, measurements.jsonl."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from ipaddress import IPv4Address
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_analysis import keys, q

from harness import campaign
from harness.campaign import CampaignConfig, run_campaign
from harness.cli import main
from harness.html_report import write_report
from harness.results import score_results, write_run_info, write_verdicts
from harness.score import VerdictRow, score
from netlab.addressing import allocate_sites
from netlab.errors import LabFault
from netlab.loader import load_scenario
from netlab.oracle import Expectation
from netlab.plan import Vantage
from netlab.verdict import Verdict

SCENARIO = """version: 1
name: gate
internet:
  sites:
    - name: a.test
    - name: b.test
isps:
  - name: isp-a
    resolver: {rules: [{match: {domain: b.test}, action: nxdomain}]}
targets: [https://a.test/, https://b.test/]
"""
A, B = "https://a.test/", "https://b.test/"
VANTAGES = ["isp-a", "control"]
NXDOMAIN = keys(stage="dns", failure="dns_nxdomain_error", queries=[q("system", failure="dns_nxdomain_error")])
# What a faithful run measures: the oracle's verdict for each of the 4 pairs.
GOOD: dict[tuple[str, str], dict[str, Any]] = {
    ("control", A): keys(), ("control", B): keys(), ("isp-a", A): keys(), ("isp-a", B): NXDOMAIN}


def make_results(path: Path, measured: dict[tuple[str, str], dict[str, Any]], *, errors: list[dict] | None = None,
                 shard: tuple[int, int] = (1, 1), lab_faults: list[str] | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "scenario.yaml").write_text(SCENARIO)
    sites = allocate_sites({"a.test": None, "b.test": None})
    (path / "run.json").write_text(json.dumps({
        "lab": "gate", "backend": "netns", "scenario_name": "gate", "probe": "web", "shard": list(shard),
        "vantages": VANTAGES, "site_addresses": {k: str(v) for k, v in sites.items()},
        "measurements": len(measured), "errors": errors or [], "lab_faults": lab_faults or []}))
    with open(path / "measurements.jsonl", "w") as f:
        for i, ((vantage, url), k) in enumerate(measured.items()):
            f.write(json.dumps({"x_vantage": vantage, "input": url, "measurement_uid": f"uid-{i}",
                                "test_name": "web_connectivity", "test_keys": k}) + "\n")
    return path


def error(vantage: str, url: str, text: str, kind: str = "crash") -> dict[str, Any]:
    return {"vantage": vantage, "id": 0, "error": text, "kind": kind, "url": url}


def score_json(capsys: pytest.CaptureFixture[str], *dirs: Path) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["score", "--json", *map(str, dirs)]) == 0
    return json.loads(capsys.readouterr().out)


# ------------------------------------------------------------------ 1. every expected pair counts


def test_a_faithful_run_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = make_results(tmp_path / "r", GOOD)
    assert main(["score", "--check", str(d)]) == 0
    summary = score_json(capsys, d)
    assert summary["rows"] == summary["scored"] == 4 and summary["mismatches"] == 0
    assert summary["accuracy"] == 1.0 and summary["passed"] is True
    assert summary["no_measurement"] == {"probe_error": 0, "timeout": 0, "missing": 0}


def test_every_job_failing_is_not_green(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`harness run --probe nope`: every job answered with an error, no measurement at all."""
    errors = [error(v, u, "unknown probe 'nope'; known: dns, web") for v in VANTAGES for u in (A, B)]
    d = make_results(tmp_path / "r", {}, errors=errors)
    summary = score_json(capsys, d)
    assert summary["rows"] == 4 and summary["mismatches"] == 4 and summary["accuracy"] == 0.0
    assert summary["passed"] is False and summary["no_measurement"]["probe_error"] == 4
    row = next(r for r in summary["verdicts"] if r["vantage"] == "isp-a" and r["url"] == B)
    assert row["verdict"] == "no_measurement" and row["no_measurement"] == "probe_error"
    assert row["match"] is False and row["expected"] == "dns.nxdomain" and "unknown probe 'nope'" in row["why"]
    assert main(["score", "--check", str(d)]) == 1
    out = capsys.readouterr().out
    assert "Score: 0/4" in out and "(0.0%)" in out and "probe_error 4" in out
    assert "mismatch isp-a https://b.test/: observed no_measurement (probe_error)" in out


def test_timeout_and_missing_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A job past job_timeout, and a job with no line at all (a worker crash), lose no row."""
    measured = {k: v for k, v in GOOD.items() if k[0] == "control"}
    d = make_results(tmp_path / "r", measured, errors=[error("isp-a", A, "job exceeded 120 s", "timeout")])
    scored = score_results([d])
    rows = {(r.vantage, r.url): r for r in scored.score.rows}
    assert rows[("isp-a", A)].no_measurement == "timeout" and "timed out" in rows[("isp-a", A)].why
    assert rows[("isp-a", B)].no_measurement == "missing" and "never answered" in rows[("isp-a", B)].why
    assert rows[("isp-a", B)].observed == Verdict.NO_MEASUREMENT and not rows[("isp-a", B)].matches
    assert scored.score.accuracy == 0.5 and len(scored.score.mismatches) == 2
    # score.json and verdicts.jsonl carry them too.
    write_verdicts(d, scored)
    saved = json.loads((d / "score.json").read_text())
    assert saved["mismatches"] == 2 and saved["no_measurement"] == {"probe_error": 0, "timeout": 1, "missing": 1}
    lines = [json.loads(x) for x in (d / "verdicts.jsonl").read_text().splitlines()]
    assert sorted(r["no_measurement"] for r in lines if r["no_measurement"]) == ["missing", "timeout"]
    # Older workers reported a timeout as a crash "job exceeded N s": still a timeout.
    d2 = make_results(tmp_path / "old", measured, errors=[error("isp-a", A, "job exceeded 120 s", "crash")])
    assert {r.no_measurement for r in score_results([d2]).score.rows} == {"", "timeout", "missing"}
    assert main(["score", "--check", str(d)]) == 1
    out = capsys.readouterr().out
    assert "2 expected verdict(s) have no measurement: timeout 1, missing 1" in out
    assert "✗ no_measurement (timeout)" in out


def test_nothing_scored_is_not_a_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = score([])
    assert empty.accuracy == 0.0 and not empty.passed and empty.to_json()["passed"] is False
    # A shard with no targets (3 of 3 of a 2-target scenario) expects nothing and measured nothing.
    d = make_results(tmp_path / "r", {}, shard=(3, 3))
    assert main(["score", "--check", str(d)]) == 1
    assert "Nothing was scored" in capsys.readouterr().out
    # Rows without an expectation (outside the oracle's pairs) are not scored either.
    odd = score([VerdictRow("x", "u", Verdict.OK, None, "")])
    assert odd.scored == 0 and not odd.passed


def test_no_measurement_row_is_a_mismatch_in_the_score() -> None:
    row = VerdictRow("isp-a", B, Verdict.NO_MEASUREMENT, Expectation(Verdict.DNS_NXDOMAIN, "rule"), "why",
                     no_measurement="missing")
    s = score([row])
    assert s.mismatches == [row] and s.techniques["dns"].fn == 1
    assert s.confusion[("dns.nxdomain", "no_measurement")] == 1
    assert not Verdict.NO_MEASUREMENT.is_censorship


def test_a_shard_expects_only_its_targets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = make_results(tmp_path / "s1", {k: v for k, v in GOOD.items() if k[1] == A}, shard=(1, 2))
    two = make_results(tmp_path / "s2", {k: v for k, v in GOOD.items() if k[1] == B}, shard=(2, 2))
    assert score_json(capsys, one)["rows"] == 2
    merged = score_json(capsys, one, two)
    assert merged["rows"] == 4 and merged["mismatches"] == 0 and merged["passed"] is True
    assert main(["score", "--check", str(one), str(two)]) == 0
    # A shard that lost a pair of its own is caught; the other shard's targets are not its business.
    short = make_results(tmp_path / "s1-short", {("control", A): keys()}, shard=(1, 2))
    summary = score_json(capsys, short)
    assert summary["rows"] == 2 and summary["no_measurement"]["missing"] == 1


def test_html_report_shows_unmeasured_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    measured = {k: v for k, v in GOOD.items() if k != ("isp-a", B)}
    d = make_results(tmp_path / "r", measured, errors=[error("isp-a", B, "RuntimeError: boom")])
    out = tmp_path / "report.html"
    run = write_report([d], out)
    html = out.read_text()
    assert len(run.score.mismatches) == 1
    assert 'data-verdict="no_measurement" data-no-measurement="probe_error"' in html
    assert "✗ no_measurement (probe_error)" in html and "(expected dns.nxdomain)" in html
    assert 'class="m unmeasured"' in html and "RuntimeError: boom" in html
    assert "3/4 verdicts match" in html and "1 expected verdict(s) have no measurement (probe_error 1)" in html
    assert 'class="summary badtxt"' in html
    assert main(["report", "--quiet", "--check", str(d), "-o", str(out)]) == 1
    assert "1 without a measurement" in capsys.readouterr().out


# ------------------------------------------------------------------ 2. a lab-fault folder


@pytest.mark.parametrize("verb", ["score", "report"])
def test_lab_fault_folder_is_a_lab_fault(verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = make_results(tmp_path / "r", GOOD, lab_faults=["isp-a/unbound", "isp-a/dpi"])
    args = ["score", "--check", str(d)] if verb == "score" else ["report", "--quiet", str(d), "-o",
                                                                   str(tmp_path / "x.html")]
    assert main(args) == 3
    out = capsys.readouterr().out
    assert "lab fault" in out and "isp-a/unbound, isp-a/dpi" in out and "Score" not in out
    assert not (tmp_path / "x.html").exists()


# ------------------------------------------------------------------ 3. merged folders


def test_the_same_folder_twice_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = make_results(tmp_path / "r", GOOD)
    assert main(["score", str(d), str(d)]) == 2
    assert "given twice" in capsys.readouterr().out
    assert main(["score", str(d), str(tmp_path / "." / "r")]) == 2  # another spelling of it


def test_two_folders_with_the_same_pair_are_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = make_results(tmp_path / "r", GOOD)
    copy = tmp_path / "copy"
    shutil.copytree(d, copy)
    assert main(["score", "--check", str(d), str(copy)]) == 2
    out = capsys.readouterr().out
    assert "measured more than once" in out and str(d / "measurements.jsonl") in out
    assert str(copy / "measurements.jsonl") in out
    # Overlapping shards of two campaigns: the pair they share is named.
    one = make_results(tmp_path / "s1", {k: v for k, v in GOOD.items() if k[1] == A}, shard=(1, 2))
    assert main(["score", str(one), str(d)]) == 2
    assert "https://a.test/ is measured more than once" in capsys.readouterr().out


# ------------------------------------------------------------------ 4. broken inputs


def test_report_into_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = make_results(tmp_path / "r", GOOD)
    assert main(["report", "--quiet", str(d), "-o", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().out
    assert main(["report", "--quiet", str(d), "-o", str(tmp_path / "no" / "such" / "dir.html")]) == 2
    assert "cannot write the report" in capsys.readouterr().out


@pytest.mark.parametrize("verb", ["score", "report"])
def test_missing_folder(verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Not --quiet: the progress bar used to count measurements of a folder that does not exist.
    args = [verb, str(tmp_path / "nope")] + (["-o", str(tmp_path / "x.html")] if verb == "report" else [])
    assert main(args) == 2
    out = capsys.readouterr().out
    assert "no such results folder" in out and "Traceback" not in out


@pytest.mark.parametrize("verb", ["score", "report"])
def test_folder_without_run_json(verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = make_results(tmp_path / "r", GOOD)
    (d / "run.json").unlink()
    args = [verb, str(d)] + (["-o", str(tmp_path / "x.html")] if verb == "report" else [])
    assert main(args) == 2
    assert "is not a results folder" in capsys.readouterr().out


@pytest.mark.parametrize("verb", ["score", "report"])
def test_truncated_measurements(verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = make_results(tmp_path / "r", GOOD)
    path = d / "measurements.jsonl"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])  # a run cut short in the middle of its last line
    args = [verb, str(d)] + (["-o", str(tmp_path / "x.html")] if verb == "report" else [])
    assert main(args) == 2
    out = capsys.readouterr().out
    assert f"{path}:4: not a JSON measurement" in out and "Traceback" not in out


def test_missing_or_odd_measurements(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = make_results(tmp_path / "r", GOOD)
    (d / "measurements.jsonl").unlink()
    assert main(["score", str(d)]) == 2
    assert "measurements.jsonl: no such file" in capsys.readouterr().out
    (d / "measurements.jsonl").write_text('{"x_vantage": "control", "input": "https://a.test/"}\n[1]\n')
    assert main(["score", str(d)]) == 2
    assert "measurements.jsonl:1: not a measurement" in capsys.readouterr().out


# ------------------------------------------------------------------ the campaign: every job answered


class FakeLab:
    """Just what run_campaign needs of a RunningLab; spawn runs ``script`` (default: the real worker)."""

    def __init__(self, script: str | None = None) -> None:
        self.script = script
        sites = allocate_sites({"a.test": None, "b.test": None})
        self.state = SimpleNamespace(
            vantages={v: Vantage(name=v, host=f"{v}-client", resolver=IPv4Address("127.0.0.1"), public_resolver=None,
                                 address=IPv4Address("127.0.0.1"), asn=64500) for v in VANTAGES},
            site_addresses={k: str(a) for k, a in sites.items()}, ca_file="pki/ca.pem")
        self.name = "gate"

    async def spawn(self, host: str, argv: list[str]) -> asyncio.subprocess.Process:
        args = ["-m", "probes.worker"] if self.script is None else ["-c", self.script]
        return await asyncio.create_subprocess_exec(sys.executable, *args, cwd=REPO, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

    def dead_services(self) -> list[str]:
        return []

    def inner_path(self, relative: str) -> Path:
        return Path("/nonexistent") / relative


REPO = Path(__file__).resolve().parents[2]


def _campaign(tmp_path: Path, lab: FakeLab, config: CampaignConfig) -> tuple[Any, Path]:
    (tmp_path / "scenario.yaml").write_text(SCENARIO)
    scenario = load_scenario(tmp_path / "scenario.yaml")
    out = tmp_path / "out"
    result = asyncio.run(run_campaign(lab, scenario, out, config))  # type: ignore[arg-type]
    return result, out


def test_unknown_probe_run_fails_the_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`harness run --probe nope --check` used to score 0/0 (100%) and exit 0: the real worker
    answers every job with an error, the errors go to run.json, and scoring counts each as a mismatch."""
    result, out = _campaign(tmp_path, FakeLab(), CampaignConfig(probe="nope", concurrency=2))
    assert result.measurements == 0 and len(result.errors) == 4 and result.vantages == VANTAGES
    assert {(e["vantage"], e["url"]) for e in result.errors} == {(v, u) for v in VANTAGES for u in (A, B)}
    assert all("unknown probe 'nope'" in e["error"] for e in result.errors)
    # What harness.runner writes (run.json), then `harness score --check`.
    scenario = load_scenario(tmp_path / "scenario.yaml")
    write_run_info(out, scenario, {"scenario_name": "gate", "shard": [1, 1], "vantages": VANTAGES,
                                   "site_addresses": FakeLab().state.site_addresses, "errors": result.errors,
                                   "lab_faults": result.lab_faults})
    assert main(["score", "--check", str(out)]) == 1
    assert "Score: 0/4" in capsys.readouterr().out


def test_a_stuck_worker_is_a_lab_fault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe that blocks the worker's event loop answers nothing, ever: the campaign gives up
    after job_timeout and a grace, kills the worker and says so, rather than waiting for ever."""
    monkeypatch.setattr(campaign, "STALL_GRACE", 0.2)
    silent = "import sys, time\nfor line in sys.stdin:\n    pass\ntime.sleep(60)\n"
    with pytest.raises(LabFault, match=r"answered nothing for 0.5 s with 2 job\(s\) left"):
        _campaign(tmp_path, FakeLab(silent), CampaignConfig(probe="web", job_timeout=0.3, vantages=["isp-a"]))


def test_a_dead_worker_is_still_a_lab_fault(tmp_path: Path) -> None:
    with pytest.raises(LabFault, match=r"stopped with 2 job\(s\) left"):
        _campaign(tmp_path, FakeLab("import sys; sys.exit(1)"), CampaignConfig(vantages=["isp-a"]))


def test_a_vantage_held_back_for_the_control_is_no_stuck_worker(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The stall clock runs while a worker owes answers, not while the control's pace holds its
    jobs back: here isp-a answers a quick job at once, waits for the control (0.6 s between its
    answers), then takes 0.5 s on a slow one. Between two answers, 1.1 s pass; the silence
    allowed is 1 s, and no job comes near it (margins of 0.4 s and more against a loaded machine)."""
    monkeypatch.setattr(campaign, "STALL_GRACE", 0.3)
    monkeypatch.setattr(campaign, "STALL_POLL", 0.05)
    answer = ("import json, sys, time\n"
              "ctx = json.loads(sys.stdin.readline())['context']\n"
              "for line in sys.stdin:\n"
              "    job = json.loads(line)\n"
              "    time.sleep(0.6 if ctx['vantage'] == 'control' else 0.5 * (job['id'] % 2))\n"
              "    print(json.dumps({'id': job['id'], 'measurement': {'input': job['url']}}), flush=True)\n")
    many = SCENARIO.replace("    - name: b.test\n", "".join(f"    - name: {c}.test\n" for c in "bcdef")).replace(
        "targets: [https://a.test/, https://b.test/]", "targets: [" + ", ".join(
            f"{s}://{c}.test/" for c in "abcd" for s in ("https", "http")) + "]")
    (tmp_path / "scenario.yaml").write_text(many)
    scenario = load_scenario(tmp_path / "scenario.yaml")
    result = asyncio.run(run_campaign(FakeLab(answer), scenario, tmp_path / "out",  # type: ignore[arg-type]
                                      CampaignConfig(probe="web", concurrency=1, job_timeout=0.7)))
    assert result.errors == [] and result.measurements == 2 * len(scenario.targets) == 16
