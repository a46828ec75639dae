"""Verdict analysis from test_keys shaped like the web probe's, against a control."""

from __future__ import annotations

from typing import Any

import pytest

from harness.analysis import analyse, load_fingerprints
from harness.score import VerdictRow, score
from netlab.oracle import Expectation
from netlab.verdict import Verdict


def q(engine: str, ips: list[str] | None = None, failure: str | None = None) -> dict[str, Any]:
    return {"engine": engine, "failure": failure,
            "answers": [{"answer_type": "A", "ipv4": ip} for ip in ips or []]}


def keys(*, stage: str | None = None, failure: str | None = None, ips=("198.18.1.1",), queries=None,
         status=200, title="a.test — lab origin", length=65536, seconds=0.001, body="<html>") -> dict:
    return {
        "queries": queries if queries is not None else [q("system", list(ips)), q("udp", list(ips))],
        "x_resolved": {"system": list(ips), "public": list(ips)},
        "x_failed_stage": stage, "failure": failure,
        "x_status_code": None if stage else status, "x_title": None if stage else title,
        "x_body_length": None if stage else length, "x_body_seconds": None if stage else seconds,
        "requests": [] if stage else [{"response": {"body": body, "headers": {}}}],
    }


CONTROL = keys()


@pytest.mark.parametrize(("vantage", "verdict"), [
    (keys(), Verdict.OK),
    (keys(stage="dns", failure="dns_nxdomain_error", queries=[q("system", failure="dns_nxdomain_error")]),
     Verdict.DNS_NXDOMAIN),
    (keys(stage="dns", failure="dns_servfail_error", queries=[q("system", failure="dns_servfail_error")]),
     Verdict.DNS_SERVFAIL),
    (keys(stage="dns", failure="dns_refused_error", queries=[q("system", failure="dns_refused_error")]),
     Verdict.DNS_REFUSED),
    (keys(stage="dns", failure="generic_timeout_error", queries=[q("system", failure="generic_timeout_error")]),
     Verdict.DNS_TIMEOUT),
    (keys(ips=("10.10.34.34",), stage="tcp", failure="network_unreachable"), Verdict.DNS_BOGON),
    (keys(ips=("198.18.1.9",), stage="tls", failure="ssl_invalid_hostname"), Verdict.DNS_MISMATCH),
    (keys(queries=[q("system", ["198.18.1.1"]), q("udp", ["10.10.34.35"]), q("udp", ["198.18.1.1"])]),
     Verdict.DNS_INJECTED),
    (keys(stage="tcp", failure="generic_timeout_error"), Verdict.TCP_TIMEOUT),
    (keys(stage="tcp", failure="connection_refused"), Verdict.TCP_RESET),
    (keys(stage="tcp", failure="host_unreachable"), Verdict.TCP_UNREACHABLE),
    (keys(stage="tls", failure="connection_reset"), Verdict.TLS_RESET),
    (keys(stage="tls", failure="generic_timeout_error"), Verdict.TLS_TIMEOUT),
    (keys(stage="tls", failure="eof_error"), Verdict.TLS_EOF),
    (keys(stage="tls", failure="ssl_unknown_authority"), Verdict.TLS_CERT_INVALID),
    (keys(stage="tls", failure="ssl_failed_handshake"), Verdict.TLS_ALERT),
    (keys(stage="http", failure="connection_reset"), Verdict.HTTP_RESET),
    (keys(stage="http", failure="generic_timeout_error"), Verdict.HTTP_TIMEOUT),
    (keys(stage="http", failure="eof_error"), Verdict.HTTP_EOF),
    (keys(status=451, title="Blocked", body="<title>Blocked</title> netlab-blockpage", length=300),
     Verdict.HTTP_BLOCKPAGE),
    (keys(status=503), Verdict.HTTP_DIFF),
    (keys(length=1000), Verdict.HTTP_DIFF),
    (keys(seconds=2.0), Verdict.THROTTLED),
    (keys(seconds=0.3), Verdict.OK),  # slower, but not past the throttling bound
])
def test_verdicts(vantage: dict, verdict: Verdict) -> None:
    got = analyse(vantage, CONTROL, load_fingerprints())
    assert got.verdict == verdict, got.why


def timed(seconds: float, stall: float | None, length: int = 65536) -> dict:
    return {**keys(seconds=seconds, length=length), "x_body_stall_seconds": stall}


# Figures from loaded test runs (5 xdist workers on 2 cores), then the cases the rule must keep apart.
@pytest.mark.parametrize(("vantage", "control", "verdict"), [
    # The control's 64 KiB body stalled (1 ms when idle): the shaped one is still throttled.
    (timed(1.76, 0.05), timed(0.197, 0.19), Verdict.THROTTLED),
    # A throttled body under load: a trickle with silences up to 0.51 s.
    (timed(1.85, 0.51), timed(0.0125, 0.012), Verdict.THROTTLED),
    # An unshaped vantage whose last 13 KB came after a 0.61 s silence: a stall, not throttling.
    (timed(0.61, 0.61), timed(0.0004, 0.0), Verdict.OK),
    # 8 MiB through the ISP's routers at a sixth of the control's rate: slower, not throttled.
    (timed(0.75, 0.01, 8 << 20), timed(0.124, 0.01, 8 << 20), Verdict.OK),
    # A page slow at the control too, and a little slower here.
    (timed(3.0, 0.01), timed(2.0, 0.01), Verdict.OK),
    # Just past the bound, with a long silence of its own: still throttled.
    (timed(0.6, 0.15), timed(0.001, 0.0005), Verdict.THROTTLED),
    # A probe that reports no silences: its whole body time counts, as before.
    (timed(2.0, None), timed(0.001, None), Verdict.THROTTLED),
    (timed(0.61, None), timed(0.001, None), Verdict.THROTTLED),
])
def test_throttling_leaves_out_one_stall(vantage: dict, control: dict, verdict: Verdict) -> None:
    got = analyse(vantage, control, load_fingerprints())
    assert got.verdict == verdict, got.why


