#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmarks need on a fresh Debian machine, as root.
# Idempotent: installs only what is missing, so `make test` stays quick on a prepared machine.
set -euo pipefail

apt_packages=(libnftables-dev tshark python3-scapy tcpdump iproute2 bridge-utils nftables iputils-ping mininet net-tools openssl bind9-dnsutils knot-dnsutils curl wrk python3 smcroute python3-cryptography keepalived faketime)
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
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo-fuzz >/dev/null 2>&1 && ! [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo-fuzz" ]; then
  echo "setup: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
