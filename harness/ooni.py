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

A run gets these keys as the campaign writes each measurement (``Annotator``, harness.streaming),
with the control summaries gathered from the same lines (harness.digest); ``finalize`` does the
same for a folder on its own in two streaming passes (controls first, then every line). Memory
holds one small control summary per URL.

OONI's test helper also connects to the addresses the probe resolved. The control learns them
only from the campaign's measurements, so while the lab is still up ``measure_th_endpoints``
has the control vantage measure every probe address it did not reach itself (``probes.th``) and
writes ``th_endpoints.jsonl`` beside the measurements; ``finalize`` reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.ooni_rules import (
    ControlView,
    compare_http,
    decide,
    depth_of,
    dns_consistency,
    experiment_failure,
    final_response,
    lab_asn,
)
from harness.score import iter_measurements, replace_measurements
from netlab import jsonl
from netlab.addressing import is_lab_bogon
from netlab.errors import LabFault
from netlab.model import CONTROL
from probes.streams import endpoint
from probes.th import helper_ports

if TYPE_CHECKING:
    from harness.digest import RunDigest
    from netlab.backends.base import RunningLab

WEB = "web_connectivity"
NO_CONTROL = "unknown_failure: no control measurement for this URL"
TH_ENDPOINTS = "th_endpoints.jsonl"
TH_ARGV = ["python3", "-m", "probes.th"]
#: Seconds the control gets for the endpoint pass (connect and TLS timeouts bound each endpoint).
TH_TIMEOUT = 300.0


def probe_addresses(tk: dict[str, Any]) -> list[str]:
    """Every address the probe resolved for the URL (depth 0, both resolvers): what OONI's probe
    sends its test helper."""
    resolved = tk.get("x_resolved") or {}
    return list(dict.fromkeys([*(resolved.get("system") or []), *(resolved.get("public") or [])]))


def control_endpoints(tk: dict[str, Any]) -> set[str]:
    """The endpoints ("ip:port") the control's web measurement connected to, depth 0."""
    return {endpoint(e["ip"], e["port"]) for e in tk.get("tcp_connect") or [] if depth_of(e) == 0}


def th_jobs(path: Path, digest: RunDigest | None = None) -> list[dict[str, Any]]:
    """For each URL, the probes' non-bogon addresses whose helper endpoints the control did not
    measure in its own run: from ``digest`` (gathered during the campaign), else from one read of
    ``path``."""
    if digest is None:
        from harness.digest import RunDigest

        digest = RunDigest()
        for m in iter_measurements([path]):
            digest.add_measurement(m.get("x_vantage") or "", m)
    wanted = {url: unmeasured_addresses(url, addresses, digest.control_endpoints)
              for url, addresses in digest.probe_addresses.items()}
    return [{"url": url, "addresses": ips} for url, ips in wanted.items() if ips]


def unmeasured_addresses(url: str, addresses: Iterable[str], measured: Mapping[str, Collection[str]]) -> list[str]:
    """The non-bogon ``addresses`` of ``url`` with an endpoint the control did not measure
    (``measured``: url -> its endpoints): what the test helper's pass measures for it. None when
    the control has no web measurement of the URL (then there is nothing to add to)."""
    if url not in measured:
        return []
    ports = helper_ports(url)
    return [ip for ip in addresses
            if not is_lab_bogon(ip) and any(endpoint(ip, p) not in measured[url] for p in ports)]


async def measure_th_endpoints(lab: RunningLab, context: dict[str, Any], out_dir: Path,
                               digest: RunDigest | None = None) -> int:
    """Have the control vantage (``context``: its ProbeContext as JSON) measure the probes'
    endpoints it has not measured, into ``out_dir/th_endpoints.jsonl``; the number of URLs.
    ``digest``: what the campaign gathered (else the measurements are read for it)."""
    path = Path(out_dir) / "measurements.jsonl"
    jobs = th_jobs(path, digest) if digest is not None or path.exists() else []
    target = Path(out_dir) / TH_ENDPOINTS
    if not jobs:
        target.unlink(missing_ok=True)
        return 0
    proc = await lab.spawn(lab.state.vantages[CONTROL].host, TH_ARGV)
    try:
        stdout, stderr = await asyncio.wait_for(
            proc.communicate(json.dumps({"context": context, "jobs": jobs}).encode()), TH_TIMEOUT)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise LabFault(f"the test-helper endpoint pass in {CONTROL} failed (exit status {proc.returncode}): "
                       f"{stderr.decode(errors='replace')[-2000:]}")
    target.write_bytes(stdout)
    return len(jobs)


