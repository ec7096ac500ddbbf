#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmarks need on a fresh Debian machine, as root.
# Idempotent: installs only what is missing, so `make test` stays quick on a prepared machine.
set -euo pipefail

apt_packages=(clang llvm libbpf-dev libnftables-dev tshark python3-scapy tcpdump iproute2 bridge-utils nftables iputils-ping mininet net-tools openssl bind9-dnsutils knot-dnsutils curl wrk python3 smcroute python3-cryptography keepalived faketime nginx frr)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing packages ${missing[*]}; run as root (or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  # The lab starts its own nginx (and keepalived) inside its namespaces with its own config:
  # the packages' system services must not start (nginx would listen on port 80). Without a
  # policy-rc.d, one that refuses every start is in place for the install only.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# scripts/setup.sh, during its apt-get install only\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  # Installed here for the lab only: not started at boot either.
  if [[ " ${missing[*]} " == *" nginx "* ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable nginx >/dev/null 2>&1 || true
  fi
fi

if ! command -v cargo-fuzz >/dev/null 2>&1 && ! [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo-fuzz" ]; then
  echo "setup: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
