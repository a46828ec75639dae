"""A self-contained HTML report of a results folder (or the shards of one run).

One file, no external assets: what ran (probe type and what it can see, dates, versions), the
mismatches first, a chart of verdicts per ISP and technique (inline SVG), the verdict matrix
(targets x vantages, coloured by verdict family, mismatches outlined with the expected verdict),
the score (confusion matrix, precision and recall per technique), enforcement per ISP
(collateral damage and effectiveness, measured beside the oracle's), probe errors, and for every
measurement (mismatches first) its timeline (DNS, connect, TLS handshake, request, from the OONI
``t0``/``t`` fields) with the OONI JSON one click away. Long strings in
the embedded JSON (bodies, certificates) are shortened; measurements.jsonl has them in full.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from harness.calls import OoniCall
from harness.errors import ResultsError
from harness.results import ScoredRun, score_results
from harness.score import NO_MEASUREMENT_REASONS, Score, VerdictRow, iter_measurements, measurement_files
from netlab.model import CONTROL
from netlab.verdict import Verdict

MAX_STRING = 1500  # characters of one JSON string shown in the report
FAMILIES = ("ok", "dns", "tcp", "tls", "http", "throttled", "site_down", "control_failed", "no_measurement")


@dataclass(frozen=True)
class Step:
    kind: str  # dns | tcp | tls | http
    label: str
    t0: float
    t: float
    failure: str | None


def anchor(vantage: str, url: str) -> str:
    """A stable, HTML-safe id for the measurement of (vantage, url)."""
    return "m-" + "".join(c if c.isalnum() else "-" for c in f"{vantage}-{url}")


def family(v: Verdict | OoniCall) -> str:
    return v.value if v in (Verdict.SITE_DOWN, Verdict.CONTROL_FAILED, Verdict.NO_MEASUREMENT) else v.technique


def timeline_steps(keys: dict[str, Any]) -> list[Step]:
    """The operations of a measurement, in start order, from its OONI test keys."""
    steps: list[Step] = []
    for q in keys.get("queries") or []:
        answers = ",".join(a.get("ipv4", "") for a in q.get("answers") or [] if a.get("ipv4"))
        label = f"DNS {q.get('engine', '')} {q.get('resolver_address') or ''} {q.get('hostname', '')}"
        steps.append(Step("dns", label + (f" → {answers}" if answers else ""), q.get("t0", 0.0), q.get("t", 0.0),
                          q.get("failure")))
    for c in keys.get("tcp_connect") or []:
        status = c.get("status") or {}
        steps.append(Step("tcp", f"connect {c.get('ip')}:{c.get('port')}", c.get("t0", 0.0), c.get("t", 0.0),
                          status.get("failure")))
    for h in keys.get("tls_handshakes") or []:
        steps.append(Step("tls", f"TLS {h.get('server_name', '')} {h.get('tls_version') or ''}", h.get("t0", 0.0),
                          h.get("t", 0.0), h.get("failure")))
    for r in keys.get("requests") or []:
        req, resp = r.get("request") or {}, r.get("response") or {}
        code = resp.get("code") or ""
        steps.append(Step("http", f"{req.get('method', 'GET')} {req.get('url', '')} {code}", r.get("t0", 0.0),
                          r.get("t", 0.0), r.get("failure")))
    return sorted(steps, key=lambda s: (s.t0, s.t))


def shorten(value: Any) -> Any:
    """The measurement with every long string cut to MAX_STRING characters."""
    if isinstance(value, str) and len(value) > MAX_STRING:
        return value[:MAX_STRING] + f"… [{len(value) - MAX_STRING} more characters in measurements.jsonl]"
    if isinstance(value, dict):
        return {k: shorten(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shorten(v) for v in value]
    return value


def _timeline_html(steps: list[Step]) -> str:
    if not steps:
        return '<p class="exp">no network operations recorded</p>'
    end = max(max(s.t for s in steps), 1e-6)
    rows = []
    for s in steps:
        left, width = 100 * s.t0 / end, max(100 * (s.t - s.t0) / end, 0.3)
        failed = " failed" if s.failure else ""
        took = f"{(s.t - s.t0) * 1000:.1f} ms" + (f" · {s.failure}" if s.failure else "")
        rows.append(f'<div class="tl-row" data-step="{s.kind}"><div class="tl-label" title="{escape(s.label)}">'
                    f"{escape(s.label)}</div><div class=\"tl-track\"><div class=\"tl-bar tl-{s.kind}{failed}\" "
                    f'style="left:{left:.2f}%;width:{min(width, 100 - left):.2f}%"></div></div>'
                    f'<div class="tl-time">{s.t0 * 1000:.1f} ms +{escape(took)}</div></div>')
    return f'<div class="tl">{"".join(rows)}</div>'


def _verdict_cell(r: VerdictRow | None) -> str:
    if r is None:
        return '<td class="v">–</td>'
    fam = family(r.observed)
    attrs = f'data-vantage="{escape(r.vantage)}" data-url="{escape(r.url)}" data-verdict="{r.observed.value}"'
    if r.no_measurement:
        attrs += f' data-no-measurement="{escape(r.no_measurement)}"'
    text = escape(r.label)
    cls = f"v fam-{fam}"
    if not r.matches:
        cls += " mismatch"
        exp = r.expected.verdict.value if r.expected else "?"
        text = f'✗ {text} <span class="exp">(expected {escape(exp)})</span>'
        attrs += f' data-expected="{escape(exp)}"'
    title = escape(r.why + (f" — expected: {r.expected.reason}" if r.expected else ""))
    return f'<td class="{cls}" {attrs} title="{title}"><a href="#{anchor(r.vantage, r.url)}">{text}</a></td>'


def verdict_matrix_html(score: Score, vantages: list[str], order: list[str] | None = None) -> str:
    """Rows in ``order`` (the scenario's target order), then any other measured URL."""
    measured = list(dict.fromkeys(r.url for r in score.rows))
    seen = set(measured)
    urls = list(dict.fromkeys([u for u in order or [] if u in seen] + measured))
    cols = [v for v in vantages if v != CONTROL] + [CONTROL]
    cells = {(r.url, r.vantage): r for r in score.rows}
    head = "".join(f"<th>{escape(v)}</th>" for v in cols)
    body = "".join(f"<tr><th>{escape(u)}</th>{''.join(_verdict_cell(cells.get((u, v))) for v in cols)}</tr>"
                   for u in urls)
    legend = "".join(f'<span class="fam-{f}">{f}</span>' for f in FAMILIES)
    return (f'<table id="verdicts"><thead><tr><th>target</th>{head}</tr></thead><tbody>{body}</tbody></table>'
            f'<p class="legend">verdict families: {legend} — outlined ✗: differs from the ground truth</p>')


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def score_html(score: Score) -> str:
    tech = ["<tr><th>technique</th><th>precision</th><th>recall</th><th>tp</th><th>fp</th><th>fn</th></tr>"]
    for name, ts in score.techniques.items():
        if ts.tp + ts.fp + ts.fn:
            tech.append(f'<tr data-technique="{name}"><th>{name}</th><td class="num">{_pct(ts.precision)}</td>'
                        f'<td class="num">{_pct(ts.recall)}</td><td class="num">{ts.tp}</td>'
                        f'<td class="num">{ts.fp}</td><td class="num">{ts.fn}</td></tr>')
    labels = sorted({e for e, _ in score.confusion} | {o for _, o in score.confusion})
    conf = ["<tr><th>expected \\ observed</th>" + "".join(f"<th>{escape(lab)}</th>" for lab in labels) + "</tr>"]
    for e in labels:
        cells = []
        for o in labels:
            n = score.confusion.get((e, o), 0)
            cls = "zero" if not n else ("diag" if e == o else "offdiag")
            cells.append(f'<td class="num {cls}" data-expected="{e}" data-observed="{o}">{n or "·"}</td>')
        conf.append(f"<tr><th>{escape(e)}</th>{''.join(cells)}</tr>")
    return (f'<h3>Precision and recall per technique</h3><table id="techniques">{"".join(tech)}</table>'
            f'<h3>Confusion matrix (rows: expected, columns: observed)</h3><table id="confusion">{"".join(conf)}'
            "</table>")


def measurement_html(r: VerdictRow | None, m: dict[str, Any]) -> str:
    vantage, url = m.get("x_vantage", ""), m.get("input", "")
    keys = m.get("test_keys") or {}
    verdict = r.observed.value if r else "?"
    fam = family(r.observed) if r else "ok"
    exp = ""
    if r is not None and r.expected is not None:
        exp = f" — expected {escape(r.expected.verdict.value)} ({escape(r.expected.reason)})"
    ooni = escape(json.dumps(shorten(m), indent=1, ensure_ascii=False))
    return (f'<section class="m" id="{anchor(vantage, url)}" data-match="{str(r.matches if r else True).lower()}">'
            f'<h3><span class="fam-{fam}">&nbsp;{escape(verdict)}&nbsp;</span> {escape(vantage)} · {escape(url)}</h3>'
            f'<div class="exp">{escape(r.why if r else "")}{exp} · {escape(m.get("test_name", ""))} '
            f'{escape(m.get("measurement_uid", ""))} · runtime {m.get("test_runtime", 0):.3f} s</div>'
            f"{_timeline_html(timeline_steps(keys))}"
            f"<details><summary>OONI JSON</summary><pre>{ooni}</pre></details></section>")


def unmeasured_html(r: VerdictRow) -> str:
    """The section of an expected (vantage, url) that has no measurement: why, and what was expected."""
    exp = ""
    if r.expected is not None:
        exp = f" — expected {escape(r.expected.verdict.value)} ({escape(r.expected.reason)})"
    return (f'<section class="m unmeasured" id="{anchor(r.vantage, r.url)}" data-match="false" '
            f'data-no-measurement="{escape(r.no_measurement)}">'
            f'<h3><span class="fam-no_measurement">&nbsp;✗ {escape(r.label)}&nbsp;</span> {escape(r.vantage)} · '
            f'{escape(r.url)}</h3><div class="exp">{escape(r.why)}{exp}</div>'
            '<p class="exp">no measurement: counted as a mismatch</p></section>')


def summary_html(score: Score) -> str:
    n, bad = score.scored, len(score.mismatches)
    text = f"{n - bad}/{n} verdicts match the ground truth ({score.accuracy:.1%}), {bad} mismatch(es)"
    unmeasured = score.unmeasured
    if unmeasured:
        text += (f"; {sum(unmeasured.values())} expected verdict(s) have no measurement ("
                 + ", ".join(f"{k} {unmeasured[k]}" for k in NO_MEASUREMENT_REASONS if unmeasured[k]) + ")")
    if not n:
        text += "; nothing was scored, so nothing passed"
    return f'<p class="summary {"good" if score.passed else "badtxt"}" id="summary">{escape(text)}</p>'


def about_html(run: ScoredRun, measured: list[dict[str, Any]]) -> str:
    """What ran: probe type(s) and what they can see, when, and which versions."""
    from probes.measurement import software_version

    caps = run.capabilities
    probes = sorted({f"{(m.get('annotations') or {}).get('probe') or run.probe} {m.get('test_version', '?')} "
                     f"({m.get('test_name', '?')})" for m in measured}) or [run.probe]
    times = sorted(m["measurement_start_time"] for m in measured if m.get("measurement_start_time"))
    software = sorted({f"{m.get('software_name', '?')} {m.get('software_version', '?')}" for m in measured})
    rows = [("probe type(s)", ", ".join(probes)),
            ("it reaches", " → ".join(caps.stages) + (", asks the public resolver" if caps.public_dns else "")
             + (", follows redirects" if caps.redirects else "") + (", times downloads" if caps.throughput else "")),
            ("it cannot see", "; ".join(caps.blind_spots()) or "nothing the lab emulates"),
            ("measured (UTC)", f"{times[0]} – {times[-1]}" if times else "–"),
            ("report written (UTC)", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")),
            ("versions", f"measured by {', '.join(software) or '?'}; report by fauxisp {software_version()}, "
             f"python {platform.python_version()}"),
            ("results", ", ".join(f"{i.get('lab', '?')} ({i.get('backend', '?')}), shard "
                                  f"{'/'.join(map(str, i.get('shard') or [1, 1]))}" for i in run.infos) or "–")]
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f'<table id="about">{body}</table>'


def mismatches_html(score: Score) -> str:
    """Every mismatch, first thing after the summary: what was seen, what the oracle expected and why."""
    bad = score.mismatches
    if not bad:
        return '<p id="mismatches" class="good">No mismatch.</p>'
    items = []
    for r in bad:
        exp = r.expected
        items.append(f'<tr data-vantage="{escape(r.vantage)}" data-url="{escape(r.url)}"><td>{escape(r.vantage)}</td>'
                     f'<td><a href="#{anchor(r.vantage, r.url)}">{escape(r.url)}</a></td>'
                     f'<td class="v fam-{family(r.observed)}">{escape(r.label)}</td>'
                     f"<td>{escape(exp.verdict.value if exp else '?')}</td><td>{escape(exp.reason if exp else '')}</td>"
                     f"<td>{escape(r.why)}</td><td>{escape(r.measurement_uid or '–')}</td></tr>")
    return ('<table id="mismatches"><tr><th>vantage</th><th>target</th><th>observed</th><th>expected</th>'
            f'<th>rule</th><th>why</th><th>measurement</th></tr>{"".join(items)}</table>')


CHART_FAMILIES = ("ok", "dns", "tcp", "tls", "http", "throttled", "site_down", "control_failed", "no_measurement",
                  "tcp_ip", "http-failure", "http-diff", "unknown")
CHART_COLOURS = {"ok": "#8fd18f", "dns": "#b57edc", "tcp": "#e57373", "tls": "#f1c40f", "http": "#5dade2",
                 "throttled": "#7f9cf5", "site_down": "#aaaaaa", "control_failed": "#ff5252",
                 "no_measurement": "#c0392b",
                 "tcp_ip": "#e57373", "http-failure": "#f1c40f", "http-diff": "#5dade2", "unknown": "#cccccc"}


def chart_svg(score: Score, vantages: list[str]) -> str:
    """Verdicts per vantage and technique: one stacked bar per vantage, segments by verdict family
    (observed), with the count of mismatches beside it. Inline SVG, no script."""
    counts: dict[str, dict[str, int]] = {v: {} for v in vantages}
    bad: dict[str, int] = {v: 0 for v in vantages}
    for r in score.rows:
        fam = family(r.observed) if isinstance(r.observed, Verdict) else r.observed.technique
        counts.setdefault(r.vantage, {})[fam] = counts.setdefault(r.vantage, {}).get(fam, 0) + 1
        bad[r.vantage] = bad.get(r.vantage, 0) + (not r.matches)
    order = [v for v in vantages if v != CONTROL] + [v for v in vantages if v == CONTROL]
    order += [v for v in counts if v not in order]
    most = max((sum(c.values()) for c in counts.values()), default=1) or 1
    label_w, bar_w, row_h, top = 130, 560, 26, 10
    fams = [f for f in CHART_FAMILIES if any(f in c for c in counts.values())]
    height = top + row_h * len(order) + 30
    parts = [f'<svg id="chart" width="{label_w + bar_w + 140}" '
             f'height="{height}" role="img" aria-label="verdicts per ISP and technique">']
    for i, v in enumerate(order):
        y = top + i * row_h
        parts.append(f'<text x="{label_w - 6}" y="{y + 16}" text-anchor="end" font-size="12">{escape(v)}</text>')
        x = float(label_w)
        for f in fams:
            n = counts[v].get(f, 0)
            if not n:
                continue
            w = bar_w * n / most
            parts.append(f'<rect class="bar" data-vantage="{escape(v)}" data-family="{f}" data-count="{n}" x="{x:.1f}" '
                         f'y="{y}" width="{w:.1f}" height="{row_h - 6}" fill="{CHART_COLOURS[f]}"><title>{escape(v)}: '
                         f"{n} {f}</title></rect>")
            if w > 18:
                parts.append(f'<text x="{x + w / 2:.1f}" y="{y + 14}" text-anchor="middle" font-size="11">{n}</text>')
            x += w
        mark = f"{bad.get(v, 0)} mismatch(es)" if bad.get(v) else "all match"
        parts.append(f'<text x="{x + 6:.1f}" y="{y + 15}" font-size="11" fill="{"#c0392b" if bad.get(v) else "#555"}">'
                     f"{mark}</text>")
    ly = top + row_h * len(order) + 12
    for j, f in enumerate(fams):
        lx = label_w + j * 95
        parts.append(f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{CHART_COLOURS[f]}"/>'
                     f'<text x="{lx + 16}" y="{ly + 11}" font-size="11">{escape(f)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def impact_html(run: ScoredRun) -> str:
    """Enforcement per ISP: targets blocked, collateral damage and effectiveness per service,
    measured with the oracle's figure in brackets (as the terminal report's table)."""
    services = sorted({s for i in run.impact_expected.values() for s in i.effectiveness})
    head = "<tr><th>ISP</th><th>blocked</th><th>collateral damage (blocked, but no rule meant it)</th>" + "".join(
        f"<th>{escape(s)}: effectiveness</th>" for s in services) + "</tr>"
    rows = []
    for isp, obs in run.impact_observed.items():
        exp = run.impact_expected[isp]
        same = obs.to_json() == exp.to_json()
        coll = f"{len(obs.collateral)} ({len(exp.collateral)})" + (
            ": " + ", ".join(escape(u) for u in obs.collateral) if obs.collateral else "")
        eff = "".join(f'<td class="num">{obs.effectiveness.get(s, 0):.0%} ({exp.effectiveness.get(s, 0):.0%})</td>'
                      for s in services)
        rows.append(f'<tr data-isp="{escape(isp)}" class="{"" if same else "mismatch"}"><th>{escape(isp)}</th>'
                    f'<td class="num">{len(obs.blocked)} ({len(exp.blocked)})</td><td>{coll}</td>{eff}</tr>')
    note = ("" if run.impact_matches
            else '<p class="badtxt">collateral damage or effectiveness differ from the oracle\'s</p>')
    return f'<table id="impact">{head}{"".join(rows)}</table>{note}'


def errors_html(run: ScoredRun) -> str:
    errors = [e for i in run.infos for e in i.get("errors") or [] if isinstance(e, dict)]
    if not errors:
        return '<p id="probe-errors">No probe error.</p>'
    rows = "".join(f"<tr><td>{escape(str(e.get('vantage')))}</td><td>{escape(str(e.get('url')))}</td>"
                   f"<td>{escape(str(e.get('kind') or 'error'))}</td><td>{escape(str(e.get('error')))}</td></tr>"
                   for e in errors)
    return (f'<table id="probe-errors"><tr><th>vantage</th><th>target</th><th>kind</th><th>error</th></tr>{rows}'
            "</table>")


def render(run: ScoredRun, measurements: Iterable[dict[str, Any]], title: str,
           progress: Callable[[], None] | None = None) -> str:
    score = run.score
    rows = {(r.vantage, r.url): r for r in score.rows}
    summary = summary_html(score)
    # Expected verdicts without a measurement first, then the other mismatches: what a reader must see.
    sections = [unmeasured_html(r) for r in score.rows if r.no_measurement]
    later: list[str] = []
    measured: list[dict[str, Any]] = []
    for m in measurements:
        measured.append({k: m.get(k) for k in ("annotations", "test_version", "test_name", "measurement_start_time",
                                                "software_name", "software_version")})
        row = rows.get((m.get("x_vantage", ""), m.get("input", "")))
        (sections if row is not None and not row.matches else later).append(measurement_html(row, m))
        if progress:
            progress()
    sections += later
    body = (f"<h1>{escape(title)}</h1><p>scenario <b>{escape(run.scenario.name)}</b>: "
            f"{escape(run.scenario.description)}</p>{summary}{about_html(run, measured)}"
            f"<h2>Mismatches ({len(score.mismatches)})</h2>{mismatches_html(score)}"
            f"<h2>Verdicts per ISP and technique</h2>{chart_svg(score, run.vantages)}"
            f"<h2>Verdicts</h2>{verdict_matrix_html(score, run.vantages, [t.url for t in run.scenario.targets])}"
            f"<h2>Score against the ground truth</h2>{score_html(score)}"
            f"<h2>Enforcement per ISP (measured, oracle in brackets)</h2>{impact_html(run)}"
            f"<h2>Probe errors</h2>{errors_html(run)}"
            f'<h2>Measurements ({len(sections)})</h2><p><input id="filter" type="search" '
            f'placeholder="filter: vantage, URL, verdict, failure…"> <label><input type="checkbox" '
            f'id="only-mismatches"> only mismatches</label></p>{"".join(sections)}')
    template = Template(resources.files("harness").joinpath("templates/report.html").read_text(encoding="utf-8"))
    return template.substitute(title=escape(title), body=body)


def write_report(dirs: list[Path], out: Path, fingerprints: list[Path] | None = None, title: str | None = None,
                 progress: Callable[[], None] | None = None) -> ScoredRun:
    run = score_results(dirs, fingerprints)
    ordered = sorted(iter_measurements(measurement_files(dirs)),
                     key=lambda m: (m.get("input", ""), m.get("x_vantage", "") == CONTROL, m.get("x_vantage", "")))
    html = render(run, ordered, title or f"fauxisp report: {run.scenario.name}", progress)
    try:
        out.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise ResultsError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    return run
