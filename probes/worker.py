"""The probe worker: runs measurement jobs read from stdin, writes results to stdout.

Run as ``python -m probes.worker`` inside a vantage. Protocol, one JSON object per line:

stdin, first line (the header)::

    {"context": {...ProbeContext.to_dict()...}, "concurrency": 4, "job_timeout": 180}

(``concurrency`` defaults to 4; ``job_timeout``, optional, caps one job in seconds.)
Then one job per line::

    {"id": 7, "probe": "web", "url": "https://news.test/"}

stdout, exactly one line per job, in completion order, flushed at once::

    {"id": 7, "measurement": {...OONI measurement...}}
    {"id": 7, "error": "refusing https://x.example/: ...", "kind": "refused"}
    {"id": 7, "error": "ValueError: ...", "kind": "crash"}
    {"id": 7, "error": "job exceeded 180 s", "kind": "timeout"}

``kind`` is "refused" when the probe refused the job (target outside the lab, unparsable URL),
"timeout" when the job ran past ``job_timeout``, "contract" when the probe declares no
capabilities or its test keys lack a key of the probe contract (netlab.capabilities; the error
names the keys), and "crash" for anything else (bad JSON,
unknown probe, a bug: any exception a probe raises, SystemExit included). A line that is not
valid JSON still gets an answer, with ``"id": null``. At most ``concurrency`` jobs run at once: a
job's slot is free again as soon as its probe returns, while its DNS lookups may still be listening
for late (injected) responses (``ctx.dns_window``, probes.dns.background_windows); the result is
written when they are done, and at most ``FINISHING`` such jobs wait at a time.
A probe that ignores the cancellation at its timeout is abandoned (its slot goes to the next
job) and the worker exits without waiting for it. At the end of stdin the worker finishes the
jobs in flight and exits 0. A bad header exits 2. Nothing but result lines goes to stdout;
diagnostics go to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import stat
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from netlab import gc_policy, jsonl
from netlab.capabilities import PROBE_CONTRACT_VERSION, ContractError, capabilities_of
from netlab.target import Target, TargetError
from probes.context import ProbeContext
from probes.dns import background_windows
from probes.errors import BadJob, TargetRefused
from probes.measurement import measurement_envelope, new_report_id

log = logging.getLogger("probes.worker")

DEFAULT_CONCURRENCY = 4
DEFAULT_JOB_TIMEOUT = 180.0
#: Longest job line accepted (a URL and a few fields: far below this).
MAX_LINE = 1 << 20
#: Results the worker may hold for a slow reader before a reporting job waits (about 15 results).
WRITE_BUFFER = 1 << 20
#: Seconds a timed-out probe gets to unwind after its cancellation before it is abandoned.
CANCEL_GRACE = 2.0
#: Jobs whose probe has returned that may wait for their DNS windows (and to report) at once; past
#: that, a finished probe keeps its slot, so a slow reader still holds the worker back.
FINISHING = 512


class JobSlot:
    """A job's place among the ``concurrency`` running ones; handed back early (``hand_back``)
    once the probe has returned, for one of the FINISHING places, or at the end of the job."""

    def __init__(self, slots: asyncio.Semaphore, finishing: asyncio.Semaphore) -> None:
        self._slots, self._finishing = slots, finishing
        self._held, self._finishing_held = True, False

    async def hand_back(self) -> None:
        if not self._held:
            return
        await self._finishing.acquire()
        self._finishing_held = True
        self._held = False
        self._slots.release()

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots.release()
        if self._finishing_held:
            self._finishing_held = False
            self._finishing.release()


class Worker:
    def __init__(self, ctx: ProbeContext, concurrency: int, job_timeout: float, out: ResultSink) -> None:
        self.ctx = ctx
        self.concurrency = concurrency
        self.job_timeout = job_timeout
        self._out = out
        self._probes: dict[str, type] = {}
        self._report_ids: dict[str, str] = {}
        self._started = datetime.now(UTC)
        # Probes that ignored their cancellation: kept referenced (a task nobody holds may be
        # collected mid-run) and never awaited.
        self.abandoned: set[asyncio.Task[Any]] = set()

    async def serve(self, lines: asyncio.Queue[str | None]) -> None:
        """Run jobs from ``lines`` (None marks end of input) until the input ends."""
        slots = asyncio.Semaphore(self.concurrency)
        finishing = asyncio.Semaphore(FINISHING)
        running: set[asyncio.Task[None]] = set()
        while True:
            line = await lines.get()
            if line is None:
                break
            if not line.strip():
                continue
            # Take a slot before starting the task, so at most `concurrency` jobs exist at a time
            # and we stop reading input while all slots are busy.
            await slots.acquire()
            task = asyncio.create_task(self._run_job(line, JobSlot(slots, finishing)))
            running.add(task)
            task.add_done_callback(running.discard)
        if running:
            await asyncio.gather(*running)

    async def _run_job(self, line: str, slot: JobSlot) -> None:
        try:
            result = await self._result(line, slot)
            await self._emit(result)
        except OSError:
            raise  # stdout is gone (the harness stopped): nobody is left to report to
        except BaseException as exc:  # the worker must survive anything one job does
            log.exception("job failed while reporting")
            await self._emit({"id": None, "error": f"{type(exc).__name__}: {exc}", "kind": "crash"})
            if not isinstance(exc, Exception):
                raise
        finally:
            slot.release()

    async def _result(self, line: str, slot: JobSlot) -> dict[str, Any]:
        job_id: Any = None
        try:
            try:
                job = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadJob(f"job is not valid JSON: {exc}") from None
            if not isinstance(job, dict):
                raise BadJob("job must be a JSON object")
            job_id = job.get("id")
            measurement = await self._measure_within_timeout(job, slot)
            if measurement is None:
                log.error("job %r exceeded %g s", job_id, self.job_timeout)
                return {"id": job_id, "error": f"job exceeded {self.job_timeout:g} s", "kind": "timeout"}
            return {"id": job_id, "measurement": measurement}
        except (TargetRefused, TargetError) as exc:
            return {"id": job_id, "error": str(exc), "kind": "refused"}
        except ContractError as exc:  # the probe broke the probe contract: say which key, never guess a verdict
            return {"id": job_id, "error": str(exc), "kind": "contract"}
        except BaseException as exc:  # anything one probe raises (sys.exit() too) answers its job
            if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
                raise  # the worker itself is being stopped
            if not isinstance(exc, BadJob):
                log.error("job %r crashed", job_id, exc_info=exc)
            return {"id": job_id, "error": f"{type(exc).__name__}: {exc}", "kind": "crash"}

    async def _measure_within_timeout(self, job: dict[str, Any], slot: JobSlot) -> dict[str, Any] | None:
        """The job's measurement, or None when it runs past job_timeout. The probe runs as a task
        of its own, so one that ignores its cancellation cannot hold this job (and its slot) up."""
        task = asyncio.create_task(self._guarded(job, slot))
        try:
            done, _ = await asyncio.wait({task}, timeout=self.job_timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=CANCEL_GRACE)
            if not done:
                log.error("job %r ignores its cancellation; abandoned", job.get("id"))
                self.abandoned.add(task)
                task.add_done_callback(self.abandoned.discard)
            elif not task.cancelled() and task.exception() is None:
                return task.result()[0]  # it finished as it was being cancelled
            return None
        if task.cancelled():  # the probe cancelled itself: nobody cancelled this job
            raise RuntimeError("the probe raised CancelledError")
        measurement, exc = task.result()
        if exc is not None:
            raise exc
        return measurement

    async def _guarded(self, job: dict[str, Any], slot: JobSlot
                       ) -> tuple[dict[str, Any], None] | tuple[None, BaseException]:
        """Run the job; whatever it raises comes back as a value. SystemExit raised inside a task
        would otherwise stop the event loop, i.e. the whole worker."""
        try:
            return await self._measure(job, slot), None
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except BaseException as exc:
            return None, exc

    async def _measure(self, line: dict[str, Any], slot: JobSlot) -> dict[str, Any]:
        job = Job.of(line)
        probe_name, url = job.probe, job.url
        probe_class = self._probe_class(probe_name)
        target = Target.parse(url)
        probe = probe_class()
        start = datetime.now(UTC)
        began = time.monotonic()
        with background_windows() as windows:
            test_keys = await probe.run(target, self.ctx)
            # The probe is done with the network but for its DNS windows: the slot goes to the next
            # job while they close (nothing to wait for when nothing listens any more).
            await slot.hand_back()
            await windows.settle()
        runtime = time.monotonic() - began
        missing = capabilities_of(probe_class).missing_keys(test_keys) if isinstance(test_keys, dict) else ["(all)"]
        if missing:
            raise ContractError(f"probe {probe_name!r} omitted {', '.join(missing)} from its test keys for {url}: "
                                f"probe contract v{PROBE_CONTRACT_VERSION} (docs/writing-a-probe.md) wants them, "
                                "the verdict would otherwise be a guess")
        test_name = getattr(probe, "test_name", "urlgetter")
        if test_name not in self._report_ids:
            self._report_ids[test_name] = new_report_id(test_name, self.ctx, self._started)
        return measurement_envelope(
            probe, target, self.ctx, test_keys, start, runtime,
            report_id=self._report_ids[test_name], test_start_time=self._started,
        )

    def _probe_class(self, name: str) -> type:
        # Imported on first use: a worker that only runs DNS jobs never pays for httpcore.
        if name not in self._probes:
            from probes.base import load_probe

            try:
                self._probes[name] = load_probe(name)
            except KeyError as exc:
                raise BadJob(str(exc.args[0])) from None
        return self._probes[name]

    async def _emit(self, result: dict[str, Any]) -> None:
        try:
            measured = result.keys() == {"id", "measurement"}
            data = jsonl.result_line(result["id"], result["measurement"]) if measured else jsonl.dumps(result)
        except (TypeError, ValueError) as exc:  # e.g. a plugin put a non-JSON value in its keys
            log.error("result of job %r is not JSON: %s", result.get("id"), exc)
            error = {"id": result.get("id"), "error": f"result is not JSON: {exc}", "kind": "crash"}
            data = json.dumps(error).encode()
        await self._out.write(data + b"\n")


@dataclass(frozen=True)
class Job:
    """One measurement job: the harness writes it (line), the worker reads it (of)."""

    id: Any  # the harness's job number, echoed in the answer as given
    probe: str
    url: str

    def line(self) -> bytes:
        return jsonl.dumps({"id": self.id, "probe": self.probe, "url": self.url}) + b"\n"

    @classmethod
    def of(cls, job: dict[str, Any]) -> Job:
        probe, url = job.get("probe"), job.get("url")
        if not isinstance(probe, str) or not isinstance(url, str):
            raise BadJob('job needs string fields "probe" and "url"')
        return cls(job.get("id"), probe, url)


def header_line(ctx: ProbeContext, concurrency: int, job_timeout: float) -> bytes:
    """The worker's first stdin line, which parse_header reads."""
    return jsonl.dumps({"context": ctx.to_dict(), "concurrency": concurrency, "job_timeout": job_timeout}) + b"\n"


