"""Verdicts vs ground truth: confusion matrix, precision and recall per technique, mismatches."""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

from harness.analysis import Fingerprint, analyse
from harness.errors import ResultsError
from netlab import jsonl
from netlab.model import CONTROL
from netlab.oracle import Expectation
from netlab.verdict import Verdict

if TYPE_CHECKING:  # harness.calls imports this module
    from harness.calls import OoniCall

TECHNIQUES = ("dns", "tcp", "tls", "http", "quic", "throttled")


# Why an expected (vantage, target) has no measurement (VerdictRow.no_measurement).
PROBE_ERROR = "probe_error"  # the worker answered the job with an error (run.json "errors")
TIMEOUT = "timeout"  # the job ran past job_timeout
MISSING = "missing"  # no line at all for the job: the worker crashed or the run was cut short
NO_MEASUREMENT_REASONS = (PROBE_ERROR, TIMEOUT, MISSING)


@dataclass(frozen=True, slots=True)
class VerdictRow:
    vantage: str
    url: str
    observed: Verdict | OoniCall  # OONI's pair when an analysis is scored at OONI's level
    expected: Expectation | None
    why: str
    measurement_uid: str = ""
    no_measurement: str = ""  # one of NO_MEASUREMENT_REASONS when the expected pair was not measured

    @property
    def matches(self) -> bool:
        # Nothing measured is never a match, whatever the expectation says.
        if self.no_measurement:
            return False
        return self.expected is None or self.expected.verdict == self.observed

    @property
    def label(self) -> str:
        """The observed verdict as reports show it: with the reason when nothing was measured."""
        return f"{self.observed.value} ({self.no_measurement})" if self.no_measurement else self.observed.value

    def to_json(self) -> dict[str, Any]:
        return {"vantage": self.vantage, "url": self.url, "verdict": self.observed.value,
                "expected": self.expected.verdict.value if self.expected else None,
                "expected_reason": self.expected.reason if self.expected else None,
                "match": self.matches, "why": self.why, "measurement_uid": self.measurement_uid,
                "no_measurement": self.no_measurement or None}


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
    def scored(self) -> int:
        """Rows with an expectation (the ones accuracy counts)."""
        return sum(1 for r in self.rows if r.expected is not None)

    @property
    def unmeasured(self) -> Counter[str]:
        """Expected pairs without a measurement, by reason (probe_error, timeout, missing)."""
        return Counter(r.no_measurement for r in self.rows if r.no_measurement)

    @property
    def accuracy(self) -> float:
        # Nothing scored is not 100%: a gate that measured nothing must not look green.
        scored = [r for r in self.rows if r.expected is not None]
        return sum(r.matches for r in scored) / len(scored) if scored else 0.0

    @property
    def passed(self) -> bool:
        """The gate: something was scored and every scored verdict matches."""
        return self.scored > 0 and not self.mismatches

    def to_json(self) -> dict[str, Any]:
        unmeasured = self.unmeasured
        return {
            "rows": len(self.rows), "scored": self.scored, "mismatches": len(self.mismatches),
            "accuracy": self.accuracy, "passed": self.passed,
            "no_measurement": {k: unmeasured.get(k, 0) for k in NO_MEASUREMENT_REASONS},
            "confusion": [{"expected": e, "observed": o, "count": n} for (e, o), n in sorted(self.confusion.items())],
            "techniques": {t: {"precision": s.precision, "recall": s.recall, "tp": s.tp, "fp": s.fp, "fn": s.fn}
                           for t, s in self.techniques.items()},
        }


def iter_measurements(paths: Iterable[Path], vantage: str | None = None) -> Iterator[dict[str, Any]]:
    """The measurements in ``paths``; with ``vantage``, only that vantage's: the others' lines are
    skipped by their first bytes, unparsed (a 60 KiB measurement costs far more to parse).

    A file that is missing, or a line that is not a measurement (a run cut short mid-write leaves a
    truncated last line), raises ResultsError naming the file and the line."""
    for path in paths:
        with _open(path) as f:
            for number, line in enumerate(f, 1):
                if vantage is not None and jsonl.other_vantage(line, vantage):
                    continue
                if line.strip():
                    m = _parse_line(path, number, line)
                    if vantage is None or m.get("x_vantage") == vantage:
                        yield m


def measurement_vantage(m: dict[str, Any]) -> str:
    """The vantage a measurement was taken from: the lab's x_vantage, else OONI's probe_network_name."""
    vantage = m.get("x_vantage") or m.get("probe_network_name")
    if not isinstance(vantage, str):
        raise ResultsError(f"measurement {m.get('measurement_uid')} names no vantage (x_vantage, probe_network_name)")
    return vantage


