#!/usr/bin/env bash
# The whole test suite, as the README gives it and .ci/run runs it: the Rust workspace's tests, then the Python
# package built from this checkout and its pytest suite.
#
# Python tools the tests use (faiss-cpu, maturin, pytest, ...: scripts/ci/requirements.txt) live in a
# virtualenv, .venv-test by default (COCA_TEST_VENV=DIR for another), made on the first run and refreshed only
# when the requirements change. It comes first on PATH, so tests that call `python3` see its packages.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${COCA_TEST_VENV:-.venv-test}"
req=scripts/ci/requirements.txt
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
    echo "$want" >"$stamp"
fi
export PATH="$PWD/$venv/bin:$PATH"

cargo test --workspace --locked

# The CLI comparisons in python/tests use target/debug/coca, built above. The dev profile reuses the
# dependencies `cargo test` just compiled (optimised: see Cargo.toml); a user's `pip install ./python`
# builds in release.
MATURIN_PEP517_ARGS="--profile dev --locked" pip install -q --disable-pip-version-check ./python
pytest python/tests -q
