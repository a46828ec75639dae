"""Your own programs inside a running lab (`harness exec`, `harness shell`, `harness ca`).

A program runs in one host of the lab, through the backend that built it (``RunningLab.command``:
``ip netns exec`` for namespaces, hostd's exec socket for containers), so it sees the network as
a probe there does: the vantage's resolver (namespaces: /etc/netns/<ns>/resolv.conf, which
``ip netns exec`` mounts; containers: the /etc/resolv.conf hostd wrote) and routes. The lab's CA is
trusted through the variables TLS clients read (OpenSSL's ``SSL_CERT_FILE``, curl's
``CURL_CA_BUNDLE``, Python requests' ``REQUESTS_CA_BUNDLE``) and an NSS database under ``HOME``
(``$HOME/.pki/nssdb``, where Chromium and Firefox look), made once per lab with certutil.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from netlab.backends import get_backend
from netlab.backends.base import RunningLab, read_state
from netlab.errors import LabError, NoSuchLab, UsageError

#: The lab's tools home (HOME for programs run by `harness exec`), relative to the lab folder.
TOOLS_HOME = "tools/home"
NSS_DIR = ".pki/nssdb"
NSS_NICKNAME = "lab-ca"


def attach(lab: str) -> RunningLab:
    """The running lab ``lab`` (any backend: its own record says which), or NoSuchLab."""
    state = read_state(lab)
    if state is None:
        raise NoSuchLab(f"no lab named {lab!r} on this machine (see `harness status`)")
    return get_backend(state.backend).attach(lab)


def ca_path(lab: str) -> Path:
    """The lab CA's certificate, as a path on this machine."""
    state = read_state(lab)
    if state is None:
        raise NoSuchLab(f"no lab named {lab!r} on this machine (see `harness status`)")
    path = Path(state.lab_dir) / state.ca_file
    if not path.is_file():
        raise LabError(f"lab {lab!r} has no CA at {path} (is it still starting?)")
    return path


def host_of(lab: RunningLab, where: str) -> str:
    """The host ``where`` names: a vantage (an ISP or ``control``), a host (``isp-a.gw``, ``inet``),
    or a site (its origin lives in the lab internet, ``inet``). UsageError naming the choices."""
    state = lab.state
    if where in state.vantages:
        return state.vantages[where].host
    if where in state.hosts:
        return where
    if where in state.site_addresses:
        return "inet"
    choices = sorted(set(state.vantages) | set(state.hosts))
    raise UsageError(f"lab {lab.name!r} has no vantage, host or site named {where!r}; choose one of "
                     f"{', '.join(choices)} (or a site name)")


def environment(lab: RunningLab, host: str) -> dict[str, str]:
    """The variables a program in ``host`` gets: the lab CA trusted (and, at a vantage whose users
    installed their ISP's interception CA, that one too), HOME with an NSS database."""
    own = next((v.ca_file for v in lab.state.vantages.values() if v.host == host), None)
    ca = str(lab.inner_path(own or lab.state.ca_file))
    home = nss_home(lab)
    env = {"SSL_CERT_FILE": ca, "CURL_CA_BUNDLE": ca, "REQUESTS_CA_BUNDLE": ca, "NODE_EXTRA_CA_CERTS": ca,
           "FAUXISP_LAB": lab.name, "FAUXISP_HOST": host}
    if home is not None:
        env["HOME"] = str(lab.inner_path(TOOLS_HOME))
    return env


def nss_home(lab: RunningLab) -> Path | None:
    """The lab's tools home with ``.pki/nssdb`` trusting the lab CA (made on first use, atomically,
    with certutil); None when certutil is not installed (libnss3-tools: scripts/setup.sh)."""
    home = lab.host_path(TOOLS_HOME)
    if (home / NSS_DIR / "cert9.db").is_file():
        return home
    certutil = shutil.which("certutil")
    if certutil is None:
        return None
    home.parent.mkdir(parents=True, exist_ok=True)
    # Built beside and renamed into place: two execs at once never see half a database.
    tmp = Path(tempfile.mkdtemp(prefix=".home-", dir=home.parent))
    try:
        db = tmp / NSS_DIR
        db.mkdir(parents=True)
        empty = tmp / ".empty-password"
        empty.write_text("")
        # -f with an empty password file: `--empty-password` can spin for minutes.
        for argv in ([certutil, "-N", "-d", f"sql:{db}", "-f", str(empty)],
                     [certutil, "-A", "-n", NSS_NICKNAME, "-t", "C,,", "-i",
                      str(lab.host_path(lab.state.ca_file)), "-d", f"sql:{db}"]):
            res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            if res.returncode != 0:
                raise LabError(f"certutil failed ({' '.join(argv)}): {res.stderr.strip() or res.stdout.strip()}")
        empty.unlink()
        tmp.chmod(0o755)
        with contextlib.suppress(OSError):  # another exec made it first: keep theirs
            tmp.rename(home)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return home


def command(lab: RunningLab, host: str, argv: list[str], extra_env: dict[str, str] | None = None) -> list[str]:
    """The command line, on this machine, that runs ``argv`` in ``host`` with the lab's environment."""
    env = {**environment(lab, host), **(extra_env or {})}
    # env(1) sets the variables inside the host: hostd's programs do not inherit ours.
    return lab.command(host, ["env", *(f"{k}={v}" for k, v in env.items()), *argv])


def run(cmd: list[str]) -> int:
    """Run ``cmd`` with this terminal; its exit status (a signal N as 128+N, as a shell says it)."""
    with _signals_to_child():
        status = subprocess.run(cmd).returncode
    return status if status >= 0 else 128 - status


@contextlib.contextmanager
def _signals_to_child() -> Iterator[None]:
    # Ctrl-C reaches the program (same process group) and ends it, which ends us with its status;
    # the harness' own handler would raise KeyboardInterrupt and report a torn-down lab instead.
    # A no-op handler (not SIG_IGN, which the child would inherit) leaves the program's default.
    old = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGINT, signal.SIGQUIT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
