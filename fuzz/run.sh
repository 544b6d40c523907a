#!/usr/bin/env bash
# A short run of every `cargo fuzz` target (docs/security.md § Fuzzing): key parsing, request
# target parsing and whole decisions through the embedded Wasm policy.
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET]     (default 30; .ci/run uses this default)
#
# cargo fuzz needs a nightly toolchain for its instrumentation flags; the guests still build
# with the pinned one (host/build.rs). Without a sanitizer (`-s none`): the workspace forbids
# unsafe code, so what is looked for is panics and wrong allows, which the targets assert.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${1:-30}"
TARGETS=(key_format target_parse decision)

rustup run nightly rustc --version >/dev/null 2>&1 || {
    echo "fuzz/run.sh: a nightly toolchain is needed (rustup toolchain list)" >&2
    exit 1
}
command -v cargo-fuzz >/dev/null || cargo install --quiet --locked cargo-fuzz --version 0.13.2

cargo +nightly fuzz build -s none
LOGS="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/fuzz-logs"
mkdir -p "$LOGS"
for target in "${TARGETS[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    log="$LOGS/$target.log"
    if ! cargo +nightly fuzz run -s none "$target" -- \
        -dict=fuzz/tricky.dict -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz/run.sh: $target failed; the input is under fuzz/artifacts/$target" >&2
        exit 1
    fi
    runs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
    cov=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | grep -o 'cov: [0-9]*' || true)
    count=$(grep 'fuzz-count:' "$log" | tail -n 1 | sed 's/.*fuzz-count: /at least /' || true)
    echo "fuzz $target: ${runs:-?} runs in ${SECONDS_PER_TARGET} s, ${count:-none accepted}, ${cov:-cov: ?}, corpus $(find "fuzz/corpus/$target" -type f | wc -l) inputs, no failure"
done
