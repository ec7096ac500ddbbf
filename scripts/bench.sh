#!/usr/bin/env bash
# `make bench` runs every benchmark; `make bench B=name` runs one. Each benchmark prints one final
# JSON line and writes it to target/bench/NAME.json.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target/bench

declare -A benches=(
  [verify]="cargo bench --quiet -p igmp-ext --bench verify"
  [cost]="cargo bench --quiet -p igmp-ext --bench cost"  # issue 13: ns per flood datagram, by kind
  [keystore]="cargo bench --quiet -p dns-keystore --bench keystore"
  # Issue 17: keystore SIGKILL trials and recovery (needs delv), then the clock steps with the
  # real daemons (root, libfaketime), merged into one line.
  [faults]="faults"
  # Needs root: namespaces, veth, the multicast routing socket, nftables. IPv4 and, in a
  # dual-stack lab of its own, IPv6 native steering (issue 15; DATAPLANE_V6=0: IPv4 only).
  [dataplane]="cargo bench --quiet -p manycast-verifier --bench dataplane"
  [control]="cargo bench --quiet -p control-channel --bench control"
  # Issue 14 item 4, the simulator: per-member receive load and crash convergence of flat groups
  # (8, 100), foca SWIM detection (100, 1000) and SWIM beside today's agreement (100); about
  # 17 minutes (SCALE_SIZES, SCALE_SWIM_SIZES, SCALE_HYBRID_SIZES, SCALE_TRIALS choose less).
  [scale]="cargo bench --quiet -p control-channel --bench scale"
  # Cluster benchmarks (issue 7), in the manycast-e2e package (tests/benches/).
  [disruption]="cargo bench --quiet -p manycast-e2e --bench disruption"
  [balance]="cargo bench --quiet -p manycast-e2e --bench balance"
  # Needs root and keepalived: namespaces, the real verifier and servers, keepalived VRRP.
  [failover]="cargo bench --quiet -p manycast-server --bench failover"
  # Needs root (issue 13): a spoofed IGMP flood on a member's link against the real verifier
  # (ATTACK_SECONDS, default 30; ATTACK_PPS, default: as fast as one thread sends), then a
  # compromised certified member and its revocation through the real keystore
  # (INSIDER_SECONDS, default 20), merged into one line.
  [attack]="attack"
  # Needs root and mininet: the lab with the release daemons, 1,000 sessions per strategy.
  [reallocate]="reallocate"
  # Needs root, mininet, nginx and wrk (issue 16): wrk through the VIP to nginx on the lab's
  # four servers vs the same wrk straight at them, keep-alive and one request per connection.
  [http]="http"
  # Needs root and FRR (issue 14): two verifier routers behind an upstream ECMP router, silent
  # router failures (TRIALS, default 20; BFD_MS, default 50) and the same-owner share; then the
  # site hierarchy in the `sites` lab (mininet, release daemons): a whole site's servers
  # SIGKILLed and started again, trials for SITE_SECONDS (default 300); then the simulator's
  # 10 x 100 hierarchy beside a flat group of 8 (the scale bench, ~10 minutes).
  [topology]="topology"
)

# Merges JSON lines (later keys win) into one line named NAME, the keys ORDER (space-separated)
# first; writes it to target/bench/NAME.json and prints it.
merge() {
  local name=$1 order=$2
  shift 2
  /usr/bin/python3 - "$name" "$order" "$@" <<'PY'
import json, sys
name, order, lines = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
line = {}
for text in lines:
    line.update(json.loads(text))
line["bench"] = name
out = {k: line[k] for k in ["bench"] + order if k in line}
out.update({k: v for k, v in line.items() if k not in out})
text = json.dumps(out, separators=(",", ":"))
open(f"target/bench/{name}.json", "w").write(text + "\n")
print(text)
PY
}

# The keystore figures (dns-keystore's bench; its simulator clock figure is kept as
# clock_step_sim_commits) and the real-daemon clock-step figures (manycast-server's
# clock_step bench), as one JSON line in target/bench/faults.json.
# Runs a benchmark with its report on stderr as it goes, and prints its last line (the JSON
# line a merge keeps). Not `tee /dev/stderr`: that reopens the file stderr is redirected to
# and truncates it.
shown() {
  local out
  out=$(mktemp)
  "$@" | tee "$out" >&2
  tail -n 1 "$out"
  rm -f "$out"
}

faults() {
  local keystore clock
  keystore=$(shown cargo bench --quiet -p dns-keystore --bench faults)
  clock=$(shown cargo bench --quiet -p manycast-server --bench clock_step)
  keystore=${keystore/\"clock_step_commits\":/\"clock_step_sim_commits\":}
  merge faults "keystore_trials keystore_acked_lost keystore_torn clock_step_commits \
clock_step_resets keystore_recover_ms" "$keystore" "$clock"
}

# The flood (manycast-server's attack bench) and the insider (its insider bench), as one JSON
# line in target/bench/attack.json.
attack() {
  local flood insider
  flood=$(shown cargo bench --quiet -p manycast-server --bench attack)
  insider=$(shown cargo bench --quiet -p manycast-server --bench insider)
  merge attack "flood_pps flood_served flood_claims_lost legit_join_p99_ms verifier_cpu \
insider_units_lost revoke_ms" "$flood" "$insider"
}

# The redundant routers in the lab (manycast-server's topology bench), the site hierarchy's
# site failover in the `sites` lab (lab/sites.py bench: site b's servers SIGKILLed, the time
# until every source of site b is answered by site a, from the clients' records) and the
# simulator's hierarchy of 10 sites x 100 members with a flat group of 8 as the baseline (the
# scale bench), as one JSON line in target/bench/topology.json.
topology() {
  local lab sites sim
  lab=$(shown cargo bench --quiet -p manycast-server --bench topology)
  cargo build --quiet --release -p manycast-server -p manycast-verifier -p dns-keystore
  sites=$(shown /usr/bin/python3 lab/sites.py bench --seconds "${SITE_SECONDS:-300}" \
    --bin-dir "${CARGO_TARGET_DIR:-target}/release" --run-dir "${CARGO_TARGET_DIR:-target}/bench-sites/run")
  sim=$(SCALE_SIZES=8 SCALE_SWIM_SIZES= SCALE_HYBRID_SIZES= SCALE_HIERARCHY=10x100x2 \
    shown cargo bench --quiet -p control-channel --bench scale)
  merge topology "router_failover_p50_ms router_failover_p99_ms site_failover_p50_ms \
site_failover_p99_ms site_failover_trials same_owner sim_converge_p99_ms sim_recv_per_member_s_8 \
sim_recv_per_member_s_1000" "$lab" "$sites" "$sim"
}

reallocate() {
  cargo build --quiet --release -p manycast-server -p manycast-verifier -p dns-keystore
  /usr/bin/python3 lab/reallocate.py --bench --connections 1000 --bin-dir "${CARGO_TARGET_DIR:-target}/release"
}

http() {
  cargo build --quiet --release -p manycast-server -p manycast-verifier -p dns-keystore
  /usr/bin/python3 lab/httpbench.py --bin-dir "${CARGO_TARGET_DIR:-target}/release"
}

run() {
  local name=$1
  if [ -z "${benches[$name]+x}" ]; then
    echo "bench: unknown benchmark '$name'; known: ${!benches[*]}" >&2
    exit 2
  fi
  echo "bench: $name" >&2
  ${benches[$name]}
}

if [ $# -gt 0 ] && [ -n "$1" ]; then
  run "$1"
else
  for name in $(printf '%s\n' "${!benches[@]}" | sort); do run "$name"; done
fi
