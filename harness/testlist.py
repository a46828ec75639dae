"""Targets from a Citizen Lab test list (CSV: ``url,category_code,category_description,date_added,
source,notes``), replayed inside the lab.

Only URLs whose host is a site of the scenario are measured: the lab serves its own names and
nothing else. Every other row is reported as skipped, with the reason, and never measured.
The scenario's own targets are replaced by the selected ones (``scenario_with_targets``, a model
operation: the scenario file is not rewritten, so the line numbers of every rule stay as they were).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from netlab.errors import NetlabError
from netlab.model import Scenario
from netlab.target import Target, TargetError

REQUIRED_COLUMNS = ("url",)
CITIZEN_LAB_COLUMNS = ("url", "category_code", "category_description", "date_added", "source", "notes")


@dataclass(frozen=True)
class TestListEntry:
    __test__ = False  # not a pytest test class, despite the name

    url: str
    category_code: str = ""
    line: int = 0


@dataclass(frozen=True)
class Skipped:
    url: str
    reason: str
    line: int = 0

    def to_json(self) -> dict[str, object]:
        return {"url": self.url, "reason": self.reason, "line": self.line}


def read_test_list(path: str | Path) -> list[TestListEntry]:
    """Rows of a test list CSV. Raises NetlabError for a file that is not one."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise NetlabError(f"{p}: cannot read the test list: {exc}") from None
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip().lower() for c in reader.fieldnames or []]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise NetlabError(f"{p}: not a test list: no {', '.join(missing)} column in the header "
                          f"(expected {','.join(CITIZEN_LAB_COLUMNS)})")
    entries = []
    for row in reader:
        norm = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if isinstance(v, str)}
        if not norm.get("url"):
            continue
        entries.append(TestListEntry(norm["url"], norm.get("category_code", ""), reader.line_num))
    return entries


def select_targets(entries: list[TestListEntry], scenario: Scenario) -> tuple[list[Target], list[Skipped]]:
    """The entries the lab can measure (host is a site of the scenario), and every other one."""
    sites = {s.name for s in scenario.sites}
    targets: list[Target] = []
    skipped: list[Skipped] = []
    seen: dict[str, str] = {}  # canonical URL -> the row's URL as written
    for e in entries:
        try:
            t = Target.parse(e.url)
        except TargetError as exc:
            skipped.append(Skipped(e.url, f"not a measurable URL: {exc}", e.line))
            continue
        if t.host not in sites:
            skipped.append(Skipped(e.url, f"{t.host} is not a site of scenario {scenario.name}: the lab only "
                                   "measures names it serves", e.line))
            continue
        # HTTP://News.test/ and http://news.test/ are one URL: compare what the lab would fetch.
        if t.canonical in seen:
            skipped.append(Skipped(e.url, f"duplicate of an earlier row ({seen[t.canonical]})", e.line))
            continue
        seen[t.canonical] = e.url
        targets.append(t)
    return targets, skipped


def scenario_with_targets(scenario: Scenario, urls: list[str]) -> Scenario:
    """``scenario`` measuring ``urls`` instead of its own targets (Scenario.with_targets: pins for
    URLs that are no longer targets dropped, every rule and its line number as it was). A results
    folder records them in run.json ("targets"), so it rescores with the same targets."""
    try:
        return scenario.with_targets([Target.parse(u) for u in urls])
    except TargetError as exc:
        raise NetlabError(f"not a measurable URL: {exc}") from None
