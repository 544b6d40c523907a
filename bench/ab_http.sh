#!/usr/bin/env bash
# Two builds of billstack side by side on one store: forward auth with a valid key, and a
# session-authenticated GET /api/auth/me, alternating OLD and NEW for ROUNDS rounds so that the
# machine's drift hits both alike. Prints each round and the medians.
#
# Usage: bash bench/ab_http.sh OLD_BINARY NEW_BINARY   (DURATION=5s CONNECTIONS=64 ROUNDS=3)
# Make OLD with `git worktree add /tmp/old REV` and `cargo build --release` there.
set -euo pipefail
OLD=$1 NEW=$2
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-3}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }

WORK=$(mktemp -d)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

DATA="$WORK/data"
mkdir -p "$DATA"
"$NEW" --data-dir "$DATA" team create --name Bench --id team_a >/dev/null
"$NEW" --data-dir "$DATA" project create --team team_a --name Web --id proj_a >/dev/null
echo "bench-password-1" | "$NEW" --data-dir "$DATA" user create --email b@bench.test \
    --team team_a --role owner --password-stdin >/dev/null
KEY=$("$NEW" --data-dir "$DATA" key create --team team_a --name bench --scope customers:read |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["rawKey"])')

cat >"$WORK/verify.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $KEY"
wrk.headers["X-Forwarded-Method"] = "GET"
wrk.headers["X-Forwarded-Uri"] = "/api/billstack/teams/team_a/projects/proj_a/customers"
LUA

start() {
    "$1" --data-dir "$DATA" --listen 127.0.0.1:0 serve >"$WORK/server.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 300); do
        URL=$(grep -o 'listening on http://[^ ]*' "$WORK/server.log" | head -1 | sed 's/listening on //') || true
        [ -n "${URL:-}" ] && return 0
        sleep 0.1
    done
    cat "$WORK/server.log" >&2
    exit 1
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }

rps() { awk '/Requests\/sec/ {print int($2)}'; }

declare -A RESULTS
for round in $(seq 1 "$ROUNDS"); do
    for which in old new; do
        bin=$OLD; [ "$which" = new ] && bin=$NEW
        start "$bin"
        COOKIE=$(curl -s -i -H 'Content-Type: application/json' \
            -d '{"email":"b@bench.test","password":"bench-password-1"}' "$URL/api/auth/login" |
            grep -i '^set-cookie:' | sed 's/^[^:]*: //; s/;.*//' | tr -d '\r')
        v=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" -s "$WORK/verify.lua" "$URL/auth/verify" | rps)
        m=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" -H "Cookie: $COOKIE" "$URL/api/auth/me" | rps)
        stop
        echo "round $round $which: forward auth $v/s, GET /api/auth/me $m/s"
        RESULTS[$which-verify]+="$v "
        RESULTS[$which-me]+="$m "
    done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for row in verify me; do
    o=$(echo "${RESULTS[old-$row]}" | median)
    n=$(echo "${RESULTS[new-$row]}" | median)
    echo "median $row: old $o/s, new $n/s, new/old $(python3 -c "print(f'{$n/$o:.2f}')")"
done
