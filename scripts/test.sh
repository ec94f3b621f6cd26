#!/usr/bin/env bash
# The whole test suite, as the README gives it and .ci/run runs it: the Rust workspace's tests, then the Python
# package built from this checkout and its pytest suite.
#
# Python tools the tests use (faiss-cpu, maturin, pytest, ...: scripts/ci/requirements.txt) live in a
# virtualenv, .venv-test by default (COCA_TEST_VENV=DIR for another). It comes first on PATH, so tests that
# call `python3` see its packages.
set -euo pipefail
cd "$(dirname "$0")/.."

# A virtualenv DIR with the packages of requirements file REQ, made on first use and refreshed only when the
# file changes.
venv_with() {
    local dir="$1" req="$2"
    [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
    local stamp="$dir/.requirements.sha256" want
    want="$(sha256sum "$req" | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        "$dir/bin/pip" install -q --disable-pip-version-check -r "$req"
        echo "$want" >"$stamp"
    fi
}

venv="${COCA_TEST_VENV:-.venv-test}"
venv_with "$venv" scripts/ci/requirements.txt
export PATH="$PWD/$venv/bin:$PATH"

# A test that cannot run here (an AVX-512 kernel's on a CPU without it) passes after appending a line to this
# file; the list follows the tests, so that a skip is never mistaken for a pass.
export COCA_SKIP_LOG="${COCA_SKIP_LOG:-$PWD/target/skipped-tests.txt}"
mkdir -p "$(dirname "$COCA_SKIP_LOG")" && : >"$COCA_SKIP_LOG"
cargo test --workspace --locked
echo "tests skipped: $(wc -l <"$COCA_SKIP_LOG")"
cat "$COCA_SKIP_LOG"

# The Python package, built once as a wheel. The CLI comparisons in python/tests use target/debug/coca, built
# above. The dev profile reuses the dependencies `cargo test` just compiled (optimised: see Cargo.toml); a
# user's `pip install ./python` builds in release.
wheels=target/test-wheel
rm -rf "$wheels"
MATURIN_PEP517_ARGS="--profile dev --locked" \
    pip wheel -q --disable-pip-version-check --no-deps ./python -w "$wheels"
pip install -q --disable-pip-version-check --force-reinstall --no-deps "$wheels"/coca_rs-*.whl
pytest python/tests -q

# autofaiss, the index builder of clip-retrieval, reading coca's output folder: it pins numpy<2, so it gets a
# virtualenv of its own, and there the test must run rather than skip.
venv_with .venv-autofaiss scripts/ci/requirements-autofaiss.txt
.venv-autofaiss/bin/pip install -q --disable-pip-version-check --force-reinstall --no-deps "$wheels"/coca_rs-*.whl
COCA_TEST_AUTOFAISS=1 .venv-autofaiss/bin/python -m pytest python/tests/test_cli_interop.py -q -k autofaiss
