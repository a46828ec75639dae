"""Measurements -> verdicts (docs/verdicts.md).

A verdict is the first stage of the fetch where the vantage departs from what the control saw:
DNS (both the vantage's resolver and the direct query to the public resolver), then TCP, TLS,
HTTP, then throughput.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from netlab.addressing import is_lab_bogon
from netlab.errors import NetlabError
from netlab.oracle import THROTTLE_SECONDS
from netlab.verdict import Verdict

# Throughput far below control: the body takes over THROTTLE_SECONDS (the oracle's bound), at under
# this fraction of the control's rate. The rates leave out each body's longest silence
# (x_body_stall_seconds): a loaded machine can hold a body for a fraction of a second at once (a
# control's 64 KiB body, 1 ms when idle, took 0.197 s and hid a throttled vantage; an unshaped
# vantage's waited 0.61 s for its last 13 KB), where a throttled body trickles on through many
# silences (the demo's: eight, the longest 0.43 s of its 1.75 s).
THROTTLE_RATIO = 0.1
BODY_LENGTH_TOLERANCE = 0.7  # OONI's body_proportion threshold

DNS_RCODE_VERDICTS = {
    "dns_nxdomain_error": Verdict.DNS_NXDOMAIN,
    "dns_servfail_error": Verdict.DNS_SERVFAIL,
    "dns_refused_error": Verdict.DNS_REFUSED,
}
# An RST answering the SYN surfaces as ECONNREFUSED (connection_refused) at the socket: where the
# control connects, that RST was forged on the path, so the lab reports tcp.reset. (A refusal the
# control sees too is a site that is down.)
TCP_VERDICTS = {
    "generic_timeout_error": Verdict.TCP_TIMEOUT,
    "connection_reset": Verdict.TCP_RESET,
    "connection_refused": Verdict.TCP_RESET,
    "host_unreachable": Verdict.TCP_UNREACHABLE,
    "network_unreachable": Verdict.TCP_UNREACHABLE,
}
TLS_VERDICTS = {
    "connection_reset": Verdict.TLS_RESET,
    "generic_timeout_error": Verdict.TLS_TIMEOUT,
    "eof_error": Verdict.TLS_EOF,
    "ssl_invalid_hostname": Verdict.TLS_CERT_INVALID,
    "ssl_unknown_authority": Verdict.TLS_CERT_INVALID,
    "ssl_invalid_certificate": Verdict.TLS_CERT_INVALID,
}
# The quic probe's handshake (x_failed_stage "quic"): a dropped Initial times out; an ICMP error
# answering it (port or host unreachable) is connection_refused / host_unreachable.
QUIC_VERDICTS = {
    "generic_timeout_error": Verdict.QUIC_TIMEOUT,
    "connection_refused": Verdict.QUIC_RESET,
    "connection_reset": Verdict.QUIC_RESET,
    "host_unreachable": Verdict.QUIC_RESET,
}
HTTP_VERDICTS = {
    "connection_reset": Verdict.HTTP_RESET,
    "generic_timeout_error": Verdict.HTTP_TIMEOUT,
    "eof_error": Verdict.HTTP_EOF,
    # The site sent this vantage somewhere else than the control (server-side, only_for): a
    # response that differs, not a network failure.
    "http_invalid_redirect_location_host": Verdict.HTTP_DIFF,
    "unknown_failure: stopped after too many redirects": Verdict.HTTP_DIFF,
}


PATTERN_TYPES = ("full", "prefix", "contains", "regexp")


@dataclass(frozen=True)
class Fingerprint:
    """A blockpage fingerprint as OONI's blocking-fingerprints list writes them: where to look
    (``body`` or ``header.<name>``), how to match (``full``, ``prefix``, ``contains``, ``regexp``)
    and the pattern (ooni/data fingerprintdb.py gives these their meaning)."""

    name: str
    location: str = "body"
    pattern_type: str = "contains"
    pattern: str = ""
    regex: re.Pattern[str] | None = None  # regexp patterns, and the older {"body": REGEX} entries
    header_present: bool = False  # the older {"header": NAME}: the header is there at all

    def matches(self, body: str, headers: dict[str, str]) -> bool:
        if self.location == "body":
            return self._match(body)
        name = self.location.removeprefix("header.")
        values = [v for k, v in headers.items() if k.lower() == name]
        if self.header_present:
            return bool(values)
        return any(self._match(v) for v in values)

    def _match(self, text: str) -> bool:
        if self.regex is not None:
            return self.regex.search(text) is not None
        if self.pattern_type == "full":
            return text == self.pattern
        if self.pattern_type == "prefix":
            return text.startswith(self.pattern)
        return self.pattern in text


def load_fingerprints(extra: list[Path] | None = None, declared: list[dict[str, Any]] | None = None
                      ) -> list[Fingerprint]:
    """The built-in blockpage fingerprints, those of ``extra`` files (``--fingerprints``) and
    ``declared`` entries (a scenario's own blockpages); a file that cannot be read or is not a
    fingerprint list is a NetlabError naming it (exit 2)."""
    out = _fingerprints(json.loads(resources.files("harness").joinpath("fingerprints.json").read_text()))
    for p in extra or []:
        try:
            out += _fingerprints(json.loads(Path(p).read_text(encoding="utf-8")))
        except OSError as exc:
            raise NetlabError(f"--fingerprints {p}: cannot read it ({exc.strerror or exc})") from None
        except (ValueError, TypeError, KeyError, AttributeError, re.error) as exc:
            raise NetlabError(f"--fingerprints {p}: not a fingerprint file ({type(exc).__name__}: {exc}); "
                              'expected {"fingerprints": [{"name": ..., "location": "body" | "header.NAME", '
                              '"pattern_type": "full" | "prefix" | "contains" | "regexp", "pattern": ...}]} '
                              '(or {"name": ..., "body": REGEX | "header": NAME})') from None
    if declared:
        out += _fingerprints({"fingerprints": declared})
    return out


def _fingerprints(doc: dict[str, Any]) -> list[Fingerprint]:
    out = []
    for fp in doc["fingerprints"]:
        name = fp["name"]
        if not isinstance(name, str):
            raise ValueError(f"fingerprint {fp!r} needs a name")
        if fp.get("body"):
            out.append(Fingerprint(name, regex=re.compile(fp["body"], re.IGNORECASE)))
        elif fp.get("header"):
            out.append(Fingerprint(name, location=f"header.{fp['header'].lower()}", header_present=True))
        elif isinstance(fp.get("pattern"), str) and fp["pattern"]:
            location, kind = fp.get("location", "body"), fp.get("pattern_type", "contains")
            if location != "body" and not (isinstance(location, str) and location.startswith("header.")):
                raise ValueError(f"fingerprint {name!r}: location must be body or header.NAME, not {location!r}")
            if kind not in PATTERN_TYPES:
                raise ValueError(f"fingerprint {name!r}: pattern_type must be one of {', '.join(PATTERN_TYPES)}")
            regex = re.compile(fp["pattern"], re.DOTALL) if kind == "regexp" else None
            out.append(Fingerprint(name, location.lower(), kind, fp["pattern"], regex))
        else:
            raise ValueError(f"fingerprint {fp!r} needs a pattern (or a body or header)")
    return out


@dataclass(frozen=True)
class Analysis:
    verdict: Verdict
    why: str


def analyse(keys: dict[str, Any] | None, control: dict[str, Any] | None,
            fingerprints: list[Fingerprint] | None = None) -> Analysis:
    """The verdict of one vantage's web measurement (test_keys), given the control's."""
    if control is None:
        return Analysis(Verdict.CONTROL_FAILED, "no control measurement")
    if keys is None:
        return Analysis(Verdict.CONTROL_FAILED, "no measurement")
    fps = fingerprints if fingerprints is not None else load_fingerprints()
    if control.get("x_failed_stage"):
        lie = _lying_resolver(keys, control)
        if lie is not None:
            return lie
        if keys.get("x_failed_stage"):
            return Analysis(Verdict.SITE_DOWN, f"control fails too ({control.get('failure')})")
        return Analysis(Verdict.CONTROL_FAILED, f"control failed: {control.get('failure')}")

    mismatch = False
    dns = _dns_stage(keys, control)
    if isinstance(dns, Analysis):
        return dns
    mismatch = dns

    stage = keys.get("x_failed_stage")
    failure = keys.get("failure") or ""
    if stage == "tcp":
        return _stage_verdict(mismatch, TCP_VERDICTS.get(failure, Verdict.TCP_UNREACHABLE), failure)
    if stage == "tls":
        return _stage_verdict(mismatch, TLS_VERDICTS.get(failure, Verdict.TLS_ALERT), failure)
    if stage == "http":
        return _stage_verdict(mismatch, HTTP_VERDICTS.get(failure, Verdict.HTTP_EOF), failure)
    if stage == "quic":
        return _stage_verdict(mismatch, QUIC_VERDICTS.get(failure, Verdict.QUIC_TIMEOUT), failure)
    if stage == "dns":  # a redirect hop's lookup, or one _dns_stage did not classify
        return Analysis(DNS_RCODE_VERDICTS.get(failure, Verdict.DNS_TIMEOUT), f"lookup failed: {failure}")

    body, headers = _final_body(keys)
    # A page the control received too is the site's own content, whatever it says.
    same_page = keys.get("x_body_sha256") is not None and keys.get("x_body_sha256") == control.get("x_body_sha256")
    for fp in [] if same_page else fps:
        if fp.matches(body, headers):
            return Analysis(Verdict.HTTP_BLOCKPAGE, f"response matches blockpage fingerprint {fp.name!r}")
    diff = _http_diff(keys, control)
    if diff:
        return _stage_verdict(mismatch, Verdict.HTTP_DIFF, diff)
    if mismatch:
        if keys.get("x_status_code") is None:
            # A probe that fetches no page (dns, tcp, tls) cannot show that the other address serves the same site.
            return Analysis(Verdict.DNS_MISMATCH, "addresses differ from control (no page fetched to compare)")
        return Analysis(Verdict.OK, "addresses differ from control, but the page is the same")
    slow = _throttled(keys, control)
    if slow:
        return Analysis(Verdict.THROTTLED, slow)
    if "x_quic_failure" in keys and keys["x_quic_failure"] is not None and control.get("x_quic_failure", "") is None:
        # The web probe's QUIC step: HTTP/3 fails where the control's works, the page loads over TCP.
        return Analysis(Verdict.QUIC_BLOCKED, f"HTTP/3 fails ({keys['x_quic_failure']}); the control's works")
    return Analysis(Verdict.OK, "same as control")


def _stage_verdict(mismatch: bool, verdict: Verdict, failure: str) -> Analysis:
    if mismatch:
        return Analysis(Verdict.DNS_MISMATCH, f"addresses differ from control and then {failure}")
    return Analysis(verdict, failure or verdict.value)


def _answers(entries: list[dict[str, Any]]) -> list[set[str]]:
    return [{a["ipv4"] for a in e.get("answers") or [] if a.get("ipv4")} for e in entries]


def first_hop(queries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lookups of the URL itself (depth 0), not of the hops its redirects led to."""
    return [q for q in queries if not any(str(t).startswith("depth=") and t != "depth=0" for t in q.get("tags") or [])]


def _lying_resolver(keys: dict[str, Any], control: dict[str, Any]) -> Analysis | None:
    """The control could not fetch the site, yet the vantage's resolver gave addresses the control
    did not get (a name that does not exist, or a bogon): the resolver lies, the site is not down."""
    got = set((keys.get("x_resolved") or {}).get("system") or [])
    want = set((control.get("x_resolved") or {}).get("system") or [])
    if not got or got <= want:
        return None
    bogons = sorted(a for a in got - want if is_lab_bogon(a))
    if bogons:
        return Analysis(Verdict.DNS_BOGON, f"bogon answer {', '.join(bogons)} (the control fails: "
                        f"{control.get('failure')})")
    if not want:
        return Analysis(Verdict.DNS_MISMATCH, f"answer {', '.join(sorted(got))} where the control's lookup "
                        f"fails ({control.get('failure')})")
    return None


def _dns_stage(keys: dict[str, Any], control: dict[str, Any]) -> Analysis | bool:
    """An Analysis if DNS decides the verdict; else whether the addresses differ from control."""
    queries = first_hop(keys.get("queries") or [])
    for engine in ("system", "udp"):
        entries = [q for q in queries if q.get("engine") == engine]
        answered = [e for e in entries if e.get("failure") != "generic_timeout_error"]
        # Responses to one query share its transaction id: two of them mean an injector raced.
        per_query: dict[Any, list[dict[str, Any]]] = {}
        for e in answered:
            per_query.setdefault(e.get("transaction_id"), []).append(e)
        answered = max(per_query.values(), key=len, default=[])
        if len(answered) >= 2:
            why = (f"{len(answered)} responses to one {engine} query: "
                   + " then ".join(",".join(sorted(a)) or "-" for a in _answers(answered)))
            got = set((keys.get("x_resolved") or {}).get("system") or [])
            want = set((control.get("x_resolved") or {}).get("system") or [])
            if engine == "udp" and got and got == _answers(answered)[0] and not got & want:
                # A censor at the ISP's border: the ISP resolver's recursion met it too.
                why += "; the system resolver answered the forged address too (its cache holds it)"
            return Analysis(Verdict.DNS_INJECTED, why)
    system = [q for q in queries if q.get("engine") == "system"]
    public = [q for q in queries if q.get("engine") == "udp"]
    c_queries = first_hop(control.get("queries") or [])
    c_public_ok = any(q.get("engine") == "udp" and not q.get("failure") for q in c_queries)
    if system and system[0].get("failure"):
        f = system[0]["failure"]
        return Analysis(DNS_RCODE_VERDICTS.get(f, Verdict.DNS_TIMEOUT), f"vantage resolver: {f}")
    if public and public[0].get("failure") and c_public_ok:
        return Analysis(Verdict.DNS_TIMEOUT, f"public resolver: {public[0]['failure']}")
    got = set((keys.get("x_resolved") or {}).get("system") or [])
    want = set((control.get("x_resolved") or {}).get("system") or [])
    bogons = sorted(a for a in got - want if is_lab_bogon(a))
    if bogons:
        return Analysis(Verdict.DNS_BOGON, f"bogon answer {', '.join(bogons)}")
    return bool(got) and not (got & want)


def _final_body(keys: dict[str, Any]) -> tuple[str, dict[str, str]]:
    reqs = keys.get("requests") or []
    if not reqs or not reqs[0].get("response"):
        return "", {}
    resp = reqs[0]["response"]
    body = resp.get("body") or ""
    if isinstance(body, dict):  # base64 MaybeBinaryData: fingerprints are text patterns
        body = ""
    return body, resp.get("headers") or {}


def _http_diff(keys: dict[str, Any], control: dict[str, Any]) -> str:
    if keys.get("x_status_code") != control.get("x_status_code"):
        return f"status {keys.get('x_status_code')} vs control {control.get('x_status_code')}"
    if (keys.get("x_title") or "") != (control.get("x_title") or ""):
        return f"title {keys.get('x_title')!r} vs control {control.get('x_title')!r}"
    a, b = keys.get("x_body_length") or 0, control.get("x_body_length") or 0
    if max(a, b) and min(a, b) / max(a, b) < BODY_LENGTH_TOLERANCE:
        return f"body length {a} vs control {b}"
    return ""


def _throttled(keys: dict[str, Any], control: dict[str, Any]) -> str:
    n, secs = keys.get("x_body_length") or 0, keys.get("x_body_seconds") or 0.0
    if not n or secs <= THROTTLE_SECONDS:
        return ""
    rate = _steady_rate(keys)
    control_rate = _steady_rate(control)
    if rate < THROTTLE_RATIO * control_rate:
        return f"{rate * 8 / 1000:.0f} kbit/s vs control {control_rate * 8 / 1000:.0f} kbit/s"
    return ""


def _steady_rate(keys: dict[str, Any]) -> float:
    """Bytes a second over the body's download time less its longest silence (a probe that does not
    report one: all of it); infinite when nothing is left."""
    seconds = (keys.get("x_body_seconds") or 0.0) - (keys.get("x_body_stall_seconds") or 0.0)
    return (keys.get("x_body_length") or 0) / seconds if seconds > 0 else float("inf")
