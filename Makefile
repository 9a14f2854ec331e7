# cerebros-bridge: one place for the set-up, the main job, the tests and the linters.
# `make run` and `make test` each set up everything they need from a fresh clone
# (a project-local .venv with the Python packages, then the Rust build).

PYTHON ?= python3
VENV := .venv
VENV_PY := $(CURDIR)/$(VENV)/bin/python
BIN := target/release/cerebros-bridge

# pyo3 builds against (and embeds) the venv's interpreter, never a PATH shim.
export PYO3_PYTHON := $(VENV_PY)

.PHONY: run setup setup-dev browser build test test-rust test-python test-host test-pythons lint fmt bench clean

## run: set up what the main job needs (.venv with requirements.txt), build the release
## binary and run the main job: the digits NAS demo
run: build
	$(BIN) validate
	$(BIN) run examples/digits.toml

## setup: create .venv with what the main job needs (requirements.txt: numpy, scikit-learn,
## MLflow, maturin; only when it changes), then build the native module
## cerebros_service._bridge into it (only when the Rust sources change)
setup: $(VENV)/.installed $(VENV)/.bridge

## setup-dev: setup, plus what the tests need (requirements-dev.txt: the test tools and the
## optional extras the tests exercise: Keras + JAX, Optuna, Ray, opentelemetry-api)
setup-dev: setup $(VENV)/.installed-dev

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --quiet --upgrade pip
	$(VENV_PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(VENV_PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# `maturin develop` installs cerebros_service into the venv in editable mode: the compiled
# _bridge module lands in python/cerebros_service/ next to the Python sources. It builds in
# its own target folder: the extension and the embedding build configure pyo3 differently,
# and sharing one folder would make each rebuild the other's dependencies every time.
BRIDGE_SOURCES := Cargo.toml Cargo.lock build.rs pyproject.toml $(shell find src -name '*.rs')

$(VENV)/.bridge: $(VENV)/.installed $(BRIDGE_SOURCES)
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(VENV)/bin/maturin develop --release --quiet --target-dir target/maturin
	touch $@

## browser: Debian's chromium and chromedriver, for the live page's browser test
## (tests/serve/browser.rs); installed only when missing (needs root or sudo)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium chromium-driver >/dev/null; }

## build: the release binary (the CLI embeds the venv's interpreter and finds the service
## in python/: it needs the packages, not the native module)
build: $(VENV)/.installed
	cargo build --release

## test: set up, lint, and run every test (Rust unit, integration and doc tests; pytest;
## the out-of-tree host)
test: setup-dev browser lint test-rust test-python test-host

test-rust: setup-dev browser
	cargo test

test-python: setup-dev
	$(VENV_PY) -m mypy.stubtest cerebros_service._bridge
	$(VENV_PY) -m pytest -q

## test-host: build and run tests/fixtures/rust_host, a Rust host in a Cargo project of its
## own that depends on this crate by path, and its example `readme` (the README's code), with
## the README's steps ("Use it in your own Rust project"; the venv is ours). It builds in our
## target folder with our Cargo.lock's versions, so what it shares with our build compiles once.
HOST_FIXTURE := tests/fixtures/rust_host

test-host: setup-dev
	cp Cargo.lock $(HOST_FIXTURE)/Cargo.lock
	cd $(HOST_FIXTURE) && CARGO_TARGET_DIR=$(CURDIR)/target cargo build
	cd $(HOST_FIXTURE) && VIRTUAL_ENV=$(CURDIR)/$(VENV) CEREBROS_REPO=$(CURDIR)/python \
	  CARGO_TARGET_DIR=$(CURDIR)/target cargo run
	cd $(HOST_FIXTURE) && VIRTUAL_ENV=$(CURDIR)/$(VENV) CEREBROS_REPO=$(CURDIR)/python \
	  CARGO_TARGET_DIR=$(CURDIR)/target cargo run --example readme

## test-pythons: the Rust test suite against each CPython 3.10-3.13 this machine has, each
## in its venv .venv-3.X and target folder target/py3.X; a line per version says passed,
## FAILED or skipped (not found). Not part of `make test` (a full build per version).
test-pythons:
	scripts/test-pythons.sh 3.10 3.11 3.12 3.13

## lint: rustfmt, clippy of both builds (warnings are errors), ruff
lint: setup-dev
	cargo fmt --all -- --check
	cargo fmt --manifest-path $(HOST_FIXTURE)/Cargo.toml -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --lib --no-default-features --features extension-module --target-dir target/maturin -- -D warnings
	$(VENV)/bin/ruff check python tests
	$(VENV)/bin/ruff format --check python tests

## fmt: format Rust and Python code
fmt: setup-dev
	cargo fmt --all
	cargo fmt --manifest-path $(HOST_FIXTURE)/Cargo.toml
	$(VENV)/bin/ruff format python tests

## bench: criterion benchmarks (figures go to BENCHMARKS.md)
bench: setup-dev
	cargo bench

clean:
	cargo clean
	rm -rf $(VENV)
