"""Loader: bad values that used to load (or crash later, in the compiler or the lab) are scenario
errors naming file, line and key; every limit is stated in its message (docs/scenario-limits.md)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from netlab import loader
from netlab.addressing import SITE_CAPACITY, allocate_sites
from netlab.errors import ScenarioError
from netlab.loader import load_scenario, parse_scenario

BASE = """version: 1
name: t
internet:
  sites:
    - name: a.test
"""
ISP = BASE + "isps:\n  - name: i\n"


def err(text: str, source: str = "s.yaml") -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source=source)
    return info.value


def write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "s.yaml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------- response.body_file


@pytest.mark.parametrize("rel", ["../x.html", "sub/../../x.html", "..", "/etc/hostname", "~/x.html"])
def test_body_file_outside_the_scenario_folder_is_refused(tmp_path: Path, rel: str) -> None:
    (tmp_path / "x.html").write_text("outside")
    path = write(tmp_path / "sc", BASE + f"      response: {{body_file: '{rel}'}}\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    e = info.value
    assert e.line == 6 and e.key == "internet.sites[0].response.body_file"
    assert "absolute" in e.message or "leaves the scenario's folder" in e.message


def test_body_file_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("outside")
    (tmp_path / "sc").mkdir()
    (tmp_path / "sc" / "page.html").symlink_to(tmp_path / "secret")
    with pytest.raises(ScenarioError, match="outside the scenario's folder"):
        load_scenario(write(tmp_path / "sc", BASE + "      response: {body_file: page.html}\n"))


def test_body_file_missing_or_a_folder(tmp_path: Path) -> None:
    (tmp_path / "sc" / "pages").mkdir(parents=True)
    key = r"s.yaml:6: internet.sites\[0\].response.body_file: "
    with pytest.raises(ScenarioError, match=key + "cannot read .*: no such file"):
        load_scenario(write(tmp_path / "sc", BASE + "      response: {body_file: nope.html}\n"))
    with pytest.raises(ScenarioError, match=r"cannot read .*pages: not a regular file"):
        load_scenario(write(tmp_path / "sc", BASE + "      response: {body_file: pages}\n"))


def test_body_file_in_a_subfolder_loads(tmp_path: Path) -> None:
    (tmp_path / "sc" / "pages").mkdir(parents=True)
    (tmp_path / "sc" / "pages" / "p.html").write_text("<p>blocked</p>")
    s = load_scenario(write(tmp_path / "sc", BASE + "      response: {status: 451, body_file: pages/./p.html}\n"))
    assert s.sites[0].body == b"<p>blocked</p>" and s.sites[0].body_file == "pages/./p.html"


def test_body_file_over_the_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "MAX_BODY_SIZE", 10)
    (tmp_path / "sc").mkdir()
    (tmp_path / "sc" / "big.html").write_bytes(b"x" * 11)
    with pytest.raises(ScenarioError, match="at most 10 bytes"):
        load_scenario(write(tmp_path / "sc", BASE + "      response: {body_file: big.html}\n"))


# ---------------------------------------------------------------- names (IDNA)


@pytest.mark.parametrize("snippet, key", [
    ("    - name: xn--zz.test\n", "internet.sites[1].name"),
    ("    - name: ab--cd.test\n", "internet.sites[1].name"),
    ("isps: [{name: i, resolver: {rules: [{match: {domain: xn--zz.test}, action: nxdomain}]}}]\n",
     "isps[0].resolver.rules[0].match.domain"),
    ("isps: [{name: i, dpi: {rules: [{match: {sni: xn--zz.test}, action: reset}]}}]\n",
     "isps[0].dpi.rules[0].match.sni"),
    ("isps: [{name: i, firewall: {rules: [{match: {site: xn--zz.test}, action: drop}]}}]\n",
     "isps[0].firewall.rules[0].match.site"),
    ("probe: {test_helper: xn--zz.test}\n", "probe.test_helper"),
    ("targets: [https://xn--zz.test/]\n", "targets[0]"),
])
def test_invalid_idna_names_are_scenario_errors(snippet: str, key: str) -> None:
    e = err(BASE + snippet)
    assert e.key == key and e.line is not None and e.line >= 6
    assert "xn--zz" in e.message or "ab--cd" in e.message


def test_redirect_to_an_invalid_idna_name() -> None:
    e = err(BASE + "      redirect: {to: 'https://xn--zz.test/'}\n")
    assert e.key == "internet.sites[0].redirect.to" and "not a valid name" in e.message


def test_valid_idna_names_still_load() -> None:
    s = parse_scenario(BASE + "    - name: пример.test\n    - name: xn--e1afmkfd.org\n")
    assert [x.name for x in s.sites] == ["a.test", "xn--e1afmkfd.test", "xn--e1afmkfd.org"]


# ---------------------------------------------------------------- counts


def test_site_capacity_is_the_address_plan() -> None:
    assert loader.MAX_SITES == SITE_CAPACITY == 129_540
    assert loader.MAX_TARGETS == 2 * SITE_CAPACITY


def test_allocation_fills_the_plan_and_skips_the_proxy_block() -> None:
    sites = allocate_sites({f"s{i}": None for i in range(SITE_CAPACITY)})
    addrs = set(sites.values())
    assert len(addrs) == SITE_CAPACITY
    assert not any(str(a).startswith("198.19.255.") or a.packed[-1] in (0, 255) for a in addrs)
    with pytest.raises(ValueError):
        allocate_sites({f"s{i}": None for i in range(SITE_CAPACITY + 1)})


def test_too_many_sites_is_refused_fast() -> None:
    text = BASE.replace("    - name: a.test\n", "") + "".join(f"    - name: s{i}.test\n"
                                                           for i in range(SITE_CAPACITY + 1))
    t0 = time.monotonic()
    e = err(text)
    assert time.monotonic() - t0 < 10  # it took 22 s, then a ValueError from the address plan
    assert e.key == "internet.sites" and f"at most {SITE_CAPACITY}" in e.message and e.line is not None


def test_too_many_sites_in_a_small_file_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "_LIMITS", {**loader._LIMITS, "internet.sites": 2})
    e = err(BASE + "    - name: b.test\n    - name: c.test\n")
    assert e.key == "internet.sites" and "3 sites; at most 2" in e.message


def test_too_many_targets_isps_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "_LIMITS", {**loader._LIMITS, "targets": 1})
    assert "at most 1" in err(BASE + "targets: [https://a.test/, http://a.test/]\n").message
    e = err(BASE + "isps:\n" + "".join(f"  - name: i{n}\n" for n in range(250)))
    assert e.key == "isps" and "250 ISPs; at most 249" in e.message
    monkeypatch.setattr(loader, "MAX_RULES", 1)
    rules = "[{match: {domain: a.test}, action: nxdomain}, {match: {domain: b.test}, action: nxdomain}]"
    e = err(BASE + f"isps: [{{name: i, resolver: {{rules: {rules}}}}}]\n")
    assert e.key == "isps[0].resolver.rules" and "at most 1 per list" in e.message
    e = err(BASE + "isps: [{name: i, shaping: [{match: {port: 80}, rate: 1mbit}, "
                   "{match: {port: 443}, rate: 1mbit}]}]\n")
    assert e.key == "isps[0].shaping" and "at most 1 per list" in e.message


# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize("rate", ["99999999999999gbit", "33gbit", "5GBps", "9" * 400 + "kbit"])
def test_rate_over_what_tc_takes(rate: str) -> None:
    e = err(ISP.replace("  - name: i\n", f"  - name: i\n    shaping: [{{match: {{site: a.test}}, rate: {rate}}}]\n"))
    assert e.key == "isps[0].shaping[0].rate" and "at most 32gbit" in e.message and e.line == 8
    assert len(str(e)) < 200


def test_rate_at_the_limit_loads() -> None:
    s = parse_scenario(ISP + "    shaping: [{match: {site: a.test}, rate: 32gbit}]\n")
    assert s.isps[0].shaping[0].rate_bps == 32 * 10**9 < 2**32 * 8


@pytest.mark.parametrize("size", ["900GB", "2GiB", 2 * 1024**3, "9" * 400 + "KiB"])
def test_body_size_limit(size: object) -> None:
    e = err(BASE + f"      body_size: {size}\n")
    assert e.key == "internet.sites[0].body_size" and "at most 1 GiB" in e.message and e.line == 6


def test_pages_together_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "MAX_TOTAL_BODY", 100_000)
    e = err(BASE + "    - name: b.test\n")  # 2 x 64 KiB
    assert e.key == "internet.sites[1]" and "add up to more than 100000 bytes" in e.message


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "-1", "0", "3601", "1.0e+999"])
def test_residual_must_be_finite_positive_and_bounded(value: str) -> None:
    e = err(ISP + f"    dpi: {{rules: [{{match: {{sni: a.test}}, action: reset, residual: {value}}}]}}\n")
    assert e.key == "isps[0].dpi.rules[0].residual" and e.line == 8


@pytest.mark.parametrize("key", loader.PROBE_NUMBERS)
@pytest.mark.parametrize("value", [".nan", ".inf", "-2", "0", "601", "[1]"])
def test_probe_numbers_must_be_finite_positive_and_bounded(key: str, value: str) -> None:
    e = err(BASE + f"probe: {{{key}: {value}}}\n")
    assert e.key == f"probe.{key}" and e.line == 6


def test_limits_are_in_the_messages() -> None:
    assert "at most 600 s" in err(BASE + "probe: {dns_timeout: 601}\n").message
    assert "at most 3600 s" in err(ISP + "    dpi: {rules: [{match: {sni: a.test}, action: reset, "
                                   "residual: 3601.5}]}\n").message
    assert "from 0 to 600" in err(BASE + "probe: {dns_timeout: .nan}\n").message


@pytest.mark.parametrize("value", [".nan", ".inf", "-0.5", "0", "1.5"])
def test_coverage_rejects_nan_and_out_of_range(value: str) -> None:
    e = err(ISP + f"    firewall: {{rules: [{{match: {{port: 443}}, action: drop, coverage: {value}}}]}}\n")
    assert e.key == "isps[0].firewall.rules[0].coverage"


@pytest.mark.parametrize("delay", ["100000000s", "61s", "60001ms", "60001", ".inf", ".nan", "-1"])
def test_delay_is_capped(delay: str) -> None:
    e = err(ISP + f"    shaping: [{{match: {{site: a.test}}, delay: {delay}}}]\n")
    assert e.key == "isps[0].shaping[0].delay"


def test_delay_at_the_limit_loads() -> None:
    s = parse_scenario(ISP + "    shaping: [{match: {site: a.test}, delay: 60s, loss: 5%}]\n")
    assert s.isps[0].shaping[0].delay_ms == 60_000


@pytest.mark.parametrize("loss", [".nan", ".inf", "101%", "-1", "[1]"])
def test_loss_out_of_range(loss: str) -> None:
    assert err(ISP + f"    shaping: [{{match: {{site: a.test}}, loss: {loss}}}]\n").key == "isps[0].shaping[0].loss"


# ---------------------------------------------------------------- types


@pytest.mark.parametrize("value", ["[1, 2]", "{a: 1}", "[]", "1.5", "7"])
def test_expect_ooni_wrong_types_are_errors(value: str) -> None:
    e = err(ISP + f"expect_ooni: {{i: {{https://a.test/: {{blocking: {value}}}}}}}\n")
    assert e.key == "expect_ooni.i.https://a.test/.blocking" and "expected a string, true, false or null" in e.message


def test_expect_ooni_list_instead_of_mapping() -> None:
    assert err(ISP + "expect_ooni: [i]\n").key == "expect_ooni"
    assert err(ISP + "expect_ooni: {i: [https://a.test/]}\n").key == "expect_ooni.i"
    assert err(ISP + "expect_ooni: {i: {https://a.test/: [blocking]}}\n").key == "expect_ooni.i.https://a.test/"


def test_expect_ooni_null_and_strings_still_load() -> None:
    s = parse_scenario(ISP + "expect_ooni: {i: {https://a.test/: {blocking: null, accessible: true, "
                       "x_verdict: ok}}}\n")
    assert s.expect_ooni == {"i": {"https://a.test/": {"blocking": None, "accessible": True, "x_verdict": "ok"}}}


@pytest.mark.parametrize("snippet, key", [
    ("seed: !!int abc\n", "seed"),
    ("description: !foo bar\n", "description"),
    ("description: 2001-13-45\n", "description"),  # an implicit timestamp that is no date
    ("isps: [{name: i, dpi: {fail: !!bool maybe}}]\n", "isps[0].dpi.fail"),
    ("probe: {dns_timeout: !!float x}\n", "probe.dns_timeout"),
])
def test_scalars_that_yaml_cannot_construct(snippet: str, key: str) -> None:
    e = err(BASE + snippet)
    assert e.key == key and e.line == 6 and "bad value" in e.message


def test_deep_nesting_is_a_scenario_error() -> None:
    e = err(BASE + "description: " + "[" * 3000 + "]" * 3000 + "\n")
    assert e.file == "s.yaml"


@pytest.mark.parametrize("snippet, key", [
    ("seed: [1]\n", "seed"),
    ("seed: 1.5\n", "seed"),
    ("seed: .nan\n", "seed"),
    ("description: [a]\n", "description"),
    ("targets: https://a.test/\n", "targets"),
    ("targets: [[https://a.test/]]\n", "targets[0]"),
    ("isps: {name: i}\n", "isps"),
    ("isps: [{name: [i]}]\n", "isps[0].name"),
    ("isps: [{name: i, resolver: [x]}]\n", "isps[0].resolver"),
    ("isps: [{name: i, resolver: {rules: {match: x}}}]\n", "isps[0].resolver.rules"),
    ("isps: [{name: i, firewall: {rules: [{match: {port: [80]}, action: drop}]}}]\n",
     "isps[0].firewall.rules[0].match.port"),
    ("isps: [{name: i, firewall: {rules: [{match: {ip: [1]}, action: drop}]}}]\n",
     "isps[0].firewall.rules[0].match.ip"),
    ("isps: [{name: i, dpi: {rules: [{match: {keyword: [x]}, action: reset}]}}]\n",
     "isps[0].dpi.rules[0].match.keyword"),
    ("isps: [{name: i, shaping: [{match: {port: 80}, rate: [1]}]}]\n", "isps[0].shaping[0].rate"),
    ("isps: [{name: i, shaping: [{match: {port: 80}, delay: [1]}]}]\n", "isps[0].shaping[0].delay"),
    ("expect: {i: [ok]}\n", "expect.i"),
    ("expect: {i: {https://a.test/: [ok]}}\n", "expect.i.https://a.test/"),
    ("probe: {test_helper: [a.test]}\n", "probe.test_helper"),
])
def test_wrong_types_are_never_silently_ignored(snippet: str, key: str) -> None:
    text = BASE + snippet
    if snippet.startswith("expect"):
        text = ISP + snippet
    assert err(text).key == key


@pytest.mark.parametrize("snippet, key", [
    ("      body_size: [1]\n", "internet.sites[0].body_size"),
    ("      address: [198.18.0.50]\n", "internet.sites[0].address"),
    ("      service: [x]\n", "internet.sites[0].service"),
    ("      state: [up]\n", "internet.sites[0].state"),
    ("      tls: [expired]\n", "internet.sites[0].tls"),
    ("      https: [true]\n", "internet.sites[0].https"),
    ("      redirect: [x]\n", "internet.sites[0].redirect"),
    ("      response: {status: [200]}\n", "internet.sites[0].response.status"),
    ("      response: {body: [x]}\n", "internet.sites[0].response.body"),
    ("      only_for: i\n", "internet.sites[0].only_for"),
    ("      dns_answer: [10.0.0.1]\n", "internet.sites[0].dns_answer"),
])
def test_wrong_site_key_types(snippet: str, key: str) -> None:
    assert err(BASE + snippet).key == key


def test_scenario_name_uses_the_lab_name_rule() -> None:
    for bad in ("Bad", "1lab", "-x", "a" * 25, "a.b", "a_b"):
        e = err(BASE.replace("name: t\n", f"name: '{bad}'\n"))
        assert e.key == "name" and e.line == 2 and "not a valid lab name" in e.message
    assert parse_scenario(BASE.replace("name: t\n", "name: " + "a" * 24 + "\n")).name == "a" * 24


def test_duplicate_targets_differing_only_in_case_or_default_port() -> None:
    e = err(BASE + "targets: [HTTP://A.test/, 'http://a.test:80/']\n")
    assert e.key == "targets[1]" and "duplicate target" in e.message
    s = parse_scenario(BASE + "targets: [https://a.test/, 'https://a.test/?q=1', http://a.test/A]\n")
    assert len(s.targets) == 3
