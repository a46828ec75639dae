"""The probe worker end to end: a real subprocess, JSON lines on stdin and stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_probes_support import PAGE, DnsServer, Pki, http_response, make_context, serve, tcp_server

REPO = Path(__file__).resolve().parents[2]


def run_worker(lines: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # -m from the repository root, so it works whether or not the package is installed.
    return subprocess.run(
        [sys.executable, "-m", "probes.worker"],
        input="".join(line + "\n" for line in lines),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


def header(dns_port: int, ca_file: str, concurrency: int = 2) -> str:
    ctx = make_context(dns_port, ca_file=ca_file)
    return json.dumps({"context": ctx.to_dict(), "concurrency": concurrency})


def test_worker_end_to_end(pki: Pki, dns_server: DnsServer) -> None:
    with tcp_server(serve(http_response(PAGE), tls=Pki.server_context(pki.valid))) as server:
        url = f"https://news.test:{server.port}/"
        jobs = [json.dumps({"id": i, "probe": "web", "url": url}) for i in range(4)]
        jobs += [
            json.dumps({"id": 10, "probe": "dns", "url": "https://nx.test/"}),
            json.dumps({"id": 11, "probe": "web", "url": "https://example.com/"}),  # not a lab site
            json.dumps({"id": 12, "probe": "web", "url": "ftp://news.test/"}),  # bad URL
            json.dumps({"id": 13, "probe": "nope", "url": "https://news.test/"}),  # unknown probe
            json.dumps({"id": 14}),  # missing fields
            "this is not json",
            "",  # blank lines are skipped
        ]
        done = run_worker([header(dns_server.port, str(pki.ca_file)), *jobs])
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == 10  # one line per job, nothing else on stdout
    by_id = {r["id"]: r for r in results if r["id"] is not None}

    for i in range(4):
        measurement = by_id[i]["measurement"]
        assert measurement["test_name"] == "web_connectivity"
        assert measurement["test_keys"]["x_failed_stage"] is None
        assert measurement["test_keys"]["x_title"] == "Lab & News Today"
    # One report per test name for the whole run.
    assert len({by_id[i]["measurement"]["report_id"] for i in range(4)}) == 1

    dns = by_id[10]["measurement"]
    assert dns["test_name"] == "dnscheck"
    assert dns["test_keys"]["dns_experiment_failure"] == "dns_nxdomain_error"

    assert by_id[11]["kind"] == "refused" and "not a site this lab serves" in by_id[11]["error"]
    assert by_id[12]["kind"] == "refused" and "scheme" in by_id[12]["error"]
    assert by_id[13]["kind"] == "crash" and "unknown probe" in by_id[13]["error"]
    assert by_id[14]["kind"] == "crash"
    [bad] = [r for r in results if r["id"] is None]
    assert bad["kind"] == "crash" and "not valid JSON" in bad["error"]


def test_worker_with_no_jobs_exits_cleanly(tmp_path: Path) -> None:
    done = run_worker([header(53, str(tmp_path / "ca.pem"))])
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    "first_line",
    ["not json", json.dumps({"concurrency": 1}), json.dumps({"context": {"vantage": "x"}}),
     json.dumps({"context": make_context(53).to_dict(), "concurrency": 0})],
)
def test_worker_rejects_a_bad_header(first_line: str) -> None:
    done = run_worker([first_line])
    assert done.returncode == 2
    assert done.stdout == ""
    assert "header" in done.stderr


def test_worker_with_empty_input() -> None:
    done = run_worker([])
    assert done.returncode == 2
    assert done.stdout == ""
