"""Other detectors' calls, scored against the oracle like the lab's own verdicts.

A *call* is what a detector said about one measurement: a lab verdict (``dns.nxdomain``, ...) or
OONI web_connectivity's ``blocking``/``accessible``. Calls come from foreign OONI measurements
(`harness score --scenario S --measurements F.jsonl`) or from an analysis program run over a
results folder (`harness score RESULTS --analysis CMD`); either way every expected (vantage,
target) gets a row, scored and reported by the same code as `harness run` (harness.score,
harness.report).

OONI's keys are coarser than the lab's verdicts, so they are scored at OONI's granularity: the
oracle's expectation is mapped to the OONI class it implies (``OoniCall``, through
netlab.verdict.OONI_BLOCKING), as seen by OONI's classic analysis (``OONI_VIEW``: the vantage's
resolver only) and with OONI's rule that a page fetched over TLS is never blocked
(docs/ooni.md).
"""

from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from harness.errors import AnalysisCrashed, CallError, ResultsError
from harness.results import RunOracle, ScoredRun, run_oracle
from harness.score import TECHNIQUES, VerdictRow, iter_measurements, measurement_files, measurement_vantage
from netlab.capabilities import STAGES, WEB, Capabilities
from netlab.oracle import Expectation, expected_verdicts
from netlab.target import Target
from netlab.verdict import OONI_BLOCKING, Verdict

WEB_TEST = "web_connectivity"

#: What OONI's classic web_connectivity analysis sees: every stage and redirects, but DNS through the
#: vantage's resolver only (on-path tampering with the public resolver's answers goes unseen).
OONI_VIEW = Capabilities(stages=STAGES, public_dns=False, redirects=True, throughput=True)


class OoniCall(StrEnum):
    """OONI's (blocking, accessible) as one label. ``technique`` and ``is_censorship`` mirror
    Verdict's, so rows of calls are scored and reported by the same code."""

    OK = "ok"  # false / true
    SITE_DOWN = "site_down"  # false / false
    DNS = "dns"
    TCP_IP = "tcp_ip"
    HTTP_FAILURE = "http-failure"
    HTTP_DIFF = "http-diff"
    UNKNOWN = "unknown"  # null / null: OONI could not tell

    def __str__(self) -> str:
        return self.value

    @property
    def technique(self) -> str:
        return self.value

    @property
    def is_censorship(self) -> bool:
        return self in (OoniCall.DNS, OoniCall.TCP_IP, OoniCall.HTTP_FAILURE, OoniCall.HTTP_DIFF)


#: The techniques OONI's keys tell apart (per-technique precision and recall at OONI's level).
OONI_TECHNIQUES = ("dns", "tcp_ip", "http-failure", "http-diff")
BLOCKING_VALUES = {"dns", "tcp_ip", "http-failure", "http-diff"}


def ooni_call(blocking: Any, accessible: Any, where: str) -> OoniCall:
    """OONI's pair as a call; anything OONI never writes is a CallError naming ``where``."""
    if blocking is False:
        if accessible is True:
            return OoniCall.OK
        if accessible is False:
            return OoniCall.SITE_DOWN
    elif blocking is None and accessible is None:
        return OoniCall.UNKNOWN
    elif blocking in BLOCKING_VALUES and accessible in (False, None):
        return OoniCall(blocking)
    raise CallError(f"{where}: blocking={json.dumps(blocking)}, accessible={json.dumps(accessible)} is not a "
                    "pair OONI's web_connectivity writes (blocking: false | \"dns\" | \"tcp_ip\" | \"http-failure\" | "
                    "\"http-diff\" | null; accessible: true | false | null)")


def verdict_as_ooni(verdict: Verdict, target: Target) -> OoniCall:
    """The OONI class a lab verdict corresponds to (docs/ooni.md), with OONI's trust in TLS: a
    page that came over https is accessible even when it differs from the control's."""
    blocking, accessible = OONI_BLOCKING[verdict]
    if target.is_https and verdict in (Verdict.HTTP_DIFF, Verdict.HTTP_BLOCKPAGE):
        return OoniCall.OK
    return ooni_call(blocking, accessible, verdict.value)