def load_th_endpoints(out_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """url -> the endpoints ``measure_th_endpoints`` measured for it (none without the file)."""
    path = Path(out_dir) / TH_ENDPOINTS
    if not path.exists():
        return {}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            out.setdefault(entry["url"], {}).update(entry.get("endpoints") or {})
    return out


def finalize(out_dir: Path, verdicts: dict[tuple[str, str], str] | None = None, *, unscored: bool = False) -> int:
    """Fill the OONI keys of every web measurement in ``out_dir/measurements.jsonl``; the number
    of measurements rewritten. ``verdicts``: each one's x_verdict; ``unscored``: none has one (a
    run that ended in a lab fault). (``harness run`` does it while the campaign writes instead:
    harness.streaming.)"""
    path = Path(out_dir) / "measurements.jsonl"
    if not path.exists():
        return 0
    annotator = Annotator(out_dir)
    for m in iter_measurements([path], vantage=CONTROL):
        annotator.add_control(m)
    tmp = path.with_suffix(".jsonl.tmp")
    count = 0
    with open(tmp, "wb") as sink:
        for m in iter_measurements([path]):
            vantage = m.get("x_vantage") or m.get("probe_network_name") or ""
            if unscored:
                m["test_keys"].pop("x_verdict", None)
            count += annotator.annotate(m, verdicts.get((vantage, m["input"])) if verdicts is not None else KEEP)
            sink.write(jsonl.dumps(m) + b"\n")
    replace_measurements(tmp, path)
    return count


#: ``Annotator.annotate``'s verdict when there is none to write (x_verdict stays unset).
KEEP = object()


class Annotator:
    """OONI's keys for a run's measurements, one at a time: every control measurement first
    (``add_control``, which keeps a small summary per URL), then each measurement (``annotate``)."""

    def __init__(self, out_dir: Path | None) -> None:
        """``out_dir``: the results folder whose ``th_endpoints.jsonl`` the control views get (None:
        none yet, ``add_th_endpoints`` later)."""
        self.controls: dict[str, ControlView] = {}
        self._extra = load_th_endpoints(out_dir) if out_dir is not None else {}

    def add_th_endpoints(self, extra: dict[str, dict[str, dict[str, Any]]]) -> None:
        """The test helper's endpoints (``load_th_endpoints``), for the control views there are and
        those still to come."""
        for url, endpoints in extra.items():
            self._extra.setdefault(url, {}).update(endpoints)
            if url in self.controls:
                self.controls[url].add_endpoints(endpoints)

    def add_control(self, m: dict[str, Any]) -> None:
        if m.get("test_name") == WEB:
            view = self.controls[m["input"]] = ControlView.of(m["test_keys"], m["input"])
            view.add_endpoints(self._extra.get(m["input"], {}))

    def annotate(self, m: dict[str, Any], verdict: str | object | None = KEEP) -> bool:
        """Fill ``m``'s OONI keys (in place) if it is a web measurement (then True), and set its
        ``x_verdict`` unless ``verdict`` is KEEP."""
        web = m.get("test_name") == WEB
        if web:
            fill(m, self.controls.get(m["input"]))
        if verdict is not KEEP:
            m["test_keys"]["x_verdict"] = verdict
        return web


def fill(m: dict[str, Any], control: ControlView | None) -> None:
    """Add the OONI keys to one web_connectivity measurement (in place)."""
    tk = m["test_keys"]
    tk["client_resolver"] = m.get("resolver_ip")
    _annotate_answers(tk)
    th_failure = tk.get("x_th_failure")
    if control is None and th_failure is None:
        th_failure = NO_CONTROL
    probe_addrs = probe_addresses(tk)
    tk["control_failure"] = th_failure
    tk["http_experiment_failure"] = experiment_failure(tk)
    if th_failure is not None:
        # OONI without its test helper: nothing to compare with (the probe's own view stays).
        tk["control"] = ControlView.unreachable()
        tk.update({"dns_consistency": None, "body_length_match": None, "body_proportion": 0,
                   "status_code_match": None, "headers_match": None, "title_match": None})
        blocking, accessible = decide(tk, None, None, m["input"])
        tk["blocking"], tk["accessible"] = blocking, accessible
        return
    assert control is not None
    tk["control"] = control.th_response(probe_addrs)
    consistency = dns_consistency(m["input"], tk, control)
    tk["dns_consistency"] = consistency
    http = compare_http(final_response(tk), control)
    tk.update(http)
    tk["blocking"], tk["accessible"] = decide(tk, control, consistency, m["input"], http)


def _annotate_answers(tk: dict[str, Any]) -> None:
    """OONI's probe writes the ASN of every address it resolved; the lab's are private ASNs."""
    for q in tk.get("queries") or []:
        for a in q.get("answers") or []:
            ip = a.get("ipv4") or a.get("ipv6")
            if ip:
                asn = lab_asn(ip)
                a["asn"] = asn
                a["as_org_name"] = f"lab AS{asn}" if asn else ""
