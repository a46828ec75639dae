"""Fuzzing the loader: the shipped scenarios with values swapped for odd ones (wrong types, huge
numbers, NaN, path traversal, bad IDNA, unconstructible YAML...) either load or are a ScenarioError
naming file:line: -- never another exception. What loads must compile and get verdicts from the
oracle, again raising nothing but NetlabError.

Deterministic (derandomize) and bounded; compile_lab is pure (host capabilities are an argument),
so no network namespace is ever created by a unit test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netlab.compile import compile_lab
from netlab.errors import NetlabError, ScenarioError
from netlab.loader import parse_scenario
from netlab.model import Scenario
from netlab.oracle import expected_verdicts

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
TEXTS = {p: p.read_text() for p in SCENARIOS}

ODD = [
    "", "~", "null", "[]", "{}", "[1, 2]", "{a: 1}", "[[[]]]", ".nan", ".inf", "-.inf", "1.0e+999", "-1", "0",
    "99999999999999999999", "9" * 300, "1.5", "true", "no", "'../x.html'", "'../../etc/passwd'", "/etc/hostname",
    "'~/x'", "xn--zz.test", "ab--cd.test", "пример.test", "'a..b'", "'-a.test'", "'\"'", "'\\u0000'",
    "\"\\0\"", "!!int abc", "!foo x", "!!binary '@@'", "2001-13-45", "12:30:00", "99999999999999gbit", "0kbit",
    "900GB", "100000000s", "101%", "0.0.0.0", "255.255.255.255", "8.8.8.8", "198.18.0.1", "198.19.255.7",
    "'10.0.0.0/33'", "65536", "'https://a.test:99999/'", "'ftp://x/'", "'http:///'", "dns.bogus", "'*'",
    "&a x", "*nothere", "'x' 'y'", "'" + "a" * 300 + "'", "{match: {}}", "[{match: {sni: x.test}, action: reset}]",
    "{rules: [{match: {domain: x}, action: nxdomain}]}", "control", "inet",
]
# Values that are fine somewhere, so that more mutants load and reach the compiler and the oracle.
PLAUSIBLE = [
    "1", "30", "0.5", "443", "80", "853", "tcp", "udp", "news.test", "ok.test", "www.blog.test", "reset", "drop",
    "reject", "nxdomain", "servfail", "refused", "timeout", "proxy", "blockpage", "{answer: 10.1.1.1}",
    "{answer: 198.18.1.1}", "{inject: 10.10.34.35}", "1mbit", "8kbit", "32gbit", "1MiB", "0", "1GiB", "60s",
    "100ms", "5%", "198.18.0.50", "198.18.0.0/15", "10.0.0.0/8", "https://news.test/", "http://ok.test/x",
    "ok", "dns.nxdomain", "site_down", "expired", "unknown_ca", "refused", "no_address", "unresolvable",
    "[isp-a]", "{to: 'https://ok.test/'}", "{hops: 64}", "{location: 'http://'}", "503", "false",
]
REPLACEMENT = st.one_of(st.sampled_from(PLAUSIBLE), st.sampled_from(ODD),
                        st.text(min_size=0, max_size=12).map(lambda s: repr(s)))


def spans(text: str) -> list[tuple[int, int]]:
    """Where every value scalar of the document is (keys left alone: a renamed key is only ever an
    "unknown key"), in characters of the text."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    out: list[tuple[int, int]] = []
    stack: list[yaml.Node] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.ScalarNode):
            if node.start_mark.line == node.end_mark.line:  # block scalars span lines: leave them
                out.append((node.start_mark.index, node.end_mark.index))
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value
        elif isinstance(node, yaml.MappingNode):
            stack += [v for _, v in node.value]
    return sorted(out)


SPANS = {p: spans(t) for p, t in TEXTS.items()}


@st.composite
def mutated(draw: st.DrawFn) -> tuple[Path, str]:
    path = draw(st.sampled_from(SCENARIOS))
    text = TEXTS[path]
    chosen = sorted(draw(st.lists(st.sampled_from(SPANS[path]), min_size=1, max_size=2, unique=True)), reverse=True)
    for start, end in chosen:  # from the end, so earlier spans stay where they are
        text = text[:start] + draw(REPLACEMENT) + text[end:]
    return path, text


def check(path: Path, text: str) -> None:
    source = str(path)  # the real file's place: body_file paths resolve beside it
    try:
        scenario = parse_scenario(text, source=source)
    except ScenarioError as exc:
        assert exc.file == source
        if exc.line is not None:
            assert str(exc).startswith(f"{source}:{exc.line}: "), str(exc)
            assert 1 <= exc.line <= text.count("\n") + 2
        return
    assert isinstance(scenario, Scenario)
    try:
        plan = compile_lab(scenario, "fuzz")  # pure: no host capabilities given, none probed
    except NetlabError:
        return
    expected_verdicts(scenario, plan.site_addresses)


@settings(derandomize=True, max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated())
def test_mutated_scenarios_load_or_name_file_and_line(case: tuple[Path, str]) -> None:
    check(*case)


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
@pytest.mark.parametrize("odd", ["[1, 2]", ".nan", "'../x'", "9" * 300])
def test_every_value_of_every_shipped_scenario(path: Path, odd: str) -> None:
    """Each scalar of each shipped scenario replaced by a few of the odd values, one at a time."""
    text = TEXTS[path]
    for start, end in SPANS[path]:
        check(path, text[:start] + odd + text[end:])


@settings(derandomize=True, max_examples=150, deadline=None, database=None)
@given(st.text(max_size=200))
def test_arbitrary_text_is_a_scenario_error(text: str) -> None:
    with pytest.raises(ScenarioError):
        parse_scenario(text, source="x.yaml")
