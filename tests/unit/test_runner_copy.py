"""harness.runner.copy_scenario_files never writes outside the results folder, whatever Scenario
it is given (the loader already refuses such body_file paths: test_loader_limits)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from harness.runner import copy_scenario_files
from netlab.errors import NetlabError
from netlab.loader import load_scenario


def scenario(tmp_path: Path):
    src = tmp_path / "sc"
    (src / "pages").mkdir(parents=True)
    (src / "pages" / "p.html").write_text("page")
    (src / "s.yaml").write_text("version: 1\nname: a\ninternet:\n  sites:\n  - name: a.test\n"
                                "    response: {status: 503, body_file: pages/p.html}\n")
    return load_scenario(src / "s.yaml")


def test_copies_body_files_into_the_results_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    copy_scenario_files(scenario(tmp_path), out)
    assert (out / "pages" / "p.html").read_text() == "page"


@pytest.mark.parametrize("rel", ["../p.html", "pages/../../p.html", "/tmp/p.html"])
def test_refuses_to_write_outside_the_results_folder(tmp_path: Path, rel: str) -> None:
    s = scenario(tmp_path)
    bad = replace(s, sites=(replace(s.sites[0], body_file=rel),))
    with pytest.raises(NetlabError, match="outside the results folder"):
        copy_scenario_files(bad, tmp_path / "out")
    assert not (tmp_path / "p.html").exists()