#: Read buffer for measurements.jsonl: a measurement line (a 64 KiB body) then comes in one read, not
#: in eight 8 KiB ones joined together.
READ_BUFFER = 1 << 20


def _open(path: Path) -> BinaryIO:
    try:
        return open(path, "rb", buffering=READ_BUFFER)
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such file; {Path(path).parent} is not a complete results folder "
                           "of `harness run`") from None
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read it ({exc.strerror})") from None


def replace_measurements(new: Path, path: Path) -> None:
    """Put ``new`` (a rewritten measurements.jsonl) in place of ``path``. Not one os.replace: ext4
    (auto_da_alloc) writes the new file's blocks out inside a rename over an existing file, about
    1.5 s per GiB of measurements (10 s of a 100,000-measurement run). The old file is moved aside
    first, so neither rename replaces a file, and is deleted after; should the second rename never
    happen, both files are still there, beside each other."""
    aside = path.with_name(path.name + ".old")
    aside.unlink(missing_ok=True)  # a leftover, so the first rename replaces nothing either
    os.rename(path, aside)
    os.rename(new, path)
    aside.unlink()


def _parse_line(path: Path, number: int, line: bytes) -> dict[str, Any]:
    try:
        m = jsonl.loads(line)
    except ValueError as exc:  # json's and orjson's decode errors, bad UTF-8
        raise ResultsError(f"{path}:{number}: not a JSON measurement ({exc}); the file is truncated or "
                           "corrupt") from None
    if not isinstance(m, dict) or not isinstance(m.get("input"), str) or not isinstance(m.get("test_keys"), dict):
        raise ResultsError(f"{path}:{number}: not a measurement (a JSON object with input and test_keys)")
    return m


def measurement_files(result_dirs: Iterable[Path]) -> list[Path]:
    return [Path(d) / "measurements.jsonl" for d in result_dirs]


def verdict_rows(files: list[Path], expectations: dict[tuple[str, str], Expectation],
                 fingerprints: list[Fingerprint], expected: Iterable[tuple[str, str]] | None = None,
                 errors: Iterable[dict[str, Any]] = ()) -> list[VerdictRow]:
    """One row per measurement, and one no_measurement row (a mismatch) for every pair of
    ``expected`` (default: every pair of ``expectations``) that has none, with the reason from
    the campaign's ``errors`` (run.json): probe_error, timeout, or missing when the worker never
    answered. A (vantage, url) measured twice (the same folder given twice, overlapping shards)
    raises ResultsError: counting it twice would score the run as better than it is.

    Two streaming passes: the control's measurements first, then every vantage's against them,
    so memory holds one control measurement per target, not the whole run. (`harness run` scores
    each measurement as it arrives instead: harness.streaming, with measurement_row.)"""
    controls = {sys.intern(m["input"]): ControlSummary.of(m["test_keys"])
                for m in iter_measurements(files, vantage=CONTROL)}
    rows = []
    seen: dict[tuple[str, str], Path] = {}
    for path in files:
        for m in iter_measurements([path]):
            rows.append(measurement_row(m, controls, fingerprints, expectations, seen, path))
    rows += unmeasured_rows(expectations, seen, expected, errors)
    rows.sort(key=lambda r: (r.url, r.vantage))
    return rows


def measurement_row(m: dict[str, Any], controls: dict[str, ControlSummary], fingerprints: list[Fingerprint],
                    expectations: dict[tuple[str, str], Expectation], seen: dict[tuple[str, str], Path],
                    path: Path) -> VerdictRow:
    """The row of measurement ``m`` of file ``path``, against the control's summary of its URL
    (``controls``). ``seen``: the pairs measured so far, each with its file; a (vantage, url)
    measured twice raises ResultsError, as counting it twice would score the run as better than it is."""
    vantage, url = sys.intern(measurement_vantage(m)), sys.intern(m["input"])
    if (vantage, url) in seen:
        raise measured_twice(vantage, url, seen[(vantage, url)], path)
    seen[(vantage, url)] = path
    control = controls.get(url)
    result = analyse(m["test_keys"], None if control is None else control.test_keys(), fingerprints)
    return VerdictRow(vantage, url, result.verdict, expectations.get((vantage, url)), result.why,
                      m.get("measurement_uid", ""))


def measured_twice(vantage: str, url: str, first: Path, path: Path) -> ResultsError:
    where = f"in {first} and in {path}" if first != path else f"twice in {path}"
    return ResultsError(f"{vantage} {url} is measured more than once ({where}): give each results "
                        "folder once, and only shards of one campaign together")


