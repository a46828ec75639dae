"""The deploy examples for real: deploy/github-actions-matrix.yml and deploy/k8s-indexed-job.yaml
run their measure and score commands in fauxisp/lab (the base image with the project and the
example plugin; `harness image build --with-project`), in 2 shards, and the merged score is the
oracle's: 21 verdicts, no mismatch.

The commands are read from the files. Two things are added to each `docker run`: a name, so a
timed-out container can be removed, and a copy of scenarios/demo.yaml whose lab name starts with
h3 (this machine's labs are told apart by name; the command itself is run as written). Where the
Docker daemon cannot grant --privileged at all (a daemon inside a sandbox lacking a capability),
the test says so with a warning and passes the equivalent capability flags instead."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, privileged_flags

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("lab-image")]

SHARDS = 2
DEMO_IN_IMAGE = "/opt/fauxisp/scenarios/demo.yaml"
LAB_IMAGE = "fauxisp/lab:latest"


@pytest.fixture(scope="module")
def lab_image() -> str:
    gha = (ROOT / "deploy" / "github-actions-matrix.yml").read_text()
    assert "harness image build --with-project" in gha  # the example names the build step it needs
    res = subprocess.run([sys.executable, "-m", "harness", "image", "build", "--with-project"], cwd=ROOT,
                         capture_output=True, text=True, timeout=3600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    probes = subprocess.run(["docker", "run", "--rm", LAB_IMAGE, "harness", "probes", "list"],
                            capture_output=True, text=True, timeout=120)
    assert probes.returncode == 0 and "fauxisp_dot:DotProbe" in probes.stdout, probes.stdout + probes.stderr
    return LAB_IMAGE


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    """demo.yaml with a lab name of this test's own (h3...)."""
    text = (ROOT / "scenarios" / "demo.yaml").read_text()
    lab = f"h3dep{uuid.uuid4().hex[:5]}"
    assert "\nname: demo" in text
    out = tmp_path / "demo.yaml"
    out.write_text(text.replace("\nname: demo", f"\nname: {lab}", 1))
    return out


def docker_run(command: str, scenario: Path, names: list[str]) -> str:
    """The command with `docker run` given a name and the h3 scenario; sudo dropped where absent."""
    name = f"h3-deploy-{uuid.uuid4().hex[:8]}"
    names.append(name)
    if command.startswith("sudo ") and shutil.which("sudo") is None:
        command = command[len("sudo "):]
    assert command.count("docker run ") == 1, command
    if " --privileged " in command:
        command = command.replace(" --privileged ", f" {shlex.join(privileged_flags(LAB_IMAGE))} ", 1)
    return command.replace("docker run ", f"docker run --name {name} -v {scenario}:{DEMO_IN_IMAGE}:ro ", 1)


def run(cmd: str | list[str], cwd: Path, names: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, shell=isinstance(cmd, str), executable="/bin/bash" if isinstance(cmd, str)
                              else None, cwd=cwd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        for name in names:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        raise


def run_shards(cmds: list[str], cwd: Path, names: list[str]) -> None:
    """One shard after the other (matrix jobs and pods would run at once, on machines of their own;
    here they would share two cores with the rest of the suite, and the lab's timeouts with them)."""
    for cmd in cmds:
        res = run(cmd, cwd, names)
        assert res.returncode == 0, f"{cmd}\n{res.stdout[-3000:]}{res.stderr[-3000:]}"


def check_merged(results: Path) -> None:
    merged = subprocess.run([sys.executable, "-m", "harness", "score", "--json",
                             *(str(results / f"shard-{i}") for i in range(1, SHARDS + 1))],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    report = json.loads(merged.stdout)
    assert len(report["verdicts"]) == 21 and report["mismatches"] == 0
    for i in range(1, SHARDS + 1):  # every shard measured a part
        assert (results / f"shard-{i}" / "measurements.jsonl").read_text().strip()


def test_github_actions_matrix_in_the_lab_image(lab_image: str, scenario: Path, tmp_path: Path) -> None:
    gha = yaml.safe_load((ROOT / "deploy" / "github-actions-matrix.yml").read_text())
    steps = {job: [s.get("run", "") for s in spec["steps"]] for job, spec in gha["jobs"].items()}
    measure = next(r for r in steps["measure"] if "harness run" in r)
    score = next(r for r in steps["score"] if "harness score" in r)
    assert "fauxisp/lab" in measure and "--privileged" in measure
    names: list[str] = []
    cmds = [measure.replace("${{ matrix.shard }}", str(i)).replace("${{ strategy.job-total }}", str(SHARDS))
            for i in range(1, SHARDS + 1)]
    run_shards([docker_run(cmd, scenario, names) for cmd in cmds], tmp_path, names)
    res = run(docker_run(score, scenario, names), tmp_path, names)
    assert res.returncode == 0, f"{score}\n{res.stdout[-3000:]}{res.stderr[-3000:]}"
    assert "21/21" in res.stdout
    check_merged(tmp_path / "results")


def test_k8s_indexed_job_in_the_lab_image(lab_image: str, scenario: Path, tmp_path: Path) -> None:
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "k8s-indexed-job.yaml").read_text()))
    jobs = [d for d in docs if d["kind"] == "Job"]
    measure = next(d for d in jobs if d["spec"].get("completionMode") == "Indexed")
    score = next(d for d in jobs if d is not measure)
    results = tmp_path / "results"
    results.mkdir()

    def as_docker_run(job: dict, env: dict[str, str]) -> str:
        """What the kubelet does with the pod's container, as a `docker run` command line."""
        c = job["spec"]["template"]["spec"]["containers"][0]
        args = ["docker", "run", "--rm", "-w", c.get("workingDir", "/")]
        if (c.get("securityContext") or {}).get("privileged"):
            args.append("--privileged")
        for k, v in {**{e["name"]: e["value"] for e in c.get("env", [])}, **env}.items():
            args += ["-e", f"{k}={v}"]
        for mount in c.get("volumeMounts", []):
            assert mount["name"] == "results"
            args += ["-v", f"{results}:{mount['mountPath']}"]
        return shlex.join([*args, c["image"], *c["command"]])

    names: list[str] = []
    assert measure["spec"]["completions"] == int(next(e["value"] for e in measure["spec"]["template"]["spec"][
        "containers"][0]["env"] if e["name"] == "SHARDS")), "SHARDS must equal completions"
    cmds = [as_docker_run(measure, {"JOB_COMPLETION_INDEX": str(index), "SHARDS": str(SHARDS)})
            for index in range(SHARDS)]
    run_shards([docker_run(cmd, scenario, names) for cmd in cmds], tmp_path, names)
    cmd = as_docker_run(score, {})
    res = run(docker_run(cmd, scenario, names), tmp_path, names)
    assert res.returncode == 0, f"{cmd}\n{res.stdout[-3000:]}{res.stderr[-3000:]}"
    assert "21/21" in res.stdout
    check_merged(results)
