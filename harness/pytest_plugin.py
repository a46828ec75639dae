"""pytest plugin (entry point ``pytest11``): a running lab as a fixture, for projects that test
their detection logic against ground truth.

- ``lab``: session-scoped; brings the scenario up once, tears it down at the end of the session.
  The scenario comes from ``--lab-scenario PATH``, else the ``@pytest.mark.lab_scenario(PATH)``
  marker of the tests that use ``lab`` (they must agree), else the ini option ``lab_scenario``.
  Other ini options: ``lab_backend`` (netns | compose, default netns), ``lab_name`` (default: a
  unique name per session). Results folders live under pytest's ``tmp_path_factory`` (pytest keeps
  the last sessions' folders), or under ``--lab-keep DIR``.
- ``lab.measure(probe="web", vantages=None, targets=None)`` -> ``LabRun`` with measurements,
  verdicts and the expectations of the oracle.
- ``assert_verdicts(got, expected, run=None)``: AssertionError with a readable diff of verdict
  tables and, per mismatch, the oracle's rule, the measurement_uid, what it saw and the kept
  results folder (``run``: the LabRun whose measurements a detector of your own judged).

Docs: docs/pytest-plugin.md (with a complete example test file).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from harness.score import VerdictRow
    from netlab.backends.base import RunningLab
    from netlab.model import Scenario

MARKER = "lab_scenario"
Verdicts = dict[tuple[str, str], str]  # (vantage, url) -> verdict


# ------------------------------------------------------------------ hooks


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fauxisp", "fauxisp: a censorship lab as a fixture")
    group.addoption("--lab-scenario", default=None, help="scenario file for the `lab` fixture "
                    "(overrides markers and the ini option)")
    group.addoption("--lab-keep", default=None, metavar="DIR", help="keep every results folder of the `lab` "
                    "fixture under DIR/<lab name> (default: pytest's temporary folders, which keep the last "
                    "few sessions)")
    parser.addini("lab_scenario", "scenario file for the `lab` fixture (relative to the rootdir)", default="")
    parser.addini("lab_backend", "lab backend: netns (default) or compose", default="netns")
    parser.addini("lab_name", "lab name (default: unique per session)", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}(path): the scenario the `lab` fixture brings up for this test "
                            "(path relative to the test file, or to the rootdir)")


# ------------------------------------------------------------------ results


@dataclass
class LabRun:
    """What one ``lab.measure`` produced."""

    out_dir: Path
    measurements: list[dict[str, Any]]
    rows: list[VerdictRow]
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def verdicts(self) -> Verdicts:
        return {(r.vantage, r.url): r.observed.value for r in self.rows}

    @property
    def expected(self) -> Verdicts:
        """The oracle's verdicts (with the scenario's ``expect`` pins) for what was measured."""
        return {(r.vantage, r.url): r.expected.verdict.value for r in self.rows if r.expected is not None}

    def measurement(self, vantage: str, url: str) -> dict[str, Any] | None:
        return next((m for m in self.measurements if m.get("x_vantage") == vantage and m.get("input") == url), None)


class Lab:
    """A running lab of one scenario. ``measure`` runs a probe type from vantages inside it."""

    def __init__(self, scenario: Scenario, running: RunningLab, backend: str, workdir: Path) -> None:
        self.scenario = scenario
        self.running = running
        self.backend = backend
        self.workdir = workdir
        self._runs = 0

    @property
    def name(self) -> str:
        return self.running.name

    @property
    def vantages(self) -> list[str]:
        return list(self.running.state.vantages)

    def expected(self) -> Verdicts:
        """The oracle's verdict for every (vantage, target) of the scenario."""
        from ipaddress import IPv4Address

        from netlab.oracle import expected_verdicts

        sites = {k: IPv4Address(v) for k, v in self.running.state.site_addresses.items()}
        return {k: e.verdict.value for k, e in expected_verdicts(self.scenario, sites).items()}

    def measure(self, probe: str = "web", vantages: list[str] | None = None, targets: list[str] | None = None,
                concurrency: int = 16) -> LabRun:
        """Measure ``targets`` (default: the scenario's; URLs on its sites) with ``probe`` from
        ``vantages`` (default: all). The control vantage is always measured too: verdicts need it."""
        from harness.campaign import CampaignConfig
        from harness.runner import measure_and_score
        from harness.score import iter_measurements
        from harness.testlist import scenario_with_targets

        self._runs += 1
        out = self.workdir / f"run-{self._runs}-{probe}"
        scenario = self.scenario
        if targets is not None:
            scenario = scenario_with_targets(self.scenario, list(targets))
        wanted = list(vantages) if vantages is not None else self.vantages
        unknown = sorted(set(wanted) - set(self.vantages))
        if unknown:
            raise ValueError(f"no vantage {', '.join(unknown)} in lab {self.name} "
                             f"(vantages: {', '.join(self.vantages)})")
        run_vantages = list(dict.fromkeys([*wanted, "control"]))
        config = CampaignConfig(probe=probe, concurrency=concurrency, vantages=run_vantages)
        outcome = measure_and_score(self.running, scenario, out, config, backend=self.backend,
                                    record_targets=targets is not None)
        if outcome.scored is None:
            raise RuntimeError(f"lab fault in {self.name}: {', '.join(outcome.campaign.lab_faults)}; "
                               "the measurements cannot be trusted")
        rows = [r for r in outcome.scored.score.rows if r.vantage in wanted]
        measurements = [m for m in iter_measurements([out / "measurements.jsonl"]) if m.get("x_vantage") in wanted]
        return LabRun(out, measurements, rows, outcome.campaign.errors)


