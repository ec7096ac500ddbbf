# The two commands of the README, plus benchmarks and the checks CI runs.
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
# Fuzz seconds per target in `make test` (bounded so CI stays quick); `make fuzz FUZZ_SECONDS=600`.
FUZZ_SECONDS ?= 20
B ?=

.PHONY: setup demo test check unit fuzz fuzz-smoke bench clean

setup:
	@scripts/setup.sh

## make demo: the main job. About a minute of the lab story (lab/demo.py) with the release
## daemons; it holds the lab lock /tmp/manycast-lab.lock itself. Picture: target/demo/load.svg.
## make demo TOPO=sites: the site hierarchy in the two-site topology with FRR (lab/sites.py
## demo): the routing picture, the upper allocation, clients answered per site, a site router's
## verifier and then a whole site's servers SIGKILLed, the site back.
TOPO ?=
ifeq ($(TOPO),sites)
DEMO := lab/sites.py demo --run-dir $${CARGO_TARGET_DIR:-target}/demo-sites/run
else
DEMO := lab/demo.py
endif
demo: setup
	cargo build --release -p manycast-server -p manycast-verifier -p dns-keystore
	/usr/bin/python3 $(DEMO) --bin-dir $${CARGO_TARGET_DIR:-target}/release

## make test: every test, the root-only interop tests included, then a bounded fuzz run.
test: setup check unit fuzz-smoke

check:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	/usr/bin/python3 scripts/check-shape.py

unit:
	cargo test --workspace --quiet

fuzz-smoke:
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

fuzz:
	FUZZ_SECONDS=$${FUZZ_SECONDS:-600} scripts/fuzz.sh

## make bench [B=name]: every benchmark, or one. Each prints a JSON line into target/bench/NAME.json.
bench:
	scripts/bench.sh $(B)

clean:
	cargo clean
