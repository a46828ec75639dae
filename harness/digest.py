"""What the steps after a campaign need of its measurements, gathered while the campaign writes them.

Scoring needs a summary of the control's measurement of every URL (harness.score), OONI's keys the
same in the test helper's shape (harness.ooni_rules.ControlView), and the test helper's endpoint
pass the endpoints the control measured and the addresses the other vantages resolved
(harness.ooni.th_jobs). Each measurement is parsed once as it arrives, and what those need is kept
(small summaries, one per URL), and each measurement is scored and given OONI's keys as it arrives
(harness.streaming), against what is gathered here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from harness.ooni import WEB, control_endpoints, probe_addresses
from harness.ooni_rules import ControlView
from harness.score import ControlSummary
from netlab import jsonl
from netlab.model import CONTROL

#: The types of the values a dict may hold to be shared (RunDigest._dicts).
PLAIN = (str, int, float, bool)


@dataclass
class RunDigest:
    #: url -> harness.score's summary of the control's measurement (every probe type)
    controls: dict[str, ControlSummary] = field(default_factory=dict)
    #: url -> OONI's view of the control's web measurement
    views: dict[str, ControlView] = field(default_factory=dict)
    #: url -> the endpoints ("ip:port") the control's web measurement connected to, depth 0
    #: (tuples, not sets or dicts, here and below: a few items each, 50,000 URLs in a large run)
    control_endpoints: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: url -> the addresses the other vantages' web measurements resolved (in order, once each)
    probe_addresses: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: One copy of each string the summaries hold (addresses, failures, header names and values
    #: repeat across URLs): a 50,000-URL run keeps ~50 MB less.
    _strings: dict[str, str] = field(default_factory=dict, repr=False)
    #: One copy of each dict of plain values the views hold (an endpoint's outcome, a header set):
    #: the same across a site's URLs. Never changed once made (harness.ooni_rules reads them).
    _dicts: dict[tuple[tuple[str, type, Any], ...], dict[str, Any]] = field(default_factory=dict, repr=False)

    def add(self, vantage: str, raw: bytes) -> None:
        """One measurement as the worker wrote it (JSON bytes), from ``vantage``."""
        self.add_measurement(vantage, jsonl.loads(raw))

    def add_measurement(self, vantage: str, m: dict[str, Any]) -> None:
        url, tk, web = self._share(m["input"]), m["test_keys"], m.get("test_name") == WEB
        if vantage == CONTROL:
            self.controls[url] = ControlSummary(*self._share(tuple(ControlSummary.of(tk))))
            if web:
                view = ControlView.of(tk, url)
                for f in fields(view):
                    setattr(view, f.name, self._share(getattr(view, f.name)))
                self.views[url] = view
                self.control_endpoints[url] = tuple(self._share(e) for e in sorted(control_endpoints(tk)))
        elif web:
            seen = self.probe_addresses.get(url, ())
            new = tuple(self._share(ip) for ip in probe_addresses(tk) if ip not in seen)
            if new:
                self.probe_addresses[url] = seen + new

    def forget_addresses(self) -> None:
        """Drop what only the test helper's endpoint pass needed (once it is done)."""
        self.control_endpoints.clear()
        self.probe_addresses.clear()

    def _share(self, value: Any) -> Any:
        """``value`` with each string replaced by the one copy kept of it (dicts, lists, tuples
        rebuilt alike), and each non-empty dict of plain values by the one copy of it."""
        if isinstance(value, str):
            return self._strings.setdefault(value, value)
        if isinstance(value, dict):
            shared = {self._share(k): self._share(v) for k, v in value.items()}
            if shared and all(v is None or type(v) in PLAIN for v in shared.values()):
                # By type too: {"status": True} is not {"status": 1}.
                return self._dicts.setdefault(tuple((k, type(v), v) for k, v in shared.items()), shared)
            return shared
        if isinstance(value, list):
            return [self._share(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self._share(v) for v in value)
        return value
