#!/usr/bin/env bash
# Where tollgate's CPU goes on one request path, non-stream by default
# (bench/README.md, "proxy").
#
#   bench/proxy/profile.sh [BUILD_DIR]     # default build/release; builds nothing
#
# 1. callgrind: tollgate runs under `valgrind --tool=callgrind` with
#    instrumentation off; after a warm-up it is switched on for REQUESTS
#    metered calls (default 2,000, 4 connections; KIND=stream for 20-chunk
#    SSE answers instead of JSON), then off. The summary is
#    callgrind_annotate's top functions, inclusive and self, in instructions
#    per request (user space only: no kernel, no cache misses).
# 2. perf (if `perf record` is allowed): the release binary at full speed,
#    wrk -c32 for PERF_SECONDS (default 5), sampled; shares by thread (I/O,
#    ledger writer, checkpointer), by DSO (kernel vs tollgate vs libraries)
#    and the top symbols. The release build has no frame pointers, so only
#    self time is reported.
# 3. strace -c (if installed): system calls per metered call, non-stream and
#    stream, counted on the release binary.
#
# Needs valgrind, wrk and curl; perf (Debian linux-perf) and strace are optional.
# KEEP=DIR keeps the raw callgrind.out and perf.data there.
set -euo pipefail
export LC_ALL=C
die() { echo "profile.sh: $*" >&2; exit 1; }

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-build/release}
[[ $build = /* ]] || build=$root/$build
REQUESTS=${REQUESTS:-2000}
KIND=${KIND:-non-stream}  # or stream: 20-chunk SSE answers, for the callgrind part
case $KIND in non-stream) stream=0 ;; stream) stream=1 ;; *) die "KIND must be non-stream or stream" ;; esac
PERF_SECONDS=${PERF_SECONDS:-5}
TOP=${TOP:-25}
tokens() { if [[ $1 = 1 ]]; then echo 20; else echo 16; fi; }  # as run.sh asks

tollgate_bin=$build/proxy/tollgate
mock_bin=$build/bench/mock_upstream/mock_upstream
for bin in "$tollgate_bin" "$mock_bin"; do
    [[ -x $bin ]] || die "$bin is missing; build it first:
  cmake --preset release && cmake --build --preset release --target tollgate mock_upstream"
done
for tool in valgrind callgrind_control callgrind_annotate wrk curl; do
    command -v "$tool" >/dev/null || die "missing $tool (Debian: apt-get install valgrind wrk curl)"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-profile.XXXXXX")
pids=()
cleanup() {
    local pid i alive
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for ((i = 0; i < 100; i++)); do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ -n ${KEEP:-} ]]; then mkdir -p "$KEEP" && cp "$tmp"/callgrind.out* "$tmp"/perf.data "$tmp"/*.log "$KEEP"/ 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_for() {  # FILE REGEX SECONDS
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

"$mock_bin" --listen 127.0.0.1:0 >"$tmp/mock.log" 2>&1 &
mock_pid=$!
pids+=("$mock_pid")
wait_for "$tmp/mock.log" 'listening on' 10 || die "mock_upstream did not start: $(cat "$tmp/mock.log")"
mock_port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$tmp/mock.log")
mock_requests() { curl -s "http://127.0.0.1:$mock_port/mock/stats" | sed -n 's/.*"requests":\([0-9]*\).*/\1/p'; }

admin_token=bench-admin-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
printf '[server]\ndefault_rpm_limit = 1000000000\n' >"$tmp/tollgate.toml"
# start_tollgate TAG [WRAPPER...]: a fresh database each time.
start_tollgate() {
    local tag=$1
    shift
    env -i PATH="$PATH" \
        TOLLGATE_CONFIG="$tmp/tollgate.toml" TOLLGATE_LISTEN=127.0.0.1:0 TOLLGATE_DB="$tmp/$tag.db" \
        TOLLGATE_MASTER_KEY_FILE="$tmp/tollgate.key" TOLLGATE_ADMIN_TOKEN="$admin_token" \
        TOLLGATE_OPENROUTER_URL="http://127.0.0.1:$mock_port/api/v1" TOLLGATE_OPENROUTER_KEY=sk-or-v1-bench \
        TOLLGATE_IO_THREADS=1 "$@" "$tollgate_bin" serve >"$tmp/$tag.log" 2>&1 &
    tollgate_pid=$!
    pids+=("$tollgate_pid")
    wait_for "$tmp/$tag.log" 'tollgate listening on' 180 || die "tollgate did not start: $(cat "$tmp/$tag.log")"
    local port
    port=$(sed -n 's|.*tollgate listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$tmp/$tag.log")
    tg=http://127.0.0.1:$port
    local i
    for ((i = 0; i < 600; i++)); do
        curl -sf -o /dev/null "$tg/readyz" && break
        sleep 0.1
    done
    local user
    user=$(curl -sf -XPOST "$tg/api/v1/users" -H "Authorization: Bearer $admin_token" \
        -d '{"email":"bench@example.com","tier":"enterprise"}') || die "could not create the bench user"
    key=$(sed -n 's/.*"api_key":"\([^"]*\)".*/\1/p' <<<"$user")
    local user_id
    user_id=$(sed -n 's/.*"user":{"id":\([0-9]*\).*/\1/p' <<<"$user")
    [[ -n $key && -n $user_id ]] || die "unexpected answer to the user creation: $user"
    curl -sf -o /dev/null -XPOST "$tg/api/v1/credits/allocate" -H "Authorization: Bearer $admin_token" \
        -d "{\"user_id\":$user_id,\"amount_micros\":900000000000000,\"kind\":\"purchased\",\"reason\":\"bench\"}" ||
        die "could not allocate credits"
}

stop_tollgate() {
    kill -TERM "$tollgate_pid"
    local i
    for ((i = 0; i < 600; i++)); do
        kill -0 "$tollgate_pid" 2>/dev/null || break
        sleep 0.1
    done
    wait "$tollgate_pid" 2>/dev/null || true
}

# --- callgrind -----------------------------------------------------------------

echo "== callgrind: $REQUESTS metered $KIND chat calls through tollgate (1 io thread), wrk -c4 =="
start_tollgate callgrind valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$tmp/callgrind.out"
chat="$tg/v1/chat/completions"
# Warm-up, not instrumented: the upstream pool, the key cache, the heap.
KEY=$key STREAM=$stream TOKENS=$(tokens $stream) MAX_REQUESTS=100 timeout 120 wrk -t1 -c4 -d2s -s "$here/chat.lua" "$chat" >/dev/null
callgrind_control -i on "$tollgate_pid" >/dev/null 2>&1
before=$(mock_requests)
# Each wrk connection stops after its share; wrk itself sleeps out -d, so it
# is stopped once the mock has seen the calls.
KEY=$key STREAM=$stream TOKENS=$(tokens $stream) MAX_REQUESTS=$((REQUESTS / 4)) wrk -t4 -c4 -d600s -s "$here/chat.lua" "$chat" >/dev/null &
wrk_pid=$!
pids+=("$wrk_pid")
start=$(date +%s)
while kill -0 "$wrk_pid" 2>/dev/null && (($(mock_requests) - before < REQUESTS)); do
    (($(date +%s) - start < 600)) || die "callgrind run did not finish in 10 minutes"
    sleep 0.5
done
sleep 0.5  # the last settlements
callgrind_control -i off "$tollgate_pid" >/dev/null 2>&1
kill -TERM "$wrk_pid" 2>/dev/null || true
wait "$wrk_pid" 2>/dev/null || true
served=$(($(mock_requests) - before))
echo "requests while instrumented: $served (wall $(($(date +%s) - start)) s under valgrind)"
stop_tollgate
out=$tmp/callgrind.out
[[ -s $out ]] || die "callgrind wrote nothing: $(tail -5 "$tmp/callgrind.log")"

callgrind_annotate --inclusive=yes --threshold=100 "$out" >"$tmp/inclusive.txt" 2>/dev/null
callgrind_annotate --inclusive=no --threshold=100 "$out" >"$tmp/self.txt" 2>/dev/null
total=$(sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' "$tmp/self.txt" | tr -d ,)
echo "instructions: $total in all, $((total / served)) per request"
# callgrind_annotate lines look like "12,345,678 (12.34%)  file:function [obj]";
# print instructions per request, the share, and the function.
annotate() {
    sed -nE 's/^ *([0-9,]+) +\( *([0-9.]+)%\) +(\?\?\?:)?(.*)$/\1 \2 \4/p' "$1" | grep -v 'PROGRAM TOTALS' |
        awk -v n="$served" -v top="$TOP" 'NR <= top {
            ir = $1; gsub(",", "", ir); share = $2
            $1 = ""; $2 = ""; sub(/^ +/, "")
            if (length($0) > 150) $0 = substr($0, 1, 147) "..."
            printf "%9.0f %6.2f%%  %s\n", ir / n, share, $0
        }'
}
echo
echo "-- inclusive (instructions per request, share of the total) --"
annotate "$tmp/inclusive.txt"
echo
echo "-- self --"
annotate "$tmp/self.txt"

# --- perf ------------------------------------------------------------------------

start_tollgate release
chat="$tg/v1/chat/completions"
if ! command -v perf >/dev/null; then
    echo
    echo "perf is not installed (Debian: linux-perf); skipping the full-speed profile"
else
    echo
    echo "== perf: tollgate (release, 1 io thread) under wrk -t2 -c32 for $PERF_SECONDS s, non-stream =="
    KEY=$key wrk -t2 -c32 -d1s -s "$here/chat.lua" "$chat" >/dev/null
    perf record -q -F 1999 -p "$tollgate_pid" -o "$tmp/perf.data" -- sleep "$PERF_SECONDS" \
        >"$tmp/perf-record.log" 2>&1 &
    perf_pid=$!
    pids+=("$perf_pid")
    KEY=$key wrk -t2 -c32 -d"${PERF_SECONDS}s" -s "$here/chat.lua" "$chat" |
        sed -n 's/^RESULT requests=\([0-9]*\) duration_us=\([0-9]*\).*/wrk: \1 requests in \2 us/p'
    if wait "$perf_pid"; then
        echo
        echo "-- by thread (self samples) --"
        perf report -i "$tmp/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -8 || true
        echo
        echo "-- by DSO (self samples) --"
        perf report -i "$tmp/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -12 || true
        echo
        echo "-- top symbols (self) --"
        perf report -i "$tmp/perf.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' |
            head -"$TOP" | cut -c1-170 || true
    else
        echo "perf record failed: $(cat "$tmp/perf-record.log")"
    fi
fi

# --- system calls per request ---------------------------------------------------------

command -v strace >/dev/null || { echo; echo "strace is not installed (Debian: strace); skipping the system call counts"; exit 0; }
charges() { curl -s "$tg/metrics" | sed -n 's/^tollgate_charges_total //p'; }
for kind in non-stream stream; do
    stream=0
    [[ $kind = stream ]] && stream=1
    echo
    echo "== system calls per $kind request (strace -c -f, wrk -c8 for 2 s; the counts, not the times, are what to read) =="
    c0=$(charges)
    strace -c -f -p "$tollgate_pid" -o "$tmp/strace-$kind.txt" >/dev/null 2>&1 &
    strace_pid=$!
    pids+=("$strace_pid")
    sleep 0.5
    KEY=$key STREAM=$stream TOKENS=$(tokens $stream) wrk -t1 -c8 -d2s -s "$here/chat.lua" "$chat" >/dev/null
    sleep 0.5
    kill -INT "$strace_pid" 2>/dev/null || true
    wait "$strace_pid" 2>/dev/null || true
    n=$(($(charges) - c0))
    echo "$n metered calls"
    awk -v n="$n" '$1 ~ /^[0-9.]+$/ && NF >= 5 { name = $NF; calls = $4; if (n) printf "  %-16s %8.1f per request\n", name, calls / n }' \
        "$tmp/strace-$kind.txt" | sort -k2 -nr | head -12 || true
done
