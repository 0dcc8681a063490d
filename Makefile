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

# Boots a 7.3.x sched_ext kernel, attaches scx_concord, runs a short upstream-style smoke test.
demo: build
	$(LAB) kernel
	$(LAB) vm --cpus 4 --sched 'concord:--stats 5' --timeout 300 -- \
	    stress-ng -t 15 -M -c 4 --affinity 1 --affinity-delay 1 --affinity-pin

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
