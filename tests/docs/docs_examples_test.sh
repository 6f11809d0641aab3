#!/usr/bin/env bash
# Runs the curl examples of a document (docs/api.md) against a real tollgate
# and the mock upstream on loopback, in the order they appear, so the docs
# cannot rot. An example is a ```bash block right after a marker line:
#
#   <!-- example: NAME STATUS [text] [save VAR=JQ_PATH ...] -->
#
# Each example must answer STATUS; its body must be JSON (unless `text`);
# when a ```json block follows the example, the answer must have exactly the
# shape shown there (the same member paths; values may differ); and `save`
# keeps values of the answer as shell variables for the examples below.
# The examples start with TOLLGATE (the base URL), ADMIN_TOKEN and MOCK (the
# mock upstream's base URL, for its test hooks) set. tollgate provisions
# OpenRouter keys through the mock's key management API.
#
# usage: docs_examples_test.sh TOLLGATE_BIN MOCK_BIN DOC.md
set -euo pipefail
tollgate_bin="$1"
mock_bin="$2"
doc="$3"
source "$(dirname "$0")/../support/stack.sh"
admin="docs-admin-token-0123456789abcdef"

start_mock
start_tollgate tg TOLLGATE_OPENROUTER_PROVISIONING_KEY=mock-management-key

# Split the document into examples: N.directive, N.sh and, when shown, N.json.
awk -v dir="$work" '
  /^<!-- example: .* -->$/ { n++; d = $0; sub(/^<!-- example: /, "", d); sub(/ -->$/, "", d);
                             print d > (dir "/" n ".directive"); want = "bash"; next }
  want == "bash" && /^```bash$/ { mode = "bash"; want = "json"; next }
  want == "json" && /^```json$/ { mode = "json"; want = ""; next }
  mode != "" && /^```$/ { mode = ""; next }
  mode == "bash" { print > (dir "/" n ".sh"); next }
  mode == "json" { print > (dir "/" n ".json"); next }
  want == "json" && !/^$/ { want = "" }
' "$doc"
count="$(ls "$work"/*.directive 2>/dev/null | wc -l)"
[ "$count" -gt 0 ] || { echo "no examples found in $doc"; exit 1; }

# The shape of a JSON value: every path to a scalar, array positions as 0.
shape() { jq -c '[paths(type != "object" and type != "array") | map(if type == "number" then 0 else . end)] | unique' "$1"; }

{
  echo "export TOLLGATE='$tg' ADMIN_TOKEN='$admin' MOCK='$mock'"
} >"$work/vars.sh"
failures=0
for i in $(seq 1 "$count"); do
  read -r name status rest <"$work/$i.directive"
  text=0
  saves=()
  for word in $rest; do
    case "$word" in
      text) text=1 ;;
      save) ;;
      *=*) saves+=("$word") ;;
    esac
  done
  [ -f "$work/$i.sh" ] || { echo "FAIL $name: no \`\`\`bash block after its marker"; failures=$((failures + 1)); continue; }
  # curl as the reader runs it, with the status and body kept aside.
  got="$(bash -c "
    set -e
    source '$work/vars.sh'
    curl() { command curl -s -o '$work/$i.body' -w '%{http_code}' \"\$@\"; }
    source '$work/$i.sh'
  " 2>"$work/$i.err" || true)"
  got="${got: -3}"
  problem=""
  if [ "$got" != "$status" ]; then
    problem="answered $got, the document says $status"
  elif [ "$text" -eq 0 ] && ! jq -e . "$work/$i.body" >/dev/null 2>&1; then
    problem="the answer is not JSON"
  elif [ -f "$work/$i.json" ] && [ "$(shape "$work/$i.body")" != "$(shape "$work/$i.json")" ]; then
    problem="the answer's shape differs from the one shown: $(shape "$work/$i.body") vs $(shape "$work/$i.json")"
  fi
  for s in "${saves[@]}"; do
    value="$(jq -r "${s#*=}" "$work/$i.body" 2>/dev/null || true)"
    if [ -z "$value" ] || [ "$value" = "null" ]; then problem="${problem:-nothing at ${s#*=} to save}"; fi
    echo "export ${s%%=*}='$value'" >>"$work/vars.sh"
  done
  if [ -n "$problem" ]; then
    echo "FAIL $name: $problem"
    echo "  body: $(head -c 600 "$work/$i.body" 2>/dev/null)"
    [ -s "$work/$i.err" ] && echo "  stderr: $(head -c 300 "$work/$i.err")"
    failures=$((failures + 1))
  else
    echo "ok   $name ($got)"
  fi
done
echo "docs examples: $((count - failures)) of $count passed ($(basename "$doc"))"
[ "$failures" -eq 0 ]
