#!/usr/bin/env bash
# Coverage-guided fuzzing of coca's parsers of untrusted input, on stable Rust: the targets in fuzz/ are
# built with LLVM's SanitizerCoverage instrumentation (stable `-C passes=sancov-module` flags) and linked
# against libFuzzer, which the `libfuzzer-sys` crate compiles from its bundled C++ sources (needs g++ or
# clang++).
#
#   scripts/fuzz.sh [TARGET...] [--seconds N]
#
# Targets: image_decode, safetensors_header, pickle, tokenize (default: all), N seconds each (default
# 600). Each target's corpus is seeded from the committed fixtures and earlier findings; the corpus it
# grows is kept in fuzz/corpus/<target>/ (not committed) for the next run. A panic, an abort, more than
# 2 GiB resident, a single allocation over 1 GiB (fuzz/fuzz_targets/alloc_limit.rs) and an input taking
# more than 10 s are findings; fuzzing goes on after one until the time is up. The smallest input of each
# distinct problem (panic site, or kind of failure and top stack frame) is copied to
# fixtures/adversarial/fuzz/<target>/, where crates/coca-cli/tests/fuzz_findings.rs replays it; the
# target's log is fuzz/logs/<target>.log. The script exits 1 naming every finding once all targets ran.
set -euo pipefail

ALL_TARGETS=(image_decode safetensors_header pickle tokenize)
RSS_LIMIT_MB=2048
ADDRESS_SPACE_KB=$((4 * 1024 * 1024))
TIMEOUT_S=10
MAX_LEN=65536
# The signature of a saved input that no longer fails (fixed, or a failure that depended on earlier runs).
NO_FAILURE="no failure on replay"

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

seconds=600
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=${2:-}; shift 2 || { echo "error: --seconds needs a value" >&2; exit 2; } ;;
        --seconds=*) seconds=${1#*=}; shift ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "error: unknown option '$1' (see --help)" >&2; exit 2 ;;
        *)
            if [[ " ${ALL_TARGETS[*]} " != *" $1 "* ]]; then
                echo "error: unknown target '$1' (targets: ${ALL_TARGETS[*]})" >&2
                exit 2
            fi
            targets+=("$1")
            shift
            ;;
    esac
done
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: --seconds must be a positive whole number of seconds, got '$seconds'" >&2
    exit 2
fi
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")

cd "$(dirname "$0")/.."
root=$PWD
fuzz=$root/fuzz

# An explicit --target keeps RUSTFLAGS (the instrumentation) away from build scripts and proc macros.
host=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="--cfg fuzzing -C passes=sancov-module -C llvm-args=-sanitizer-coverage-level=4 \
-C llvm-args=-sanitizer-coverage-inline-8bit-counters -C llvm-args=-sanitizer-coverage-pc-table \
-C llvm-args=-sanitizer-coverage-trace-compares"
export CARGO_INCREMENTAL=0
echo "building the fuzz targets (release, instrumented) ..." >&2
cargo build --release --locked --manifest-path "$fuzz/Cargo.toml" --target "$host" \
    $(printf -- '--bin %s ' "${targets[@]}")
bin_dir=$fuzz/target/$host/release

# Copies the committed inputs that fit a target into $1: what real files look like, plus every earlier
# finding, so each run starts from the known-interesting places.
seed() {
    local target=$1 out=$2
    rm -rf "$out" && mkdir -p "$out"
    local adversarial=$root/fixtures/adversarial
    case "$target" in
        image_decode)
            cp "$root"/fixtures/images/sources/* "$out"/
            [ ! -d "$adversarial/images" ] || find "$adversarial/images" -type f ! -name '*.json' ! -name '*.md' -exec cp {} "$out"/ \;
            ;;
        safetensors_header)
            find "$root/fixtures/checkpoint" "$adversarial" -path "$adversarial/fuzz" -prune -o \
                -type f -name '*.safetensors' -exec cp {} "$out"/ \;
            ;;
        pickle)
            # The fuzzed bytes are the archive's data.pkl (fuzz/src/lib.rs wraps them in a zip).
            python3 - "$out" "$root/fixtures/checkpoint" "$adversarial" <<'EOF'
import pathlib, sys, zipfile
out = pathlib.Path(sys.argv[1])
for folder in map(pathlib.Path, sys.argv[2:]):
    for path in sorted(folder.rglob("*")):
        if "fuzz" in path.relative_to(folder).parts or not path.is_file():
            continue
        if path.suffix == ".pkl":
            (out / path.name).write_bytes(path.read_bytes())
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                for name in z.namelist():
                    if name.endswith("/data.pkl"):
                        (out / f"{path.stem}.pkl").write_bytes(z.read(name))
EOF
            ;;
        tokenize)
            python3 - "$out" "$root/fixtures/tokenizer/tricky.json" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for i, case in enumerate(json.loads(pathlib.Path(sys.argv[2]).read_text())):
    (out / f"tricky_{i:03}.txt").write_text(case["text"])
EOF
            [ ! -d "$adversarial/texts" ] || find "$adversarial/texts" -type f ! -name '*.json' ! -name '*.md' -exec cp {} "$out"/ \;
            ;;
    esac
    [ ! -d "$adversarial/fuzz/$target" ] || cp "$adversarial/fuzz/$target"/* "$out"/ 2>/dev/null || true
}

# Runs one input through a target under the fuzzing limits; prints its output.
replay() {
    (
        ulimit -v "$ADDRESS_SPACE_KB"
        export RUST_BACKTRACE=1
        "$bin_dir/$1" -rss_limit_mb="$RSS_LIMIT_MB" -timeout="$TIMEOUT_S" "$2" 2>&1
    ) || true
}

# One line naming what an input does wrong, used to keep one input per problem: the panic site and
# message, or the kind of failure (failed allocation, stack overflow, libFuzzer's out-of-memory or
# timeout) and the first stack frame outside the standard library, with numbers that vary dropped.
signature() {
    replay "$1" "$2" | awk -v none="$NO_FAILURE" '
        !kind && /panicked at / {
            frame = $0; sub(/.*panicked at /, "", frame); sub(/:$/, "", frame)
            getline msg; kind = "panic \"" msg "\""; next
        }
        !kind && /memory allocation of [0-9]+ bytes failed/ { kind = "failed allocation"; next }
        !kind && /has overflowed its stack/ { kind = "stack overflow"; next }
        kind && !frame && /^ +at / && !/ at \/rustc\// { frame = $2; next }
        !lf && /ERROR: libFuzzer: / { lf = $0; sub(/.*ERROR: libFuzzer: /, "", lf); sub(/ *\(.*/, "", lf) }
        END {
            if (!kind) kind = lf ? lf : none
            sub(/.*registry\/src\/[^\/]*\//, "", frame); sub(/^\.\//, "", frame)
            print kind (frame ? " at " frame : "")
        }'
}

