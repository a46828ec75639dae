#!/usr/bin/env bash
# Installs everything the lab needs on a fresh Debian 12 machine (as root), idempotently:
# the lab's real components from Debian's archive, and this project with its Python dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(unbound nsd nftables iptables iproute2 procps libnetfilter-queue-dev gcc debootstrap chromium)
EXTRA="${CENSORLAB_EXTRA_APT:-}"  # more Debian packages, space-separated

missing=()
for p in "${APT_PACKAGES[@]}" $EXTRA; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "setup: need root to apt-get install ${missing[*]}" >&2; exit 2; fi
  echo "setup: installing ${missing[*]}"
  # Installing unbound and nsd must not start them on the host: the lab runs its own copies.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
stamp=".setup-stamp"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || ! "$PY" -c "import netlab, probes, harness, pytest, censorlab_dot, oonidata" 2>/dev/null; then
  echo "setup: installing the project and its Python dependencies"
  "$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore -e ".[test,compose,fast]"
  # The worked example of a third-party probe type (docs/writing-a-probe.md), as its own package.
  "$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --no-build-isolation \
    -e examples/dot-probe
  # OONI's own loader, the tests' external check of our measurements. It pins cryptography~=38
  # and click~=8.0, which conflict with ours; its other dependencies come with the test extra.
  "$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps oonidata==0.3.0
  touch "$stamp"
fi
