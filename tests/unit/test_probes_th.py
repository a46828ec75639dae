"""The test helper's endpoint step (probes.th) and what the harness asks of it (harness.ooni)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_probes_support import LOOPBACK, http_response, make_context, run, serve, tcp_server

from harness.ooni import load_th_endpoints, th_jobs
from probes.th import helper_ports, measure_endpoints

pytestmark = pytest.mark.usefixtures("loopback_only")


def test_helper_ports() -> None:
    assert helper_ports("http://a.test/") == [80, 443]
    assert helper_ports("https://a.test/") == [443]
    assert helper_ports("http://a.test:444/") == [444]


def test_measure_endpoints_on_an_explicit_port() -> None:
    with tcp_server(serve(http_response(b"x"))) as server:
        got = run(measure_endpoints(f"http://news.test:{server.port}/", [LOOPBACK], make_context(53)))
    # No TLS off 443; an explicit port is the only one measured.
    assert got == {f"{LOOPBACK}:{server.port}": {"tcp": {"status": True, "failure": None}, "tls": None}}


def _m(vantage: str, url: str, system: list[str], public: list[str] | None = None,
       tcp: list[tuple[str, int]] = ()) -> str:
    return json.dumps({"x_vantage": vantage, "input": url, "test_name": "web_connectivity", "test_keys": {
        "x_resolved": {"system": system, "public": public},
        "tcp_connect": [{"ip": ip, "port": port, "tags": ["depth=0"]} for ip, port in tcp]}})


def test_jobs_are_the_probes_addresses_the_control_did_not_reach(tmp_path: Path) -> None:
    url = "http://www.example.com/"
    lines = [
        _m("control", url, ["198.18.93.34"], ["198.18.93.34"], [("198.18.93.34", 80), ("198.18.93.34", 443)]),
        # the proxy (new), a bogon (never measured), the site itself (already measured)
        _m("isp", url, ["198.19.255.1", "10.10.34.35"], ["198.18.93.34"]),
        _m("isp", "http://only.test/", ["198.18.1.1"]),  # no control measurement of this URL: no job
    ]
    (tmp_path / "measurements.jsonl").write_text("\n".join(lines) + "\n")
    assert th_jobs(tmp_path / "measurements.jsonl") == [{"url": url, "addresses": ["198.19.255.1"]}]
    assert load_th_endpoints(tmp_path) == {}
    (tmp_path / "th_endpoints.jsonl").write_text(json.dumps({"url": url, "endpoints": {
        "198.19.255.1:80": {"tcp": {"status": True, "failure": None}, "tls": None}}}) + "\n")
    assert load_th_endpoints(tmp_path)[url]["198.19.255.1:80"]["tcp"]["status"] is True
