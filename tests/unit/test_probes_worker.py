"""The probe worker end to end: a real subprocess, JSON lines on stdin and stdout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_probes_support import PAGE, DnsServer, Pki, http_response, make_context, serve, tcp_server

import probes.worker as worker_module
from netlab.capabilities import Capabilities
from probes.base import Probe
from probes.worker import Worker

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
            # Lab addresses, but this worker runs in the machine's own namespace, not a lab host:
            # what answers there is not the lab, so nothing may be sent.
            json.dumps({"id": 15, "probe": "web", "url": "https://198.51.100.7/"}),
            json.dumps({"id": 16, "probe": "quic", "url": "https://10.0.0.1/"}),
            "this is not json",
            "",  # blank lines are skipped
        ]
        done = run_worker([header(dns_server.port, str(pki.ca_file)), *jobs])
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == 12  # one line per job, nothing else on stdout
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
    for i in (15, 16):
        assert by_id[i]["kind"] == "refused" and "not inside a lab host" in by_id[i]["error"], by_id[i]
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


# A child that writes big result lines through ResultSink while its parent interrupts it with
# signals: a write() interrupted part-way returns a short count, which a bare buffered write on a
# pipe can turn into a line with its tail missing (seen with a profiler attached to the worker).
_SIGNALLED_WRITER = """
import asyncio, json, signal, sys
from probes.worker import ResultSink
signal.signal(signal.SIGUSR1, lambda *_: None)

async def main():
    sink = ResultSink(sys.stdout)
    await sink.open()
    print("ready", file=sys.stderr, flush=True)
    for i in range(int(sys.argv[1])):
        await sink.write(json.dumps({"id": i, "body": "x" * 200_000}).encode() + b"\\n")
    await sink.close()
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # the parent may signal until it sees the end

