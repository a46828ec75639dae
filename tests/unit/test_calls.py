"""Detector calls (harness.calls): OONI pairs and lab verdicts as calls, and their errors."""

from __future__ import annotations

import pytest

from harness.calls import OONI_VIEW, CallError, OoniCall, level_of, ooni_call, parse_call, verdict_as_ooni
from netlab.capabilities import WEB, Capabilities
from netlab.target import Target
from netlab.verdict import Verdict

HTTPS, HTTP = Target.parse("https://a.test/"), Target.parse("http://a.test/")


def test_ooni_pairs() -> None:
    assert ooni_call(False, True, "x") == OoniCall.OK
    assert ooni_call(False, False, "x") == OoniCall.SITE_DOWN
    assert ooni_call("dns", False, "x") == OoniCall.DNS and OoniCall.DNS.is_censorship
    assert ooni_call(None, None, "x") == OoniCall.UNKNOWN and not OoniCall.UNKNOWN.is_censorship
    with pytest.raises(CallError, match=r"line 3: blocking=\"tcp\""):
        ooni_call("tcp", False, "line 3")


def test_verdicts_as_ooni_classes() -> None:
    assert verdict_as_ooni(Verdict.TCP_RESET, HTTPS) == OoniCall.TCP_IP
    assert verdict_as_ooni(Verdict.TLS_RESET, HTTPS) == OoniCall.HTTP_FAILURE
    assert verdict_as_ooni(Verdict.HTTP_BLOCKPAGE, HTTP) == OoniCall.HTTP_DIFF
    assert verdict_as_ooni(Verdict.HTTP_DIFF, HTTPS) == OoniCall.OK  # OONI trusts a page over TLS
    assert verdict_as_ooni(Verdict.THROTTLED, HTTPS) == OoniCall.OK


def test_analysis_lines() -> None:
    assert parse_call({"measurement_uid": "u", "verdict": "dns.nxdomain"}, "l1").verdict == Verdict.DNS_NXDOMAIN
    c = parse_call({"measurement_uid": "u", "blocking": "dns", "accessible": False}, "l1")
    assert c.ooni == OoniCall.DNS and c.at("ooni", "https://a.test/") == OoniCall.DNS
    with pytest.raises(CallError, match=r"measurement u: 'dns\.bad' is no lab verdict"):
        parse_call({"measurement_uid": "u", "verdict": "dns.bad"}, "l1")
    with pytest.raises(CallError, match="neither verdict nor blocking"):
        parse_call({"measurement_uid": "u"}, "l1")
    with pytest.raises(CallError, match="measurement_uid"):
        parse_call(["u"], "l1")
    v = parse_call({"measurement_uid": "u", "verdict": "tcp.reset"}, "l1")
    assert level_of([v]) == "verdict" and level_of([v, c]) == "ooni"
    assert v.at("ooni", "https://a.test/") == OoniCall.TCP_IP


def test_ooni_view_meets_the_probe() -> None:
    assert WEB.meet(OONI_VIEW) == OONI_VIEW and not OONI_VIEW.public_dns
    tcp = Capabilities(stages=("dns", "tcp"), ports=(443, 80))
    assert tcp.meet(OONI_VIEW).stages == ("dns", "tcp")
    assert tcp.meet(Capabilities(stages=("dns",), ports=(80,))).ports == (80,)
