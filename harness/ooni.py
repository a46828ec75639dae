"""OONI web_connectivity keys for a campaign's measurements (docs/ooni.md).

The probes write what they observed; OONI's comparison keys need the test helper's view of the
same URL. In the lab the control vantage plays the test helper: after the campaign, every web
measurement is paired with the control's measurement of its URL, and gets

- ``control``: the control's result in the shape of OONI's test-helper response
  (``dns``, ``tcp_connect``, ``tls_handshake``, ``http_request``, ``ip_info``);
- ``control_failure``, ``dns_consistency``, ``http_experiment_failure`` (OONI's final value),
  ``body_length_match``, ``body_proportion``, ``status_code_match``, ``headers_match``,
  ``title_match``, ``blocking``, ``accessible``, decided by OONI's web_connectivity rules
  (``harness.ooni_rules``);
- ``x_verdict``: the lab's finer verdict (docs/verdicts.md);
- ASNs on DNS answers and ``client_resolver``, as OONI's probe writes them.

``measurements.jsonl`` is rewritten in two streaming passes (controls first, then every line),
so memory holds one small control summary per URL.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness.ooni_rules import (
    ControlView,
    compare_http,
    decide,
    dns_consistency,
    experiment_failure,
    final_response,
    lab_asn,
)
from harness.score import iter_measurements
from netlab import jsonl
from netlab.model import CONTROL

WEB = "web_connectivity"
NO_CONTROL = "unknown_failure: no control measurement for this URL"


def finalize(out_dir: Path, verdicts: dict[tuple[str, str], str] | None = None) -> int:
    """Fill the OONI keys of every web measurement in ``out_dir/measurements.jsonl``; the number
    of measurements rewritten."""
    path = Path(out_dir) / "measurements.jsonl"
    if not path.exists():
        return 0
    controls: dict[str, ControlView] = {}
    for m in iter_measurements([path], vantage=CONTROL):
        if m.get("test_name") == WEB:
            controls[m["input"]] = ControlView.of(m["test_keys"])
    tmp = path.with_suffix(".jsonl.tmp")
    count = 0
    with open(tmp, "wb") as sink:
        for m in iter_measurements([path]):
            vantage = m.get("x_vantage") or m.get("probe_network_name") or ""
            if m.get("test_name") == WEB:
                fill(m, controls.get(m["input"]))
                count += 1
            if verdicts is not None:
                m["test_keys"]["x_verdict"] = verdicts.get((vantage, m["input"]))
            sink.write(jsonl.dumps(m) + b"\n")
    os.replace(tmp, path)
    return count


def fill(m: dict[str, Any], control: ControlView | None) -> None:
    """Add the OONI keys to one web_connectivity measurement (in place)."""
    tk = m["test_keys"]
    tk["client_resolver"] = m.get("resolver_ip")
    _annotate_answers(tk)
    th_failure = tk.get("x_th_failure")
    if control is None and th_failure is None:
        th_failure = NO_CONTROL
    probe_addrs = list((tk.get("x_resolved") or {}).get("system") or [])
    tk["control_failure"] = th_failure
    tk["http_experiment_failure"] = experiment_failure(tk)
    if th_failure is not None:
        # OONI without its test helper: nothing to compare with (the probe's own view stays).
        tk["control"] = ControlView.unreachable()
        tk.update({"dns_consistency": None, "body_length_match": None, "body_proportion": None,
                   "status_code_match": None, "headers_match": None, "title_match": None})
        blocking, accessible = decide(tk, None, None, m["input"])
        tk["blocking"], tk["accessible"] = blocking, accessible
        return
    assert control is not None
    tk["control"] = control.th_response(probe_addrs)
    consistency = dns_consistency(m["input"], tk, control)
    tk["dns_consistency"] = consistency
    tk.update(compare_http(final_response(tk), control))
    tk["blocking"], tk["accessible"] = decide(tk, control, consistency, m["input"])


def _annotate_answers(tk: dict[str, Any]) -> None:
    """OONI's probe writes the ASN of every address it resolved; the lab's are private ASNs."""
    for q in tk.get("queries") or []:
        for a in q.get("answers") or []:
            ip = a.get("ipv4") or a.get("ipv6")
            if ip:
                asn = lab_asn(ip)
                a["asn"] = asn
                a["as_org_name"] = f"lab AS{asn}" if asn else ""
