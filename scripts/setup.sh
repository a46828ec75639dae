#!/usr/bin/env bash
# Installs everything the lab needs on a fresh Debian 12 or Ubuntu 24.04 machine (as root),
# idempotently: the lab's real components from the distribution's archive (apt), and this project
# with its Python dependencies in a virtual environment, .venv in the repository.
#
# Why a virtual environment: both distributions mark their python3 EXTERNALLY-MANAGED (PEP 668),
# so `pip install` into it is refused (and a stock system has no pip at all). The venv is made by
# the distribution's own python3 (+ python3-venv); its pip installs the project. Lab services and
# probe workers are started with sys.executable, i.e. this venv's python, so they see the same
# packages, also as root inside network namespaces.
#
# Environment: PYTHON (the interpreter that makes the venv, default /usr/bin/python3),
# FAUXISP_VENV (default .venv), FAUXISP_EXTRA_APT (more packages, space-separated),
# FAUXISP_OPTIONAL_APT (packages installed where the archive has them; default chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

# Everything is named by distribution package so the same list works on Debian and Ubuntu.
# python3-dev, gcc, libc6-dev, libnetfilter-queue-dev: netfilterqueue has no wheel on PyPI and is
# compiled into the venv from its sdist. curl, bind9-dnsutils (dig), openssl, libnss3-tools: your own tools in a lab
# (`harness exec`; certutil makes the NSS database that trusts the lab CA for browsers).
APT_PACKAGES=(unbound nsd nftables iptables iproute2 procps libnetfilter-queue-dev gcc libc6-dev make
              curl bind9-dnsutils openssl libnss3-tools
              debootstrap ca-certificates python3 python3-venv python3-dev)
# Wanted but not everywhere: Ubuntu 24.04 has no chromium .deb (only a snap), so the report's
# browser test skips there.
OPTIONAL_APT=(${FAUXISP_OPTIONAL_APT-chromium})
EXTRA="${FAUXISP_EXTRA_APT:-}"

apt_updated=0
apt_install() {
  if [ "$(id -u)" != 0 ]; then echo "setup: need root to apt-get install $*" >&2; exit 2; fi
  echo "setup: installing $*"
  # Installing unbound and nsd must not start them on the host: the lab runs its own copies.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  export DEBIAN_FRONTEND=noninteractive
  apt_update
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
apt_update() {
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
}
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
candidate() {  # prints the package name if apt can install it
  local c
  c="$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')"
  if [ -n "$c" ] && [ "$c" != "(none)" ]; then echo "$1"; fi
}

missing=()
for p in "${APT_PACKAGES[@]}" $EXTRA; do installed "$p" || missing+=("$p"); done
optional=()
for p in "${OPTIONAL_APT[@]}"; do installed "$p" || optional+=("$p"); done
if [ "${#optional[@]}" -gt 0 ] && [ "$(id -u)" = 0 ]; then
  apt_update
  for p in "${optional[@]}"; do
    if [ -n "$(candidate "$p")" ]; then missing+=("$p"); else echo "setup: $p is not in this archive; skipped"; fi
  done
fi
if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi

# Compose, for the README's `docker-compose ...` lines, where there is a Docker CLI to drive. The
# README names the command `docker-compose` because that is what Debian 12 ships (1.29, package
# docker-compose; its archive has no Compose v2). Where Compose v2 can be had (Ubuntu's
# docker-compose-v2, Docker's docker-compose-plugin, or already installed), it is preferred and
# a two-line `docker-compose` shim in /usr/local/bin forwards to `docker compose`.
if command -v docker >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
  if ! docker compose version >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt_update
    v2="$(candidate docker-compose-v2)"; [ -n "$v2" ] || v2="$(candidate docker-compose-plugin)"
    if [ -n "$v2" ]; then apt_install "$v2"; elif [ -n "$(candidate docker-compose)" ]; then apt_install docker-compose; fi
  fi
  if ! command -v docker-compose >/dev/null 2>&1 && docker compose version >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    printf '#!/bin/sh\n# fauxisp scripts/setup.sh: Compose v2 under the name the README uses\nexec docker compose "$@"\n' \
      > /usr/local/bin/docker-compose
    chmod +x /usr/local/bin/docker-compose
    echo "setup: /usr/local/bin/docker-compose forwards to 'docker compose' (Compose v2)"
  fi
  command -v docker-compose >/dev/null 2>&1 || echo "setup: no Compose found or installable; the README's docker-compose lines will not run" >&2
fi

SYS_PY="${PYTHON:-/usr/bin/python3}"
VENV="${FAUXISP_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
if [ ! -x "$PY" ] || ! "$PY" -c "import sys" 2>/dev/null; then
  echo "setup: creating the virtual environment $VENV with $SYS_PY"
  rm -rf "$VENV"
  "$SYS_PY" -m venv "$VENV"
fi

stamp="$VENV/.fauxisp-setup-stamp"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ] \
    || ! "$PY" -c "import netlab, probes, harness, pytest, xdist, mypy, fauxisp_dot, fauxisp_doh, oonidata, netfilterqueue" 2>/dev/null; then
  echo "setup: installing the project and its Python dependencies into $VENV"
  pipi=("$PY" -m pip install -q --disable-pip-version-check)
  "${pipi[@]}" -e ".[test,compose,fast]"
  # In one pip run (each run costs seconds of start-up): the worked examples of third-party probe
  # types with their servers (docs/writing-a-probe.md), and OONI's own loader, the tests' external
  # check of our measurements. oonidata pins cryptography~=38 and click~=8.0, which conflict with
  # ours, hence --no-deps; its other dependencies come with the test extra.
  "${pipi[@]}" --no-deps --no-build-isolation -e examples/dot-probe -e examples/doh-probe oonidata==0.3.0
  touch "$stamp"
fi

# `harness` on the PATH: a link in /usr/local/bin unless something else owns that name (another
# clone's venv, say); either way the path is printed.
link=/usr/local/bin/harness
if [ "$(id -u)" = 0 ] && { [ ! -e "$link" ] || { [ -L "$link" ] && [ ! -e "$(readlink -f "$link")" ]; }; }; then
  ln -sfn "$VENV/bin/harness" "$link"
fi
if [ "$(command -v harness 2>/dev/null || true)" = "$link" ] && [ "$(readlink -f "$link")" = "$(readlink -f "$VENV/bin/harness")" ]; then
  echo "setup: done; harness is on the PATH ($link -> $VENV/bin/harness)"
else
  echo "setup: done; harness is $VENV/bin/harness (put $VENV/bin on the PATH, or run . $VENV/bin/activate)"
fi
