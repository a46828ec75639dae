"""No false blockpage: sites whose own pages say "blocked", "unavailable" or "451" (in the title
and the body, over http and https, reached directly or through a redirect) are what the control
sees too, so no vantage, the control included, is told it got a blockpage; a real injected
blockpage at one ISP still is (issue 17 item 2; docs/ooni.md "Blockpages")."""

from __future__ import annotations

from pathlib import Path

from conftest import assert_no_leftovers

from harness.runner import run_scenario
from netlab.verdict import Verdict

SCENARIO = """
version: 1
name: benign-blockpages
internet:
  sites:
    - name: blocked.test
      response:
        body: >-
          <html><head><title>Blocked</title></head><body><h1>blocked.test</h1>
          <p>This site is blocked by nobody: it is just its name.</p></body></html>
    - name: news.test
      response:
        body: >-
          <html><head><title>Why sites get blocked: 451 Unavailable For Legal Reasons</title></head>
          <body><p>Access to this site is blocked, unavailable, HTTP 451 Unavailable For Legal
          Reasons.</p></body></html>
    - name: legal.test
      response:
        status: 451
        body: >-
          <html><head><title>Unavailable For Legal Reasons</title></head><body><h1>451 blocked</h1>
          </body></html>
    - name: hop.test
      redirect: {to: "http://blocked.test/"}
    - name: hop2.test
      redirect: {to: "https://news.test/"}
    - name: censored.test
isps:
  - name: isp-a
  - name: isp-b
    dpi:
      rules:
        - {match: {http_host: censored.test}, action: blockpage}
"""


def test_benign_pages_about_blocking(lab_name: str, tmp_path: Path) -> None:
    path = tmp_path / "benign.yaml"
    path.write_text(SCENARIO)
    outcome = run_scenario(path, out=tmp_path / "out", name=lab_name)
    assert_no_leftovers(lab_name)
    assert outcome.scored is not None
    rows = outcome.scored.score.rows
    blockpages = sorted((r.vantage, r.url) for r in rows if r.observed == Verdict.HTTP_BLOCKPAGE)
    assert blockpages == [("isp-b", "http://censored.test/")]
    assert outcome.scored.score.mismatches == []
    assert all(r.observed == Verdict.OK for r in rows if r.vantage == "control")
