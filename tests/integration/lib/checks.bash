# Sourced by the integration scripts: how a check is counted and reported. scripts/test.sh reads
# the last line, "RESULT: N passed, M failed".

passed=0
failed=0

# pass TEXT / fail TEXT [DETAIL]: one check's outcome (DETAIL: its last 30 lines are shown).
pass() {
  echo "ok    $1"
  passed=$((passed + 1))
}
fail() {
  echo "FAIL  $1"
  [[ -n ${2:-} ]] && echo "$2" | tail -30
  failed=$((failed + 1))
}

# report: the closing line.
report() {
  echo "RESULT: $passed passed, $failed failed"
}

# require FILE_OR_COMMAND...: each an executable path (containing a /) or a command on PATH;
# when any is missing, one failed check names them all and the script ends.
require() {
  local missing=() need
  for need in "$@"; do
    if [[ $need == */* ]]; then
      [[ -x $need ]] || missing+=("$need")
    else
      command -v "$need" >/dev/null || missing+=("$need")
    fi
  done
  if ((${#missing[@]} > 0)); then
    fail "prerequisites" "missing: ${missing[*]}"
    report
    exit 1
  fi
}
