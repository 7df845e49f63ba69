# shellcheck shell=bash
# The machinery of scripts/bench.sh, sourced by it: running measured programs (pinned, bounded
# in time), collecting their figures over interleaved rounds, medians, and the rows of the one
# markdown table. Nothing here knows which benchmarks exist; scripts/bench.sh's sections do.
#
# The protocol between measured programs and this file: a program prints one line per figure,
#   RESULT<TAB><implementation><TAB><figure><TAB><value><TAB><unit>
# (coring, fcontext, fiber, go, ...). bench_step keeps those lines, tagged with the round, in
# $BENCH_RAW; everything else a program prints goes to its log. A figure is then addressed as
# "implementation:figure" (for example coring:yield_rt, go:chan_rt).
#
# Functions for sections:
#   bench_step LABEL TIMEOUT_S CPUS CMD...   run one program, collect its RESULT lines
#   bench_steps SECTION                      run the steps queued by bench_queue for SECTION,
#                                            in reverse order on even rounds (A B, B A, ...)
#   bench_queue SECTION LABEL TIMEOUT_S CPUS CMD...
#   bench_record IMPL FIGURE VALUE UNIT      add a figure measured by the script itself
#   bench_row ...                            one table row (see below)
# and for scripts/bench.sh itself: bench_init, bench_summarize (medians; round 0 is a warm-up
# and does not count), bench_table_header.
# Results of a run live in $BENCH_OUT: raw.tsv, stats.tsv, table.md, failures.txt, logs/.

BENCH_ROUND=0
BENCH_GOALS=0
BENCH_GOALS_MET=0
BENCH_LAST_FIGURE=
declare -A BENCH_MED=() BENCH_MIN=() BENCH_MAX=() BENCH_N=()
declare -A BENCH_QUEUE=()

# bench_init OUT_DIR: a fresh results directory for this run.
bench_init() {
  BENCH_OUT=$1
  mkdir -p "$BENCH_OUT/logs"
  BENCH_RAW=$BENCH_OUT/raw.tsv
  BENCH_FAILURES=$BENCH_OUT/failures.txt
  : >"$BENCH_RAW"
  : >"$BENCH_FAILURES"
}

bench_fail() {
  echo "round $BENCH_ROUND: $*" >>"$BENCH_FAILURES"
  echo "bench: round $BENCH_ROUND: $*" >&2
}

bench_record() {
  printf '%s\t%s\t%s\t%s\t%s\n' "$BENCH_ROUND" "$1" "$2" "$3" "$4" >>"$BENCH_RAW"
}

# bench_step LABEL TIMEOUT_S CPUS CMD...: runs CMD pinned to CPUS (taskset -c syntax) under
# timeout(1) and keeps its RESULT lines. A non-zero exit or a timeout is recorded as a failure
# (the figures it printed before failing are kept); its output stays in logs/.
bench_step() {
  local label=$1 limit=$2 cpus=$3
  shift 3
  local log="$BENCH_OUT/logs/r$BENCH_ROUND.${label//[^A-Za-z0-9_.-]/_}"
  local start=$SECONDS status
  timeout -k 5 "$limit" taskset -c "$cpus" "$@" </dev/null >"$log.out" 2>"$log.err"
  status=$?
  awk -F'\t' -v r="$BENCH_ROUND" 'NF >= 5 && $1 == "RESULT" {
      print r "\t" $2 "\t" $3 "\t" $4 "\t" $5 }' "$log.out" >>"$BENCH_RAW"
  if ((status == 124 || status == 137)); then
    bench_fail "$label: timed out after ${limit}s (see $log.err)"
  elif ((status != 0)); then
    bench_fail "$label: exit status $status: $(tail -c 300 "$log.err" | tr '\n' ' ')"
  fi
  printf '  %-24s %3ds%s\n' "$label" $((SECONDS - start)) "$( ((status == 0)) || echo "  FAILED ($status)")" >&2
}

# bench_queue SECTION LABEL TIMEOUT_S CPUS CMD...: remembers a step for bench_steps.
bench_queue() {
  local section=$1
  shift
  local quoted
  printf -v quoted '%q ' "$@"
  BENCH_QUEUE[$section]+="bench_step $quoted"$'\n'
}

