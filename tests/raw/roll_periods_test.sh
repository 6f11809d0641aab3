#!/usr/bin/env bash
# `tollgate roll-periods` (SPEC 7): refused while a server holds the
# database; rolls every boundary up to --now once the server is gone; a
# second run for the same time changes nothing; the ledger check passes.
#
# usage: roll_periods_test.sh TOLLGATE_BIN MOCK_BIN
set -euo pipefail
tollgate_bin="$1"
mock_bin="$2"
source "$(dirname "$0")/../support/stack.sh"

start_mock
start_tollgate tg
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

stop_tollgate

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

finish
