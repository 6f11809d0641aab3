#!/usr/bin/env bash
# Raw-wire checks with curl (SPEC 5 transparency): the bytes a client gets
# through tollgate are the upstream's bytes except the documented rewrites;
# what the upstream receives carries tollgate's credential and forced usage;
# a slow reader does not make tollgate buffer; SIGTERM lets a stream finish
# and settle before tollgate exits 0.
#
# usage: raw_wire_test.sh TOLLGATE_BIN MOCK_BIN
set -euo pipefail
tollgate_bin="$1"
mock_bin="$2"
work="$(mktemp -d)"
mock_pid=""
tg_pid=""
cleanup() {
  for pid in $tg_pid $mock_pid; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

source "$(dirname "$0")/../support/checks.sh"
# Ids and timestamps differ between two calls; everything else must not.
normalize() { sed -E 's/(gen|chatcmpl)-[A-Za-z0-9-]+/\1-ID/g; s/"created":[0-9]+/"created":0/g'; }
strip_usage() { sed -E 's/,"usage":null//g; s/,"usage":\{[^{}]*(\{[^{}]*\}[^{}]*)*\}//g'; }

"$mock_bin" --listen 127.0.0.1:0 >"$work/mock.log" 2>&1 &
mock_pid=$!
wait_for_line "$work/mock.log" "listening on"
mock="$(grep -o 'http://[0-9.:]*' "$work/mock.log" | head -1)"

admin="raw-wire-admin-token-0123456789"
# A prefix route (SPEC 5: Center-Deep searches), here onto the mock's stats.
# One drain slot, so the second client to leave mid-stream finds none.
cat >"$work/tollgate.toml" <<TOML
[server]
drain_slots = 1

[timeouts]
write_ms = 1000
header_ms = 1000

[[routes]]
prefix = "/center-deep"
service = "search"
url = "$mock/mock"
TOML
start_tollgate() {
  TOLLGATE_CONFIG="$work/tollgate.toml" TOLLGATE_LISTEN=127.0.0.1:0 TOLLGATE_DB="$work/t.db" TOLLGATE_MASTER_KEY_FILE="$work/k" \
    TOLLGATE_ADMIN_TOKEN="$admin" TOLLGATE_OPENROUTER_URL="$mock/api/v1" TOLLGATE_OPENROUTER_KEY=platform-key \
    TOLLGATE_LITELLM_URL="$mock" TOLLGATE_LITELLM_KEY=litellm-key TOLLGATE_IO_THREADS=2 \
    "$tollgate_bin" serve >"$work/tg.log" 2>&1 &
  tg_pid=$!
  wait_for_line "$work/tg.log" "tollgate listening on"
  tg="$(grep -o 'http://[0-9.:]*' "$work/tg.log" | head -1)"
}
start_tollgate
set +e  # from here on every check reports itself; a failing one must not stop the rest

user_json="$(curl -s -X POST "$tg/api/v1/users" -H "Authorization: Bearer $admin" \
  -d '{"email":"raw@example.com","tier":"enterprise"}')"
key="$(echo "$user_json" | grep -o '"api_key":"[^"]*"' | cut -d'"' -f4)"
[ -n "$key" ] || { echo "could not create a user: $user_json"; exit 1; }
auth=(-H "Authorization: Bearer $key")
chat='{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"hello raw wire"}]}'
stream='{"model":"openai/gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hello raw wire"}]}'
litellm_stream='{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hello raw wire"}]}'
litellm_stream_usage='{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello raw wire"}]}'

# --- non-stream: body identical, charge headers added ----------------------
curl -s -D "$work/h1" -o "$work/via.json" "$tg/v1/chat/completions" "${auth[@]}" -H 'x-mock-tokens: 5' -d "$chat"
curl -s -o "$work/direct.json" "$mock/api/v1/chat/completions" -H 'Authorization: Bearer x' -H 'x-mock-tokens: 5' -d "$chat"
cmp -s <(normalize <"$work/via.json") <(normalize <"$work/direct.json"); check "non-stream body relayed byte for byte" $?
grep -qi '^x-tollgate-charged-micros: [0-9]' "$work/h1"; check "non-stream answer has x-tollgate-charged-micros" $?
grep -qi '^x-tollgate-balance-micros: [0-9]' "$work/h1"; check "non-stream answer has x-tollgate-balance-micros" $?
grep -qi '^x-request-id: req_' "$work/h1"; check "answer has tollgate's x-request-id" $?
grep -qi '^content-type: application/json' "$work/h1"; check "content type kept" $?
grep -qi '^x-generation-id: gen-' "$work/h1"; check "upstream's own headers kept (X-Generation-Id)" $?

# --- what the upstream received ---------------------------------------------
curl -s "$tg/v1/chat/completions" "${auth[@]}" -H 'x-mock-tokens: 2' -H 'X-Title: raw app' \
  -H 'Accept-Encoding: gzip' -d "$stream" >/dev/null
last="$(curl -s "$mock/mock/last-request")"
echo "$last" | grep -q '"authorization":"Bearer platform-key"'; check "upstream got the platform key, not the client's" $?
! echo "$last" | grep -q "$key"; check "the client's tollgate key never reaches the upstream" $?
echo "$last" | grep -q '"x-title":"raw app"'; check "client headers forwarded" $?
! echo "$last" | grep -q '"accept-encoding"'; check "Accept-Encoding dropped (answers must be readable)" $?
echo "$last" | grep -q 'include_usage'; check "stream_options.include_usage forced on the stream" $?

# --- OpenRouter stream: relayed unchanged (its usage chunk included) ---------
curl -sN "$tg/v1/chat/completions" "${auth[@]}" -H 'x-mock-tokens: 4' -d "$stream" >"$work/via.sse"
curl -sN "$mock/api/v1/chat/completions" -H 'Authorization: Bearer x' -H 'x-mock-tokens: 4' -d "$stream" >"$work/direct.sse"
cmp -s <(normalize <"$work/via.sse") <(normalize <"$work/direct.sse"); check "OpenRouter stream relayed byte for byte" $?
grep -q '^: OPENROUTER PROCESSING' "$work/via.sse"; check "comment keep-alives relayed" $?
tail -c 14 "$work/via.sse" | grep -q 'data: \[DONE\]'; check "stream ends with [DONE]" $?

# --- LiteLLM stream the client did not ask usage for: only usage removed ----
curl -sN "$tg/v1/chat/completions" "${auth[@]}" -H 'x-mock-tokens: 4' -d "$litellm_stream" >"$work/via-l.sse"
curl -sN "$mock/v1/chat/completions" -H 'Authorization: Bearer x' -H 'x-mock-tokens: 4' \
  -d "$litellm_stream_usage" >"$work/direct-l.sse"
! grep -q '"usage"' "$work/via-l.sse"; check "no usage member reaches a client that did not ask" $?
grep -q '"usage":{' "$work/direct-l.sse"; check "(the upstream did send usage)" $?
cmp -s <(normalize <"$work/via-l.sse") <(normalize <"$work/direct-l.sse" | strip_usage)
check "LiteLLM stream equals the upstream's minus its usage members" $?
curl -sN "$tg/v1/chat/completions" "${auth[@]}" -H 'x-mock-tokens: 4' -d "$litellm_stream_usage" >"$work/via-lu.sse"
grep -q '"usage":{' "$work/via-lu.sse"; check "a client that asked for usage gets it" $?

# --- a prefix route: forwarded with the prefix stripped, a fixed price -----
before="$(curl -s "$tg/api/v1/credits/balance" "${auth[@]}" | grep -o '"balance_micros":[0-9-]*' | cut -d: -f2)"
curl -s -D "$work/hp" -o "$work/prefix.json" "$tg/center-deep/stats" "${auth[@]}"
grep -q '"requests":' "$work/prefix.json"; check "a prefix route reaches its service with the prefix stripped" $?
grep -qi '^x-tollgate-charged-micros: 1000' "$work/hp"; check "a search is charged its configured price (1,000 micros)" $?
after="$(curl -s "$tg/api/v1/credits/balance" "${auth[@]}" | grep -o '"balance_micros":[0-9-]*' | cut -d: -f2)"
[ $((before - after)) -eq 1000 ]; check "the balance moved by exactly that" $?

# --- a revoked key stops working at once (the key cache is dropped) ---------
other_json="$(curl -s -X POST "$tg/api/v1/users" -H "Authorization: Bearer $admin" -d '{"email":"revoke@example.com"}')"
other_key="$(echo "$other_json" | grep -o '"api_key":"[^"]*"' | cut -d'"' -f4)"
other_id="$(echo "$other_json" | grep -o '"user":{"id":[0-9]*' | grep -o '[0-9]*$')"
status="$(curl -s -o /dev/null -w '%{http_code}' "$tg/v1/models" -H "Authorization: Bearer $other_key")"
[ "$status" = 200 ]; check "a new key works (and is now cached)" $?
key_id="$(curl -s "$tg/api/v1/keys?user_id=$other_id" -H "Authorization: Bearer $admin" | grep -o '"id":[0-9]*' | head -1 | cut -d: -f2)"
status="$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$tg/api/v1/keys/$key_id" "${auth[@]}")"
[ "$status" = 404 ]; check "a user cannot revoke another user's key" $?
status="$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$tg/api/v1/keys/$key_id" -H "Authorization: Bearer $admin")"
[ "$status" = 200 ]; check "an admin revokes it" $?
status="$(curl -s -o /dev/null -w '%{http_code}' "$tg/v1/models" -H "Authorization: Bearer $other_key")"
[ "$status" = 401 ]; check "the revoked key is refused at once, cached or not" $?

# --- limits -------------------------------------------------------------------
head -c $((9 * 1024 * 1024)) /dev/zero | tr '\0' 'a' >"$work/big.txt"
status="$(curl -s -o "$work/413.json" -w '%{http_code}' "$tg/v1/chat/completions" "${auth[@]}" \
  -H 'Content-Type: application/json' --data-binary @"$work/big.txt")"
[ "$status" = 413 ] && grep -q '"code":"request_too_large"' "$work/413.json"; check "a body over 8 MiB is 413 request_too_large" $?
status="$(curl -s -o /dev/null -w '%{http_code}' "$tg/nowhere" "${auth[@]}")"
[ "$status" = 404 ]; check "an unknown route is 404" $?

# --- a slow reader: tollgate does not buffer the stream for it ---------------
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$tg_pid/status"; }
rss_before="$(rss_kib)"
curl -sN --limit-rate 400k "$tg/v1/chat/completions" "${auth[@]}" -H 'x-mock-tokens: 8000' \
  -d "$stream" >"$work/slow.sse"
rss_after="$(rss_kib)"
bytes="$(wc -c <"$work/slow.sse")"
high="$(curl -s "$tg/metrics" | awk '/^tollgate_stream_buffer_high_water_bytes/ {print $2}')"
echo "     slow reader: $bytes bytes relayed; most one stream held: $high bytes; RSS $rss_before -> $rss_after KiB"
[ "$bytes" -gt 1000000 ] && grep -q 'data: \[DONE\]' "$work/slow.sse"; check "the slow reader got the whole stream" $?
[ "$high" -le 65536 ]; check "a stream never held more than 64 KiB in tollgate" $?
if grep -q __asan_init "$tollgate_bin"; then
  echo "     (RSS not checked: AddressSanitizer's quarantine keeps freed memory)"
else
  [ $((rss_after - rss_before)) -lt 4096 ]; check "RSS grew by less than 4 MiB for a ${bytes}-byte stream" $?
fi

# --- clients leaving mid-stream: the first is drained, the next is cut off ---
# One drain slot (the TOML above). A stream of 80 events 25 ms apart lasts
# 2 s; each client leaves after 0.4 s, the second while the first one's drain
# still holds the slot.
drain_json="$(curl -s -X POST "$tg/api/v1/users" -H "Authorization: Bearer $admin" \
  -d '{"email":"drain@example.com","tier":"enterprise"}')"
drain_key="$(echo "$drain_json" | grep -o '"api_key":"[^"]*"' | cut -d'"' -f4)"
dauth=(-H "Authorization: Bearer $drain_key")
balance_of() { curl -s "$tg/api/v1/credits/balance" "$@" | grep -o '"balance_micros":[0-9-]*' | cut -d: -f2; }
charges_of() { curl -s "$tg/api/v1/credits/transactions?type=charge" "$@" | grep -o '"amount_micros":-[0-9]*' | cut -d- -f2; }
metric() { curl -s "$tg/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
b0="$(balance_of "${dauth[@]}")"
curl -sN "$tg/v1/chat/completions" "${dauth[@]}" -H 'x-mock-tokens: 80' -d "$stream" >"$work/whole.sse"
full=$((b0 - $(balance_of "${dauth[@]}")))
curl -sN --max-time 0.4 "$tg/v1/chat/completions" "${dauth[@]}" -H 'x-mock-tokens: 80' -H 'x-mock-delay-ms: 25' \
  -d "$stream" >"$work/left1.sse"
curl -sN --max-time 0.4 "$tg/v1/chat/completions" "${dauth[@]}" -H 'x-mock-tokens: 80' -H 'x-mock-delay-ms: 25' \
  -d "$stream" >"$work/left2.sse"
for _ in $(seq 1 100); do  # both settled: three charges (bounded wait, 10 s)
  [ "$(charges_of "${dauth[@]}" | wc -l)" -ge 3 ] && [ "$(metric tollgate_drain_slots_in_use)" = 0 ] && break
  sleep 0.1
done
# The two newest charges, smaller first: the drained call settles last (it
# runs to the end), so the order of settlement says nothing.
mapfile -t charged < <(charges_of "${dauth[@]}" | head -2 | sort -n)
echo "     whole stream charged $full; left, no slot: ${charged[0]:-none}; left and drained: ${charged[1]:-none}"
[ "$(metric 'tollgate_drains_total{outcome="drained"}')" = 1 ]; check "the first client to leave took the drain slot" $?
[ "$(metric 'tollgate_drains_total{outcome="refused"}')" = 1 ]; check "the second found none" $?
[ "${charged[1]:-0}" -eq "$full" ]; check "the drained call is charged its full usage, as if read to the end" $?
[ "${charged[0]:-0}" -gt 0 ] && [ "${charged[0]:-0}" -lt "$full" ]
check "the cut-off call is charged for the tokens relayed before it, no more" $?
[ "$(grep -c '"content"' "$work/left2.sse")" -lt 80 ]; check "(the second client did leave early)" $?

# --- a client that stops reading is let go after write_ms (1 s here) --------
# It never reads: once the socket buffers are full, tollgate's write waits;
# after write_ms it gives up on the client and drains the upstream (the slot
# is free again), so the call is charged its full usage.
host_port="${tg#http://}"
exec 3<>"/dev/tcp/${host_port%:*}/${host_port#*:}"
printf 'POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nx-mock-tokens: 100000\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' \
  "$host_port" "$drain_key" "${#stream}" "$stream" >&3
for _ in $(seq 1 150); do  # bounded: 15 s
  [ "$(metric 'tollgate_drains_total{outcome="drained"}')" = 2 ] && break
  sleep 0.1
done
[ "$(metric 'tollgate_drains_total{outcome="drained"}')" = 2 ]
check "a client that stops reading is given up after write_ms, its upstream drained" $?
exec 3>&-

# --- a connection that sends nothing is closed after header_ms (1 s here) ---
exec 4<>"/dev/tcp/${host_port%:*}/${host_port#*:}"
timeout 10 cat <&4 >/dev/null
check "a connection that sends no request is closed after header_ms" $?
exec 4>&-

# --- graceful shutdown: a stream in flight finishes and is settled -----------
curl -sN "$tg/v1/chat/completions" "${auth[@]}" -H 'x-mock-tokens: 30' -H 'x-mock-delay-ms: 40' \
  -d "$stream" >"$work/drain.sse" &
curl_pid=$!
sleep 0.3
kill -TERM "$tg_pid"
wait "$curl_pid"
wait "$tg_pid"
tg_status=$?
tg_pid=""
[ "$tg_status" -eq 0 ]; check "tollgate exits 0 after SIGTERM" $?
grep -q 'data: \[DONE\]' "$work/drain.sse" && [ "$(grep -c 'tok' "$work/drain.sse")" -ge 30 ]
check "the stream in flight finished during the drain" $?
grep -q 'stopped (0 holds still open' "$work/tg.log"; check "no hold was left open" $?
"$tollgate_bin" check-ledger --db "$work/t.db" >"$work/check.log" 2>&1; check "ledger check passes" $?
cat "$work/check.log"

# --- first start without an admin token: one is made, printed once ---------
[ "$(stat -c %a "$work/k")" = 600 ]; check "the master key file was created with mode 0600" $?
first_start() {
  TOLLGATE_LISTEN=127.0.0.1:0 TOLLGATE_DB="$work/fresh.db" TOLLGATE_MASTER_KEY_FILE="$work/k2" \
    TOLLGATE_OPENROUTER_URL="$mock/api/v1" "$tollgate_bin" serve >"$work/$1.log" 2>&1 &
  tg_pid=$!
  wait_for_line "$work/$1.log" "tollgate listening on"
  tg="$(grep -o 'http://[0-9.:]*' "$work/$1.log" | head -1)"
}
first_start first
token="$(grep -o 'admin token (shown once, store it now): tga_[A-Za-z0-9_-]*' "$work/first.log" | awk '{print $NF}')"
[ -n "$token" ]; check "first start prints a generated admin token" $?
status="$(curl -s -o /dev/null -w '%{http_code}' -X POST "$tg/api/v1/users" -H "Authorization: Bearer $token" \
  -d '{"email":"first@example.com"}')"
[ "$status" = 201 ]; check "the printed admin token works" $?
status="$(curl -s -o /dev/null -w '%{http_code}' -X POST "$tg/api/v1/users" -H "Authorization: Bearer tga_wrong" \
  -d '{"email":"second@example.com"}')"
[ "$status" = 401 ]; check "another token does not" $?
kill -TERM "$tg_pid"; wait "$tg_pid"; tg_pid=""
first_start second
! grep -q 'admin token' "$work/second.log"; check "the second start prints no token" $?
status="$(curl -s -o /dev/null -w '%{http_code}' -X POST "$tg/api/v1/users" -H "Authorization: Bearer $token" \
  -d '{"email":"third@example.com"}')"
[ "$status" = 201 ]; check "the token still works after a restart (stored hashed)" $?
! grep -q "$token" "$work/fresh.db"* ; check "the token itself is not in the database" $?
kill -TERM "$tg_pid"; wait "$tg_pid"; tg_pid=""

finish "raw wire"
