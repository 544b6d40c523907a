#!/usr/bin/env bash
# Issue 19: a replica's verify throughput with cached keys against a single sled server's, same
# run, same load generator. Starts a throwaway PostgreSQL cluster (Debian's postgresql), three
# replicas on it and one sled server, then measures /auth/verify with a valid key on replica 1
# and on the sled server in interleaved rounds, while replicas 2 and 3 follow the same feed.
# Prints requests/s and latency per round, the medians, and the ratio.
#
# Usage: bash bench/replicas.sh   (DURATION=10s CONNECTIONS=64 THREADS=2 ROUNDS=5 by default)
# Needs wrk and PostgreSQL (installed if missing and apt is available). Run as root or as a user
# who can run PostgreSQL's initdb (as root it runs it as the postgres user).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-5}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if ! command -v wrk >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk postgresql
fi
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

cargo build --quiet --release --bin billstack
BIN=$PWD/target/release/billstack

WORK=$(mktemp -d)
chmod 755 "$WORK"
PIDS=()
AS_PG=()
if [ "$(id -u)" -eq 0 ]; then AS_PG=(runuser -u postgres --); fi
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/pg"
if [ "$(id -u)" -eq 0 ]; then chown postgres "$WORK/pg"; fi
"${AS_PG[@]}" "$PG_BIN/initdb" -D "$WORK/pg/data" -A trust -U billstack >/dev/null
"${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w \
    -o "-p $PORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
"$PG_BIN/createdb" -h 127.0.0.1 -p "$PORT" -U billstack bench
export BILLSTACK_STORAGE_URL="postgres://billstack@127.0.0.1:$PORT/bench"

# shellcheck source=bench/lib.sh
source bench/lib.sh

# The same team, project and key shape on both backends.
make_key() {
    export BILLSTACK_LOG=warn
    "$BIN" "$@" team create --name Bench --id team_a >/dev/null
    "$BIN" "$@" project create --team team_a --name Web --id proj_a >/dev/null
    "$BIN" "$@" key create --team team_a --name bench --scope customers:read |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["rawKey"])'
}
mkdir -p "$WORK/sled" "$WORK/cli" "$WORK/replica-1" "$WORK/replica-2" "$WORK/replica-3"
SLED_KEY=$(make_key --data-dir "$WORK/sled")
PG_KEY=$(BILLSTACK_STORAGE=$BILLSTACK_STORAGE_URL make_key --data-dir "$WORK/cli")

BILLSTACK_LOG=warn "$BIN" --data-dir "$WORK/sled" serve --listen 127.0.0.1:0 >"$WORK/sled.log" 2>&1 &
PIDS+=($!)
SLED_URL=$(wait_for_url "$WORK/sled.log" "billstack listening on ")
REPLICA_URLS=()
for i in 1 2 3; do
    BILLSTACK_STORAGE=$BILLSTACK_STORAGE_URL BILLSTACK_LOG=warn "$BIN" --data-dir "$WORK/replica-$i" \
        serve --listen 127.0.0.1:0 >"$WORK/replica-$i.log" 2>&1 &
    PIDS+=($!)
    REPLICA_URLS+=("$(wait_for_url "$WORK/replica-$i.log" "billstack listening on ")")
done
PG_URL=${REPLICA_URLS[0]}

TARGET=/api/billstack/teams/team_a/projects/proj_a/customers/cus_1
HEADERS=(-H "X-Forwarded-Method: GET" -H "X-Forwarded-Uri: $TARGET")
for pair in "$SLED_URL $SLED_KEY" "$PG_URL $PG_KEY"; do
    read -r url key <<<"$pair"
    got=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "${HEADERS[@]}" "$url/auth/verify")
    [ "$got" = 200 ] || { echo "expected 200 from $url, got $got" >&2; exit 1; }
done

run_wrk() {
    wrk -t"${THREADS}" -c"${CONNECTIONS}" -d"$DURATION" --latency "$@" | python3 -c '
import re, sys
text = sys.stdin.read()
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
if bad:
    print("non-2xx answers: " + bad.group(1), file=sys.stderr)
def ms(v):
    n, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
print(f"{rps:.0f} {p50:.3f} {p99:.3f}")'
}

SLED_RUNS=""
PG_RUNS=""
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $ROUNDS interleaved rounds, $(date -u +%Y-%m-%d), $(nproc) CPUs"
echo
echo "| round | sled server (req/s, p50, p99) | PostgreSQL replica 1 of 3 (req/s, p50, p99) |"
echo "| --- | --- | --- |"
for round in $(seq 1 "$ROUNDS"); do
    s=$(run_wrk -H "Authorization: Bearer $SLED_KEY" "${HEADERS[@]}" "$SLED_URL/auth/verify")
    p=$(run_wrk -H "Authorization: Bearer $PG_KEY" "${HEADERS[@]}" "$PG_URL/auth/verify")
    SLED_RUNS+="$s;"
    PG_RUNS+="$p;"
    read -r sr s50 s99 <<<"$s"
    read -r pr p50 p99 <<<"$p"
    echo "| $round | $sr, $s50 ms, $s99 ms | $pr, $p50 ms, $p99 ms |"
done
for i in 1 2 3; do
    if grep -q "lease\|lost the change feed" "$WORK/replica-$i.log"; then
        echo "replica $i:" >&2
        grep "lease\|lost the change feed\|following" "$WORK/replica-$i.log" >&2
    fi
done
python3 - "$SLED_RUNS" "$PG_RUNS" <<'EOF'
import statistics, sys
def med(runs, i):
    return statistics.median(float(r.split()[i]) for r in runs.split(";") if r)
s, p = sys.argv[1], sys.argv[2]
print()
print(f"medians: sled {med(s,0):.0f} req/s (p99 {med(s,2):.3f} ms), "
      f"replica {med(p,0):.0f} req/s (p99 {med(p,2):.3f} ms); "
      f"replica / sled = {med(p,0) / med(s,0) * 100:.1f} %")
EOF
