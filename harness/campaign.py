"""A campaign: every target from every vantage, through one probe worker per vantage.

Workers run inside their vantage (``RunningLab.spawn``) and stream one JSON line per
measurement; lines go straight to ``measurements.jsonl`` so memory does not grow with the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from netlab import jsonl
from netlab.backends.base import RunningLab, ServiceFault
from netlab.errors import LabFault
from netlab.model import CONTROL, Scenario
from netlab.oracle import has_residual, late_block_delay, residual_waves
from netlab.target import Target
from probes.base import installed_capabilities
from probes.context import ProbeContext
from probes.worker import Job, header_line

# Jobs in flight per vantage: enough to keep a worker busy while measurements wait on the network
# (a job's DNS window, probes.dns, no longer holds its slot: the worker hands it on).
DEFAULT_CONCURRENCY = 64
WORKER_ARGV = ["python3", "-m", "probes.worker"]
# The worker answers every job within job_timeout of starting it, and starts the next job as one
# ends, so while it owes answers a silence longer than job_timeout plus this (start-up, imports,
# a busy loop) means the worker is stuck (a probe blocking its event loop): it is killed. While it
# owes none (its jobs held back: the control's pace, a pause between residual waves) the clock stops.
STALL_GRACE = 30.0
STALL_POLL = 1.0  # seconds between looks at that clock while waiting for an answer


@dataclass
class CampaignConfig:
    probe: str = "web"
    concurrency: int = DEFAULT_CONCURRENCY  # jobs in flight per vantage
    vantages: list[str] | None = None  # None: every vantage, control included
    shard: tuple[int, int] = (1, 1)  # (index, count), 1-based
    job_timeout: float = 120.0
    context_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class CampaignResult:
    out_dir: Path
    measurements: int
    errors: list[dict[str, Any]]
    seconds: float
    lab_faults: list[str]
    vantages: list[str] = field(default_factory=list)  # the vantages this campaign measured from


def shard_targets(targets: tuple[Target, ...] | list[Target], index: int, count: int) -> list[Target]:
    """A deterministic slice: target i belongs to shard (i mod count) + 1."""
    return [t for i, t in enumerate(targets) if i % count == index - 1]


def probe_context(lab: RunningLab, scenario: Scenario, vantage: str, overrides: dict[str, Any]) -> ProbeContext:
    """The ProbeContext of one vantage: its resolvers, the CA it trusts, the lab's names; ``overrides``
    (the scenario's probe settings, the run's) by field name. It crosses to the worker as to_dict()."""
    v = lab.state.vantages[vantage]
    # A vantage may trust more than the lab CA (an ISP's interception CA its users installed).
    ca_file = str(lab.inner_path(v.ca_file or lab.state.ca_file))
    ctx = ProbeContext(
        vantage=vantage,
        resolver=str(v.resolver),
        public_resolver=str(v.public_resolver) if v.public_resolver is not None
        and (scenario.public_resolver or vantage == "control") else None,
        ca_file=ca_file,
        lab_names=frozenset(s.name for s in scenario.sites),
        probe_ip=str(v.address),
        probe_asn=v.asn,
        resolver_asn=v.asn,
        probe_network_name=vantage,
        resolver_network_name=vantage,
        ipv6=scenario.ipv6,  # dual stack: AAAA lookups, and both families measured
    )
    return ProbeContext.from_dict(ctx.to_dict() | overrides) if overrides else ctx  # from_dict names a wrong key


def campaign_vantages(lab: RunningLab, config: CampaignConfig) -> list[str]:
    """The vantages a campaign measures from: those ``config`` names, else every vantage of the lab."""
    return config.vantages or list(lab.state.vantages)


async def run_campaign(lab: RunningLab, scenario: Scenario, out_dir: Path, config: CampaignConfig,
                       on_result: Callable[[str, dict[str, Any]], None] | None = None,
                       write: Callable[[str, bytes], None] | None = None) -> CampaignResult:
    """Measure; ``on_result`` sees every answer line (without its measurement). Each measurement (the
    worker's JSON bytes) goes to ``write`` with its vantage (harness.streaming scores and writes it),
    else straight into measurements.jsonl as the worker wrote it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    vantages = campaign_vantages(lab, config)
    # Targets outside what the probe type measures (its schemes and ports) are neither measured nor expected.
    caps = installed_capabilities(config.probe)  # None: the worker answers each job with why it cannot run
    targets = [t for t in shard_targets(scenario.targets, *config.shard) if caps is None or caps.measures(t)]
    t0 = time.monotonic()
    errors: list[dict[str, Any]] = []
    count = 0
    with contextlib.ExitStack() as stack:
        if write is None:
            sink = stack.enter_context(open(out_dir / "measurements.jsonl", "wb"))

            def write(vantage: str, raw: bytes) -> None:
                sink.write(jsonl.vantage_line(vantage, raw))

        def record(vantage: str, line: dict[str, Any], raw: bytes | None) -> None:
            nonlocal count
            if raw is not None:
                write(vantage, raw)
                count += 1
            else:
                errors.append({"vantage": vantage, **line})
            if on_result:
                on_result(vantage, line)

        faults: list[ServiceFault] = []
        watchdog = asyncio.create_task(_watch(lab, faults))
        pace = ControlPace(2 * config.concurrency) if CONTROL in vantages and len(vantages) > 1 else None
        workers = [asyncio.create_task(_drive_worker(lab, scenario, v, targets, config, record, pace))
                   for v in vantages]
        try:
            await asyncio.gather(*workers)
        finally:
            # Whatever ended the campaign (a fault, Ctrl-C), every worker is killed and reaped before
            # the event loop closes: gather returns at the first failure, not when the rest are done.
            for task in workers:
                if not task.cancelling():  # a second cancel would interrupt its cleanup
                    task.cancel()
            await asyncio.wait(workers)
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        faults += [f for f in lab.dead_services() if f not in faults]
    return CampaignResult(out_dir=out_dir, measurements=count, errors=errors,
                          seconds=time.monotonic() - t0, lab_faults=[str(f) for f in faults], vantages=list(vantages))


def _waves(scenario: Scenario, vantage: str, targets: list[Target], lab: RunningLab) -> list[list[int]]:
    """Job ids in the waves they are sent in: all at once, unless the vantage's ISP has residual
    blocking, whose outcome depends on which flow to a server comes first (netlab.oracle)."""
    isp = next((i for i in scenario.isps if i.name == vantage), None)
    if isp is None or not has_residual(isp):
        return [list(range(len(targets)))]
    index = {t.url: i for i, t in enumerate(targets)}
    sites = {k: IPv4Address(v) for k, v in lab.state.site_addresses.items()}
    return [[index[t.url] for t in wave] for wave in residual_waves(targets, sites)]


async def _watch(lab: RunningLab, faults: list[ServiceFault]) -> None:
    """A lab component that dies mid-run is a lab fault, never a censorship verdict."""
    while True:
        for dead in lab.dead_services():
            if dead not in faults:
                faults.append(dead)
        await asyncio.sleep(0.2)


class ControlPace:
    """Keeps the other vantages at most ``ahead`` jobs ahead of the control vantage. A measurement
    is scored and written once its URL's control measurement is in (harness.streaming): one from a
    vantage that ran ahead waits in memory, or past a few MB in a side file that is written again
    after the campaign. Left to themselves, the workers drifted apart on a slow 2-core machine:
    100,000 measurements spent 32 s on the side file after the campaign (462 s, 283 MiB in all);
    paced, 3 s (444 s, 260 MiB). The control is never held back: the campaign takes as long as
    its slowest vantage either way."""

    def __init__(self, ahead: int) -> None:
        self.ahead = ahead
        self.answered = 0  # the control's answers so far
        self._moved = asyncio.Condition()

    async def control_answered(self) -> None:
        async with self._moved:
            self.answered += 1
            self._moved.notify_all()

    async def turn(self, sent: int) -> None:
        """Wait until a vantage that has sent ``sent`` jobs may send its next."""
        if sent - self.answered >= self.ahead:
            async with self._moved:
                await self._moved.wait_for(lambda: sent - self.answered < self.ahead)


async def _drive_worker(lab: RunningLab, scenario: Scenario, vantage: str, targets: list[Target],
                        config: CampaignConfig, record: Callable[[str, dict[str, Any], bytes | None], None],
                        pace: ControlPace | None = None) -> None:
    proc = await lab.spawn(lab.state.vantages[vantage].host, WORKER_ARGV)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    header = header_line(probe_context(lab, scenario, vantage, config.context_overrides), config.concurrency,
                         config.job_timeout)

    waves = _waves(scenario, vantage, targets, lab)
    isp = next((i for i in scenario.isps if i.name == vantage), None)
    pause = late_block_delay(isp) if isp is not None else 0.0
    wave_of = {i: k for k, wave in enumerate(waves) for i in wave}
    left = [len(w) for w in waves]
    wave_done = [asyncio.Event() for _ in waves]

    pending = len(targets)  # jobs not answered yet; those sent and not answered are owed
    sent = 0
    owed_since: float | None = None  # since when the worker has owed an answer without giving one

    async def feed() -> None:
        nonlocal sent, owed_since
        assert proc.stdin is not None
        proc.stdin.write(header)
        for k, wave in enumerate(waves):
            for i in wave:
                if pace is not None and vantage != CONTROL:
                    await pace.turn(sent)
                if sent == len(targets) - pending:  # every job sent so far is answered
                    owed_since = time.monotonic()
                sent += 1
                proc.stdin.write(Job(i, config.probe, targets[i].url).line())
                await proc.stdin.drain()
            if k + 1 < len(waves):
                await wave_done[k].wait()
                if pause:  # a late QUIC block a trigger of this wave started is in force after this
                    await asyncio.sleep(pause)
        proc.stdin.close()

    feeder = asyncio.create_task(feed())
    stderr_task = asyncio.create_task(proc.stderr.read())
    silence = config.job_timeout + STALL_GRACE
    read: asyncio.Task[bytes] | None = None
    try:
        while pending:
            read = asyncio.create_task(proc.stdout.readline())
            while not (await asyncio.wait({read}, timeout=STALL_POLL))[0]:
                if owed_since is not None and time.monotonic() - owed_since > silence:
                    raise LabFault(f"the probe worker in {vantage} answered nothing for {silence:g} s with "
                                   f"{pending} job(s) left (job_timeout {config.job_timeout:g} s): a probe blocks "
                                   "its event loop; the worker was killed")
            raw = read.result()
            if not raw.endswith(b"\n"):
                break  # the end, or a line cut short: the worker died writing it (its lab host went down)
            line, measurement = jsonl.split_result(raw)
            job_id = line.get("id")
            if type(job_id) is not int or not 0 <= job_id < len(targets):
                continue  # not an answer to one of our jobs (the worker says why on stderr)
            line["url"] = targets[line["id"]].url
            record(vantage, line, measurement)
            pending -= 1
            owed_since = time.monotonic() if sent > len(targets) - pending else None
            if pace is not None and vantage == CONTROL:
                await pace.control_answered()
            k = wave_of[line["id"]]
            left[k] -= 1
            if not left[k]:
                wave_done[k].set()
        await feeder
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    except BaseException:
        # Failing or cancelled: the worker must not outlive the campaign.
        feeder.cancel()
        if read is not None:
            read.cancel()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        stderr_task.cancel()
        raise
    err = (await stderr_task).decode(errors="replace").strip()
    if pending:
        raise LabFault(f"the probe worker in {vantage} stopped with {pending} job(s) left "
                       f"(exit status {proc.returncode}): {err[-2000:]}")
