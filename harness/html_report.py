"""A self-contained HTML report of a results folder (or the shards of one run).

One file, no external assets: the verdict matrix (targets x vantages, coloured by verdict
family, mismatches outlined with the expected verdict), the score (confusion matrix, precision
and recall per technique), and for every measurement its timeline (DNS, connect, TLS handshake,
request, from the OONI ``t0``/``t`` fields) with the OONI JSON one click away. Long strings in
the embedded JSON (bodies, certificates) are shortened; measurements.jsonl has them in full.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html import escape
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from harness.results import ScoredRun, score_results
from harness.score import NO_MEASUREMENT_REASONS, ResultsError, Score, VerdictRow, iter_measurements, measurement_files
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


def family(v: Verdict) -> str:
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


def render(run: ScoredRun, measurements: Iterable[dict[str, Any]], title: str,
           progress: Callable[[], None] | None = None) -> str:
    score = run.score
    rows = {(r.vantage, r.url): r for r in score.rows}
    summary = summary_html(score)
    # Expected verdicts without a measurement first: they are what a reader must see.
    sections = [unmeasured_html(r) for r in score.rows if r.no_measurement]
    for m in measurements:
        sections.append(measurement_html(rows.get((m.get("x_vantage", ""), m.get("input", ""))), m))
        if progress:
            progress()
    body = (f"<h1>{escape(title)}</h1><p>scenario <b>{escape(run.scenario.name)}</b>: "
            f"{escape(run.scenario.description)}</p>{summary}"
            f"<h2>Verdicts</h2>{verdict_matrix_html(score, run.vantages, [t.url for t in run.scenario.targets])}"
            f"<h2>Score against the ground truth</h2>{score_html(score)}"
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
    html = render(run, ordered, title or f"censorlab report: {run.scenario.name}", progress)
    try:
        out.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise ResultsError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    return run
