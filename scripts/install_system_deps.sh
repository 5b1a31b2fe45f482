#!/usr/bin/env bash
# System packages for link emulation (spinn_ros.linkemu): network namespaces and tbf
# (iproute2), loss and NFQUEUE rules (iptables), and what the NetfilterQueue sdist builds
# against (libnetfilter-queue-dev, a C compiler, Python headers); shellcheck, which
# test/system/test_deployment.py runs on every shell script; openssl for `spinn certs` (the
# secured drone<->cloud link's certificates).
# Idempotent: installs only what is missing, and runs `apt-get update` only then.
# The Python side: pip install ".[linkemu]" (NetfilterQueue; scripts/setup_env.sh installs
# it from requirements.lock once libnetfilter-queue-dev is there).
set -euo pipefail

PACKAGES=(iproute2 iptables libnetfilter-queue-dev build-essential python3-dev shellcheck openssl)

missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
    echo "install_system_deps: all present (${PACKAGES[*]})"
    exit 0
fi

SUDO=()
if ((EUID != 0)); then
    command -v sudo >/dev/null || { echo "install_system_deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    SUDO=(sudo)
fi
echo "install_system_deps: installing ${missing[*]}"
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
