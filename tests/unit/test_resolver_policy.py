"""The ISP resolver's refuse/SERVFAIL policy is structured compiler output (netlab.compile.dns
.resolver_policy): unbound.conf is written from it, and harness explain shows it without reading
the config text back."""

from __future__ import annotations

from pathlib import Path

from harness.explain import explain
from netlab.compile import compile_lab
from netlab.compile.dns import resolver_policy
from netlab.loader import load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def test_unbound_conf_carries_the_policy_and_explain_shows_it():
    seen = 0
    for name in ("demo.yaml", "resolver.yaml", "dns-hierarchy.yaml"):
        scenario = load_scenario(SCENARIOS / name)
        plan = compile_lab(scenario, "policy")
        shown = {i.name: i.unbound_policy for i in explain(scenario, "policy").isps}
        for isp in scenario.isps:
            policy = resolver_policy(scenario, isp)
            conf = plan.files[f"{isp.name}/unbound.conf"]
            assert isinstance(conf, str)
            for line in policy.local_zones():
                assert f"  {line}\n" in conf
            for stub in policy.stub_zones():
                assert stub + "\n" in conf
            assert shown[isp.name] == "\n".join(policy.local_zones() + policy.stub_zones())
            seen += len(policy.refused) + len(policy.servfail)
    assert seen  # the shipped scenarios do refuse and SERVFAIL somewhere
