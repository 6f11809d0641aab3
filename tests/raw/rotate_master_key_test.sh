#!/usr/bin/env bash
# `tollgate rotate-master-key` (SPEC 7): refused while a server holds the
# database; on a stopped server it replaces the key file and re-encrypts
# every sealed key; after a restart every tollgate key still authenticates
# and calls go upstream with the same provisioned and BYOK keys, which
# appear in no file of the database and in no output.
#
# usage: rotate_master_key_test.sh TOLLGATE_BIN MOCK_BIN
set -euo pipefail
tollgate_bin="$1"
mock_bin="$2"
source "$(dirname "$0")/../support/stack.sh"
provisioning=(TOLLGATE_OPENROUTER_PROVISIONING_KEY=mock-management-key)

start_mock
start_tollgate tg "${provisioning[@]}"
set +e
api() {  # api METHOD PATH [BODY] [TOKEN]
  curl -s -X "$1" "$tg/api/v1$2" -H "Authorization: Bearer ${4:-$admin}" ${3:+-d "$3"}
}
chat() {  # chat KEY: one call; prints the Authorization tollgate sent upstream
  curl -s -o /dev/null "$tg/v1/chat/completions" -H "Authorization: Bearer $1" \
    -d '{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
  curl -s "$mock/mock/last-request" | jq -r .headers.authorization
}
managed="$(api POST /users '{"email":"m@example.com","tier":"starter"}')"
managed_key="$(echo "$managed" | jq -r .api_key)"
masked="$(echo "$managed" | jq -r .openrouter.key_masked)"
label="$(echo "$managed" | jq -r .openrouter.label)"
byok_user="$(api POST /users '{"email":"b@example.com","tier":"professional"}')"
byok_id="$(echo "$byok_user" | jq -r .user.id)"
byok_key="$(echo "$byok_user" | jq -r .api_key)"
byok_secret="sk-or-byok-rotation-test-0123456789abcdef"
api POST /tiers/switch "{\"user_id\":$byok_id,\"tier\":\"professional\",\"option\":\"byok\",\"byok_key\":\"$byok_secret\"}" >/dev/null

before="$(chat "$managed_key")"
[ "${before#Bearer sk-or-v1-}" != "$before" ] && [ "${before:7:12}" = "${masked:0:12}" ]
check "managed calls go out with the provisioned key (masked $masked)" $?
[ "$(chat "$byok_key")" = "Bearer $byok_secret" ]
check "BYOK calls go out with the user's own key" $?

out="$(TOLLGATE_MASTER_KEY_FILE="$work/k" "$tollgate_bin" rotate-master-key --db "$work/t.db" 2>&1)"
status=$?
echo "  while the server runs: exit $status: $out"
[ "$status" -eq 1 ] && echo "$out" | grep -qi "lock"
check "refused while a server holds the database" $?

stop_tollgate
old_key="$(od -An -tx1 "$work/k" | tr -d ' \n')"
out="$(TOLLGATE_MASTER_KEY_FILE="$work/k" "$tollgate_bin" rotate-master-key --db "$work/t.db" 2>&1)"
status=$?
echo "  stopped: exit $status: $out"
[ "$status" -eq 0 ] && echo "$out" | grep -q "4 sealed keys re-encrypted"
check "rotates: two provisioned keys (one per user), the BYOK key and the key-hashing key re-encrypted" $?
new_key="$(od -An -tx1 "$work/k" | tr -d ' \n')"
[ "$new_key" != "$old_key" ] && [ "${#new_key}" -eq 64 ] && [ "$(stat -c %a "$work/k")" = 600 ] && [ ! -e "$work/k.new" ]
check "the key file holds a new 32-byte key, mode 0600" $?

start_tollgate tg2 "${provisioning[@]}"
[ "$(chat "$managed_key")" = "$before" ]
check "after the restart the same tollgate key authenticates and the same provisioned key goes upstream" $?
[ "$(chat "$byok_key")" = "Bearer $byok_secret" ]
check "the BYOK key opens under the new master key" $?
after="$(api GET /openrouter/account "" "$managed_key")"
[ "$(echo "$after" | jq -r .status)" = active ] && [ "$(echo "$after" | jq -r .label)" = "$label" ]
check "the account reads as before ($label)" $?
second="$(api POST /users '{"email":"n@example.com","tier":"free"}' | jq -r .openrouter.label)"
[ "${second%-user-*}" = "${label%-user-*}" ] && echo "$label" | grep -Eq '^tollgate-[0-9a-f]{8}-user-[0-9]+$'
check "the database keeps its key name prefix across restarts (${second%-user-*})" $?

stop_tollgate
provisioned="${before#Bearer }"
leaked=0
for f in "$work"/t.db* "$work"/*.log; do
  for secret in "$provisioned" "$byok_secret"; do
    if grep -qaF "$secret" "$f"; then echo "  $secret found in $f"; leaked=1; fi
  done
done
check "neither key is in the database, its WAL, or tollgate's output" $leaked

"$tollgate_bin" check-ledger --db "$work/t.db" >/dev/null
check "check-ledger passes afterwards" $?
finish
