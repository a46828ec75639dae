"""The README's Compose lines ("The lab as Docker containers"), run as written, one by one, in a
copy of the repository, with `harness` from this interpreter's environment on the PATH (where
scripts/setup.sh puts it).

Two things differ from a user's checkout, so that this lab is told apart from others on the
machine: the copy's scenarios/demo.yaml names its lab h3c<hex> instead of `demo`, and the copy's
docker-compose.yml is regenerated from it with `harness compose scenarios/demo.yaml -o
docker-compose.yml` (the command the README says the file comes from; a test keeps the committed
file equal to its output)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import ROOT, copy_project

pytestmark = pytest.mark.slow

SECTION = "## The lab as Docker containers"


def readme_compose_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split(SECTION, 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, f"no sh block under {SECTION!r}"
    lines = [line.strip() for line in block.group(1).splitlines() if line.strip()]
    assert any("compose" in line for line in lines)
    return lines


def test_readme_lines_name_an_installed_compose() -> None:
    """Every Compose command the README gives exists on this machine, as written."""
    for line in readme_compose_lines():
        word = line.split()[0]
        if word in ("docker-compose", "docker"):
            probe = [word, "version"] if word == "docker-compose" else [word, "compose", "version"]
            if word == "docker" and line.split()[1] != "compose":
                continue
            assert subprocess.run(probe, capture_output=True).returncode == 0, f"{line}: {' '.join(probe)} fails"


def test_readme_compose_lines_run_as_written(tmp_path: Path) -> None:
    lab = f"h3c{uuid.uuid4().hex[:6]}"
    repo = copy_project(tmp_path / f"h3compose{lab[3:]}")
    demo = repo / "scenarios" / "demo.yaml"
    text = demo.read_text()
    assert "\nname: demo" in text
    demo.write_text(text.replace("\nname: demo", f"\nname: {lab}", 1))
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"], "CI": "true"}

    def sh(line: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", line], cwd=repo, env=env, capture_output=True, text=True,
                              timeout=timeout)

    gen = sh("harness compose scenarios/demo.yaml -o docker-compose.yml")
    assert gen.returncode == 0, gen.stdout + gen.stderr
    assert f"nl-{lab}" in (repo / "docker-compose.yml").read_text()
    lines = readme_compose_lines()
    try:
        for line in lines:
            res = sh(line)
            assert res.returncode == 0, f"README line failed: {line}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
            if " up " in f" {line} ":
                assert (repo / "results" / "verdicts.jsonl").exists(), f"{line}: no results/verdicts.jsonl"
            if "harness run" in line:
                assert "21/21" in res.stdout, res.stdout[-3000:]
    finally:
        down = next((x.split("#")[0].strip() for x in lines if x.split()[:1] and " down" in x), None)
        if down:
            sh(down, timeout=300)
        sh(f"harness down {lab} --backend compose", timeout=300)