# The checkpoint targets write each input to a temporary file: keep those in memory where possible.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
# Copies input $2 of target $1 to $4, shrunk by libFuzzer's crash minimizer when the smaller input still
# fails the same way ($3).
minimize() {
    local small=$fuzz/artifacts/$1/minimized
    (
        ulimit -v "$ADDRESS_SPACE_KB"
        "$bin_dir/$1" -minimize_crash=1 -max_total_time=30 -rss_limit_mb="$RSS_LIMIT_MB" \
            -timeout="$TIMEOUT_S" -exact_artifact_path="$small" "$2"
    ) >"$fuzz/logs/$1.minimize.log" 2>&1 || true
    if [ -s "$small" ] && [ "$(signature "$1" "$small")" = "$3" ]; then
        cp "$small" "$4"
    else
        cp "$2" "$4"
    fi
}

findings=()
summary=()
mkdir -p "$fuzz/logs"
for target in "${targets[@]}"; do
    corpus=$fuzz/corpus/$target
    seeds=$fuzz/seeds/$target
    artifacts=$fuzz/artifacts/$target
    kept=$root/fixtures/adversarial/fuzz/$target
    log=$fuzz/logs/$target.log
    seed "$target" "$seeds"
    mkdir -p "$corpus"
    rm -rf "$artifacts" && mkdir -p "$artifacts"
    echo "fuzzing $target for ${seconds}s (log: ${log#"$root"/}) ..." >&2
    # Fork mode with the failures ignored keeps fuzzing after a finding, so one problem cannot hide the
    # others for the rest of the run; every failing input still lands in $artifacts.
    set +e
    (
        ulimit -v "$ADDRESS_SPACE_KB"
        exec "$bin_dir/$target" -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
            -max_total_time="$seconds" -rss_limit_mb="$RSS_LIMIT_MB" -timeout="$TIMEOUT_S" \
            -max_len="$MAX_LEN" -artifact_prefix="$artifacts/" "$corpus" "$seeds"
    ) >"$log" 2>&1
    rc=$?
    set -e
    last=$(grep -E '^#[0-9]+: cov: ' "$log" | tail -1 || true)
    runs=$(sed -E 's/^#([0-9]+):.*/\1/' <<<"$last")
    cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' <<<"$last" || true)
    speed=$(grep -Eo 'exec/s: [0-9]+' <<<"$last" || true)
    stats="${runs:-?} runs, ${speed:-exec/s: ?}, ${cov:-coverage unknown}"

    # One input per distinct problem: the smallest, unless a kept finding already shows it.
    declare -A known=() best=()
    for f in "$kept"/*; do
        [ -f "$f" ] || continue
        sig=$(signature "$target" "$f")
        [ "$sig" = "$NO_FAILURE" ] || known[$sig]=$f
    done
    while IFS= read -r f; do
        [ -n "$f" ] || continue
        sig=$(signature "$target" "$f")
        if [ -z "${best[$sig]:-}" ] || [ "$(stat -c %s "$f")" -lt "$(stat -c %s "${best[$sig]}")" ]; then
            best[$sig]=$f
        fi
    done < <(find "$artifacts" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \))
    if [ ${#best[@]} -eq 0 ]; then
        if [ "$rc" -eq 0 ]; then
            summary+=("$target: no finding in ${seconds}s; $stats")
        else
            summary+=("$target: libFuzzer exited with $rc and saved no input; see ${log#"$root"/}")
            findings+=("$target (exit $rc, no input saved)")
        fi
    fi
    for sig in "${!best[@]}"; do
        if [ -n "${known[$sig]:-}" ]; then
            dest=${known[$sig]}
        else
            mkdir -p "$kept"
            dest=$kept/$(basename "${best[$sig]}")
            minimize "$target" "${best[$sig]}" "$sig" "$dest"
        fi
        findings+=("${dest#"$root"/}")
        summary+=("$target: FINDING ${dest#"$root"/}: $sig ($stats)")
    done
    unset known best
done

echo >&2
printf '%s\n' "${summary[@]}" >&2
if [ ${#findings[@]} -gt 0 ]; then
    echo "error: the fuzzers found ${#findings[@]} problem(s): ${findings[*]}; logs in fuzz/logs/" >&2
    exit 1
fi
