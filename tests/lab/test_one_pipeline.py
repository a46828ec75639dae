"""One pipeline: `harness run` on netns, `harness run --backend compose` and `docker compose up` of a
generated file measure and score through the same code, so they write the same measurements and
verdicts; compose labs of different names run side by side; a third-party probe type runs in one."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, assert_no_leftovers
from test_compose import assert_docker_clean, compose_cmd, docker_ok

from harness.runner import run_scenario
from netlab.backends.compose import LABEL

pytestmark = [pytest.mark.docker, pytest.mark.lab]
if not docker_ok():
    pytestmark.append(pytest.mark.skip(reason="no Docker Engine"))

DEMO = ROOT / "scenarios" / "demo.yaml"
DOT = ROOT / "examples" / "dot-probe"

# What legitimately differs between two runs of one scenario, however they run:
VOLATILE = {
    # a measurement's identity and when it ran
    "measurement_uid", "report_id", "measurement_start_time", "test_start_time", "test_runtime",
    # the trace clock of every step (OONI's t0/t) and how long a body took
    "t0", "t", "x_body_seconds", "x_body_stall_seconds",
    # DNS: a message id is random, and a TTL counts down in the resolvers' caches
    "raw_response", "ttl",
    # every lab makes its own CA and site certificates (netlab.compile.pki): same names, other keys,
    # and ECDSA signatures whose DER length varies by a byte or two, so the bytes of a handshake's read
    "data", "num_bytes",
}
# Addresses do not differ: a container lab's hosts are namespaces with the plan's addresses, as a
# netns lab's are (Docker gives the lab's container no network), so probe_ip, resolver_ip, the
# addresses resolved and connected to are compared like everything else.


def flat(x: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    if isinstance(x, dict):
        for k, v in x.items():
            yield from flat(v, (*path, k))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from flat(v, (*path, i))
    else:
        yield path, x


def comparable(m: dict[str, Any]) -> dict[tuple, Any]:
    """Every field of a measurement by its path; volatile ones are there (keys must match) as '*'.
    network_events as the set of (operation, address) it holds: the order of the events of
    concurrent flows, and how many reads a response took, follow the scheduler, not the pipeline."""
    keys = m.get("test_keys", {})
    if "network_events" in keys:
        events = {(e.get("operation"), e.get("address")) for e in keys["network_events"]}
        m = {**m, "test_keys": {**keys, "network_events": sorted(events, key=repr)}}
    return {p: "*" if any(k in VOLATILE for k in p if isinstance(k, str)) else v for p, v in flat(m)}


def measurements(folder: Path) -> dict[tuple[str, str], dict[tuple, Any]]:
    lines = [json.loads(x) for x in (folder / "measurements.jsonl").read_text().splitlines()]
    return {(m["x_vantage"], m["input"]): comparable(m) for m in lines}


def verdicts(folder: Path) -> dict[tuple[str, str], tuple[str, bool]]:
    rows = [json.loads(x) for x in (folder / "verdicts.jsonl").read_text().splitlines()]
    return {(r["vantage"], r["url"]): (r["verdict"], r["match"]) for r in rows}


def generate(scenario: Path, lab: str, folder: Path, *extra: str) -> list[str]:
    """A Compose file in a folder of its own (Compose names a project after its folder)."""
    folder.mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "harness", "compose", str(scenario), "-o", str(folder / "compose.yml"),
                    "--name", lab, *extra], check=True, cwd=ROOT, capture_output=True)
    return [*compose_cmd(), "-f", str(folder / "compose.yml"), "-p", lab]


def running_labs(labs: list[str]) -> set[str]:
    """The labs among ``labs`` whose container runs now."""
    out = subprocess.run(["docker", "ps", "--format", '{{.Label "' + LABEL + '"}}'], capture_output=True,
                         text=True).stdout.split()
    return set(labs) & set(out)


def wait_until_side_by_side(labs: list[str], procs: list[subprocess.Popen]) -> None:
    """Until every lab's container runs at the same moment (while the labs run at once)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        if running_labs(labs) == set(labs):
            return
        time.sleep(0.2)
    raise AssertionError(f"the labs never all ran at once: {[p.poll() for p in procs]}")


