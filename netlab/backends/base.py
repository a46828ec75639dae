"""The backend interface. A backend realises a LabPlan (namespaces or containers), runs programs
inside its hosts, and removes every trace of a lab by name, also after a crash.

Every lab, whatever its backend, owns one folder ``<run dir>/<lab>`` holding ``state.json``: the
folder is claimed atomically when the lab is brought up, so a lab name is in use on this machine
exactly while its folder exists, and nothing is ever found by a name prefix (netlab.names).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netlab.backends.kernel import probe_host
from netlab.errors import LabInUse, LabMismatch
from netlab.hostcaps import HostCapabilities
from netlab.names import check_lab_name, lab_name_problem
from netlab.plan import LabHosts, LabPlan, Vantage

Progress = Callable[[str], None]
LAB_ROOT = Path(os.environ.get("FAUXISP_RUN_DIR", "/run/netlab"))
STATE_FILE = "state.json"


@dataclass(frozen=True)
class ServiceFault:
    """A critical lab service that is no longer running: a lab fault, never a censorship verdict."""

    host: str
    service: str
    role: str = ""
    status: int | None = None  # exit status where known
    log_tail: str = field(default="", compare=False)  # last lines of its log

    @property
    def key(self) -> str:
        return f"{self.host}/{self.service}"

    def __str__(self) -> str:
        role = f" ({self.role})" if self.role else ""
        status = "stopped" if self.status is None else f"exited with status {self.status}"
        tail = "; last log lines:\n  " + "\n  ".join(self.log_tail.splitlines()) if self.log_tail.strip() else ""
        return f"{self.key}{role} {status}{tail}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ServiceFault:
        return cls(**{k: d[k] for k in ("host", "service", "role", "status", "log_tail") if k in d})


@dataclass
class LabState:
    """What is known of a running lab, saved beside its files so any process can attach to it."""

    lab: str
    backend: str
    lab_dir: str
    scenario_source: str
    owner_pid: int  # the process whose children the services are (the supervisor)
    hosts: dict[str, str]  # host -> namespace or container name
    services: list[dict[str, Any]] = field(default_factory=list)  # {host, name, pid, critical, role}
    vantages: dict[str, Vantage] = field(default_factory=dict)
    site_addresses: dict[str, str] = field(default_factory=dict)
    ca_file: str = "pki/ca.pem"
    created: float = 0.0
    ready: bool = False
    scenario_digest: str = ""  # sha256 of the scenario file the lab was built from
    faults: list[dict[str, Any]] = field(default_factory=list)  # ServiceFault dicts, recorded by the owner

    def __post_init__(self) -> None:
        # Read back from state.json (load): every vantage is a plan.Vantage again.
        self.vantages = {k: v if isinstance(v, Vantage) else Vantage.from_dict(v) for k, v in self.vantages.items()}

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__ | {"vantages": {k: v.to_dict() for k, v in self.vantages.items()}}

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> LabState:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a lab state")
        known = {f.name for f in dataclasses.fields(cls)}
        state = cls(**{k: v for k, v in data.items() if k in known})
        if lab_name_problem(state.lab) or state.lab != path.parent.name:
            raise ValueError(f"{path}: the state of another lab ({state.lab!r})")
        return state

    def recorded_faults(self) -> list[ServiceFault]:
        return [ServiceFault.from_dict(f) for f in self.faults]

    def check_same_lab(self, scenario_source: str, backend: str) -> None:
        """Refuse (LabMismatch) to use this lab for another scenario or backend than built it."""
        wanted = scenario_digest(scenario_source)
        differ = []
        if self.backend != backend:
            differ.append(f"it runs on the {self.backend} backend, not {backend}")
        if self.scenario_digest != wanted:
            differ.append(f"it was built from {self.scenario_source} (sha256 {self.scenario_digest[:12] or '?'}), "
                          f"not from {scenario_source} (sha256 {wanted[:12]})")
        if differ:
            raise LabMismatch(f"a lab named {self.lab!r} is running, but {'; '.join(differ)}; `harness down "
                              f"{self.lab}` first, or choose another name with --name")


def scenario_digest(source: str | Path) -> str:
    """What identifies the scenario a lab was built from: its file's bytes."""
    try:
        return hashlib.sha256(Path(source).read_bytes()).hexdigest()
    except OSError:
        return ""


def lab_dir(lab: str) -> Path:
    """The lab's folder; the name is validated first, so it can never name a folder elsewhere."""
    return LAB_ROOT / check_lab_name(lab, "lab name")


def claim_lab_dir(lab: str) -> Path:
    """Create the lab's folder, atomically: a second `up` of the same name fails here (LabInUse),
    before it has touched anything, and the running lab is left as it is."""
    path = lab_dir(lab)
    LAB_ROOT.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()
    except FileExistsError:
        raise LabInUse(f"a lab named {lab!r} already exists (see `harness status`); `harness down {lab}` "
                       "first, or choose another name with --name") from None
    return path


