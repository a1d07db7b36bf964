# bpfcap: `make` sets everything up and runs a demo capture; `make test` runs the tests.
# Every target is idempotent: run it again and it only redoes what changed.

SHELL := /bin/bash
.DEFAULT_GOAL := all

VENV      := .venv
PY        := $(VENV)/bin/python
# Debian packages: the BPF toolchain (rustc-web/cargo-web with the library
# sources for -Z build-std, LLVM 22 for bpf-linker) and bpftool for the tests.
DEB_PKGS  := rustc-web cargo-web rust-web-src llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev bpftool util-linux
BPF_LINKER_VERSION := 0.11.0
RUST_SRC  := $(shell find crates bpf-rs/src -name '*.rs' 2>/dev/null) bpf-rs/Cargo.toml bpf-rs/Cargo.lock \
             Cargo.toml Cargo.lock $(wildcard crates/*/Cargo.toml)
PY_SRC    := $(wildcard python/bpfcap/*.py) pyproject.toml

.PHONY: all setup debs bpf-linker build demo test test-rust test-python lint clean

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
	@touch $@

## The main job: what this kernel supports, then one command captured end to end.
demo: build
	$(VENV)/bin/bpfcap doctor
	$(VENV)/bin/bpfcap exec --format text -- sh -c 'echo "hello from a captured shell"; ls / >/dev/null; exit 0'

test: setup test-rust test-python

test-rust:
	cargo test --workspace

# The host kernel offers neither kprobes nor fentry/LSM programs (see
# ../shared/ENVIRONMENT.md): the tests expect the tracepoint fallbacks there.
HOST_MECHANISMS ?= tracepoint,raw_tracepoint

test-python: build
	BPFCAP_EXPECT_MECHANISMS=$${BPFCAP_EXPECT_MECHANISMS:-$(HOST_MECHANISMS)} $(PY) -m pytest

clean:
	rm -rf target $(VENV) python/bpfcap/*.so
