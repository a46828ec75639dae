"""Citizen Lab test lists: which rows the lab measures, which it skips and why, and the
scenario with the selected targets (a model operation; a results folder records them)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from harness.runner import copy_scenario_files
from harness.testlist import read_test_list, scenario_with_targets, select_targets
from netlab.compile import compile_lab
from netlab.errors import NetlabError
from netlab.loader import load_scenario
from netlab.oracle import expected_verdicts

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scenarios" / "demo.yaml"
HEADER = "url,category_code,category_description,date_added,source,notes\n"


def write(tmp_path: Path, rows: str) -> Path:
    p = tmp_path / "zz.csv"
    p.write_text(HEADER + rows)
    return p


def test_select_measures_only_the_scenarios_sites(tmp_path: Path) -> None:
    csv = write(tmp_path, "https://news.test/,NEWS,News Media,2017-04-12,citizenlab,\n"
                          "https://www.facebook.com/,GRP,Social Networking,2014-04-15,citizenlab,\n"
                          "http://NEWS.test/politics,NEWS,News Media,,,\n"
                          "ftp://ok.test/,FILE,,,,\n"
                          "https://news.test/,NEWS,again,,,\n"
                          ",,,,,\n"
                          '"https://www.blog.test/","BLOG","Blogs, personal","2020-01-01","citizenlab","a, b"\n')
    targets, skipped = select_targets(read_test_list(csv), load_scenario(DEMO))
    assert [t.url for t in targets] == ["https://news.test/", "http://NEWS.test/politics", "https://www.blog.test/"]
    reasons = {s.url: s.reason for s in skipped}
    assert "not a site of scenario demo" in reasons["https://www.facebook.com/"]
    assert "scheme must be http or https" in reasons["ftp://ok.test/"]
    assert [s.line for s in skipped if "duplicate" in s.reason] == [6]


def test_not_a_test_list(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("address,category\n1.2.3.4,x\n")
    with pytest.raises(NetlabError, match="no url column"):
        read_test_list(p)
    with pytest.raises(NetlabError, match="cannot read"):
        read_test_list(tmp_path / "missing.csv")


def test_scenario_with_targets_keeps_rule_lines_and_drops_orphan_pins(tmp_path: Path) -> None:
    original = load_scenario(DEMO)
    s = scenario_with_targets(original, ["http://news.test/", "https://social.test/feed"])
    assert [t.url for t in s.targets] == ["http://news.test/", "https://social.test/feed"]
    assert s.expect == {"isp-b": {"http://news.test/": "http.blockpage"}}  # isp-a's pin was for https://
    assert [r.line for i in s.isps for r in i.resolver_rules + i.firewall_rules + i.dpi_rules] == \
        [r.line for i in original.isps for r in i.resolver_rules + i.firewall_rules + i.dpi_rules]
    exp = expected_verdicts(s, compile_lab(s).site_addresses)
    assert exp[("isp-b", "https://social.test/feed")].verdict.value == "tls.reset"


def test_scenario_without_targets_gets_them_appended(tmp_path: Path) -> None:
    src = tmp_path / "a.yaml"
    src.write_text("version: 1\nname: a\ninternet:\n  sites:\n  - name: a.test\n")
    s = scenario_with_targets(load_scenario(src), ["https://a.test/x"])
    assert [t.url for t in s.targets] == ["https://a.test/x"]
    with pytest.raises(NetlabError):
        scenario_with_targets(s, [])


def test_files_the_scenario_refers_to_come_along(tmp_path: Path) -> None:
    from netlab.model import Site

    if "body_file" not in getattr(Site, "__dataclass_fields__", {}):
        pytest.skip("this tree's scenarios have no response bodies from files")
    src = tmp_path / "orig"
    (src / "pages").mkdir(parents=True)
    (src / "pages" / "captcha.html").write_text("<title>captcha</title>")
    (src / "s.yaml").write_text("version: 1\nname: a\ninternet:\n  sites:\n  - name: a.test\n"
                                "    response: {status: 503, body_file: pages/captcha.html}\n")
    s = scenario_with_targets(load_scenario(src / "s.yaml"), ["https://a.test/x"])
    copy_scenario_files(s, tmp_path / "new")  # as into a results folder
    assert (tmp_path / "new" / "pages" / "captcha.html").read_text() == "<title>captcha</title>"
    assert [t.url for t in s.targets] == ["https://a.test/x"]


def test_duplicates_differing_in_case_or_default_port_are_one_target(tmp_path: Path) -> None:
    csv = write(tmp_path, "HTTP://News.test/,NEWS,,,,\nhttp://news.test/,NEWS,,,,\nhttp://news.test:80/,NEWS,,,,\n"
                          "https://NEWS.TEST./,NEWS,,,,\nhttps://news.test/,NEWS,,,,\nhttp://news.test/Politics,NEWS,,,,\n"
                          "http://news.test/politics,NEWS,,,,\n")
    targets, skipped = select_targets(read_test_list(csv), load_scenario(DEMO))
    assert [t.url for t in targets] == ["HTTP://News.test/", "https://NEWS.TEST./", "http://news.test/Politics",
                                        "http://news.test/politics"]  # paths stay case-sensitive
    assert [(s.line, s.reason) for s in skipped] == [
        (3, "duplicate of an earlier row (HTTP://News.test/)"), (4, "duplicate of an earlier row (HTTP://News.test/)"),
        (6, "duplicate of an earlier row (https://NEWS.TEST./)")]
    # ... and the scenario written with them loads (the loader refuses such duplicates too).
    s = scenario_with_targets(load_scenario(DEMO), [t.url for t in targets])
    assert len(s.targets) == 4


def test_a_results_folder_rescores_with_the_targets_it_measured(tmp_path: Path) -> None:
    """run.json's "targets" (harness run --targets) are what rescoring the folder expects: its
    copy of the scenario file still lists the file's own."""
    from harness.results import folder_scenario, write_run_info

    original = load_scenario(DEMO)
    s = scenario_with_targets(original, ["http://news.test/", "https://social.test/feed"])
    info = {"scenario_name": "demo", "vantages": [], "site_addresses": {}, "targets": [t.url for t in s.targets]}
    write_run_info(tmp_path, s, info)
    assert replace(folder_scenario(tmp_path, [info]), source=s.source) == s  # the copy is another file
    assert folder_scenario(tmp_path, [{**info, "targets": None}]).targets == original.targets
    with pytest.raises(NetlabError, match="different targets"):
        folder_scenario(tmp_path, [info, {**info, "targets": ["http://news.test/"]}])