def as_ooni_expectation(exp: Expectation, url: str) -> Expectation:
    """The expectation at OONI's granularity (the rule and reason stay, for mismatch reports)."""
    call = verdict_as_ooni(exp.verdict, Target.parse(url))
    return replace(exp, verdict=call, reason=f"{exp.verdict.value}: {exp.reason}")  # type: ignore[arg-type]


@dataclass(frozen=True)
class Call:
    """One detector call for the measurement ``uid``: a lab verdict, or OONI's pair."""

    uid: str
    verdict: Verdict | None = None
    ooni: OoniCall | None = None
    why: str = ""

    def at(self, level: str, url: str) -> Verdict | OoniCall:
        """The call at ``level`` ("verdict" or "ooni")."""
        if level == "verdict":
            assert self.verdict is not None
            return self.verdict
        if self.ooni is not None:
            return self.ooni
        assert self.verdict is not None
        return verdict_as_ooni(self.verdict, Target.parse(url))


def parse_call(doc: Any, where: str) -> Call:
    """One line of an analysis program's output: {"measurement_uid": ..., "verdict": ...} or
    {"measurement_uid": ..., "blocking": ..., "accessible": ...} (optionally "why")."""
    if not isinstance(doc, dict) or not isinstance(doc.get("measurement_uid"), str):
        raise CallError(f"{where}: expected a JSON object with measurement_uid and a verdict, or blocking and "
                        f"accessible; got {json.dumps(doc)[:200]}")
    uid, why = doc["measurement_uid"], str(doc.get("why") or "")
    if "verdict" in doc:
        try:
            return Call(uid, verdict=Verdict(doc["verdict"]), why=why)
        except ValueError:
            raise CallError(f"{where}: measurement {uid}: {doc['verdict']!r} is no lab verdict "
                            f"({', '.join(v.value for v in Verdict)})") from None
    if "blocking" in doc and "accessible" in doc:
        return Call(uid, ooni=ooni_call(doc["blocking"], doc["accessible"], f"{where}: measurement {uid}"), why=why)
    raise CallError(f"{where}: measurement {uid}: the line has neither verdict nor blocking and accessible")


def level_of(calls: list[Call]) -> str:
    """Lab verdicts are scored as such when every call is one; any OONI pair puts all at OONI's level."""
    return "verdict" if calls and all(c.verdict is not None for c in calls) else "ooni"


# ------------------------------------------------------------------ foreign measurements


def score_measurements(scenario_path: Path, measurements: Path, vantage: str | None = None) -> ScoredRun:
    """Score OONI web_connectivity measurements that any tool wrote inside a lab of ``scenario_path``
    through their blocking/accessible keys. Each measurement's vantage is ``vantage``, else the
    one whose client address is its ``probe_ip``; every target of the scenario is expected from
    each vantage measured from (a target not measured is a no_measurement mismatch)."""
    from netlab.compile import compile_lab
    from netlab.loader import load_scenario

    scenario = load_scenario(scenario_path)
    plan = compile_lab(scenario)
    by_address = {str(v.address): name for name, v in plan.vantages.items()}
    if vantage is not None and vantage not in plan.vantages:
        raise CallError(f"--vantage {vantage}: no such vantage in {scenario.name} ({', '.join(plan.vantages)})")
    calls: dict[tuple[str, str], tuple[Call, str]] = {}
    for number, m in enumerate(iter_measurements([measurements]), 1):
        where = f"{measurements}:{number}"
        uid = str(m.get("measurement_uid") or f"line {number}")
        if m.get("test_name") != WEB_TEST:
            raise CallError(f"{where}: measurement {uid} is {m.get('test_name')!r}, not OONI {WEB_TEST}: only its "
                            "blocking/accessible keys can be scored")
        v = vantage or by_address.get(str(m.get("probe_ip")))
        if v is None:
            raise CallError(f"{where}: measurement {uid}: probe_ip {m.get('probe_ip')!r} is no vantage's address "
                            f"({', '.join(f'{n} {a}' for a, n in by_address.items())}); name it with --vantage")
        tk = m["test_keys"]
        if "blocking" not in tk or "accessible" not in tk:
            raise CallError(f"{where}: measurement {uid} has no blocking/accessible test keys (OONI's "
                            f"{WEB_TEST} analysis writes them)")
        key = (v, m["input"])
        if key in calls:
            raise ResultsError(f"{where}: {v} {m['input']} is measured more than once (also {calls[key][0].uid})")
        call = Call(uid, ooni=ooni_call(tk["blocking"], tk["accessible"], f"{where}: measurement {uid}"))
        calls[key] = (call, f"blocking={json.dumps(tk['blocking'])}, accessible={json.dumps(tk['accessible'])}")
    if not calls:
        raise ResultsError(f"{measurements}: no measurement to score")
    sites = dict(plan.site_addresses)
    measured_from = sorted({v for v, _ in calls})
    expectations = expected_verdicts(scenario, sites, WEB)
    oracle = RunOracle(scenario, sites, list(plan.vantages), WEB, expectations,
                       [k for k in expectations if k[0] in measured_from]).at_ooni_level()
    rows = [VerdictRow(v, url, call.at("ooni", url), oracle.expectations.get((v, url)), why, call.uid)
            for (v, url), (call, why) in calls.items()]
    return oracle.scored(rows, OONI_TECHNIQUES)


