#!/usr/bin/env bash
# HTTP benchmarks (issue 6), one after another on this machine with the same load generator:
#   1. a bare axum handler that returns 200 (the floor of the HTTP stack);
#   2. /auth/verify with a valid key;         3. /auth/verify with an invalid key (bad checksum);
#   4. the reverse proxy in front of a trivial upstream;   5. that upstream called directly.
# Two more rows split the gap between 1 and 2: the floor sent verify's request headers, and
# BillStack's /healthz (its router and layers without a decision).
# Prints a markdown table: requests/s, p50 and p99 latency, and ratios to the floor.
#
# Usage: bash bench/http.sh   (DURATION=10s CONNECTIONS=64 THREADS=2 ROUNDS=3 by default)
# Needs wrk (Debian package `wrk`; installed if missing and apt is available).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}

if ! command -v wrk >/dev/null; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk
fi

cargo build --quiet --release --bin billstack --example bare_http
BIN=target/release/billstack
BARE=target/release/examples/bare_http

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=bench/lib.sh
source bench/lib.sh

"$BARE" 127.0.0.1:0 >"$WORK/bare.log" 2>&1 &
PIDS+=($!)
BARE_URL=$(wait_for_url "$WORK/bare.log" "listening on ")

DATA="$WORK/data"
mkdir -p "$DATA"
"$BIN" --data-dir "$DATA" team create --name Bench --id team_a >/dev/null
"$BIN" --data-dir "$DATA" project create --team team_a --name Web --id proj_a >/dev/null
KEY=$("$BIN" --data-dir "$DATA" key create --team team_a --name bench --scope customers:read |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["rawKey"])')
# The same key with its last hex digit changed: well formed, wrong checksum.
LAST=${KEY: -1}
if [ "$LAST" = "0" ]; then BAD="${KEY%?}1"; else BAD="${KEY%?}0"; fi

BILLSTACK_UPSTREAM="$BARE_URL" BILLSTACK_LOG=warn "$BIN" --data-dir "$DATA" serve --listen 127.0.0.1:0 \
    >"$WORK/billstack.log" 2>&1 &
PIDS+=($!)
URL=$(wait_for_url "$WORK/billstack.log" "billstack listening on ")

TARGET=/api/billstack/teams/team_a/projects/proj_a/customers/cus_1

# Runs wrk and prints "requests/s p50_ms p99_ms".
run_wrk() {
    local out
    out=$(wrk -t"${THREADS}" -c"${CONNECTIONS}" -d"$DURATION" --latency "$@")
    if echo "$out" | grep -q "Non-2xx or 3xx responses"; then
        # Expected for the invalid key (401); anything else would be a broken setup.
        echo "$out" | grep "Non-2xx" >&2
    fi
    echo "$out" | python3 -c '
import re, sys
text = sys.stdin.read()
def ms(v):
    n, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
print(f"{rps:.0f} {p50:.3f} {p99:.3f}")'
}

# Checks one request of each kind answers as expected before measuring it.
expect_status() {
    local want=$1; shift
    local got
    got=$(curl -s -o /dev/null -w '%{http_code}' "$@")
    if [ "$got" != "$want" ]; then
        echo "expected $want, got $got from: $*" >&2
        exit 1
    fi
}
VERIFY_HEADERS=(-H "X-Forwarded-Method: GET" -H "X-Forwarded-Uri: $TARGET")
expect_status 200 "$BARE_URL/"
expect_status 200 "$URL/healthz"
expect_status 200 -H "Authorization: Bearer $KEY" "${VERIFY_HEADERS[@]}" "$URL/auth/verify"
expect_status 401 -H "Authorization: Bearer $BAD" "${VERIFY_HEADERS[@]}" "$URL/auth/verify"
expect_status 200 -H "Authorization: Bearer $KEY" "$URL$TARGET"
expect_status 200 "$BARE_URL$TARGET"

declare -A RESULT
# The rows compared with the floor run interleaved, ROUNDS times each (3 by default), and each
# reports its median round (by requests/s): this machine's noise moves the floor itself by
# ±20 % between runs seconds apart, so single runs in sequence would compare noise.
# Where the gap between the floor and verify goes: the floor sent verify's request headers,
# then BillStack's own router and layers answering /healthz (no decision).
ROUNDS=${ROUNDS:-3}
declare -A ROUNDS_OF
for _ in $(seq 1 "$ROUNDS"); do
    ROUNDS_OF[bare]+="$(run_wrk "$BARE_URL/");"
    ROUNDS_OF[bare_verify_headers]+="$(run_wrk -H "Authorization: Bearer $KEY" "${VERIFY_HEADERS[@]}" "$BARE_URL/auth/verify");"
    ROUNDS_OF[billstack_healthz]+="$(run_wrk "$URL/healthz");"
    ROUNDS_OF[verify_valid]+="$(run_wrk -H "Authorization: Bearer $KEY" "${VERIFY_HEADERS[@]}" "$URL/auth/verify");"
    ROUNDS_OF[verify_invalid]+="$(run_wrk -H "Authorization: Bearer $BAD" "${VERIFY_HEADERS[@]}" "$URL/auth/verify");"
done
for name in "${!ROUNDS_OF[@]}"; do
    RESULT[$name]=$(python3 -c '
import sys
runs = sorted((r.split() for r in sys.argv[1].split(";") if r), key=lambda r: float(r[0]))
print(" ".join(runs[len(runs) // 2]))' "${ROUNDS_OF[$name]}")
done
RESULT[proxy]=$(run_wrk -H "Authorization: Bearer $KEY" "$URL$TARGET")
RESULT[upstream_direct]=$(run_wrk "$BARE_URL$TARGET")
# The proxy's own latency without queueing: one connection, one request at a time.
RESULT[proxy_1_connection]=$(CONNECTIONS=1 THREADS=1 run_wrk -H "Authorization: Bearer $KEY" "$URL$TARGET")
RESULT[upstream_direct_1_connection]=$(CONNECTIONS=1 THREADS=1 run_wrk "$BARE_URL$TARGET")

echo
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, median of $ROUNDS interleaved rounds for the first five rows, $(date -u +%Y-%m-%d), $(nproc) CPUs"
echo
echo "| benchmark | requests/s | p50 | p99 | requests/s vs bare |"
echo "| --- | --- | --- | --- | --- |"
read -r BARE_RPS _ _ <<<"${RESULT[bare]}"
for name in bare bare_verify_headers billstack_healthz verify_valid verify_invalid proxy \
    upstream_direct proxy_1_connection \
    upstream_direct_1_connection; do
    read -r rps p50 p99 <<<"${RESULT[$name]}"
    ratio=$(python3 -c "print(f'{$rps / $BARE_RPS * 100:.0f} %')")
    echo "| $name | $rps | $p50 ms | $p99 ms | $ratio |"
done
read -r _ PROXY_P50 _ <<<"${RESULT[proxy]}"
read -r _ DIRECT_P50 _ <<<"${RESULT[upstream_direct]}"
echo
python3 -c "print(f'proxy p50 overhead over calling the upstream directly, $CONNECTIONS connections: {$PROXY_P50 - $DIRECT_P50:.3f} ms')"
read -r _ PROXY_P50 _ <<<"${RESULT[proxy_1_connection]}"
read -r _ DIRECT_P50 _ <<<"${RESULT[upstream_direct_1_connection]}"
python3 -c "print(f'proxy p50 overhead over calling the upstream directly, 1 connection: {$PROXY_P50 - $DIRECT_P50:.3f} ms')"