def parse_header(line: str) -> tuple[ProbeContext, int, float]:
    header = json.loads(line)
    if not isinstance(header, dict) or not isinstance(header.get("context"), dict):
        raise ValueError('first line must be {"context": {...}, "concurrency": N}')
    ctx = ProbeContext.from_dict(header["context"])
    concurrency = header.get("concurrency", DEFAULT_CONCURRENCY)
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise ValueError(f"concurrency must be a positive integer, not {concurrency!r}")
    job_timeout = header.get("job_timeout", DEFAULT_JOB_TIMEOUT)
    if not isinstance(job_timeout, int | float) or job_timeout <= 0:
        raise ValueError(f"job_timeout must be a positive number, not {job_timeout!r}")
    return ctx, concurrency, float(job_timeout)


class JobSource:
    """Lines from stdin. When stdin is a pipe or a socket (always, under the harness) they come
    through the event loop; otherwise (a file, a terminal) through a thread, a line at a time."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._reader: asyncio.StreamReader | None = None

    async def open(self) -> None:
        if not _is_pipe(self._stream):
            return
        loop = asyncio.get_running_loop()
        reader = self._reader = asyncio.StreamReader(limit=MAX_LINE)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), self._stream)

    async def readline(self) -> str:
        """The next line, "" at the end of input."""
        if self._reader is None:
            return await asyncio.to_thread(self._stream.readline)
        try:
            return (await self._reader.readline()).decode("utf-8", errors="replace")
        except ValueError:  # longer than MAX_LINE: answered as a bad line, not a hang
            return f"(a line longer than {MAX_LINE} bytes)\n"


class ResultSink:
    """Result lines to stdout, each written whole.

    On a pipe or socket, the event loop's transport writes them: a full pipe (the harness busy
    for a moment) then holds back only the job waiting to report, not every probe in flight, and
    partial writes are the transport's business. Elsewhere (a file, a terminal) a plain loop of
    ``os.write`` does it. Either way no line is ever cut: a bare ``write()`` on a buffered
    stream can lose the tail of a line larger than the pipe when a signal interrupts it.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        if not _is_pipe(self._stream):
            return
        loop = asyncio.get_running_loop()
        protocol = asyncio.StreamReaderProtocol(asyncio.StreamReader())
        transport, _ = await loop.connect_write_pipe(lambda: protocol, self._stream)
        transport.set_write_buffer_limits(high=WRITE_BUFFER)
        # A measurement line (~70 KiB with a page body) is larger than a pipe's default 64 KiB:
        # each one would take several writes here and several reads in the harness, every partial
        # write a wakeup of both. A pipe that holds about as much as the transport may buffer takes
        # a line in one write. (Linux only; a socket or an older kernel keeps its size.)
        with contextlib.suppress(AttributeError, OSError):
            fcntl.fcntl(self._stream.fileno(), fcntl.F_SETPIPE_SZ, WRITE_BUFFER)
        self._writer = asyncio.StreamWriter(transport, protocol, None, loop)

    async def write(self, data: bytes) -> None:
        if self._writer is not None:
            self._writer.write(data)
            await self._writer.drain()
            return
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):  # an in-memory stream
            self._stream.write(data.decode())
            self._stream.flush()
            return
        self._stream.flush()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()  # the transport writes out what it holds first
            await self._writer.wait_closed()