# ------------------------------------------------------------------ analysis programs


def run_analysis(command: str, files: list[Path], timeout: float) -> list[Call]:
    """Run ``command`` over the measurements: ``{}`` in it stands for the measurements file's path
    (one results folder), otherwise the measurements are its stdin, as JSON lines. Its stdout: one
    call per line (parse_call)."""
    argv = shlex.split(command)
    if not argv:
        raise CallError("--analysis: empty command")
    stdin: Any = subprocess.DEVNULL
    if "{}" in argv:
        if len(files) != 1:
            raise CallError("--analysis: {} names one measurements file; with several folders, read stdin")
        argv = [str(files[0]) if a == "{}" else a for a in argv]
    else:
        stdin = b"".join(f.read_bytes() for f in files)
    try:
        done = subprocess.run(argv, input=stdin if isinstance(stdin, bytes) else None,
                              stdin=None if isinstance(stdin, bytes) else stdin, capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise CallError(f"--analysis: {argv[0]}: no such program") from None
    except subprocess.TimeoutExpired:
        raise AnalysisCrashed(f"the analysis `{command}` ran past {timeout:g} s: nothing is scored") from None
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-8:]
        raise AnalysisCrashed(f"the analysis `{command}` exited with status {done.returncode}: nothing is scored"
                              + ("\n  " + "\n  ".join(tail) if tail else ""))
    calls = []
    for number, line in enumerate(done.stdout.splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise CallError(f"--analysis output line {number}: not JSON ({exc}): {line[:200]!r}") from None
        calls.append(parse_call(doc, f"--analysis output line {number}"))
    return calls


def score_analysis(dirs: list[Path], command: str, timeout: float = 600.0) -> ScoredRun:
    """Score an analysis program's calls on the measurements of results folders: one call per
    measurement, by measurement_uid; a missing, unknown or repeated uid is a CallError naming it."""
    oracle = run_oracle(dirs)
    files = measurement_files(dirs)
    measured = {str(m.get("measurement_uid")): (measurement_vantage(m), str(m["input"]))
                for m in iter_measurements(files)}
    calls: dict[str, Call] = {}
    for call in run_analysis(command, files, timeout):
        if call.uid not in measured:
            raise CallError(f"the analysis called measurement {call.uid}, which is not in {', '.join(map(str, dirs))}")
        if call.uid in calls:
            raise CallError(f"the analysis called measurement {call.uid} twice")
        calls[call.uid] = call
    missing = [uid for uid in measured if uid not in calls]
    if missing:
        first = ", ".join(f"{uid} ({' '.join(measured[uid])})" for uid in missing[:5])
        raise CallError(f"the analysis wrote no line for {len(missing)} of {len(measured)} measurements: {first}"
                        + (" ..." if len(missing) > 5 else ""))
    level = level_of(list(calls.values()))
    if level == "ooni":
        oracle = oracle.at_ooni_level()
    rows = [VerdictRow(v, url, c.at(level, url), oracle.expectations.get((v, url)),
                       c.why or f"the analysis' call ({level})", uid)
            for uid, c in calls.items() for v, url in [measured[uid]]]
    return oracle.scored(rows, OONI_TECHNIQUES if level == "ooni" else TECHNIQUES)
