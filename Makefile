# bpfcap: `make` sets everything up and runs a demo capture; `make test` runs the tests.
# Every target is idempotent: run it again and it only redoes what changed.

SHELL := /bin/bash
.DEFAULT_GOAL := all

VENV      := .venv
PY        := $(VENV)/bin/python
# Debian packages: the BPF toolchain (rustc-web/cargo-web with the library
# sources for -Z build-std, LLVM 22 for bpf-linker); bpftool, podman + runc +
# busybox-static (a real container) for the tests; qemu + kmod for the VM tests.
DEB_PKGS  := rustc-web cargo-web rust-web-src llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev bpftool util-linux \
             podman runc busybox-static qemu-system-x86 kmod python3-venv
VM_CACHE  ?= /var/cache/bpfcap-vm
VIRTME_NG_VERSION := 1.42
BPF_LINKER_VERSION := 0.11.0
RUST_SRC  := $(shell find crates bpf-rs/src -name '*.rs' 2>/dev/null) bpf-rs/Cargo.toml bpf-rs/Cargo.lock \
             Cargo.toml Cargo.lock $(wildcard crates/*/Cargo.toml)
PY_SRC    := $(wildcard python/bpfcap/*.py) pyproject.toml

.PHONY: all setup debs bpf-linker build demo test test-rust test-python bench-check vm-setup vm-test bench-setup bench soak clean

all: setup demo

setup: debs bpf-linker build

## Debian packages, installed only when missing (apt-get update only then too).
debs:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

## bpf-linker, built against Debian's LLVM 22 (the LLVM of rustc-web), into /usr/local/bin.
bpf-linker: debs
	@if [ "$$(/usr/local/bin/bpf-linker --version 2>/dev/null)" != "bpf-linker $(BPF_LINKER_VERSION)" ]; then \
	  echo "building bpf-linker $(BPF_LINKER_VERSION)"; \
	  LLVM_PREFIX=/usr/lib/llvm-22 cargo install --locked --force bpf-linker@$(BPF_LINKER_VERSION) \
	    --no-default-features --features llvm-22 --root /usr/local; \
	fi

## The Python package in a virtualenv; its build compiles bpf-rs/ and embeds the object.
build: $(VENV)/.installed

$(VENV)/.installed: $(RUST_SRC) $(PY_SRC) | bpf-linker
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m compileall -q python/bpfcap  # read even where PYTHONDONTWRITEBYTECODE is set: faster start
	@touch $@

## The main job: what this kernel supports, then one command captured end to end.
demo: build
	$(VENV)/bin/bpfcap doctor
	$(VENV)/bin/bpfcap exec --format text -- sh -c 'echo "hello from a captured shell"; ls / >/dev/null; exit 0'

test: setup test-rust test-python bench-check vm-test

test-rust:
	cargo test --workspace

# The host kernel offers neither kprobes nor fentry/LSM programs (see
# ../shared/ENVIRONMENT.md): the tests expect the tracepoint fallbacks there.
HOST_MECHANISMS ?= tracepoint,raw_tracepoint

test-python: build
	BPFCAP_EXPECT_MECHANISMS=$${BPFCAP_EXPECT_MECHANISMS:-$(HOST_MECHANISMS)} $(PY) -m pytest

## virtme-ng (in its own venv: Debian's Python is "externally managed") and the Debian kernels.
vm-setup: debs
	@if [ "$$($(VM_CACHE)/venv/bin/vng --version 2>/dev/null | awk '{print $$NF}')" != "$(VIRTME_NG_VERSION)" ]; then \
	  /usr/bin/python3 -m venv $(VM_CACHE)/venv && \
	  $(VM_CACHE)/venv/bin/pip install -q virtme-ng==$(VIRTME_NG_VERSION); \
	fi
	vm-tests/kernels.sh >/dev/null

## The privileged suite in VMs on Debian's 5.10, 6.1 and 6.12 kernels (see vm-tests/README.md).
vm-test: build vm-setup
	@rm -rf vm-tests/out && mkdir -p vm-tests/out; \
	  set -o pipefail; vm-tests/run.sh bash vm-tests/suite.sh | tee vm-tests/out/run.log; rc=$$?; \
	  $(PY) vm-tests/summary.py vm-tests/out/run.log; exit $$rc

## The peers of the benchmarks: bcc's Python API (and the kernel headers it compiles
## against: Debian's 6.1 headers stand in for the host kernel's), and bpftrace.
bench-setup: debs
	@for p in python3-bpfcc linux-headers-amd64 bpftrace; do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done | \
	  xargs -r env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends
	@k=$$(uname -r); h=$$(ls -d /usr/src/linux-headers-*-amd64 | sort -V | tail -1); \
	  mkdir -p /lib/modules/$$k && ln -sfn $$h /lib/modules/$$k/build && ln -sfn $${h%-amd64}-common /lib/modules/$$k/source

## Benchmarks (not tests): they print tables with ratios against peers measured in the same run.
bench: build bench-setup
	@cd benchmarks && status=0; \
	for b in filter_cost pipeline drain overhead startup; do \
	  echo "== $$b"; ../$(PY) $$b.py || status=1; \
	done; exit $$status  # every table is printed; a target not met fails at the end

## The CI's regression guard of the hot paths: ratios against peers in one run (benchmarks/guard.py).
bench-check: build
	cd benchmarks && ../$(PY) guard.py

## Bounded soak (10 minutes by default): SOAK_ARGS="--duration 3600" for an hour.
soak: build
	cd benchmarks && ../$(PY) soak.py $(SOAK_ARGS)

clean:
	rm -rf target $(VENV) python/bpfcap/*.so
