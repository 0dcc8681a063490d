# Two commands for a newcomer: `make demo` and `make test`. Both install what is missing first
# (scripts/setup-host.sh, idempotent, needs root).
SHELL := /bin/bash
LAB := target/release/concord-lab
CARGO ?= cargo

.PHONY: setup build demo test unit vm-tests smoke smoke-full lint

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

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

unit: build
	$(CARGO) test --release --workspace

# Integration tests that boot VMs (need root, QEMU, the kernel cache; take ~10 minutes).
vm-tests: build
	CONCORD_LAB_VM_TESTS=1 $(CARGO) test --release -p concord-lab --test vm -- --test-threads=1

test: build lint unit vm-tests

# The full upstream smoke matrix (4 queue combinations x 1-LLC and 2-LLC, 31 s each).
smoke-full: build
	CONCORD_LAB_VM_TESTS=1 CONCORD_SMOKE_SECS=31 $(CARGO) test --release -p concord-lab --test vm smoke -- --test-threads=1 --nocapture
