# Two commands for a newcomer: `make demo` and `make test`. Both install what is missing first
# (scripts/setup-host.sh, idempotent, needs root).
SHELL := /bin/bash
LAB := target/release/concord-lab
CARGO ?= cargo

.PHONY: setup build demo compare test unit vm-tests lint reliability reliability-long

setup:
	@./scripts/setup-host.sh

build: setup
	$(CARGO) build --release --workspace

# Seed 000's outage and its fix, side by side (~8 minutes here): EEVDF, scx_lavd's design of the
# time (pinned tasks in the LLC queue, greedy-penalty deadlines) and scx_concord, 3 interleaved
# runs each. Prints the table; writes report.md, results.json and latency-cdf.svg under
# lab-results/.
demo: build
	$(LAB) kernel
	$(LAB) bench outage

# Every scenario under EEVDF, scx_concord, scx_lavd and scx_bpfland (peers built once, ~11
# minutes; then ~45 minutes of runs). Writes report.md, results.json and SVGs under lab-results/.
compare: build
	$(LAB) kernel
	$(LAB) peers
	$(LAB) compare

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

unit: build
	$(CARGO) test --release --workspace

# Integration tests that boot VMs (need root, QEMU, the kernel cache; take ~10 minutes).
vm-tests: build
	CONCORD_LAB_VM_TESTS=1 $(CARGO) test --release -p concord-lab --test vm -- --test-threads=1

test: build lint unit vm-tests

# The reliability suite on both kernel series (CI runs --quick inside vm-tests); -long is nightly.
reliability: build
	$(LAB) kernel --kernel 7.3 && $(LAB) kernel --kernel 7.0
	$(LAB) reliability --kernels 7.3,7.0

reliability-long: build
	$(LAB) reliability --kernels 7.3,7.0 --long
