"""What a shipped scenario's measurements must show beyond "every verdict equals the oracle":
the OONI failure strings and shapes its techniques produce, per (scenario file, probe type).
Used by tests/lab/test_scenarios.py (netns, one lab per scenario) and by the compose tests that
run the same scenarios on the other backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Keys = dict[tuple[str, str], dict[str, Any]]  # (vantage, url) -> test_keys
Verdicts = dict[tuple[str, str], str]  # (vantage, url) -> verdict


def udp_answers(k: dict[str, Any]) -> list[list[str]]:
    return [[a["ipv4"] for a in q["answers"] if a.get("ipv4")] for q in k["queries"] if q["engine"] == "udp"]


def check_demo(keys: Keys) -> None:
    assert keys[("isp-a", "https://news.test/")]["dns_experiment_failure"] == "dns_nxdomain_error"
    assert keys[("isp-a", "https://chat.test/")]["dns_experiment_failure"] == "dns_servfail_error"
    assert keys[("isp-a", "https://video.test/")]["tcp_connect"][0]["status"] == {
        "failure": "generic_timeout_error", "success": False, "blocked": False}
    assert keys[("isp-a", "https://www.blog.test/")]["tcp_connect"][0]["status"]["failure"] == "connection_refused"
    assert keys[("isp-b", "https://social.test/")]["tls_handshakes"][0]["failure"] == "connection_reset"
    assert keys[("isp-b", "https://chat.test/")]["tls_handshakes"][0]["failure"] == "generic_timeout_error"
    assert udp_answers(keys[("isp-b", "https://video.test/")]) == [["10.10.34.35"], ["198.18.1.3"]]
    page = keys[("isp-b", "http://news.test/")]["requests"][0]["response"]
    assert page["code"] == 451 and "netlab-blockpage" in page["body"]
    assert keys[("isp-b", "https://ok.test/")]["x_body_seconds"] > 1.0
    assert keys[("control", "https://ok.test/")]["x_body_seconds"] < 0.5


def check_gfw(keys: Keys) -> None:
    assert udp_answers(keys[("gfw", "https://search.test/")]) == [["10.10.34.36"], ["198.18.1.1"]]
    assert keys[("gfw", "https://news.test/")]["tls_handshakes"][0]["failure"] == "connection_reset"
    # residual: the plain-HTTP fetch to the same server, measured after, is reset on its request
    assert keys[("gfw", "http://news.test/")]["requests"][0]["failure"] == "connection_reset"
    assert keys[("gfw", "http://wiki.test/falun")]["requests"][0]["failure"] == "connection_reset"
    assert keys[("gfw", "http://wiki.test/")]["requests"][0]["failure"] is None
    assert keys[("gfw", "http://mail.test/")]["requests"][0]["failure"] == "generic_timeout_error"
    assert len(udp_answers(keys[("open", "https://search.test/")])) == 1


def check_dpi_dns(keys: Keys) -> None:
    injected = [q for q in keys[("dnsisp", "https://injected.test/")]["queries"] if q["engine"] == "udp"]
    assert len(injected) == 2 and injected[0]["transaction_id"] == injected[1]["transaction_id"]
    assert injected[0]["t"] <= injected[1]["t"]
    dropped = [q for q in keys[("dnsisp", "https://dropped.test/")]["queries"] if q["engine"] == "udp"]
    assert [q["failure"] for q in dropped] == ["generic_timeout_error"]


def check_quic_probe(keys: Keys) -> None:
    fail = {url: k["quic_handshakes"][0]["failure"] for (v, url), k in keys.items() if v == "quicisp"}
    assert fail == {"https://quic-sni.test/": "generic_timeout_error",
                    "https://udp-dropped.test/": "generic_timeout_error",
                    "https://udp-rejected.test/": "connection_refused",
                    "https://trigger.test/": "generic_timeout_error",
                    "https://neighbour.test/": "generic_timeout_error",
                    "https://tcp-only.test/": "connection_refused", "https://clean.test/": None}
    ok = keys[("quicisp", "https://clean.test/")]
    assert ok["quic_handshakes"][0]["network"] == "udp" and ok["quic_handshakes"][0]["negotiated_protocol"] == "h3"
    assert ok["requests"][0]["response"]["code"] == 200 and ok["x_status_code"] == 200
    # A dropped Initial: no successful read_from, as OONI diagnoses handshake-phase drops.
    dropped = keys[("quicisp", "https://quic-sni.test/")]["network_events"]
    assert not [e for e in dropped if e["operation"] == "read_from"]


def check_gfw_quic_probe(keys: Keys) -> None:
    trigger, after = keys[("gfw", "https://search.test/")], keys[("gfw", "https://search.test/again")]
    assert trigger["failure"] is None and after["failure"] == "generic_timeout_error"


def reassembly_key(vantage: str, url: str) -> tuple[str, str] | None:
    # news.test's targets: "" is "/", "padding" the 100-byte padding, "qqqqqqq" the 3000-byte
    # path whose Host header lands in the request's third segment
    if "news.test" not in url:
        return None
    return vantage, "https" if url.startswith("https") else url.split("/", 3)[3][:7]


REASSEMBLY = {
    ("thorough", "https"): "tls.reset", ("shallow", "https"): "ok", ("first-segment", "https"): "tls.reset",
    ("thorough", ""): "http.reset", ("shallow", ""): "http.reset", ("first-segment", ""): "http.reset",
    ("thorough", "padding"): "http.reset", ("shallow", "padding"): "ok", ("first-segment", "padding"): "http.reset",
    ("thorough", "qqqqqqq"): "http.reset", ("shallow", "qqqqqqq"): "ok", ("first-segment", "qqqqqqq"): "ok",
}
SHAPING = {
    ("by-name", "https://video.test/"): "throttled", ("by-name", "http://video.test/"): "throttled",
    ("by-name", "https://docs.test/"): "ok", ("by-name", "http://docs.test/"): "ok",
    ("by-address", "https://video.test/"): "throttled", ("by-address", "http://video.test/"): "throttled",
    ("by-address", "https://docs.test/"): "throttled", ("by-address", "http://docs.test/"): "throttled",
}
#: The web probe's verdicts that show the middlebox's reassembly window and shaping by name, keyed
#: as the tables above; the same on both backends (tests/lab/test_dpi_scenarios_lab.py: compose).
VERDICT_TABLES: dict[str, tuple[Callable[[str, str], tuple[str, str] | None], dict[tuple[str, str], str]]] = {
    "dpi-reassembly.yaml": (reassembly_key, REASSEMBLY),
    "shaping-names.yaml": (lambda vantage, url: (vantage, url), SHAPING),
}


def check_verdict_table(scenario: str, verdicts: Verdicts) -> None:
    key, expected = VERDICT_TABLES[scenario]
    got = {key(v, u): verdict for (v, u), verdict in verdicts.items() if v != "control"}
    assert {k: v for k, v in got.items() if k is not None} == expected


#: (scenario file, probe type) -> the check of its measurements' test keys.
KEY_CHECKS: dict[tuple[str, str], Callable[[Keys], None]] = {
    ("demo.yaml", "web"): check_demo,
    ("gfw-like.yaml", "web"): check_gfw,
    ("dpi-dns.yaml", "web"): check_dpi_dns,
    ("quic.yaml", "quic"): check_quic_probe,
    ("gfw-quic-2024.yaml", "quic"): check_gfw_quic_probe,
}
