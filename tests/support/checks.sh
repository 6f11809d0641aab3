# Named checks for the script tests (source it; stack.sh does): each check
# prints ok or FAIL and is counted, and finish prints the count and exits 1
# on any failure.
#
#   check "what must hold" $?
#   wait_for_line FILE PATTERN   # waits up to 10 s for a line, else prints FILE and exits 1
#   finish [LABEL]               # "LABEL: N of M checks passed"
failures=0
checks=0

check() {  # check NAME CONDITION-EXIT-STATUS
  checks=$((checks + 1))
  if [ "$2" -eq 0 ]; then echo "ok   $1"; else echo "FAIL $1"; failures=$((failures + 1)); fi
}

wait_for_line() {  # wait_for_line FILE PATTERN
  for _ in $(seq 1 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "timed out waiting for '$2' in $1:"; cat "$1"; exit 1
}

finish() {  # finish [LABEL]
  echo "${1:+$1: }$((checks - failures)) of $checks checks passed"
  [ "$failures" -eq 0 ]
  exit $?
}