def _is_pipe(stream: TextIO) -> bool:
    try:
        mode = os.fstat(stream.fileno()).st_mode
    except (AttributeError, OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


async def _read_lines(source: JobSource, lines: asyncio.Queue[str | None]) -> None:
    while True:
        line = await source.readline()
        if not line:
            await lines.put(None)
            return
        await lines.put(line)


async def amain(stdin: TextIO, out: TextIO) -> int:
    source, sink = JobSource(stdin), ResultSink(out)
    await source.open()
    header = await source.readline()
    if not header.strip():
        log.error("no header line on stdin")
        return 2
    try:
        ctx, concurrency, job_timeout = parse_header(header)
    except (ValueError, TypeError) as exc:
        log.error("bad header: %s", exc)
        return 2
    await sink.open()
    worker = Worker(ctx, concurrency, job_timeout, sink)
    # A small buffer: the reader stays a little ahead of the jobs, not arbitrarily far.
    lines: asyncio.Queue[str | None] = asyncio.Queue(maxsize=concurrency)
    reader = asyncio.create_task(_read_lines(source, lines))
    try:
        await worker.serve(lines)
        await reader
    finally:
        await sink.close()
    if worker.abandoned:
        # asyncio.run would wait for them forever: every result is written, so leave now.
        log.error("exiting with %d abandoned job(s) still running", len(worker.abandoned))
        sys.stderr.flush()
        os._exit(0)
    return 0


def main() -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="probes.worker: %(levelname)s %(message)s")
    out = sys.stdout
    # Results own stdout. Anything else that prints (a chatty plugin) goes to stderr instead.
    sys.stdout = sys.stderr
    gc_policy.tune()
    return asyncio.run(amain(sys.stdin, out))


if __name__ == "__main__":
    code = main()
    # Every result is written (main returns once stdout's transport has drained): leave without the
    # interpreter's teardown, which took 50-150 ms on a busy machine, and the harness waits for it.
    sys.stderr.flush()
    os._exit(code)
