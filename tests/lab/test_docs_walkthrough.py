"""docs/writing-a-probe.md, as written (issue 19 item 9): its code blocks are the files of a probe
package (each names its path on its first line); built from them alone, installed, it lists, runs
in a lab with the server it declares, scores 100% against the oracle, and its own test passes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, assert_no_leftovers, lab_name_prefix

DOC = ROOT / "docs" / "writing-a-probe.md"
PACKAGE = "fauxisp-echo"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def doc_files() -> dict[str, str]:
    """path -> content of every code block whose first line is `# fauxisp-echo/<path>`."""
    files = {}
    for _lang, body in BLOCK.findall(DOC.read_text()):
        first, _, _rest = body.partition("\n")
        m = re.fullmatch(rf"# ({PACKAGE}/\S+)", first.strip())
        if m:
            files[m.group(1)] = body
    return files


def test_the_doc_names_every_file_of_the_package() -> None:
    assert set(doc_files()) == {f"{PACKAGE}/{p}" for p in
                                ("fauxisp_echo.py", "pyproject.toml", "scenario.yaml", "tests/test_echo.py")}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The package written from the doc and installed into a folder of its own (--target), which
    PYTHONPATH adds for the harness: the test's interpreter, with nothing left installed after."""
    base = tmp_path_factory.mktemp("walkthrough")
    for rel, content in doc_files().items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    site = base / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                          "--no-build-isolation", "--root-user-action=ignore", "--target", str(site),
                          str(base / PACKAGE)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    env = {**os.environ, "CI": "true",
           "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return base / PACKAGE, env


def harness(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env=env)


def test_listed_run_and_scored(built: tuple[Path, dict[str, str]], lab_name: str, tmp_path: Path) -> None:
    package, env = built
    listed = harness(env, "probes", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    echo = next(r for r in json.loads(listed.stdout) if r["name"] == "echo")
    assert echo["error"] is None and echo["distribution"].startswith("fauxisp-echo 0.1.0")
    explain = harness(env, "explain", str(package / "scenario.yaml"))
    assert "server of probe type 'echo'" in explain.stdout.replace("\n", " ")
    res = harness(env, "run", str(package / "scenario.yaml"), "--probe", "echo", "--name", lab_name,
                  "--out", str(tmp_path / "r"), "--check", "--json")
    assert_no_leftovers(lab_name)
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads(res.stdout)
    verdicts = {(v["vantage"], v["url"]): v["verdict"] for v in summary["verdicts"]}
    assert verdicts[("dpi-isp", "https://chat.test:7007/")] == "tls.reset"
    assert verdicts[("fw-isp", "https://chat.test:7007/")] == "dns.nxdomain"
    assert verdicts[("fw-isp", "https://mail.test:7007/")] == "tcp.timeout"
    assert summary["score"]["mismatches"] == 0 and summary["score"]["accuracy"] == 1.0
    lines = [json.loads(x) for x in (tmp_path / "r" / "measurements.jsonl").read_text().splitlines()]
    control = {m["input"]: m["test_keys"] for m in lines if m["x_vantage"] == "control"}
    assert control["https://open.test:7007/"]["x_echo"] == "hello from fauxisp-echo\n"


def test_its_own_test_passes(built: tuple[Path, dict[str, str]]) -> None:
    package, env = built
    name = f"{lab_name_prefix()}doc{os.getpid() % 1000}"
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", f"lab_name={name}",
                          "tests"], capture_output=True, text=True, cwd=package, timeout=600, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 passed" in res.stdout
    assert_no_leftovers(name)