def read_state(lab: str) -> LabState | None:
    """The saved state of ``lab`` (any backend), or None if there is none (or it is unreadable)."""
    with contextlib.suppress(OSError, ValueError, TypeError):
        return LabState.load(lab_dir(lab) / STATE_FILE)
    return None


def lab_folders() -> list[str]:
    """The names of every lab folder under the run directory (valid lab names only)."""
    if not LAB_ROOT.is_dir():
        return []
    return sorted(p.name for p in LAB_ROOT.iterdir() if p.is_dir() and lab_name_problem(p.name) is None)


def remove_lab_dir(lab: str) -> None:
    shutil.rmtree(lab_dir(lab), ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie does not count: PID 1 here may never reap it)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def stop_owner(state: LabState, timeout: float) -> None:
    """Ask the process that owns a lab's services (the supervisor of `harness up`) to tear it down,
    and wait until it is gone; nothing to do when this process is the owner or the owner is dead."""
    if state.owner_pid == os.getpid() or not pid_alive(state.owner_pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.owner_pid, signal.SIGTERM)
    wait_until(lambda: not pid_alive(state.owner_pid), timeout)


def wait_until(cond: Callable[[], bool], timeout: float) -> bool:
    """Poll ``cond`` until it holds or ``timeout`` passes (a deadline, never a readiness guess)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def write_lab_files(plan: LabPlan, lab_dir: Path, inner_dir: str) -> None:
    """Write the plan's files into ``lab_dir`` (a fresh folder), with LAB_DIR rendered as the path
    programs inside the hosts see it at (``inner_dir``), and ``hosts.json`` for hostd."""
    # Empty the folder rather than remove it: it may be a bind mount (docker compose).
    lab_dir.mkdir(parents=True, exist_ok=True)
    for old in lab_dir.iterdir():
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    (lab_dir / "logs").mkdir()
    for rel, content in plan.files.items():
        p = lab_dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        rendered = plan.render(content, inner_dir)
        if isinstance(rendered, bytes):
            p.write_bytes(rendered)
        else:
            p.write_text(rendered)
    for host in plan.hosts.values():
        (lab_dir / host.name).mkdir(exist_ok=True)
    hosts = LabHosts(plan.lab, {h.name: h for h in plan.hosts.values()}, list(plan.links))
    (lab_dir / "hosts.json").write_text(hosts.to_json())


class RunningLab(abc.ABC):
    """A lab that is up. ``spawn`` is the one seam through which the harness reaches inside."""

    def __init__(self, state: LabState) -> None:
        self.state = state

    @property
    def name(self) -> str:
        return self.state.lab

    @abc.abstractmethod
    def command(self, host: str, argv: list[str]) -> list[str]:
        """The host-side command line that runs ``argv`` inside ``host``."""

    async def spawn(self, host: str, argv: list[str]) -> asyncio.subprocess.Process:
        """Start ``argv`` inside ``host`` with pipes for stdin and stdout."""
        cmd = self.command(host, argv)
        return await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024)

    @abc.abstractmethod
    def down(self) -> None:
        """Tear the lab down, reaping the services this process started."""

    @abc.abstractmethod
    def dead_services(self) -> list[ServiceFault]:
        """Critical services that are no longer running (a lab fault)."""

    def host_path(self, relative: str) -> Path:
        """A lab file as seen from the harness."""
        return Path(self.state.lab_dir) / relative

    def inner_path(self, relative: str) -> Path:
        """A lab file as seen by programs inside the lab's hosts (the same place, for netns)."""
        return self.host_path(relative)


class Backend(abc.ABC):
    name: str

    @abc.abstractmethod
    def up(self, plan: LabPlan, progress: Progress | None = None) -> RunningLab:
        """Bring the lab up; its services are children of the calling process."""

    @abc.abstractmethod
    def down(self, lab: str, progress: Progress | None = None) -> bool:
        """Remove every trace of ``lab``; True if anything was found."""

    @abc.abstractmethod
    def attach(self, lab: str) -> RunningLab:
        """A handle on a lab brought up by another process (``harness up``); NoSuchLab if there is
        none of that name on this backend, LabError if it is not ready."""

    @abc.abstractmethod
    def list_labs(self) -> list[LabState]:
        """Labs of this backend on this machine, running or left over."""

    def host_capabilities(self) -> HostCapabilities:
        """What the machine the lab's hosts run on can do, for compile_lab; probed once per process.
        Both backends run their hosts on this machine's kernel (compose: in one container on it)."""
        return probe_host()
