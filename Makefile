# cerebros-bridge: one place for the set-up, the main job, the tests and the linters.
# `make run` and `make test` each set up everything they need from a fresh clone
# (a project-local .venv with the Python packages, then the Rust build).

PYTHON ?= python3
VENV := .venv
VENV_PY := $(CURDIR)/$(VENV)/bin/python
BIN := target/release/cerebros-bridge

# pyo3 builds against (and embeds) the venv's interpreter, never a PATH shim.
export PYO3_PYTHON := $(VENV_PY)

.PHONY: run setup build test test-rust test-python lint fmt bench clean

## run: set up, build (release) and run the main job: the digits NAS demo
run: build
	$(BIN) validate
	$(BIN) run examples/digits.toml

## setup: create .venv and install the Python packages (only when requirements change)
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --quiet --upgrade pip
	$(VENV_PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

## build: the release binary
build: setup
	cargo build --release

## test: set up, lint, and run every test (Rust unit, integration and doc tests; pytest)
test: setup lint test-rust test-python

test-rust: setup
	cargo test

test-python: setup
	$(VENV_PY) -m pytest -q

## lint: rustfmt, clippy (warnings are errors), ruff
lint: setup
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests
	$(VENV)/bin/ruff format --check python tests

## fmt: format Rust and Python code
fmt: setup
	cargo fmt --all
	$(VENV)/bin/ruff format python tests

## bench: criterion benchmarks (figures go to BENCHMARKS.md)
bench: setup
	cargo bench

clean:
	cargo clean
	rm -rf $(VENV)
