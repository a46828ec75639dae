"""The CLI refuses what it must refuse before anything starts, and touches only the lab it names.

No lab is brought up here: the run directory is a temporary folder and the backends are replaced
by stand-ins that fail the test if a command reaches them when it should not.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.cli import main
from netlab.backends import base

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "scenarios" / "demo.yaml")
RESOLVER = str(ROOT / "scenarios" / "resolver.yaml")


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run directory of our own, with a neighbour that no command may touch."""
    root = tmp_path / "run" / "netlab"
    root.mkdir(parents=True)
    (tmp_path / "run" / "precious").write_text("not the lab's")
    monkeypatch.setattr(base, "LAB_ROOT", root)
    return root


@pytest.fixture
def no_lab(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to bring a lab up or start a supervisor fails the test."""
    def forbidden(*_a: object, **_k: object) -> None:
        raise AssertionError("a lab was started although the command had to be refused first")

    monkeypatch.setattr("harness.cli.run.get_backend", forbidden)
    monkeypatch.setattr("harness.cli.up.subprocess.Popen", forbidden)


def exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's usage errors
        return int(exc.code or 0)


@pytest.mark.parametrize("name", ["..", "../../some/dir", "/run", "démo", "Demo", "a" * 25, ""])
def test_down_of_a_bad_name_is_a_usage_error_and_touches_nothing(name: str, run_dir: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    before = sorted(p.name for p in run_dir.parent.iterdir())
    assert exit_code(["down", name]) == 2
    assert "not a valid lab name" in capsys.readouterr().err
    assert sorted(p.name for p in run_dir.parent.iterdir()) == before
    assert (run_dir.parent / "precious").read_text() == "not the lab's"


@pytest.mark.parametrize("verb", ["run", "up"])
@pytest.mark.parametrize("name", ["../../some/dir", "..", "naïve", "x/y"])
def test_bad_name_option_is_refused_before_any_lab(verb: str, name: str, run_dir: Path, no_lab: None,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code([verb, DEMO, "--name", name]) == 2
    assert "--name" in capsys.readouterr().err
    assert not any(run_dir.iterdir())


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="the netns backend looks for namespaces as root")
def test_down_of_an_unknown_lab_says_so(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run_dir / "demo-2").mkdir()  # another lab whose name starts with the one asked for
    assert exit_code(["down", "demo"]) == 2
    assert "no lab named 'demo'" in capsys.readouterr().out
    assert (run_dir / "demo-2").is_dir()


def test_unknown_probe_is_a_usage_error_before_any_lab(run_dir: Path, no_lab: None, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["run", DEMO, "--probe", "nope", "--check", "--out", str(tmp_path / "r")]) == 2
    assert "unknown probe 'nope'" in capsys.readouterr().out
    assert not (tmp_path / "r").exists()


def test_out_pointing_at_a_file_is_refused_before_any_lab(run_dir: Path, no_lab: None, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "a-file"
    target.write_text("keep me")
    assert exit_code(["run", DEMO, "--out", str(target)]) == 2
    assert "is not a folder" in capsys.readouterr().out
    assert target.read_text() == "keep me"


def test_up_of_a_name_in_use_is_refused_and_the_lab_left_alone(run_dir: Path, no_lab: None,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    running = run_dir / "demo"
    running.mkdir()
    (running / "state.json").write_text("{}")
    assert exit_code(["up", DEMO]) == 2
    assert "already exists" in capsys.readouterr().out
    assert (running / "state.json").read_text() == "{}"


def _running_state(run_dir: Path, scenario: str, backend: str = "netns") -> None:
    folder = run_dir / "demo"
    folder.mkdir()
    base.LabState(lab="demo", backend=backend, lab_dir=str(folder), scenario_source=scenario,
                  owner_pid=os.getpid(), hosts={}, ready=True,
                  scenario_digest=base.scenario_digest(scenario)).save(folder / base.STATE_FILE)


def test_run_does_not_attach_to_a_lab_of_another_scenario(run_dir: Path, no_lab: None, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    _running_state(run_dir, RESOLVER)
    assert exit_code(["run", DEMO, "--name", "demo", "--out", str(tmp_path / "r")]) == 2
    out = capsys.readouterr().out
    assert "was built from" in out and "resolver.yaml" in out
    assert json.loads((run_dir / "demo" / "state.json").read_text())["ready"] is True


def test_run_does_not_attach_to_a_lab_of_another_backend(run_dir: Path, no_lab: None, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    _running_state(run_dir, DEMO, backend="compose")
    assert exit_code(["run", DEMO, "--out", str(tmp_path / "r")]) == 2
    assert "runs on the compose backend, not netns" in capsys.readouterr().out


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--concurrency", "0", "must be from 1 to"), ("--concurrency", "100000", "must be from 1 to"),
    ("--shard", "3/2", "expected I/N"), ("--fingerprints", "/nonexistent.json", "cannot read it"),
    ("--targets", "/nonexistent.csv", "cannot read the test list"),
])
def test_bad_run_options_are_refused_before_any_lab(option: str, value: str, message: str, run_dir: Path,
                                                    no_lab: None, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["run", DEMO, option, value, "--out", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().out
    assert not (tmp_path / "r").exists()


def test_a_fingerprint_file_of_the_wrong_shape_is_refused(run_dir: Path, no_lab: None, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "fp.json"
    bad.write_text('{"fingerprints": [{"name": "x", "body": "(unclosed"}]}')
    assert exit_code(["run", DEMO, "--fingerprints", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "not a fingerprint file" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["-h", "up"], ["--help", "run"], ["up", "-h"]])
def test_help_before_or_after_the_verb_is_the_verbs(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    verb = next(a for a in argv if not a.startswith("-"))
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: harness {verb} ")


def test_help_alone_is_the_harness_own(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["-h"])
    assert "exit codes:" in capsys.readouterr().out