# ------------------------------------------------------------------ fixtures


def _marker_paths(session: pytest.Session) -> set[Path]:
    paths: set[Path] = set()
    for item in session.items:
        if "lab" not in getattr(item, "fixturenames", ()):
            continue
        marker = item.get_closest_marker(MARKER)
        if marker is None:
            continue
        if not marker.args:
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{MARKER} needs the scenario path")
        raw = Path(marker.args[0])
        here = Path(str(item.fspath)).parent / raw
        paths.add((here if here.exists() else Path(str(session.config.rootpath)) / raw).resolve())
    return paths


def scenario_path(session: pytest.Session) -> Path:
    config = session.config
    cli = config.getoption("lab_scenario", None)
    if cli:
        return Path(cli).resolve()
    marked = _marker_paths(session)
    if len(marked) > 1:
        raise pytest.UsageError("the session-scoped `lab` fixture brings up one scenario, but the tests mark "
                                f"several: {', '.join(sorted(map(str, marked)))}; run them in separate sessions")
    if marked:
        return marked.pop()
    ini = config.getini("lab_scenario")
    if ini:
        return (Path(str(config.rootpath)) / str(ini)).resolve()
    raise pytest.UsageError("the `lab` fixture needs a scenario: @pytest.mark.lab_scenario(\"path.yaml\"), "
                            "the ini option lab_scenario, or --lab-scenario")


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A lab of the chosen scenario, up for the whole session."""
    from netlab.backends import get_backend
    from netlab.compile import compile_lab
    from netlab.loader import load_scenario

    config = request.config
    scenario = load_scenario(scenario_path(request.session))
    backend = config.getini("lab_backend") or "netns"
    name = config.getini("lab_name") or f"pt{uuid.uuid4().hex[:6]}"
    keep = config.getoption("lab_keep", None)
    if keep:
        workdir = Path(keep).resolve() / name
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        # Not a TemporaryDirectory: the folders a failing test names must outlive the session.
        tmp_path_factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
        workdir = tmp_path_factory.mktemp(f"lab-{name}")
    lab_backend = get_backend(backend)
    running = lab_backend.up(compile_lab(scenario, name, host=lab_backend.host_capabilities()))
    try:
        yield Lab(scenario, running, backend, workdir)
    finally:
        running.down()


# ------------------------------------------------------------------ assertions


def _as_verdicts(value: LabRun | Mapping[Any, Any]) -> Verdicts:
    """Accept a LabRun, {(vantage, url): verdict} or {vantage: {url: verdict}} (like `expect:`)."""
    if isinstance(value, LabRun):
        return value.verdicts
    out: Verdicts = {}
    for k, v in value.items():
        if isinstance(k, tuple):
            out[(str(k[0]), str(k[1]))] = str(v)
        elif isinstance(v, Mapping):
            out.update({(str(k), str(url)): str(verdict) for url, verdict in v.items()})
        else:
            raise TypeError(f"verdicts must be keyed by (vantage, url) or nested {{vantage: {{url: verdict}}}}, "
                            f"not {k!r}")
    return out


def _summary(m: dict[str, Any] | None) -> str:
    """One line of what a measurement saw, stage by stage."""
    if m is None:
        return "no measurement"
    k = m.get("test_keys") or {}
    parts = []
    for q in k.get("queries") or []:
        ans = ",".join(a.get("ipv4", "") for a in q.get("answers") or [] if a.get("ipv4")) or "-"
        parts.append(f"dns[{q.get('engine')}] {q.get('failure') or ans}")
    for c in k.get("tcp_connect") or []:
        parts.append(f"tcp {c.get('ip')}:{c.get('port')} {(c.get('status') or {}).get('failure') or 'ok'}")
    for h in k.get("tls_handshakes") or []:
        parts.append(f"tls {h.get('failure') or 'ok'}")
    for r in k.get("requests") or []:
        parts.append(f"http {r.get('failure') or (r.get('response') or {}).get('code')}")
    return "; ".join(parts) or "no network operations"


def verdict_diff(got: Verdicts, expected: Verdicts, run: LabRun | None = None, detector: bool = False) -> str:
    """A verdict table of the expected cells (✗ got (expected) where they differ) and, per mismatch,
    the measurement behind it. ``detector``: ``got`` is another detector's verdicts on ``run``'s
    measurements (the lab's own verdict is then shown beside it). Empty string when everything
    expected is what was got."""
    bad = {k for k, v in expected.items() if got.get(k) != v}
    if not bad:
        return ""
    vantages = list(dict.fromkeys(v for v, _ in expected))
    urls = list(dict.fromkeys(u for _, u in expected))
    cells = [["target", *vantages]]
    for u in urls:
        row = [u]
        for v in vantages:
            if (v, u) not in expected:
                row.append("")
            elif (v, u) in bad:
                row.append(f"✗ {got.get((v, u), 'missing')} (expected {expected[(v, u)]})")
            else:
                row.append(expected[(v, u)])
        cells.append(row)
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = [f"{len(bad)} of {len(expected)} verdicts differ from what was expected:", ""]
    for i, r in enumerate(cells):
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    lines += ["", "mismatches:"]
    rows = {(r.vantage, r.url): r for r in run.rows} if run is not None else {}
    for v, u in sorted(bad, key=lambda k: (urls.index(k[1]), vantages.index(k[0]))):
        lines.append(f"  {v} {u}: got {got.get((v, u), 'missing')}, expected {expected[(v, u)]}")
        scored = rows.get((v, u))
        if scored is not None:
            lines.append(f"      lab's verdict: {scored.label} ({scored.why})" if detector
                         else f"      why: {scored.why}")
            if scored.expected is not None:
                lines.append(f"      oracle: {scored.expected.verdict.value} ({scored.expected.reason})")
        if run is not None:
            m = run.measurement(v, u)
            uid = m.get("measurement_uid") if m else "-"
            lines.append(f"      measurement: {uid} in {run.out_dir / 'measurements.jsonl'}")
            lines.append(f"      saw: {_summary(m)}")
    if run is not None:
        lines += ["", f"results kept in {run.out_dir} (measurements.jsonl, verdicts.jsonl, score.json; "
                  f"`harness report {run.out_dir} -o report.html`)"]
    return "\n".join(lines)


def assert_verdicts(got: LabRun | Mapping[Any, Any], expected: LabRun | Mapping[Any, Any],
                    run: LabRun | None = None) -> None:
    """Every verdict in ``expected`` must be in ``got``; extra cells of ``got`` are ignored. A
    ``LabRun`` as ``expected`` stands for the oracle's verdicts of its measurements.

    Raises AssertionError with a diff of the verdict tables and, per mismatch, the oracle's rule
    and the measurement (uid, file, what each stage saw) and the results folder, which stays on
    disk. The measurements come from ``got`` when it is a ``LabRun``, else from ``run`` (or a
    ``LabRun`` given as ``expected``): pass it when ``got`` is your own detector's verdicts."""
    __tracebackhide__ = True
    run = got if isinstance(got, LabRun) else run or (expected if isinstance(expected, LabRun) else None)
    if isinstance(expected, LabRun):
        expected = expected.expected
    diff = verdict_diff(_as_verdicts(got), _as_verdicts(expected), run, detector=not isinstance(got, LabRun))
    if diff:
        raise AssertionError(diff)

