"""Scoring and OONI's keys while the campaign writes: every measurement is written once.

A measurement's verdict (``x_verdict``) and OONI's keys need the control's measurement of its URL.
The control vantage measures the same targets in the same order at the same time, so most
measurements find it already there: they are scored, annotated and written as they arrive
(``LiveScorer.add``). Two kinds wait, in arrival order:

- one whose URL the control has not answered yet waits in memory until it does (a few MB: the
  campaign keeps the other vantages within a few jobs of the control, harness.campaign.ControlPace),
  or in the side file when ``HOLD_BYTES`` are waiting already;
- one whose probe resolved an address whose endpoints the control did not measure itself (a
  forged DNS answer) waits for the test helper's endpoint pass after the campaign
  (harness.ooni.measure_th_endpoints), in the side file.

``finish`` scores and annotates what waited and appends it to measurements.jsonl. Nothing is
read back but the side file: a 100,000-measurement run (6.7 GB) used to be written, then read and
written again by the scoring pass, which on a 2-core machine spent 40 s on it, bound by the second
6.7 GB going to disk. A measurement is parsed once on arrival (what harness.digest keeps for the
test helper's pass comes from the same parse); one that waits is kept as its bytes, a fraction of
the parsed dicts' memory, and parsed again when it is written.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

from harness import ooni
from harness.analysis import Fingerprint
from harness.digest import RunDigest
from harness.score import VerdictRow, iter_measurements, measurement_row
from netlab import jsonl
from netlab.model import CONTROL
from netlab.oracle import Expectation

#: Measurements waiting in memory for their URL's control measurement, in bytes; past that, one
#: that has to wait does so in the side file. (The campaign paces the vantages to the control: about
#: two jobs per concurrency slot, 128 at the default 64, some 9 MB of 64 KiB pages.)
HOLD_BYTES = 16 << 20
#: The side file, in the results folder while the campaign runs; removed by ``finish``.
LATER = "measurements.later.jsonl"


class LiveScorer:
    """What ``harness run`` does with each measurement the campaign hands it (``add``), then once
    the campaign and the test helper's pass are over (``finish``)."""

    def __init__(self, out_dir: Path, fingerprints: list[Fingerprint], *, control: bool = True) -> None:
        """``control``: the campaign measures from the control vantage too (else no measurement
        waits for a control that will not come)."""
        self.out_dir = Path(out_dir)
        self._control = control
        self.path = self.out_dir / "measurements.jsonl"
        self.digest = RunDigest()
        self.rows: list[VerdictRow] = []
        self._fingerprints = fingerprints
        # The views arrive with the control's measurements, in the digest: the annotator reads the
        # same dict. The test helper's endpoints are added in finish().
        self._annotator = ooni.Annotator(None)
        self._annotator.controls = self.digest.views
        self._seen: dict[tuple[str, str], Path] = {}
        self._sink: BinaryIO = open(self.path, "wb")  # noqa: SIM115 - closed by finish() or close()
        self._waiting: dict[str, list[bytes]] = {}  # url -> lines, until its control comes
        self._held = 0
        self._later: BinaryIO | None = None

    def add(self, vantage: str, raw: bytes) -> None:
        """One measurement as the worker wrote it (JSON bytes), from ``vantage``."""
        line = jsonl.vantage_line(vantage, raw)
        m = jsonl.loads(line)
        self.digest.add_measurement(vantage, m)
        url = m["input"]
        if vantage == CONTROL:
            self._write(m)
            for held in self._waiting.pop(url, ()):
                self._held -= len(held)
                self._place(jsonl.loads(held), held)
        elif url in self.digest.controls or not self._control:
            self._place(m, line)
        elif self._held + len(line) > HOLD_BYTES:
            # The newest would wait the longest: those already held are the first to go.
            self._put_aside(line)
        else:
            self._waiting.setdefault(url, []).append(line)
            self._held += len(line)

    def finish(self, expectations: dict[tuple[str, str], Expectation], *, scored: bool = True) -> list[VerdictRow]:
        """Score and annotate what waited (the test helper's endpoints now known: ``th_endpoints.jsonl``),
        append it, close the file; the rows, each with its expectation. ``scored=False`` (the run ended
        in a lab fault: its measurements are not scored) leaves ``x_verdict`` out of every line."""
        try:
            self._annotator.add_th_endpoints(ooni.load_th_endpoints(self.out_dir))
            for lines in self._waiting.values():  # their control never came: no OONI comparison
                for line in lines:
                    self._write(jsonl.loads(line))
            self._waiting.clear()
            if self._later is not None:
                self._later.close()
                self._later = None
                for m in iter_measurements([self.out_dir / LATER]):
                    self._write(m)
                (self.out_dir / LATER).unlink()
        finally:
            self.close()
        if not scored:
            ooni.finalize(self.out_dir, unscored=True)
        return [replace(r, expected=expectations.get((r.vantage, r.url))) for r in self.rows]

    def close(self) -> None:
        """Close the files. What still waits (a run interrupted or failed before ``finish``) is
        appended as it came, without its OONI keys and verdict: nothing measured is lost."""
        try:
            for lines in self._waiting.values():
                self._sink.writelines(lines)
            self._waiting.clear()
            if self._later is not None:
                self._later.close()
                self._later = None
                with open(self.out_dir / LATER, "rb") as later:
                    shutil.copyfileobj(later, self._sink)
        finally:
            self._sink.close()
            (self.out_dir / LATER).unlink(missing_ok=True)

    def _place(self, m: dict[str, Any], line: bytes) -> None:
        """Write ``m`` now, or after the test helper's pass when it needs endpoints the control did
        not measure."""
        if m.get("test_name") == ooni.WEB and ooni.unmeasured_addresses(
                m["input"], ooni.probe_addresses(m["test_keys"]), self.digest.control_endpoints):
            self._put_aside(line)
        else:
            self._write(m)

    def _put_aside(self, line: bytes) -> None:
        if self._later is None:
            self._later = open(self.out_dir / LATER, "wb")  # noqa: SIM115 - closed by finish() or close()
        self._later.write(line)

    def _write(self, m: dict[str, Any]) -> None:
        row = measurement_row(m, self.digest.controls, self._fingerprints, {}, self._seen, self.path)
        self.rows.append(row)
        self._annotator.annotate(m, row.observed.value)
        self._sink.write(jsonl.dumps(m) + b"\n")
