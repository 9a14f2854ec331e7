#!/usr/bin/env bash
# Usage: scripts/test-pythons.sh [VERSION...]   (make test-pythons; default 3.10 3.11 3.12 3.13)
#
# Runs the Rust test suite against each CPython version this machine has. For each one:
#   1. finds the interpreter: pyenv's newest $PYENV_ROOT/versions/X.Y.*, else python X.Y on
#      PATH (one that does not run, such as a pyenv shim of a version not installed, is
#      not found);
#   2. creates the venv .venv-X.Y from it and installs requirements-dev.txt into it (again
#      only when a requirements file changed: the stamp .venv-X.Y/.installed);
#   3. runs `cargo test` with PYO3_PYTHON (the interpreter pyo3 embeds) and VIRTUAL_ENV (the
#      venv the tests' bridges use) set to that venv, in the target folder target/pyX.Y.
# Then prints one line per version: passed, FAILED (log: target/pyX.Y/test.log) or
# skipped (not found). Exits non-zero when one failed; skipped ones are never counted as
# passed. Extra `cargo test` arguments: CARGO_TEST_ARGS="--test cli".
set -u
cd "$(dirname "$0")/.."

versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.10 3.11 3.12 3.13)

# A one-off build per version: no incremental state and line tables only (a fraction of
# the disk and link time of the default debug build; backtraces keep their lines).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"

# The interpreter of version $1 (X.Y), or nothing.
find_python() {
  local version=$1 candidate
  local pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
  for candidate in \
    $(ls -d "$pyenv_root"/versions/"$version".*/bin/python"$version" 2>/dev/null | sort -V -r) \
    $(command -v "python$version"); do
    if "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$version'.split('.'))))" \
      >/dev/null 2>&1; then
      echo "$candidate"
      return
    fi
  done
}

# Creates or updates .venv-$1 from interpreter $2.
make_venv() {
  local version=$1 python=$2 venv=.venv-$1
  if [ -e "$venv/.installed" ] && [ "$venv/.installed" -nt requirements.txt ] &&
    [ "$venv/.installed" -nt requirements-dev.txt ]; then
    return
  fi
  "$python" -m venv "$venv" &&
    "$venv/bin/python" -m pip install --quiet --upgrade pip &&
    "$venv/bin/python" -m pip install --quiet -r requirements-dev.txt &&
    touch "$venv/.installed"
}

declare -A outcome
failed=0
for version in "${versions[@]}"; do
  python=$(find_python "$version")
  if [ -z "$python" ]; then
    outcome[$version]="skipped (not found)"
    continue
  fi
  target=target/py$version
  mkdir -p "$target"
  log=$target/test.log
  echo "== Python $version: $python -> .venv-$version, $target (log: $log)"
  venv=$PWD/.venv-$version
  # shellcheck disable=SC2086 # CARGO_TEST_ARGS is a list of arguments
  if make_venv "$version" "$python" >"$log" 2>&1 &&
    PYO3_PYTHON=$venv/bin/python VIRTUAL_ENV=$venv CARGO_TARGET_DIR=$target \
      cargo test --no-fail-fast ${CARGO_TEST_ARGS:-} >>"$log" 2>&1; then
    outcome[$version]="passed ($("$venv/bin/python" -V 2>&1))"
  else
    outcome[$version]="FAILED (log: $log)"
    failed=1
    tail -n 30 "$log"
  fi
done

echo "== make test-pythons: the Rust test suite per CPython version"
for version in "${versions[@]}"; do
  echo "Python $version: ${outcome[$version]}"
done
exit $failed
