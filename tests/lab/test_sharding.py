"""A campaign split with --shard I/N and merged by `harness score` equals one unsharded run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import ROOT, assert_no_leftovers

from harness.campaign import shard_targets
from netlab.loader import load_scenario

SCENARIO = ROOT / "scenarios" / "demo.yaml"


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**os.environ, "CI": "true"})


def test_shards_partition_the_targets() -> None:
    targets = load_scenario(SCENARIO).targets
    for n in (1, 2, 3, 7, 20):
        parts = [shard_targets(targets, i, n) for i in range(1, n + 1)]
        assert sorted(t.url for p in parts for t in p) == sorted(t.url for t in targets)
        assert parts == [shard_targets(targets, i, n) for i in range(1, n + 1)]  # deterministic


def test_merged_shards_equal_one_run(lab_name: str, tmp_path: Path) -> None:
    assert harness("up", str(SCENARIO), "--name", lab_name).returncode == 0
    try:
        whole = harness("run", str(SCENARIO), "--name", lab_name, "--out", str(tmp_path / "whole"))
        assert whole.returncode == 0, whole.stdout + whole.stderr
        for i in (1, 2, 3):
            r = harness("run", str(SCENARIO), "--name", lab_name, "--shard", f"{i}/3", "--out", str(tmp_path / f"s{i}"))
            assert r.returncode == 0, r.stdout + r.stderr
    finally:
        harness("down", lab_name)
    assert_no_leftovers(lab_name)
    merged = harness("score", "--json", *(str(tmp_path / f"s{i}") for i in (1, 2, 3)))
    one = harness("score", "--json", str(tmp_path / "whole"))
    assert merged.returncode == 0 and one.returncode == 0

    def verdicts(out: str) -> dict[tuple[str, str], str]:
        return {(v["vantage"], v["url"]): v["verdict"] for v in json.loads(out)["verdicts"]}

    assert verdicts(merged.stdout) == verdicts(one.stdout)
    assert len(verdicts(one.stdout)) == 21 and json.loads(merged.stdout)["mismatches"] == 0


def test_deploy_examples_use_the_real_commands() -> None:
    """The CI matrix and the Kubernetes Job feed --shard and merge with `harness score`."""
    gha = yaml.safe_load((ROOT / "deploy" / "github-actions-matrix.yml").read_text())
    steps = " ".join(str(s.get("run", "")) for job in gha["jobs"].values() for s in job["steps"])
    assert "--shard ${{ matrix.shard }}/${{ strategy.job-total }}" in steps and "harness score" in steps
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "k8s-indexed-job.yaml").read_text()))
    job = next(d for d in docs if d["kind"] == "Job" and d["spec"].get("completionMode") == "Indexed")
    cmd = " ".join(job["spec"]["template"]["spec"]["containers"][0]["command"])
    assert "JOB_COMPLETION_INDEX" in cmd and "--shard" in cmd
