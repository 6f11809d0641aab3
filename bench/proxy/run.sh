#!/usr/bin/env bash
# tollgate next to a plain nginx reverse proxy and the mock upstream itself,
# on loopback, in one run (bench/README.md, "proxy").
#
#   bench/proxy/run.sh [BUILD_DIR]        # default build/release; builds nothing
#
# Needs wrk, nginx (Debian nginx-light), node >= 18 and curl, and a build of
# the targets tollgate and mock_upstream. Takes about three and a half minutes.
#
# Knobs (environment): DURATION=5 (seconds per measured run), WARMUP=1,
# CONNS="32 128", STREAM_TOKENS=20, PACED_CONNS=8, PACE_MS=4, WRK_THREADS=2,
# TOLLGATE_THREADS=1, MOCK_THREADS=2, STREAMS=1000, STREAM_CHUNKS=200,
# CHUNK_DELAY_MS=100, STREAM_SECONDS=10, PARTS="streams wrk" (either part alone
# with PARTS=streams or PARTS=wrk).
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-build/release}
[[ $build = /* ]] || build=$root/$build

DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-32 128}
STREAM_TOKENS=${STREAM_TOKENS:-20}
PACED_CONNS=${PACED_CONNS:-8}
PACE_MS=${PACE_MS:-4}
WRK_THREADS=${WRK_THREADS:-2}
TOLLGATE_THREADS=${TOLLGATE_THREADS:-1}
MOCK_THREADS=${MOCK_THREADS:-2}
STREAMS=${STREAMS:-1000}
STREAM_CHUNKS=${STREAM_CHUNKS:-200}
CHUNK_DELAY_MS=${CHUNK_DELAY_MS:-100}
STREAM_SECONDS=${STREAM_SECONDS:-10}
PARTS=${PARTS:-streams wrk}
want() { [[ " $PARTS " = *" $1 "* ]]; }

die() { echo "run.sh: $*" >&2; exit 1; }

tollgate_bin=$build/proxy/tollgate
mock_bin=$build/bench/mock_upstream/mock_upstream
for bin in "$tollgate_bin" "$mock_bin"; do
    [[ -x $bin ]] || die "$bin is missing; build it first:
  cmake --preset release && cmake --build --preset release --target tollgate mock_upstream"
done
PATH=$PATH:/usr/sbin:/sbin
missing=()
for tool in wrk nginx node curl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (Debian: apt-get install wrk nginx-light nodejs curl)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-bench.XXXXXX")
pids=()
cleanup() {
    local pid i
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    # tollgate drains open streams on SIGTERM; bound the wait, then insist.
    for ((i = 0; i < 50; i++)); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- helpers -----------------------------------------------------------------

wait_for() {  # FILE REGEX: wait up to 10 s for a line
    local i
    for ((i = 0; i < 100; i++)); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

free_port() {
    node -e 'const s = require("net").createServer(); s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

# utime + stime, in clock ticks, of the given processes (all their threads).
clk_tck=$(getconf CLK_TCK)
cpu_ticks() {
    local pid stat total=0
    local -a f
    for pid; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        stat=${stat##*) }
        read -r -a f <<<"$stat"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

nginx_pids() { echo "$nginx_pid" $(pgrep -P "$nginx_pid" || true); }

# --- start the three servers ---------------------------------------------------

ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

"$mock_bin" --listen 127.0.0.1:0 --threads "$MOCK_THREADS" >"$tmp/mock.log" 2>&1 &
mock_pid=$!
pids+=("$mock_pid")
wait_for "$tmp/mock.log" 'listening on' || die "mock_upstream did not start: $(cat "$tmp/mock.log")"
mock_port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$tmp/mock.log")

mkdir -p "$tmp/nginx"
nginx_port=$(free_port)
sed -e "s|@PREFIX@|$tmp/nginx|g" -e "s|@LISTEN_PORT@|$nginx_port|g" -e "s|@MOCK_PORT@|$mock_port|g" \
    "$here/nginx.conf.in" >"$tmp/nginx/nginx.conf"
nginx -c "$tmp/nginx/nginx.conf" -p "$tmp/nginx/" -g 'daemon off;' >"$tmp/nginx/stdout.log" 2>&1 &
nginx_pid=$!
pids+=("$nginx_pid")

admin_token=bench-admin-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
printf '[server]\ndefault_rpm_limit = 1000000000\n' >"$tmp/tollgate.toml"
env -i PATH="$PATH" \
    TOLLGATE_CONFIG="$tmp/tollgate.toml" TOLLGATE_LISTEN=127.0.0.1:0 TOLLGATE_DB="$tmp/tollgate.db" \
    TOLLGATE_MASTER_KEY_FILE="$tmp/tollgate.key" TOLLGATE_ADMIN_TOKEN="$admin_token" \
    TOLLGATE_OPENROUTER_URL="http://127.0.0.1:$mock_port/api/v1" TOLLGATE_OPENROUTER_KEY=sk-or-v1-bench \
    TOLLGATE_IO_THREADS="$TOLLGATE_THREADS" "$tollgate_bin" serve >"$tmp/tollgate.log" 2>&1 &
tollgate_pid=$!
pids+=("$tollgate_pid")
wait_for "$tmp/tollgate.log" 'listening on' || die "tollgate did not start: $(cat "$tmp/tollgate.log")"
tollgate_port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$tmp/tollgate.log")
tg=http://127.0.0.1:$tollgate_port

for ((i = 0; i < 100; i++)); do
    curl -sf -o /dev/null "$tg/readyz" && curl -s -o /dev/null "http://127.0.0.1:$nginx_port/" && break
    sleep 0.1
done
curl -sf -o /dev/null "$tg/readyz" || die "tollgate is not ready: $(curl -s "$tg/readyz")"
kill -0 "$nginx_pid" 2>/dev/null || die "nginx did not start: $(cat "$tmp/nginx/stdout.log" "$tmp/nginx/nginx-error.log" 2>/dev/null)"

# One enterprise user with a large balance; its key is not rate limited.
user=$(curl -sf -XPOST "$tg/api/v1/users" -H "Authorization: Bearer $admin_token" \
    -d '{"email":"bench@example.com","tier":"enterprise"}') || die "could not create the bench user"
key=$(sed -n 's/.*"api_key":"\([^"]*\)".*/\1/p' <<<"$user")
user_id=$(sed -n 's/.*"user":{"id":\([0-9]*\).*/\1/p' <<<"$user")
[[ -n $key && -n $user_id ]] || die "unexpected answer to the user creation: $user"
curl -sf -o /dev/null -XPOST "$tg/api/v1/credits/allocate" -H "Authorization: Bearer $admin_token" \
    -d "{\"user_id\":$user_id,\"amount_micros\":900000000000000,\"kind\":\"purchased\",\"reason\":\"bench\"}" ||
    die "could not allocate credits"

declare -A url=(
    [mock]="http://127.0.0.1:$mock_port/api/v1/chat/completions"
    [nginx]="http://127.0.0.1:$nginx_port/api/v1/chat/completions"
    [tollgate]="$tg/v1/chat/completions"
)
declare -A bearer=([mock]=sk-or-v1-bench [nginx]=sk-or-v1-bench [tollgate]=$key)

echo "== tollgate vs nginx vs the mock, $(date -u +%Y-%m-%d) on $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)) =="
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); tollgate io threads $TOLLGATE_THREADS, mock threads $MOCK_THREADS, nginx 1 worker"

# --- 1000 concurrent streams (first, while the heaps are fresh) --------------------

declare -A streams_json
# streams_phase TARGET PID...: STREAMS streams through TARGET (nginx or
# tollgate); the first PID is the one whose RSS is sampled (nginx's worker).
streams_phase() {
    local target=$1
    shift
    local p0 m0 p1 m1 out
    p0=$(cpu_ticks "$@")
    m0=$(cpu_ticks "$mock_pid")
    out=$(node "$here/streams.mjs" --proxy "${url[$target]}" --key "${bearer[$target]}" --direct "${url[mock]}" \
        --pid "$1" --streams "$STREAMS" --chunks "$STREAM_CHUNKS" --delay-ms "$CHUNK_DELAY_MS" \
        --seconds "$STREAM_SECONDS") || die "streams.mjs failed through $target"
    p1=$(cpu_ticks "$@")
    m1=$(cpu_ticks "$mock_pid")
    streams_json[$target]=$(node -e 'const r = JSON.parse(process.argv[1]);
        r.proxy_cpu_s = Number(process.argv[2]); r.mock_cpu_s = Number(process.argv[3]);
        console.log(JSON.stringify(r));' "$out" \
        "$(awk -v t=$((p1 - p0)) -v hz="$clk_tck" 'BEGIN { print t / hz }')" \
        "$(awk -v t=$((m1 - m0)) -v hz="$clk_tck" 'BEGIN { print t / hz }')")
    node - "$target" "${streams_json[$target]}" <<'EOF'
const [name, json] = process.argv.slice(2);
const r = JSON.parse(json);
const bg = r.background;
const f = (x) => x.toFixed(2).padStart(8);
console.log(`-- through ${name}: ${r.max_open} streams held, ${bg.completed} completed, ${bg.bad} failed` +
  `${bg.errors.length ? ' (' + bg.errors.join('; ') + ')' : ''}; all open after ${(r.ramp_ms / 1000).toFixed(1)} s, ` +
  `${r.elapsed_s.toFixed(1)} s in all; CPU: ${name} ${r.proxy_cpu_s.toFixed(1)} s, mock ${r.mock_cpu_s.toFixed(1)} s, client ${r.client_cpu_s.toFixed(1)} s`);
console.log('   probes (ms)             n   TTFB p50      p90      p99   data p50      p90      p99');
const row = (label, p) => console.log(`   ${label.padEnd(18)} ${String(p.head_ms.n).padStart(5)} ${f(p.head_ms.p50)} ${f(p.head_ms.p90)} ${f(p.head_ms.p99)}   ` +
  `${f(p.first_data_ms.p50)} ${f(p.first_data_ms.p90)} ${f(p.first_data_ms.p99)}`);
const d = r.probes.direct, p = r.probes.proxy;
row('mock directly', d);
row(`through ${name}`, p);
const a = r.added_ms;
console.log(`   ${'added (per pair)'.padEnd(18)} ${String(a.head.n).padStart(5)} ${f(a.head.p50)} ${f(a.head.p90)} ${f(a.head.p99)}   ` +
  `${f(a.first_data.p50)} ${f(a.first_data.p90)} ${f(a.first_data.p99)}`);
if (d.bad || p.bad) console.log(`   failed probes: ${d.bad} direct, ${p.bad} through ${name}`);
console.log(`   RSS of ${name}: idle ${r.rss_idle_kib} KiB, at most ${r.rss_full_max_kib} KiB with all ${r.options.streams} open ` +
  `-> ${r.kib_per_stream.toFixed(1)} KiB per open stream (highest overall ${r.rss_peak_kib} KiB)`);
EOF
}

if want streams; then
    echo
    echo "== $STREAMS concurrent streams of $STREAM_CHUNKS chunks, ${CHUNK_DELAY_MS} ms apart; probes for ${STREAM_SECONDS} s once all are open =="
    read -r -a workers <<<"$(pgrep -P "$nginx_pid" || true)"
    ((${#workers[@]} > 0)) || die "no nginx worker process"
    streams_phase nginx "${workers[0]}" "$nginx_pid"
    streams_phase tollgate "$tollgate_pid"
fi

# --- wrk runs ------------------------------------------------------------------

declare -A res
# measure KIND CONNS TARGET PACED: one wrk run; records and prints its row.
measure() {
    local kind=$1 conns=$2 target=$3 paced=$4
    local stream=0 threads=$WRK_THREADS pace=0
    [[ $kind = stream ]] && stream=1
    if ((paced)); then threads=1 pace=$PACE_MS; fi
    local -a wrk_env=(KEY="${bearer[$target]}" STREAM=$stream TOKENS=$([[ $kind = stream ]] && echo "$STREAM_TOKENS" || echo 16) PACE_MS=$pace)
    local -a proxy=()
    case $target in
        nginx) read -r -a proxy <<<"$(nginx_pids)" ;;
        tollgate) proxy=("$tollgate_pid") ;;
    esac
    env "${wrk_env[@]}" wrk -t"$threads" -c"$conns" -d"${WARMUP}s" -s "$here/chat.lua" "${url[$target]}" >/dev/null
    local p0 m0 p1 m1 out
    p0=$(cpu_ticks "${proxy[@]}")
    m0=$(cpu_ticks "$mock_pid")
    out=$(env "${wrk_env[@]}" wrk -t"$threads" -c"$conns" -d"${DURATION}s" --latency -s "$here/chat.lua" "${url[$target]}")
    p1=$(cpu_ticks "${proxy[@]}")
    m1=$(cpu_ticks "$mock_pid")
    local line
    line=$(grep '^RESULT' <<<"$out") || die "wrk printed no result for $target: $out"
    local requests duration p50 p90 p99 errors status_errors
    read -r requests duration p50 p90 p99 errors status_errors < <(sed -E \
        's/^RESULT requests=([0-9]+) duration_us=([0-9]+) p50_us=([0-9]+) p90_us=([0-9]+) p99_us=([0-9]+) errors=([0-9]+) status_errors=([0-9]+)$/\1 \2 \3 \4 \5 \6 \7/' <<<"$line")
    [[ $requests =~ ^[0-9]+$ && $status_errors =~ ^[0-9]+$ ]] || die "unexpected wrk result: $line"
    local rps proxy_us mock_us
    rps=$(awk -v n="$requests" -v d="$duration" 'BEGIN { printf "%.0f", n * 1e6 / d }')
    proxy_us=$(awk -v t=$((p1 - p0)) -v n="$requests" -v hz="$clk_tck" 'BEGIN { printf "%.1f", n ? t * 1e6 / hz / n : 0 }')
    mock_us=$(awk -v t=$((m1 - m0)) -v n="$requests" -v hz="$clk_tck" 'BEGIN { printf "%.1f", n ? t * 1e6 / hz / n : 0 }')
    local k="$kind/$conns/$target"
    res[$k.rps]=$rps res[$k.p50]=$p50 res[$k.p90]=$p90 res[$k.p99]=$p99 res[$k.cpu]=$proxy_us
    local label=$kind
    ((paced)) && label="$kind, paced"
    local proxy_col=$proxy_us
    [[ $target = mock ]] && proxy_col=-
    printf '%-22s %5s  %-9s %8s %9s %9s %9s %10s %9s %7s\n' "$label" "$conns" "$target" "$rps" \
        "$(ms "$p50")" "$(ms "$p90")" "$(ms "$p99")" "$proxy_col" "$mock_us" $((errors + status_errors))
}
ms() { awk -v us="$1" 'BEGIN { printf "%.2fms", us / 1000 }'; }

header() {
    printf '%-22s %5s  %-9s %8s %9s %9s %9s %10s %9s %7s\n' request conns target 'req/s' p50 p90 p99 \
        'proxy µs' 'mock µs' errors
}

if want wrk; then
    echo
    echo "== wrk -t$WRK_THREADS, ${DURATION} s per run after ${WARMUP} s of warm-up; stream = $STREAM_TOKENS content chunks; CPU in µs per request =="
    header
    for kind in non-stream stream; do
        for conns in $CONNS; do
            for target in mock nginx tollgate; do measure "$kind" "$conns" "$target" 0; done
        done
    done

    echo
    echo "== paced: wrk -t1 -c$PACED_CONNS, each connection waits $PACE_MS ms between answer and next request =="
    header
    for kind in non-stream stream; do
        for target in mock nginx tollgate; do measure "$kind" "$PACED_CONNS" "$target" 1; done
    done

    charges=$(curl -s "$tg/metrics" | sed -n 's/^tollgate_charges_total //p')
    echo
    echo "tollgate settled $charges metered calls in the ledger during the run"
fi

# --- ratios and goals ------------------------------------------------------------

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b ? a / b : 0 }'; }
verdict() { if awk "BEGIN { exit !($1) }"; then echo met; else echo "NOT met"; fi; }
worst() {  # KIND: the smaller tollgate/nginx throughput ratio over CONNS
    local kind=$1 c w=
    for c in $CONNS; do
        local r
        r=$(ratio "${res[$kind/$c/tollgate.rps]}" "${res[$kind/$c/nginx.rps]}")
        if [[ -z $w ]] || awk -v a="$r" -v b="$w" 'BEGIN { exit !(a < b) }'; then w=$r; fi
    done
    echo "$w"
}

if want wrk; then
    echo
    echo "== tollgate / nginx =="
    printf '%-22s %5s %8s %8s %8s %8s %9s\n' request conns 'req/s' p50 p90 p99 'CPU/req'
    rows=()
    for kind in non-stream stream; do for conns in $CONNS; do rows+=("$kind $conns"); done; done
    rows+=("non-stream $PACED_CONNS paced" "stream $PACED_CONNS paced")
    for row in "${rows[@]}"; do
        read -r kind conns paced <<<"$row"
        t="$kind/$conns/tollgate" n="$kind/$conns/nginx"
        label=$kind
        [[ -n ${paced:-} ]] && label="$kind, paced"
        printf '%-22s %5s %7sx %7sx %7sx %7sx %8sx\n' "$label" "$conns" \
            "$(ratio "${res[$t.rps]}" "${res[$n.rps]}")" "$(ratio "${res[$t.p50]}" "${res[$n.p50]}")" \
            "$(ratio "${res[$t.p90]}" "${res[$n.p90]}")" "$(ratio "${res[$t.p99]}" "${res[$n.p99]}")" \
            "$(ratio "${res[$t.cpu]}" "${res[$n.cpu]}")"
    done
fi

echo
echo "== goals =="
if want wrk; then
    w=$(worst non-stream)
    echo "non-stream throughput >= 0.5x nginx:     ${w}x at worst   $(verdict "$w >= 0.5")"
    w=$(worst stream)
    echo "stream throughput >= 0.5x nginx:         ${w}x at worst   $(verdict "$w >= 0.5")"
    for kind in non-stream stream; do
        t="$kind/$PACED_CONNS/tollgate" n="$kind/$PACED_CONNS/nginx"
        r50=$(ratio "${res[$t.p50]}" "${res[$n.p50]}")
        r99=$(ratio "${res[$t.p99]}" "${res[$n.p99]}")
        printf '%-40s p50 %sx, p99 %sx   %s\n' "paced $kind p50/p99 <= 1.5x nginx:" "$r50" "$r99" \
            "$(verdict "$r50 <= 1.5 && $r99 <= 1.5")"
    done
fi
if want streams; then
    node - "$STREAMS" "${streams_json[tollgate]}" <<'EOF'
const n = Number(process.argv[2]);
const r = JSON.parse(process.argv[3]);
const added = r.added_ms.head.p99;
const verdict = (ok) => (ok ? 'met' : 'NOT met');
const held = r.max_open >= n && r.background.bad === 0;
console.log(`${n} streams held open:`.padEnd(41) + `${r.max_open} at most, ${r.background.bad} failed   ${verdict(held)}`);
console.log('RSS per open stream <= 64 KiB:'.padEnd(41) + `${r.kib_per_stream.toFixed(1)} KiB   ${verdict(r.kib_per_stream <= 64)}`);
console.log('TTFB added by tollgate at p99 <= 1 ms:'.padEnd(41) + `${added.toFixed(2)} ms   ${verdict(added <= 1)}`);
EOF
fi
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
