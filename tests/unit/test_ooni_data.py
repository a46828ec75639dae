"""Measurements with huge, binary or non-UTF-8 bodies and headers still serialize as JSON and
load in OONI's own ``oonidata``; redirect chains come out in OONI's time-reverse order."""



from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_probes_support import (
    LOOPBACK,
    DnsServer,
    big_body_handler,
    http_response,
    make_context,
    run,
    serve,
    tcp_server,
)

from harness import ooni
from harness.ooni_rules import ControlView
from netlab.target import Target
from probes.measurement import measurement_envelope
from probes.web import WebProbe

oonidata = pytest.importorskip("oonidata.dataclient")
pytestmark = pytest.mark.usefixtures("loopback_only")


def measure(url: str, dns_port: int, **ctx: object) -> dict:
    context = make_context(dns_port, **ctx)
    target = Target.parse(url)
    keys = run(WebProbe().run(target, context))
    m = measurement_envelope(WebProbe, target, context, keys, datetime.now(UTC), 0.1)
    m["x_vantage"] = "test"
    return m


def through_ooni(m: dict, tmp_path: Path) -> dict:
    """The harness's OONI pass (with the measurement as its own control), a JSON round trip, and
    oonidata's strict loader."""
    path = tmp_path / "measurements.jsonl"
    control = json.loads(json.dumps(m))
    control["x_vantage"] = "control"
    path.write_text(json.dumps(m, ensure_ascii=False) + "\n" + json.dumps(control, ensure_ascii=False) + "\n")
    assert ooni.finalize(tmp_path, {}) == 2
    out = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    oonidata.load_measurement(msmt=out)
    return out


@pytest.mark.parametrize("body", [
    bytes(range(256)) * 64,  # binary
    "caf\u00e9 \u2603 ".encode("latin-1", errors="replace") * 100,  # not UTF-8
    b"\xff\xfe<title>\x80\x81</title>",  # not UTF-8, with a title
    "\u043f\u0440\u0438\u043c\u0435\u0440 \U0001f600".encode() * 1000,  # multi-byte UTF-8
])
def test_odd_bodies_and_headers(body: bytes, dns_server: DnsServer, tmp_path: Path) -> None:
    headers = [("X-Latin", "caf\u00e9"), ("X-Bytes", "\u00ff\u00fe"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
    raw = http_response(body, headers=headers)
    # Raw non-UTF-8 header bytes on the wire.
    raw = raw.replace(b"X-Latin: caf\xc3\xa9", b"X-Latin: caf\xe9")
    with tcp_server(serve(raw)) as server:
        m = measure(f"http://news.test:{server.port}/", dns_server.port)
    out = through_ooni(m, tmp_path)
    tk = out["test_keys"]
    assert tk["requests"][0]["response"]["code"] == 200
    assert tk["accessible"] is True and tk["blocking"] is False
    assert tk["x_verdict"] is None


def test_huge_body_is_truncated_and_loads(dns_server: DnsServer, tmp_path: Path) -> None:
    size = 3 * 1024 * 1024
    with tcp_server(big_body_handler(size)) as server:
        m = measure(f"http://news.test:{server.port}/", dns_server.port, body_limit=256 * 1024)
    out = through_ooni(m, tmp_path)
    resp = out["test_keys"]["requests"][0]["response"]
    assert resp["body_is_truncated"] is True
    assert out["test_keys"]["x_body_length"] >= size
    assert out["test_keys"]["body_length_match"] is None  # OONI does not compare truncated bodies


def test_redirect_chain_in_time_reverse_order(dns_server: DnsServer, tmp_path: Path) -> None:
    with tcp_server(serve(http_response(b"<title>final page</title>"))) as final:
        hop = http_response(b"", status="302 Found", headers=[("Location", f"http://ok.test:{final.port}/end")])
        with tcp_server(serve(hop)) as first:
            m = measure(f"http://news.test:{first.port}/start", dns_server.port)
    tk = m["test_keys"]
    assert [r["request"]["url"] for r in tk["requests"]] == [f"http://ok.test:{final.port}/end",
                                                              f"http://news.test:{first.port}/start"]
    assert tk["x_redirects"] == [f"http://ok.test:{final.port}/end"]
    # web_connectivity 0.5 tags the system resolver's lookups "classic" at every depth.
    assert [q["tags"] for q in tk["queries"]] == [["classic", "depth=0"], ["classic", "depth=1"]]
    out = through_ooni(m, tmp_path)
    assert out["test_keys"]["accessible"] is True


def test_control_view_is_a_test_helper_response() -> None:
    view = ControlView(addrs=[LOOPBACK], status_code=200, body_length=10, title="t")
    th = view.th_response(["10.1.2.3"])
    # oohelperd's THResponse: quic_handshake and http3_request are always there ({} and null).
    assert set(th) == {"dns", "tcp_connect", "tls_handshake", "quic_handshake", "http_request", "http3_request",
                       "ip_info"}
    assert th["ip_info"]["10.1.2.3"]["flags"] == 1 | 4 and th["ip_info"][LOOPBACK]["flags"] == 2 | 4
