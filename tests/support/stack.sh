# Shell scaffolding the script tests share (source it): a scratch directory
# removed at exit with every process started here, named checks counted
# (checks.sh), and the mock upstream and tollgate started on loopback, each
# waited for by the line it prints once it listens.
#
#   source tests/support/stack.sh
#   start_mock                          # sets mock (its base URL), mock_pid
#   start_tollgate NAME [VAR=VALUE...]  # sets tg (its base URL), tg_pid; log in $work/NAME.log
#   check "what must hold" $?
#   finish                              # prints the count, exits 1 on any failure
#
# Expects tollgate_bin and mock_bin to be set. tollgate gets a database
# ($work/t.db), a master key file ($work/k), the admin token $admin and the
# mock as its OpenRouter unless the extra variables say otherwise.
work="$(mktemp -d)"
mock_pid=""
tg_pid=""
admin="script-test-admin-token-0123456789"
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"
cleanup() {
  for pid in $tg_pid $mock_pid; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

start_mock() {
  "$mock_bin" --listen 127.0.0.1:0 "$@" >"$work/mock.log" 2>&1 &
  mock_pid=$!
  wait_for_line "$work/mock.log" "listening on"
  mock="$(grep -o 'http://[0-9.:]*' "$work/mock.log" | head -1)"
}

start_tollgate() {  # start_tollgate NAME [VAR=VALUE...]
  local name="$1"
  shift
  env TOLLGATE_LISTEN=127.0.0.1:0 TOLLGATE_DB="$work/t.db" TOLLGATE_MASTER_KEY_FILE="$work/k" \
    TOLLGATE_ADMIN_TOKEN="$admin" TOLLGATE_OPENROUTER_URL="$mock/api/v1" TOLLGATE_OPENROUTER_KEY=platform-key \
    "$@" "$tollgate_bin" serve >"$work/$name.log" 2>&1 &
  tg_pid=$!
  wait_for_line "$work/$name.log" "tollgate listening on"
  tg="$(grep -o 'http://[0-9.:]*' "$work/$name.log" | head -1)"
}

stop_tollgate() {
  kill -TERM "$tg_pid"
  wait "$tg_pid" 2>/dev/null || true
  tg_pid=""
}
