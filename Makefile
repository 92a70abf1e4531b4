# cell: the two commands a newcomer needs are `make run` and `make test`.
# Everything this Makefile needs that a fresh machine may lack, it installs (`make deps`).

SHELL := /bin/bash
CARGO ?= cargo
GUEST_OUT := guests/target/wasm32-wasip2/release
CELL := target/debug/cell
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps guests build run test lint unit bench bench-tools compat fuzz stress proto install clean

all: build

## Install missing tools: the wasm32-wasip2 target, rustfmt/clippy, the capnp compiler, jq (the
## README's CI example, run by tests/ci_example.rs).
deps:
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy
	@rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
	@command -v capnp >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq capnproto; }
	@command -v jq >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq jq; }

## Build the guests (staged: some embed others) and the host.
guests: deps
	bash guests/build.sh >/dev/null

build: guests
	$(CARGO) build

## Build everything and run the demo pid0.
run: build
	$(CELL) run $(GUEST_OUT)/pid0.wasm

## Formatting, lints (host and guests), unit and integration tests (host, cell-proto, and the
## check that cell-proto's checked-in bindings match capnp/cell.capnp). Everything runs with two
## shards (every daemon, and every `cell run` tree: `CELL_SHARDS`); then the daemon tests run
## again with one, and the process-tree tests with one and with every child placed on another
## shard than its parent's (`CELL_PLACEMENT=spread`).
DAEMON_TESTS = --test daemon --test daemon_load --test daemon_mtls --test remote --test deploy --test http_serve --test python_client
TREE_TESTS = --test run --test nesting --test hostile --test network --test escape --test sharing --test servers --test shards
test: build lint
	CELL_SHARDS=2 $(CARGO) test --workspace --all-targets
	CELL_SHARDS=1 $(CARGO) test $(DAEMON_TESTS) $(TREE_TESTS)
	CELL_SHARDS=2 CELL_PLACEMENT=spread $(CARGO) test $(TREE_TESTS)

## A longer run of the process-tree stress than `make test` does (tests/shards.rs).
STRESS_ROUNDS ?= 100
stress: guests
	CELL_STRESS_ROUNDS=$(STRESS_ROUNDS) $(CARGO) test --release --test shards a_random_tree

## Regenerate cell-proto's checked-in bindings from capnp/cell.capnp (needs `capnp`: `make deps`).
proto: deps
	$(CARGO) run -q -p cell-proto-gen

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	cd guests && $(CARGO) fmt --all -- --check
	cd guests && CARGO_TARGET_DIR=$$PWD/target $(CARGO) clippy --release --target wasm32-wasip2 -- -D warnings

## Longer fuzzing of the RPC stack than `make test` does (tests/fuzz_rpc.rs; release build).
FUZZ_CASES ?= 100000
fuzz: guests
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release --test fuzz_rpc

## Benchmarks (release build); never part of `make test`. The `wasmtime run` baseline columns
## appear when `wasmtime` is on PATH or was installed by `make bench-tools`.
bench: guests
	PATH="$(CURDIR)/target/tools/bin:$$PATH" $(CARGO) bench --bench bench

## Optional: install the wasmtime CLI (same version as the host's wasmtime) for the baselines.
## Takes ~15 minutes on 2 cores, so `make bench` does not do it by itself.
bench-tools:
	$(CARGO) install wasmtime-cli --version 48.0.8 --locked --root target/tools

## cell side by side with the wasmtime CLI of the same version on the same components
## (`benches/compat/main.rs`: `wasmtime run -S http`, `wasmtime serve`); builds the CLI first.
compat: guests bench-tools
	$(CARGO) bench --bench compat

## Install the cell binary into $(PREFIX)/bin (release build).
PREFIX ?= $(HOME)/.local
install:
	$(CARGO) install --path . --locked --root $(PREFIX)

clean:
	$(CARGO) clean
	rm -rf guests/target
