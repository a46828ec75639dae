"""Verdicts vs ground truth: confusion matrix, precision and recall per technique, mismatches."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.analysis import Fingerprint, analyse
from netlab import jsonl
from netlab.model import CONTROL
from netlab.oracle import Expectation
from netlab.verdict import Verdict

TECHNIQUES = ("dns", "tcp", "tls", "http", "throttled")


@dataclass(frozen=True, slots=True)
class VerdictRow:
    vantage: str
    url: str
    observed: Verdict
    expected: Expectation | None
    why: str
    measurement_uid: str = ""

    @property
    def matches(self) -> bool:
        return self.expected is None or self.expected.verdict == self.observed

    def to_json(self) -> dict[str, Any]:
        return {"vantage": self.vantage, "url": self.url, "verdict": self.observed.value,
                "expected": self.expected.verdict.value if self.expected else None,
                "expected_reason": self.expected.reason if self.expected else None,
                "match": self.matches, "why": self.why, "measurement_uid": self.measurement_uid}


@dataclass
class TechniqueScore:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None


@dataclass
class Score:
    rows: list[VerdictRow]
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)  # (expected, observed) -> n
    techniques: dict[str, TechniqueScore] = field(default_factory=dict)

    @property
    def mismatches(self) -> list[VerdictRow]:
        return [r for r in self.rows if not r.matches]

    @property
    def accuracy(self) -> float:
        scored = [r for r in self.rows if r.expected is not None]
        return sum(r.matches for r in scored) / len(scored) if scored else 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": len(self.rows), "mismatches": len(self.mismatches), "accuracy": self.accuracy,
            "confusion": [{"expected": e, "observed": o, "count": n} for (e, o), n in sorted(self.confusion.items())],
            "techniques": {t: {"precision": s.precision, "recall": s.recall, "tp": s.tp, "fp": s.fp, "fn": s.fn}
                           for t, s in self.techniques.items()},
        }


# A line of measurements.jsonl starts with its vantage (harness.campaign.tag_measurement).
_VANTAGE_HEAD = re.compile(rb'^\{"x_vantage": ?("(?:[^"\\]|\\.)*")')


def iter_measurements(paths: Iterable[Path], vantage: str | None = None) -> Iterator[dict[str, Any]]:
    """The measurements in ``paths``; with ``vantage``, only that vantage's: the others' lines are
    skipped by their first bytes, unparsed (a 60 KiB measurement costs far more to parse)."""
    for path in paths:
        with open(path, "rb") as f:
            for line in f:
                if vantage is not None and (head := _VANTAGE_HEAD.match(line)) \
                        and json.loads(head.group(1)) != vantage:
                    continue
                if line.strip():
                    m = jsonl.loads(line)
                    if vantage is None or m.get("x_vantage") == vantage:
                        yield m


def measurement_files(result_dirs: Iterable[Path]) -> list[Path]:
    return [Path(d) / "measurements.jsonl" for d in result_dirs]


def verdict_rows(files: list[Path], expectations: dict[tuple[str, str], Expectation],
                 fingerprints: list[Fingerprint]) -> list[VerdictRow]:
    """Two streaming passes: the control's measurements first, then every vantage's against them,
    so memory holds one control measurement per target, not the whole run."""
    controls: dict[str, tuple[Any, ...]] = {}
    for m in iter_measurements(files, vantage=CONTROL):
        controls[sys.intern(m["input"])] = _slim(m["test_keys"])
    rows = []
    for m in iter_measurements(files):
        vantage = sys.intern(m.get("x_vantage", m.get("probe_network_name")))
        url = sys.intern(m["input"])
        control = controls.get(url)
        result = analyse(m["test_keys"], None if control is None else _unslim(control), fingerprints)
        rows.append(VerdictRow(vantage, url, result.verdict, expectations.get((vantage, url)), result.why,
                               m.get("measurement_uid", "")))
    # A vantage that produced nothing for a measured target (its worker failed) is a mismatch too.
    seen = {(r.vantage, r.url) for r in rows}
    urls = {r.url for r in rows}
    for (vantage, url), exp in expectations.items():
        if url in urls and (vantage, url) not in seen:
            rows.append(VerdictRow(vantage, url, Verdict.CONTROL_FAILED, exp, "no measurement"))
    rows.sort(key=lambda r: (r.url, r.vantage))
    return rows


# What the analysis needs of a control measurement. Memory holds one per target for the whole
# scoring pass, so it is kept as a tuple (no bodies, no certificates, of the DNS queries only
# which engine answered and how) and made a dict again only while one measurement is analysed.
CONTROL_KEYS = ("x_failed_stage", "failure", "x_status_code", "x_title", "x_body_length", "x_body_seconds")


def _slim(keys: dict[str, Any]) -> tuple[Any, ...]:
    resolved = keys.get("x_resolved") or {}
    queries = tuple((q.get("engine"), q.get("failure")) for q in keys.get("queries") or [])
    return (*(keys.get(k) for k in CONTROL_KEYS), tuple(resolved.get("system") or ()),
            tuple(resolved.get("public") or ()), queries)


def _unslim(slim: tuple[Any, ...]) -> dict[str, Any]:
    n = len(CONTROL_KEYS)
    control = dict(zip(CONTROL_KEYS, slim[:n], strict=True))
    control["x_resolved"] = {"system": list(slim[n]), "public": list(slim[n + 1])}
    control["queries"] = [{"engine": e, "failure": f} for e, f in slim[n + 2]]
    return control


def score(rows: list[VerdictRow]) -> Score:
    s = Score(rows=rows, techniques={t: TechniqueScore() for t in TECHNIQUES})
    for r in rows:
        if r.expected is None:
            continue
        exp, obs = r.expected.verdict, r.observed
        s.confusion[(exp.value, obs.value)] += 1
        for tech, ts in s.techniques.items():
            if exp == obs and exp.technique == tech:
                ts.tp += 1
            else:
                if obs.technique == tech and exp != obs:
                    ts.fp += 1
                if exp.technique == tech and exp != obs:
                    ts.fn += 1
    return s