def test_netns_compose_backend_and_compose_file_write_the_same_measurements(lab_name: str, tmp_path: Path
                                                                              ) -> None:
    run_scenario(DEMO, out=tmp_path / "netns", name=lab_name + "n")
    run_scenario(DEMO, out=tmp_path / "backend", name=lab_name + "c", backend="compose")
    cmd = generate(DEMO, lab_name + "f", tmp_path / "file")
    try:
        up = subprocess.run([*cmd, "up", "--exit-code-from", "score"], capture_output=True, text=True, timeout=600)
    finally:
        subprocess.run([*cmd, "down"], capture_output=True, timeout=120)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    folders = {"netns": tmp_path / "netns", "compose backend": tmp_path / "backend",
               "compose file": tmp_path / "file" / "results"}
    seen = {way: measurements(f) for way, f in folders.items()}
    reference = seen["netns"]
    assert len(reference) == 21
    some = next(iter(reference.values()))
    assert {("test_keys", k) in some for k in ("blocking", "accessible", "x_verdict")} == {True}
    for way, got in seen.items():
        assert got.keys() == reference.keys(), way
        for key, m in got.items():
            differ = {p: (reference[key].get(p, "<missing>"), m.get(p, "<missing>"))
                      for p in reference[key].keys() | m.keys() if reference[key].get(p) != m.get(p)}
            assert not differ, f"{way} differs from netns for {key}: {differ}"
    assert verdicts(folders["compose backend"]) == verdicts(folders["compose file"]) == verdicts(folders["netns"])
    assert all(match for _, match in verdicts(folders["netns"]).values())
    assert {json.loads((f / "run.json").read_text())["backend"] for f in folders.values()} == {
        "netns", "compose", "compose-file"}
    for suffix in "ncf":
        assert_docker_clean(lab_name + suffix)
        assert_no_leftovers(lab_name + suffix)


def test_two_compose_files_run_at_once(lab_name: str, tmp_path: Path) -> None:
    labs = [lab_name + "a", lab_name + "b"]
    cmds = [generate(DEMO, lab, tmp_path / lab) for lab in labs]
    procs = [subprocess.Popen([*cmd, "up", "--exit-code-from", "score"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for cmd in cmds]
    try:
        wait_until_side_by_side(labs, procs)
        outs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
        for cmd in cmds:
            subprocess.run([*cmd, "down"], capture_output=True, timeout=120)
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0 and "21/21 verdicts match the ground truth" in out, out[-3000:]
    for lab in labs:
        assert_docker_clean(lab)


def test_two_compose_backend_labs_run_at_once(lab_name: str, tmp_path: Path) -> None:
    labs = [lab_name + "a", lab_name + "b"]
    procs = [subprocess.Popen([sys.executable, "-m", "harness", "run", str(DEMO), "--backend", "compose", "--name",
                               lab, "--check", "--quiet", "--out", str(tmp_path / lab)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for lab in labs]
    try:
        wait_until_side_by_side(labs, procs)
        outs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0 and "21/21 verdicts match the ground truth" in out, out[-3000:]
    for lab in labs:
        assert_docker_clean(lab)
        assert_no_leftovers(lab)


@pytest.fixture(scope="module")
def dot_installed() -> None:
    """examples/dot-probe installed here (as tests/lab/test_example_probe does): the harness mounts
    it into the containers, which find it by its entry point."""
    from importlib.metadata import entry_points

    if not any(ep.name == "dot" for ep in entry_points(group="harness.probes")):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                        "--no-build-isolation", "--root-user-action=ignore", "-e", str(DOT)], check=True,
                       capture_output=True, timeout=300)


def test_a_third_party_probe_runs_in_a_compose_lab(dot_installed: None, lab_name: str, tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "harness", "run", str(DOT / "scenario.yaml"), "--probe", "dot",
                          "--backend", "compose", "--name", lab_name, "--out", str(tmp_path), "--check", "--json"],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert_docker_clean(lab_name)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads(res.stdout)
    got = {(v["vantage"], v["url"]): v["verdict"] for v in summary["verdicts"]}
    assert got[("sni-isp", "https://dns.test:853/")] == "tls.reset"
    assert got[("ip-isp", "https://quad.test:853/")] == "tcp.reset"
    assert got[("ip-isp", "https://dns.test:853/")] == "ok"
    assert summary["score"]["mismatches"] == 0 and not summary["errors"]
    lines = [json.loads(x) for x in (tmp_path / "measurements.jsonl").read_text().splitlines()]
    assert {m["annotations"]["probe"] for m in lines} == {"dot"}  # the plugin ran, in the containers


def test_a_third_party_probe_runs_from_a_compose_file(dot_installed: None, lab_name: str, tmp_path: Path) -> None:
    cmd = generate(DOT / "scenario.yaml", lab_name, tmp_path / "file", "--probe", "dot")
    try:
        up = subprocess.run([*cmd, "up", "--exit-code-from", "score"], capture_output=True, text=True, timeout=600)
    finally:
        subprocess.run([*cmd, "down"], capture_output=True, timeout=120)
    assert up.returncode == 0 and "12/12 verdicts match the ground truth" in up.stdout, up.stdout[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "file" / "results" / "measurements.jsonl").read_text().splitlines()]
    assert {m["annotations"]["probe"] for m in lines} == {"dot"}
    assert_docker_clean(lab_name)
