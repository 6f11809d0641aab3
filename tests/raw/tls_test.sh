#!/usr/bin/env bash
# The upstream client over TLS (SPEC 5): certificates verified against the
# trust store, the host name checked, SNI sent. A TLS terminator (socat with a
# certificate made here) sits in front of the mock upstream; tollgate trusts
# that certificate only through SSL_CERT_FILE, as an operator with a private
# CA would configure it.
#
# usage: tls_test.sh TOLLGATE_BIN MOCK_BIN
set -euo pipefail
tollgate_bin="$1"
mock_bin="$2"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

source "$(dirname "$0")/../support/checks.sh"
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

# Two self-signed certificates: one naming 127.0.0.1, one naming another host.
make_cert() {  # make_cert NAME SUBJECT_ALT_NAME
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$1" -addext "subjectAltName=$2" \
    -keyout "$work/$1.key" -out "$work/$1.pem" >/dev/null 2>&1
}
make_cert good "IP:127.0.0.1"
make_cert wrong "DNS:wrong.example"

"$mock_bin" --listen 127.0.0.1:0 >"$work/mock.log" 2>&1 &
pids+=($!)
wait_for_line "$work/mock.log" "listening on"
mock_port="$(grep -o 'http://[0-9.:]*' "$work/mock.log" | head -1 | sed 's/.*://')"

terminate_tls() {  # terminate_tls CERT PORT
  socat "OPENSSL-LISTEN:$2,bind=127.0.0.1,reuseaddr,fork,cert=$work/$1.pem,key=$work/$1.key,verify=0" \
    "TCP:127.0.0.1:$mock_port" >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0; sleep 0.05; done
  echo "socat did not start on port $2"; exit 1
}
good_port="$(free_port)"
terminate_tls good "$good_port"
wrong_port="$(free_port)"
terminate_tls wrong "$wrong_port"

admin="tls-test-admin-token-0123456789"
run_tollgate() {  # run_tollgate NAME URL [SSL_CERT_FILE]
  local name="$1" url="$2" ca="${3:-/nonexistent}"
  SSL_CERT_FILE="$ca" TOLLGATE_LISTEN=127.0.0.1:0 TOLLGATE_DB="$work/$name.db" TOLLGATE_MASTER_KEY_FILE="$work/k" \
    TOLLGATE_ADMIN_TOKEN="$admin" TOLLGATE_OPENROUTER_URL="$url" TOLLGATE_OPENROUTER_KEY=platform-key \
    "$tollgate_bin" serve >"$work/$name.log" 2>&1 &
  pids+=($!)
  wait_for_line "$work/$name.log" "tollgate listening on"
  tg="$(grep -o 'http://[0-9.:]*' "$work/$name.log" | head -1)"
}
call() {  # call TOLLGATE_URL -> "<status> <body>"
  local tg="$1" key
  key="$(curl -s -X POST "$tg/api/v1/users" -H "Authorization: Bearer $admin" \
    -d '{"email":"tls@example.com","tier":"starter"}' | grep -o '"api_key":"[^"]*"' | cut -d'"' -f4)"
  curl -s -w ' %{http_code}' "$tg/v1/chat/completions" -H "Authorization: Bearer $key" \
    -d '{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"over tls"}]}'
}

set +e  # every check reports itself
run_tollgate trusted "https://127.0.0.1:$good_port/api/v1" "$work/good.pem"
out="$(call "$tg")"
[[ "$out" == *' 200' && "$out" == *'"cost":'* ]]; check "a trusted certificate naming the host: the call goes through" $?
grep -q '"openrouter":"live"' <(curl -s "$tg/readyz"); check "the catalog was fetched over TLS" $?

run_tollgate untrusted "https://127.0.0.1:$good_port/api/v1"
out="$(call "$tg")"
[[ "$out" == *' 502' && "$out" == *'"code":"upstream_error"'* ]]; check "an untrusted certificate is refused (502 upstream_error)" $?
grep -q 'tollgate_upstream_failures_total{kind="tls"} [1-9]' <(curl -s "$tg/metrics"); check "counted as a TLS failure" $?

run_tollgate wrong-name "https://127.0.0.1:$wrong_port/api/v1" "$work/wrong.pem"
out="$(call "$tg")"
[[ "$out" == *' 502' ]]; check "a trusted certificate for another host name is refused" $?

finish "tls"