def unmeasured_rows(expectations: dict[tuple[str, str], Expectation], seen: Iterable[tuple[str, str]],
                    expected: Iterable[tuple[str, str]] | None = None, errors: Iterable[dict[str, Any]] = ()
                    ) -> list[VerdictRow]:
    """A no_measurement row (a mismatch) for every pair of ``expected`` (default: every pair of
    ``expectations``) not in ``seen``, with its reason from the campaign's ``errors``."""
    seen = set(seen)
    failed = {(e.get("vantage"), e.get("url")): e for e in errors if isinstance(e, dict)}
    rows = []
    for key in (expectations if expected is None else expected):
        if key not in seen:
            reason, why = no_measurement_reason(failed.get(key))
            rows.append(VerdictRow(key[0], key[1], Verdict.NO_MEASUREMENT, expectations.get(key), why,
                                   no_measurement=reason))
    return rows


def no_measurement_reason(error: dict[str, Any] | None) -> tuple[str, str]:
    """(reason, explanation) for an expected pair without a measurement, from its campaign error."""
    if error is None:
        return MISSING, "the probe worker never answered this job (no measurement, no error)"
    text = str(error.get("error") or "")
    # Workers before the "timeout" kind reported a timeout as a crash "job exceeded N s".
    if error.get("kind") == "timeout" or text.startswith("job exceeded"):
        return TIMEOUT, f"the job timed out: {text}"
    return PROBE_ERROR, f"the probe failed ({error.get('kind') or 'error'}): {text}"


# The control's test keys ControlSummary keeps, in its fields' order.
CONTROL_KEYS = ("x_failed_stage", "failure", "x_status_code", "x_title", "x_body_length", "x_body_seconds",
                "x_body_stall_seconds", "x_body_sha256", "x_quic_failure")


class ControlSummary(NamedTuple):
    """What the analysis (harness.analysis.analyse) needs of the control's measurement of a URL,
    for every probe type. Memory holds one per target for the whole scoring pass, so it is a tuple
    (no bodies, no certificates, of the DNS queries only which engine answered and how), made test
    keys again (``test_keys``) only while one measurement is analysed. (OONI's keys need another
    view of the control's web measurements: harness.ooni_rules.ControlView, the test helper's.)"""
    failed_stage: str | None
    failure: str | None
    status_code: int | None
    title: str | None
    body_length: int | None
    body_seconds: float | None
    body_stall_seconds: float | None
    body_sha256: str | None  # a blockpage fingerprint never counts on the control's own page
    quic_failure: str | None  # the web probe's QUIC step (web_quic): did the control's HTTP/3 work?
    system: tuple[str, ...]  # x_resolved: the addresses each resolver gave
    public: tuple[str, ...]
    queries: tuple[tuple[str | None, str | None], ...]  # (engine, failure) of each DNS query

    @classmethod
    def of(cls, keys: dict[str, Any]) -> ControlSummary:
        resolved = keys.get("x_resolved") or {}
        get = keys.get
        return cls(get("x_failed_stage"), get("failure"), get("x_status_code"), get("x_title"), get("x_body_length"),
                   get("x_body_seconds"), get("x_body_stall_seconds"), get("x_body_sha256"), get("x_quic_failure"),
                   tuple(resolved.get("system") or ()), tuple(resolved.get("public") or ()),
                   tuple((q.get("engine"), q.get("failure")) for q in keys.get("queries") or []))

    def test_keys(self) -> dict[str, Any]:
        control: dict[str, Any] = dict(zip(CONTROL_KEYS, self[:len(CONTROL_KEYS)], strict=True))
        control["x_resolved"] = {"system": list(self.system), "public": list(self.public)}
        control["queries"] = [{"engine": e, "failure": f} for e, f in self.queries]
        return control


def score(rows: list[VerdictRow], techniques: tuple[str, ...] = TECHNIQUES) -> Score:
    """The score of ``rows``; ``techniques``: the families precision and recall are given for (the
    lab's, or OONI's blocking values when the rows hold OONI calls: harness.calls)."""
    s = Score(rows=rows, techniques={t: TechniqueScore() for t in techniques})
    for r in rows:
        if r.expected is None:
            continue
        exp, obs = r.expected.verdict, r.observed
        s.confusion[(exp.value, obs.value)] += 1
        # Each row touches at most the two techniques it names (a 100,000-row run: once each).
        if exp == obs:
            if (hit := s.techniques.get(exp.technique)) is not None:
                hit.tp += 1
            continue
        if (false_pos := s.techniques.get(obs.technique)) is not None:
            false_pos.fp += 1
        if (missed := s.techniques.get(exp.technique)) is not None:
            missed.fn += 1
    return s
