#!/usr/bin/env bash
# Runs every cargo-fuzz target of igmp-ext, dns-keystore, control-channel and manycast-server for FUZZ_SECONDS
# each, starting from the committed seed corpus. Fails on the first crash (libFuzzer leaves the
# input in <crate>/fuzz/artifacts/).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${FUZZ_SECONDS:-20}"
# cargo-fuzz needs unstable rustc flags (sanitizers); the machine has one stable toolchain, whose
# compiler accepts them when told it is bootstrapping.
export RUSTC_BOOTSTRAP=1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for crate in igmp-ext dns-keystore control-channel manycast-server; do
  cd "$root/$crate"
  for target in $(cargo fuzz list); do
    mkdir -p "fuzz/corpus/$target"
    echo "fuzz: $crate/$target for ${seconds}s"
    if ! cargo fuzz run --release "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 >"$log" 2>&1; then
      tail -n 40 "$log"
      echo "fuzz: $crate/$target FAILED; the input is in $crate/fuzz/artifacts/$target/" >&2
      exit 1
    fi
    grep -E "^(Done|stat::number_of_executed_units)" "$log" || true
  done
done
