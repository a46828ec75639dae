"""Lab names: validated everywhere, never a path outside the run directory, never a prefix match."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netlab.backends import base
from netlab.errors import LabNameError
from netlab.names import check_lab_name, host_object_name, lab_name_problem, lab_of

VALID = st.from_regex(r"[a-z][a-z0-9-]{0,23}", fullmatch=True)
HOSTS = st.from_regex(r"[a-z0-9][a-z0-9.-]{0,30}", fullmatch=True)


@settings(max_examples=300, derandomize=True)
@given(st.text(min_size=0, max_size=40))
def test_any_accepted_name_stays_inside_the_run_directory(name: str) -> None:
    if lab_name_problem(name) is not None:
        with pytest.raises(LabNameError):
            base.lab_dir(name)
        return
    path = base.lab_dir(name)
    assert path.parent == base.LAB_ROOT and path.name == name
    assert path.resolve().parent == base.LAB_ROOT.resolve()


@pytest.mark.parametrize("bad", ["", "..", ".", "../x", "../../some/dir", "a/b", "/run", "Demo", "démo", "x" * 25,
                                 "1lab", "-lab", "lab.x", "lab_x", "lab x", "lab\n", "ä", "\u0430bc"])
def test_bad_names_are_refused_with_the_rule(bad: str) -> None:
    with pytest.raises(LabNameError, match="not a valid lab name"):
        check_lab_name(bad)


@settings(max_examples=300, derandomize=True)
@given(VALID, HOSTS)
def test_object_names_say_exactly_which_lab_they_belong_to(lab: str, host: str) -> None:
    assert lab_of(host_object_name(lab, host)) == lab


@settings(max_examples=300, derandomize=True)
@given(VALID, HOSTS, VALID, HOSTS)
def test_object_names_of_two_labs_never_collide(lab_a: str, host_a: str, lab_b: str, host_b: str) -> None:
    if lab_a != lab_b:
        assert host_object_name(lab_a, host_a) != host_object_name(lab_b, host_b)


def test_the_collisions_seen_before_are_gone() -> None:
    # Lab `a` with ISP host `b-inet` and lab `a-b` with host `inet` once shared `nl-a-b-inet`.
    assert host_object_name("a", "b-inet") != host_object_name("a-b", "inet")
    # A lab is never found by a prefix of its name: `demo` does not own `demo-2`'s namespaces.
    assert lab_of(host_object_name("demo-2", "inet")) == "demo-2"
    assert lab_of(host_object_name("rt-ls-x", "isp.gw")) == "rt-ls-x"
    assert lab_of("nl-demo-2-inet") is None  # the old spelling is nobody's
    assert lab_of("other-thing") is None


def test_state_of_another_folder_is_not_believed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "LAB_ROOT", tmp_path)
    (tmp_path / "a").mkdir()
    base.LabState(lab="b", backend="netns", lab_dir=str(tmp_path / "b"), scenario_source="s", owner_pid=0,
                  hosts={}).save(tmp_path / "a" / base.STATE_FILE)
    assert base.read_state("a") is None  # a state whose name is not its folder's is not this lab's


def test_claiming_a_name_twice_fails_and_keeps_the_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from netlab.errors import LabInUse

    monkeypatch.setattr(base, "LAB_ROOT", tmp_path)
    folder = base.claim_lab_dir("demo")
    (folder / "keep").write_text("the running lab's file")
    with pytest.raises(LabInUse, match="already exists"):
        base.claim_lab_dir("demo")
    assert (folder / "keep").read_text() == "the running lab's file"
    base.claim_lab_dir("demo-2")  # a name that starts with another is its own
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "demo-2"]
    assert base.lab_folders() == ["demo", "demo-2"]


def test_only_valid_names_count_as_lab_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "LAB_ROOT", tmp_path)
    for name in ("ok", "Not-Ok", "x.y", "with space"):
        (tmp_path / name).mkdir()
    (tmp_path / "file").write_text("")
    assert base.lab_folders() == ["ok"]


def test_printable_ascii_names_follow_one_rule() -> None:
    for ch in string.printable:
        name = "a" + ch
        ok = ch in string.ascii_lowercase + string.digits + "-"
        assert (lab_name_problem(name) is None) == ok, repr(name)