asyncio.run(main())
"""


def test_result_lines_stay_whole_when_signals_interrupt_writes() -> None:
    import signal
    import threading

    count = 150
    proc = subprocess.Popen([sys.executable, "-c", _SIGNALLED_WRITER, str(count)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stderr.readline() == b"ready\n"
    stop = threading.Event()

    def interrupt() -> None:
        while not stop.wait(0.0005):
            try:
                proc.send_signal(signal.SIGUSR1)
            except ProcessLookupError:
                return

    pest = threading.Thread(target=interrupt, daemon=True)
    pest.start()
    try:
        lines = []
        while chunk := proc.stdout.read(4096):  # a slow reader: the pipe is full most of the time
            lines.append(chunk)
    finally:
        stop.set()
        pest.join()
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    results = [json.loads(line) for line in b"".join(lines).splitlines()]
    assert [r["id"] for r in results] == list(range(count))
    assert all(len(r["body"]) == 200_000 for r in results)


# ------------------------------------------------------------------ jobs that misbehave (issue 12)
# In process, with probe classes put straight into the worker: every job gets its answer line,
# with its id, and the worker goes on with the next job.


class _Probe(Probe):
    name = "fine"
    test_name = "urlgetter"
    capabilities = Capabilities(stages=("dns",))
    calls = 0

    async def run(self, target: Any, ctx: Any) -> dict[str, Any]:
        return {"failure": None, "queries": [], "x_resolved": {"system": []}, "x_failed_stage": None}


class _Raises(_Probe):
    async def run(self, target: Any, ctx: Any) -> dict[str, Any]:
        raise RuntimeError("a bug in the probe")


class _Exits(_Probe):
    async def run(self, target: Any, ctx: Any) -> dict[str, Any]:
        sys.exit(3)


class _Hangs(_Probe):
    async def run(self, target: Any, ctx: Any) -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {}


class _Stubborn(_Probe):
    """Ignores its cancellation: keeps running after the job timed out."""

    async def run(self, target: Any, ctx: Any) -> dict[str, Any]:
        for _ in range(3):
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.5)
        return {}


class _CancelsItself(_Probe):
    async def run(self, target: Any, ctx: Any) -> dict[str, Any]:
        raise asyncio.CancelledError


class _Sink:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    async def write(self, data: bytes) -> None:
        self.lines.append(json.loads(data))


def _serve(probes: dict[str, type], jobs: list[dict[str, Any]], job_timeout: float = 0.3,
           concurrency: int = 2) -> tuple[dict[Any, dict[str, Any]], int]:
    """The answer lines by id, and how many probes were abandoned when the input was done."""
    async def go() -> tuple[dict[Any, dict[str, Any]], int]:
        sink = _Sink()
        worker = Worker(make_context(53), concurrency, job_timeout, sink)  # type: ignore[arg-type]
        worker._probes.update(probes)
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        for job in jobs:
            lines.put_nowait(json.dumps(job) + "\n")
        lines.put_nowait(None)
        await asyncio.wait_for(worker.serve(lines), 30)
        assert len(sink.lines) == len(jobs), sink.lines
        return {r["id"]: r for r in sink.lines}, len(worker.abandoned)
    return asyncio.run(go())


def test_a_probe_that_raises_answers_its_job(monkeypatch: pytest.MonkeyPatch) -> None:
    kinds = {"raises": _Raises, "exits": _Exits, "self-cancel": _CancelsItself, "fine": _Probe}
    jobs = [{"id": i, "probe": p, "url": "https://news.test/"} for i, p in enumerate(kinds)]
    by_id, _ = _serve(kinds, jobs)
    assert by_id[0]["kind"] == "crash" and by_id[0]["error"] == "RuntimeError: a bug in the probe"
    assert by_id[1]["kind"] == "crash" and by_id[1]["error"].startswith("SystemExit")
    assert by_id[2]["kind"] == "crash" and "CancelledError" in by_id[2]["error"]
    assert "measurement" in by_id[3]  # the worker carried on


class _Forgetful(_Probe):
    """Follows docs/writing-a-probe.md but forgets x_resolved (the issue-19 add-on probe)."""

    capabilities = Capabilities(stages=("dns", "tcp"))

    async def run(self, target: Any, ctx: Any) -> dict[str, Any]:
        return {"queries": [], "tcp_connect": [], "failure": None, "x_failed_stage": None}


class _Undeclared(Probe):
    name = "undeclared"

    async def run(self, target: Any, ctx: Any) -> dict[str, Any]:
        return {"queries": [], "x_resolved": {}, "failure": None, "x_failed_stage": None}


def test_a_probe_that_breaks_the_contract_gets_a_clear_error() -> None:
    """A missing contract key, or no capabilities at all, answers the job with kind "contract" and
    names what is missing: a no_measurement row with that reason, never a guessed verdict."""
    jobs = [{"id": 1, "probe": "forgetful", "url": "https://news.test/"},
            {"id": 2, "probe": "undeclared", "url": "https://news.test/"}]
    by_id, _ = _serve({"forgetful": _Forgetful, "undeclared": _Undeclared}, jobs)
    assert by_id[1]["kind"] == "contract"
    assert "omitted x_resolved" in by_id[1]["error"] and "contract v1" in by_id[1]["error"]
    assert by_id[2]["kind"] == "contract" and "declares no capabilities" in by_id[2]["error"]


def test_a_hanging_probe_times_out_with_its_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "CANCEL_GRACE", 0.2)
    jobs = [{"id": 1, "probe": "hangs", "url": "https://news.test/"},
            {"id": 2, "probe": "stubborn", "url": "https://news.test/"},
            {"id": 3, "probe": "fine", "url": "https://news.test/"}]
    by_id, abandoned = _serve({"hangs": _Hangs, "stubborn": _Stubborn, "fine": _Probe}, jobs, concurrency=1)
    assert by_id[1] == {"id": 1, "error": "job exceeded 0.3 s", "kind": "timeout"}
    assert by_id[2] == {"id": 2, "error": "job exceeded 0.3 s", "kind": "timeout"}
    assert "measurement" in by_id[3]  # the stubborn probe's slot went to the next job
    assert abandoned == 1


_STUBBORN_WORKER = """
import asyncio, sys
from probes import worker

class Stubborn:
    name = "stubborn"
    test_name = "urlgetter"
    async def run(self, target, ctx):
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                pass

worker.CANCEL_GRACE = 0.1
real = worker.Worker._probe_class
worker.Worker._probe_class = lambda self, name: Stubborn if name == "stubborn" else real(self, name)
sys.exit(worker.main())
"""


def test_the_worker_exits_despite_a_probe_that_never_ends() -> None:
    lines = [json.dumps({"context": make_context(53).to_dict(), "concurrency": 2, "job_timeout": 0.3}),
             json.dumps({"id": 5, "probe": "stubborn", "url": "https://news.test/"})]
    done = subprocess.run([sys.executable, "-c", _STUBBORN_WORKER], input="".join(x + "\n" for x in lines),
                          capture_output=True, text=True, cwd=REPO, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert [json.loads(x) for x in done.stdout.splitlines()] == [
        {"id": 5, "error": "job exceeded 0.3 s", "kind": "timeout"}]
    assert "abandoned" in done.stderr