def test_control_failures() -> None:
    down = keys(stage="tcp", failure="connection_refused")
    assert analyse(down, down).verdict == Verdict.SITE_DOWN
    assert analyse(keys(), down).verdict == Verdict.CONTROL_FAILED
    assert analyse(keys(), None).verdict == Verdict.CONTROL_FAILED


def test_user_fingerprints(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "fp.json"
    f.write_text('{"fingerprints": [{"name": "isp-x", "body": "access to this site is restricted"}]}')
    v = keys(body="<p>Access to this site is RESTRICTED by order</p>")
    assert analyse(v, CONTROL, load_fingerprints([f])).verdict == Verdict.HTTP_BLOCKPAGE
    assert analyse(v, CONTROL, load_fingerprints()).verdict == Verdict.OK


def test_score_precision_recall() -> None:
    def row(exp: Verdict, obs: Verdict) -> VerdictRow:
        return VerdictRow("x", f"u{exp}{obs}", obs, Expectation(exp, "t"), "")
    s = score([row(Verdict.DNS_NXDOMAIN, Verdict.DNS_NXDOMAIN), row(Verdict.DNS_BOGON, Verdict.OK),
               row(Verdict.OK, Verdict.TCP_TIMEOUT), row(Verdict.TCP_TIMEOUT, Verdict.TCP_TIMEOUT)])
    assert s.techniques["dns"].precision == 1.0 and s.techniques["dns"].recall == 0.5
    assert s.techniques["tcp"].precision == 0.5 and s.techniques["tcp"].recall == 1.0
    assert len(s.mismatches) == 2 and s.accuracy == 0.5
    assert s.confusion[("ok", "tcp.timeout")] == 1


@pytest.mark.parametrize("body", [
    "<html><head><title>Blocked</title></head><body>a site named blocked.test</body></html>",
    "<title>Why 451 Unavailable For Legal Reasons pages appear</title><p>Sites get blocked; unavailable.</p>",
    "<title>This site is blocked</title><p>HTTP 451</p>",
])
def test_benign_pages_about_blocking_are_no_blockpages(body: str) -> None:
    # Neither the control nor a vantage that gets the same page is told it sees a blockpage.
    page = keys(title="Blocked", body=body, length=len(body))
    page["x_body_sha256"] = "same"
    control = dict(page)
    assert analyse(control, control, load_fingerprints()).verdict == Verdict.OK
    assert analyse(page, control, load_fingerprints()).verdict == Verdict.OK


def test_a_fingerprint_never_counts_on_the_page_the_control_got() -> None:
    lab_page = keys(status=451, body="<title>Blocked</title> netlab-blockpage", length=300)
    assert analyse(lab_page, CONTROL, load_fingerprints()).verdict == Verdict.HTTP_BLOCKPAGE
    same = {**lab_page, "x_body_sha256": "abc"}
    assert analyse(same, {**same}, load_fingerprints()).verdict != Verdict.HTTP_BLOCKPAGE


@pytest.mark.parametrize(("fp", "body", "headers", "hit"), [
    ({"location": "body", "pattern_type": "contains", "pattern": "Blocked by ContentKeeper"},
     "<p>Blocked by ContentKeeper</p>", {}, True),
    ({"location": "body", "pattern_type": "contains", "pattern": "Blocked by ContentKeeper"},
     "<p>blocked by contentkeeper</p>", {}, False),  # OONI's patterns are case-sensitive
    ({"location": "body", "pattern_type": "full", "pattern": "blocked"}, "blocked", {}, True),
    ({"location": "body", "pattern_type": "full", "pattern": "blocked"}, "not blocked", {}, False),
    ({"location": "header.location", "pattern_type": "prefix", "pattern": "http://blocked.nb.sky.com"},
     "", {"Location": "http://blocked.nb.sky.com/?u=x"}, True),
    ({"location": "header.server", "pattern_type": "full", "pattern": "WireFilter"}, "", {"Server": "nginx"}, False),
    ({"location": "body", "pattern_type": "regexp", "pattern": "rkn[0-9]+\\.html"}, "see rkn12.html", {}, True),
])
def test_ooni_fingerprint_shapes(tmp_path, fp: dict, body: str, headers: dict, hit: bool) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "fp.json"
    import json

    f.write_text(json.dumps({"fingerprints": [{"name": "x", **fp}]}))
    (mine,) = [p for p in load_fingerprints([f]) if p.name == "x"]
    assert mine.matches(body, headers) is hit
