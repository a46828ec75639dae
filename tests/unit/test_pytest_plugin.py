"""The pytest plugin at unit level (pytester): it loads, markers and ini options choose the
scenario, and a failed assert_verdicts prints a readable diff of verdict tables."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest

from harness.pytest_plugin import LabRun, _as_verdicts, assert_verdicts, verdict_diff
from harness.score import VerdictRow
from netlab.oracle import Expectation
from netlab.verdict import Verdict

pytest_plugins = ["pytester"]

# A `lab` that reports which scenario the plugin chose, instead of bringing one up.
CONFTEST = """
import pytest
from harness.pytest_plugin import scenario_path

@pytest.fixture(scope="session")
def lab(request):
    return scenario_path(request.session)
"""


@pytest.fixture(autouse=True)
def _explicit_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs load the plugin with -p only: the outer session already imported it."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def plugin_args() -> list[str]:
    return ["-p", "harness.pytest_plugin"]


def test_entry_point_loads_the_plugin(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed, pytest finds the plugin by itself (entry point pytest11), in a fresh process."""
    if not any(ep.value == "harness.pytest_plugin" for ep in entry_points(group="pytest11")):
        pytest.skip("fauxisp is not installed (pip install -e .): no pytest11 entry point")
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--lab-scenario*"])


def test_plugin_registers_options_and_marker(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*plugin_args(), "--help")
    result.stdout.fnmatch_lines(["*--lab-scenario*", "*lab_scenario (string)*", "*lab_backend (string)*netns*"])
    result = pytester.runpytest(*plugin_args(), "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.lab_scenario(path)*"])


def test_marker_chooses_the_scenario(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    (pytester.path / "scen").mkdir()
    (pytester.path / "scen" / "a.yaml").write_text("x")
    pytester.makepyfile(test_m="""
        import pytest
        pytestmark = pytest.mark.lab_scenario("scen/a.yaml")
        def test_one(lab):
            assert lab.name == "a.yaml" and lab.parent.name == "scen"
        def test_no_lab():
            pass
    """)
    pytester.runpytest(*plugin_args()).assert_outcomes(passed=2)


def test_ini_option_and_command_line(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nlab_scenario = lists/ini.yaml\n")
    pytester.makepyfile(test_i="""
        def test_one(lab, request):
            want = request.config.getoption("lab_scenario") or "ini.yaml"
            assert lab.name == want.split("/")[-1]
    """)
    pytester.runpytest(*plugin_args()).assert_outcomes(passed=1)
    pytester.runpytest(*plugin_args(), "--lab-scenario", "cli.yaml").assert_outcomes(passed=1)


def test_conflicting_markers_are_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_c="""
        import pytest
        @pytest.mark.lab_scenario("one.yaml")
        def test_one(lab): pass
        @pytest.mark.lab_scenario("two.yaml")
        def test_two(lab): pass
    """)
    result = pytester.runpytest(*plugin_args())
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*mark several*one.yaml*two.yaml*"])


def test_no_scenario_is_explained(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_n="def test_one(lab): pass\n")
    result = pytester.runpytest(*plugin_args())
    result.stdout.fnmatch_lines(["*needs a scenario*lab_scenario*"])


def test_failed_assert_verdicts_shows_the_table(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_d="""
        from harness.pytest_plugin import assert_verdicts
        def test_diff():
            got = {("isp-a", "https://a.test/"): "ok", ("isp-a", "https://b.test/"): "tcp.reset",
                   ("isp-b", "https://a.test/"): "tls.reset"}
            assert_verdicts(got, {"isp-a": {"https://a.test/": "dns.nxdomain", "https://b.test/": "tcp.reset"},
                                  "isp-b": {"https://a.test/": "tls.reset"}})
    """)
    result = pytester.runpytest(*plugin_args())
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*1 of 3 verdicts differ from what was expected:*",
        "*target*isp-a*isp-b*",
        "*https://a.test/*✗ ok (expected dns.nxdomain)*tls.reset*",
        "*https://b.test/*tcp.reset*",
        "*isp-a https://a.test/: got ok, expected dns.nxdomain*",
    ])


def _row(vantage: str, url: str, got: Verdict, exp: Verdict) -> VerdictRow:
    return VerdictRow(vantage, url, got, Expectation(exp, "firewall rule line 7"), "generic_timeout_error", "uid-1")


def test_diff_names_the_measurement_behind_each_mismatch(tmp_path: Path) -> None:
    m = {"x_vantage": "isp-a", "input": "https://a.test/", "measurement_uid": "uid-1",
         "test_keys": {"queries": [{"engine": "system", "answers": [{"ipv4": "198.18.1.1"}], "failure": None}],
                       "tcp_connect": [{"ip": "198.18.1.1", "port": 443,
                                        "status": {"failure": "generic_timeout_error"}}]}}
    run = LabRun(tmp_path, [m], [_row("isp-a", "https://a.test/", Verdict.TCP_TIMEOUT, Verdict.TCP_RESET)])
    with pytest.raises(AssertionError) as info:
        assert_verdicts(run, {("isp-a", "https://a.test/"): "tcp.reset"})
    text = str(info.value)
    assert "✗ tcp.timeout (expected tcp.reset)" in text
    assert "why: generic_timeout_error" in text
    assert "oracle: tcp.reset (firewall rule line 7)" in text
    assert f"measurement: uid-1 in {tmp_path / 'measurements.jsonl'}" in text
    assert "saw: dns[system] 198.18.1.1; tcp 198.18.1.1:443 generic_timeout_error" in text


def test_a_detectors_mismatch_names_rule_uid_saw_and_the_kept_folder(tmp_path: Path) -> None:
    """Comparing your own detector's verdicts: pass the LabRun its measurements came from."""
    m = {"x_vantage": "isp-a", "input": "https://a.test/", "measurement_uid": "uid-1",
         "test_keys": {"queries": [], "tcp_connect": [{"ip": "198.18.1.1", "port": 443,
                                                       "status": {"failure": "connection_refused"}}]}}
    run = LabRun(tmp_path, [m], [_row("isp-a", "https://a.test/", Verdict.TCP_RESET, Verdict.TCP_RESET)])
    mine = {("isp-a", "https://a.test/"): "ok"}
    with pytest.raises(AssertionError) as info:
        assert_verdicts(mine, run)  # the LabRun as expected: the oracle's verdicts, and the context
    text = str(info.value)
    assert "✗ ok (expected tcp.reset)" in text
    assert "lab's verdict: tcp.reset (generic_timeout_error)" in text
    assert "oracle: tcp.reset (firewall rule line 7)" in text and "measurement: uid-1" in text
    assert "saw: tcp 198.18.1.1:443 connection_refused" in text
    assert f"results kept in {tmp_path}" in text
    with pytest.raises(AssertionError, match="measurement: uid-1"):
        assert_verdicts(mine, {("isp-a", "https://a.test/"): "tcp.reset"}, run=run)


def test_lab_keep_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*plugin_args(), "--help")
    result.stdout.fnmatch_lines(["*--lab-keep=DIR*"])


def test_matching_verdicts_pass_and_extra_cells_are_ignored() -> None:
    got = {("a", "u"): "ok", ("b", "u"): "dns.bogon"}
    assert verdict_diff(got, {("a", "u"): "ok"}) == ""
    assert_verdicts(got, {"a": {"u": "ok"}})
    assert "missing" in verdict_diff(got, {("c", "u"): "ok"})
    with pytest.raises(TypeError):
        _as_verdicts({"a": "ok"})
