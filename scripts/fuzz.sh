#!/usr/bin/env bash
# Runs every cargo-fuzz target of igmp-ext, dns-keystore, control-channel, manycast-server and verifier
# for FUZZ_SECONDS each, starting from the committed seed corpus. Fails on the first crash, on an
# input slower than FUZZ_INPUT_TIMEOUT seconds and on one that needs more than FUZZ_RSS_MB of
# memory (issue 13: a slow input is a failure); libFuzzer leaves the input in
# <crate>/fuzz/artifacts/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${FUZZ_SECONDS:-20}"
# Per input: the slowest legitimate input (a maximum-size join, verified) takes milliseconds in a
# sanitizer build; a second means a super-linear path.
input_timeout="${FUZZ_INPUT_TIMEOUT:-1}"
rss_mb="${FUZZ_RSS_MB:-1024}"
# cargo-fuzz needs unstable rustc flags (sanitizers); the machine has one stable toolchain, whose
# compiler accepts them when told it is bootstrapping.
export RUSTC_BOOTSTRAP=1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for crate in igmp-ext dns-keystore control-channel manycast-server verifier; do
  cd "$root/$crate"
  # The router parses datagrams up to 16 KiB (MAX_JOIN_DATAGRAM): let inputs of the crates that
  # parse them reach past the cap, so a slow path near it is found.
  max_len=4096
  case "$crate" in igmp-ext | verifier) max_len=20000 ;; esac
  for target in $(cargo fuzz list); do
    mkdir -p "fuzz/corpus/$target"
    echo "fuzz: $crate/$target for ${seconds}s"
    if ! cargo fuzz run --release "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -max_len="$max_len" -timeout="$input_timeout" -rss_limit_mb="$rss_mb" \
        -print_final_stats=1 >"$log" 2>&1; then
      tail -n 40 "$log"
      echo "fuzz: $crate/$target FAILED; the input is in $crate/fuzz/artifacts/$target/" >&2
      exit 1
    fi
    grep -E "^(Done|stat::number_of_executed_units)" "$log" || true
  done
done
