"""harness exec/shell/ca without a lab: which host a name means, the environment, the command line."""

from __future__ import annotations

import shutil
import subprocess
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from test_probes_support import Pki

from harness import inlab
from harness.cli import main
from netlab.backends.base import LabState, RunningLab, ServiceFault
from netlab.errors import UsageError
from netlab.plan import Vantage


class FakeLab(RunningLab):
    def command(self, host: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.state.hosts[host], *argv]

    def down(self) -> None:
        raise AssertionError("not here")

    def dead_services(self) -> list[ServiceFault]:
        return []


def fake_lab(tmp_path: Path) -> FakeLab:
    hosts = {h: f"nl-demo.{h}" for h in ("inet", "control", "isp-a", "isp-a.gw")}
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.pem").write_text("not a certificate\n")
    return FakeLab(LabState(lab="demo", backend="netns", lab_dir=str(tmp_path), scenario_source="demo.yaml",
                            owner_pid=0, hosts=hosts, site_addresses={"news.test": "198.18.1.1"},
                            vantages={v: _vantage(v) for v in ("isp-a", "control")}))


def _vantage(name: str) -> Vantage:
    return Vantage(name=name, host=name, address=IPv4Address("10.1.0.2"), resolver=IPv4Address("10.1.255.1"),
                   public_resolver=IPv4Address("198.18.0.2"), asn=64501)


def test_names_mean_hosts(tmp_path: Path) -> None:
    lab = fake_lab(tmp_path)
    assert inlab.host_of(lab, "isp-a") == "isp-a"
    assert inlab.host_of(lab, "control") == "control"
    assert inlab.host_of(lab, "isp-a.gw") == "isp-a.gw"
    assert inlab.host_of(lab, "news.test") == "inet"  # a site: the lab internet serves it
    with pytest.raises(UsageError, match=r"control, inet, isp-a, isp-a\.gw"):
        inlab.host_of(lab, "isp-z")


def test_command_sets_the_ca_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inlab.shutil, "which", lambda _name: None)  # no certutil: no NSS home
    lab = fake_lab(tmp_path)
    cmd = inlab.command(lab, "isp-a", ["curl", "https://news.test/"])
    ca = f"{tmp_path}/pki/ca.pem"
    assert cmd[:5] == ["ip", "netns", "exec", "nl-demo.isp-a", "env"]
    assert {f"SSL_CERT_FILE={ca}", f"CURL_CA_BUNDLE={ca}", f"REQUESTS_CA_BUNDLE={ca}"} <= set(cmd)
    assert cmd[-2:] == ["curl", "https://news.test/"] and not any(a.startswith("HOME=") for a in cmd)


@pytest.mark.skipif(shutil.which("certutil") is None, reason="certutil (libnss3-tools) not installed")
def test_nss_database_trusts_the_lab_ca(tmp_path: Path, pki: Pki) -> None:
    lab = fake_lab(tmp_path)
    shutil.copy(pki.ca_file, tmp_path / "pki" / "ca.pem")
    home = inlab.nss_home(lab)
    assert home == tmp_path / inlab.TOOLS_HOME
    listed = subprocess.run(["certutil", "-L", "-d", f"sql:{home / inlab.NSS_DIR}"], capture_output=True,
                            text=True, timeout=60)
    assert "lab-ca" in listed.stdout
    assert inlab.nss_home(lab) == home  # made once
    assert f"HOME={home}" in inlab.command(lab, "control", ["true"])


def test_unknown_lab_and_bad_names_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["exec", "h7nosuchlab", "isp-a", "--", "true"]) == 2
    assert main(["ca", "h7nosuchlab"]) == 2
    assert "no lab named" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["shell", "../x", "isp-a"])
    assert exc.value.code == 2
    assert main(["exec", "h7nosuchlab", "isp-a"]) == 2  # no program named
