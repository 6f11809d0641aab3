#!/usr/bin/env bash
# `tollgate roll-periods` (SPEC 7): refused while a server holds the
# database; rolls every boundary up to --now once the server is gone; a
# second run for the same time changes nothing; the ledger check passes.
#
# usage: roll_periods_test.sh TOLLGATE_BIN MOCK_BIN
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
failures=0
checks=0
check() {  # check NAME CONDITION-EXIT-STATUS
  checks=$((checks + 1))
  if [ "$2" -eq 0 ]; then echo "ok   $1"; else echo "FAIL $1"; failures=$((failures + 1)); fi
}
wait_for_line() {
  for _ in $(seq 1 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "timed out waiting for '$2' in $1:"; cat "$1"; exit 1
}

"$mock_bin" --listen 127.0.0.1:0 >"$work/mock.log" 2>&1 &
mock_pid=$!
wait_for_line "$work/mock.log" "listening on"
mock="$(grep -o 'http://[0-9.:]*' "$work/mock.log" | head -1)"
admin="roll-periods-admin-token-0123456789"
TOLLGATE_LISTEN=127.0.0.1:0 TOLLGATE_DB="$work/t.db" TOLLGATE_MASTER_KEY_FILE="$work/k" TOLLGATE_ADMIN_TOKEN="$admin" \
  TOLLGATE_OPENROUTER_URL="$mock/api/v1" TOLLGATE_OPENROUTER_KEY=platform-key "$tollgate_bin" serve >"$work/tg.log" 2>&1 &
tg_pid=$!
wait_for_line "$work/tg.log" "tollgate listening on"
tg="$(grep -o 'http://[0-9.:]*' "$work/tg.log" | head -1)"
set +e
for tier in free starter professional; do
  curl -s -o /dev/null -X POST "$tg/api/v1/users" -H "Authorization: Bearer $admin" \
    -d "{\"email\":\"$tier@example.com\",\"tier\":\"$tier\"}"
done
# Three months ahead of the users' creation: three boundaries each.
now="$(date -u -d '+3 months +1 day' +%Y-%m-%dT%H:%M:%SZ)"

out="$("$tollgate_bin" roll-periods --db "$work/t.db" --now "$now" 2>&1)"
status=$?
echo "  while the server runs: exit $status: $out"
[ "$status" -eq 1 ] && echo "$out" | grep -qi "lock"
check "refused while a server holds the database" $?

kill -TERM "$tg_pid"; wait "$tg_pid" 2>/dev/null; tg_pid=""

out="$("$tollgate_bin" roll-periods --db "$work/t.db" --now "$now" 2>&1)"
status=$?
echo "  first run: exit $status: $out"
[ "$status" -eq 0 ] && echo "$out" | grep -q "^rolled 9 period boundaries .*ledger check: OK$"
check "rolls every missed boundary of every user, in order (3 users x 3)" $?

out="$("$tollgate_bin" roll-periods --db "$work/t.db" --now "$now" 2>&1)"
status=$?
echo "  second run: exit $status: $out"
[ "$status" -eq 0 ] && echo "$out" | grep -q "^rolled 0 period boundaries"
check "a second run for the same time changes nothing" $?

out="$("$tollgate_bin" check-ledger --db "$work/t.db" 2>&1)"
check "check-ledger passes afterwards" $?

out="$("$tollgate_bin" roll-periods --db "$work/t.db" --now yesterday 2>&1)"
[ $? -eq 2 ] && echo "$out" | grep -q "RFC 3339"
check "a --now that is not a time is a usage error" $?

echo "roll-periods: $((checks - failures)) of $checks checks passed"
[ "$failures" -eq 0 ]