# bench_steps SECTION: runs the queued steps of SECTION once; on even rounds in reverse order,
# so that no implementation always runs right after the same one.
bench_steps() {
  local steps=${BENCH_QUEUE[$1]:-}
  if ((BENCH_ROUND % 2 == 0)); then steps=$(tac <<<"$steps"); fi
  local step
  while IFS= read -r step; do
    [[ -n $step ]] && eval "$step"
  done <<<"$steps"
}

# bench_summarize: median, min, max and count of every implementation:figure over the rounds,
# into stats.tsv (with units) and the BENCH_* arrays.
bench_summarize() {
  awk -F'\t' '
    $1 == 0 { next }  # round 0: warm-up, not counted
    { key = $2 ":" $3
      if (!(key in n)) { keys[++k] = key; unit[key] = $5 }
      v[key, ++n[key]] = $4 + 0 }
    END {
      for (i = 1; i <= k; i++) {
        key = keys[i]; m = n[key]
        for (a = 1; a <= m; a++) s[a] = v[key, a]
        for (a = 2; a <= m; a++) {  # insertion sort: a handful of rounds
          x = s[a]
          for (b = a - 1; b >= 1 && s[b] > x; b--) s[b + 1] = s[b]
          s[b + 1] = x
        }
        median = m % 2 ? s[(m + 1) / 2] : (s[m / 2] + s[m / 2 + 1]) / 2
        printf "%s\t%.6g\t%.6g\t%.6g\t%d\t%s\n", key, median, s[1], s[m], m, unit[key]
      }
    }' "$BENCH_RAW" >"$BENCH_OUT/stats.tsv"
  local key median min max n
  while IFS=$'\t' read -r key median min max n _; do
    BENCH_MED[$key]=$median
    BENCH_MIN[$key]=$min
    BENCH_MAX[$key]=$max
    BENCH_N[$key]=$n
  done <"$BENCH_OUT/stats.tsv"
}

# bench_num VALUE: three significant figures, no exponent.
bench_num() {
  awk -v v="$1" 'BEGIN { a = v < 0 ? -v : v
    if (a >= 100) printf "%.0f", v; else if (a >= 10) printf "%.1f", v; else printf "%.2f", v }'
}

# bench_cell KEY: "median" or "median (min..max)" when there were several rounds; "—" when the
# figure is missing.
bench_cell() {
  local key=$1
  if [[ -z ${BENCH_MED[$key]:-} ]]; then
    printf -- '—'
  elif ((BENCH_N[$key] > 1)); then
    printf '%s (%s..%s)' "$(bench_num "${BENCH_MED[$key]}")" "$(bench_num "${BENCH_MIN[$key]}")" \
      "$(bench_num "${BENCH_MAX[$key]}")"
  else
    bench_num "${BENCH_MED[$key]}"
  fi
}

bench_table_header() {
  echo "| figure | coring | epoll engine | static LTO | peer | peer value | ratio | goal | met? |"
  echo "| --- | ---: | ---: | ---: | --- | ---: | ---: | --- | :---: |"
}

# bench_row FIGURE CORING_KEY PEER_NAME PEER_KEY RATIO CHECKS GOAL_TEXT [NOTE_KEY NOTE_SUFFIX]
#   FIGURE       what is measured, with its unit; shown only when it differs from the row
#                above (the rows of one figure against several peers)
#   CORING_KEY   coring's figure, e.g. coring:yield_rt ("-": none); the epoll engine and static
#                LTO columns show the same figure of implementations coring-epoll and coring-lto,
#                when there is one
#   PEER_NAME    the peer as the table shows it ("-": none)
#   PEER_KEY     the peer's figure, e.g. go:yield_rt ("-": none)
#   RATIO        faster: peer / coring, shown "3.1x faster"; of: coring / peer, shown "1.4x";
#                -: no ratio
#   CHECKS       "-" (information only) or a comma-separated list, all of which must hold:
#                ratio>=X, ratio<=X, value<=X, value<X (value is coring's median), max<=X
#                (coring's largest figure over the rounds: a count that must stay zero)
#   GOAL_TEXT    the goal as the table shows it
#   NOTE_KEY, NOTE_SUFFIX  an extra figure (its median) shown after the peer's value, e.g.
#                go:yield_switch "/switch" gives "113 (110..120); 56.6/switch"
bench_row() {
  local figure=$1 coring_key=$2 peer_name=$3 peer_key=$4 ratio_kind=$5 checks=$6 goal=$7
  local note_key=${8:-} note_suffix=${9:-}
  local coring=${BENCH_MED[$coring_key]:-} peer=${BENCH_MED[$peer_key]:-}
  local coring_cell peer_cell ratio_cell met lto_cell=""
  coring_cell="" peer_cell=""
  [[ $coring_key != - ]] && coring_cell=$(bench_cell "$coring_key")
  local lto_key=${coring_key/#coring:/coring-lto:} epoll_key=${coring_key/#coring:/coring-epoll:}
  local epoll_cell=""
  [[ $coring_key == coring:* && -n ${BENCH_MED[$lto_key]:-} ]] && lto_cell=$(bench_cell "$lto_key")
  [[ $coring_key == coring:* && -n ${BENCH_MED[$epoll_key]:-} ]] &&
    epoll_cell=$(bench_cell "$epoll_key")
  [[ $peer_key != - ]] && peer_cell=$(bench_cell "$peer_key")
  if [[ -n $note_key && -n ${BENCH_MED[$note_key]:-} ]]; then
    peer_cell+="; $(bench_num "${BENCH_MED[$note_key]}")$note_suffix"
  fi
  [[ $peer_name == - ]] && peer_name=""
  local ratio=""
  if [[ -n $coring && -n $peer && $ratio_kind != - ]]; then
    ratio=$(awk -v c="$coring" -v p="$peer" -v k="$ratio_kind" \
      'BEGIN { if (k == "faster") printf "%.6g", (c > 0 ? p / c : 0); else printf "%.6g", (p > 0 ? c / p : 0) }')
  fi
  ratio_cell=""
  if [[ -n $ratio ]]; then
    ratio_cell="$(awk -v r="$ratio" 'BEGIN { printf (r >= 100 ? "%.0f" : "%.3g"), r }')x"
    [[ $ratio_kind == faster ]] && ratio_cell+=" faster"
  fi
  if [[ $checks == - ]]; then
    met=""
  elif [[ -z $coring ]] || { [[ $checks == *ratio* ]] && [[ -z $ratio ]]; }; then
    met="n/a"
    BENCH_GOALS=$((BENCH_GOALS + 1))
  else
    met=$(awk -v checks="$checks" -v value="$coring" -v ratio="$ratio" \
      -v most="${BENCH_MAX[$coring_key]:-$coring}" 'BEGIN {
      n = split(checks, list, ","); ok = 1
      for (i = 1; i <= n; i++) {
        c = list[i]; lhs = (c ~ /^ratio/) ? ratio + 0 : (c ~ /^max/) ? most + 0 : value + 0
        if (index(c, "<=")) { split(c, p, "<="); ok = ok && lhs <= p[2] + 0 }
        else if (index(c, ">=")) { split(c, p, ">="); ok = ok && lhs >= p[2] + 0 }
        else if (index(c, "<")) { split(c, p, "<"); ok = ok && lhs < p[2] + 0 }
        else if (index(c, ">")) { split(c, p, ">"); ok = ok && lhs > p[2] + 0 }
        else ok = 0
      }
      print ok ? "yes" : "**NO**" }')
    BENCH_GOALS=$((BENCH_GOALS + 1))
    [[ $met == yes ]] && BENCH_GOALS_MET=$((BENCH_GOALS_MET + 1))
  fi
  local shown=$figure
  [[ $figure == "$BENCH_LAST_FIGURE" ]] && shown=""
  BENCH_LAST_FIGURE=$figure
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$shown" "$coring_cell" "$epoll_cell" \
    "$lto_cell" "$peer_name" "$peer_cell" "$ratio_cell" "$goal" "$met"
}
