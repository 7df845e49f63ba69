#!/usr/bin/env bash
# The benchmark suite, from a fresh clone: installs what is missing (scripts/deps.sh), makes a
# release build of its own (build-release), builds the peer programs of bench/peers/ into it,
# then runs every figure for coring and its peers, interleaved over several rounds, and prints
# one markdown table of medians (min..max) with ratios and the project's goals.
#
#   scripts/bench.sh                      everything, 3 rounds (a few minutes)
#   ROUNDS=1 scripts/bench.sh             a quick look
#   SECTIONS=micro scripts/bench.sh       only some sections (micro, scale)
#
# Knobs (environment):
#   ROUNDS [3]           rounds; every figure is the median over them
#   SECTIONS [micro scale]
#   BUILD_DIR [build-release]   the build directory (results go to BUILD_DIR/bench-results/)
#   LTO [true]           -Db_lto for coring and the C++ peers
#   BENCH_CPU [0]        the CPU every measured program is pinned to (taskset -c)
#   MIN_TIME [0.5]       Google Benchmark's --benchmark_min_time per micro figure, seconds
#   PEER_SCALE [1]       multiplies the peers' micro iteration counts
#   SCALE_N [1000000]    coroutines (and goroutines) of the scale section
#   WARMUP [1]           0: skip the uncounted warm-up round (round 0) of the sections that
#                        have one
#
# Method: each measured program runs alone, pinned to BENCH_CPU, under timeout(1). Within a
# round the programs of a section alternate between coring and its peers, in reverse order on
# even rounds. Micro figures are wall-clock nanoseconds per operation (coring: Google Benchmark
# real time; peers: a fixed count after a warm-up pass); memory figures are VmRSS deltas from
# /proc/self/status, each in a fresh process. Go runs with GOMAXPROCS=1, Boost.Fiber on one
# thread: everything measured is single-threaded, as a coring container is.
#
# Output: the table on stdout and in BUILD_DIR/bench-results/latest.md (a copy of the run's
# table.md); raw figures, medians and logs in BUILD_DIR/bench-results/run-<time>/. Exit status
# 0 when every step ran (goals missed are reported in the table, not as a failure).
#
# Adding a section (say `echo`): write echo_prepare (optional: queue steps with bench_queue,
# check what it needs), echo_warmup (optional: runs once before round 1, not counted),
# echo_round (runs once per round: `bench_steps echo` for the queued steps, or its own code that
# starts servers and calls bench_step / bench_record) and echo_rows (its table rows, bench_row),
# then add it to SECTIONS' default. The machinery is in scripts/bench_lib.sh.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$PWD
source scripts/bench_lib.sh

ROUNDS=${ROUNDS:-3}
SECTIONS=${SECTIONS:-micro scale}
BUILD_DIR=${BUILD_DIR:-build-release}
LTO=${LTO:-true}
BENCH_CPU=${BENCH_CPU:-0}
MIN_TIME=${MIN_TIME:-0.5}
PEER_SCALE=${PEER_SCALE:-1}
SCALE_N=${SCALE_N:-1000000}
WARMUP=${WARMUP:-1}

[[ $BUILD_DIR == /* ]] || BUILD_DIR=$root/$BUILD_DIR
bin=$BUILD_DIR/bench

# ---------------------------------------------------------------------------------------------
# Build

build_all() {
  local log=$BUILD_DIR/bench-build.log
  mkdir -p "$BUILD_DIR"
  # werror off: the test builds enforce warnings; a new -O3-only false positive of the compiler
  # (g++ 12's -Wrestrict, for one) must not stop a measurement. Warnings stay in the log.
  local options=(-Dbuildtype=release -Db_lto="$LTO" -Dwerror=false -Dtests=false
    -Dsamples=false -Dbenchmarks=true)
  if [[ -f $BUILD_DIR/build.ninja ]]; then
    meson configure "$BUILD_DIR" "${options[@]}" >"$log" 2>&1
  else
    meson setup "$BUILD_DIR" "${options[@]}" >"$log" 2>&1
  fi || { tail -40 "$log"; return 1; }
  local targets=(bench/coring_bench bench/scale_bench bench/peers/context_peer)
  if grep -q 'bench/peers/fiber_peer' "$BUILD_DIR/build.ninja"; then
    targets+=(bench/peers/fiber_peer)
  else
    echo "bench: Boost.Fiber not found, its peer is skipped (scripts/deps.sh installs it)" >&2
  fi
  ninja -C "$BUILD_DIR" "${targets[@]}" >>"$log" 2>&1 || { tail -60 "$log"; return 1; }
  # The Go peer: a single file, no module; caches under the build directory, output there too.
  if command -v go >/dev/null; then
    mkdir -p "$BUILD_DIR/go"
    GOCACHE=$BUILD_DIR/go/cache GOPATH=$BUILD_DIR/go/path GO111MODULE=off GOFLAGS="" \
      GOTMPDIR=$BUILD_DIR/go go build -o "$bin/peers/go_peer" bench/peers/go_peer.go \
      >>"$log" 2>&1 || { tail -20 "$log"; return 1; }
  else
    echo "bench: go not found, the Go peer is skipped (scripts/deps.sh installs it)" >&2
  fi
}

# ---------------------------------------------------------------------------------------------
# Section "micro": switch, create, channel (Google Benchmark for coring; fixed counts for peers)

micro_prepare() {
  bench_queue micro coring-micro 300 "$BENCH_CPU" "$bin/coring_bench" --results \
    --benchmark_min_time="$MIN_TIME" --benchmark_color=false
  bench_queue micro fcontext 120 "$BENCH_CPU" "$bin/peers/context_peer"
  [[ -x $bin/peers/fiber_peer ]] &&
    bench_queue micro fiber-micro 300 "$BENCH_CPU" "$bin/peers/fiber_peer" "$PEER_SCALE"
  [[ -x $bin/peers/go_peer ]] &&
    bench_queue micro go-micro 300 "$BENCH_CPU" env GOMAXPROCS=1 "$bin/peers/go_peer" micro \
      "$PEER_SCALE"
  return 0
}

micro_round() { bench_steps micro; }

micro_rows() {
  local rt="yield+resume round trip, ns (= 2 switches)"
  bench_row "$rt" coring:yield_rt "raw jump_fcontext (2 jumps)" fcontext:jump_rt of "ratio<=1.5" \
    "≤ 1.5x raw"
  bench_row "$rt" coring:yield_rt "Boost.Fiber yield ping-pong" fiber:yield_rt faster "ratio>=3" \
    "≥ 3x faster" fiber:yield_switch "/switch"
  bench_row "$rt" coring:yield_rt "Go Gosched ping-pong" go:yield_rt faster "ratio>=3" \
    "≥ 3x faster" go:yield_switch "/switch"
  local sched="sleep(0) ping-pong via the ready queue, ns per round trip (2 switches)"
  bench_row "$sched" coring:sched_rt "Boost.Fiber yield ping-pong" fiber:yield_rt faster - "(info)"
  bench_row "$sched" coring:sched_rt "Go Gosched ping-pong" go:yield_rt faster - "(info)"
  local create="create + run to end (empty, pooled stacks), ns per coroutine"
  bench_row "$create" coring:create_end "Go spawn+wait" go:spawn_wait faster \
    "value<=100,ratio>=4" "≤ 100 ns and ≥ 4x faster"
  bench_row "$create" coring:create_end "Boost.Fiber create+join (pooled stacks)" \
    fiber:create_join faster - "(info)"
  local wait="create + WaitGroup wait, ns per coroutine"
  bench_row "$wait" coring:create_wait "Go spawn+wait" go:spawn_wait faster - "(info)"
  # shellcheck disable=SC2016  # backticks: a markdown code span, not a command
  local chan='unbuffered `Channel<long>` ping-pong, ns per round trip'
  bench_row "$chan" coring:chan_rt "Go unbuffered chan" go:chan_rt faster "ratio>=3" "≥ 3x faster"
  bench_row "$chan" coring:chan_rt "Boost.Fiber unbuffered_channel" fiber:chan_rt faster - "(info)"
  bench_row "the same with a 1 s timeout on every pop, ns per round trip" coring:chan_timeout_rt \
    - - - - "(info)"
  bench_row "user timer: after(1 h) + clear(), ns per timer" coring:timer_after_clear - - - - \
    "(info)"
}

# ---------------------------------------------------------------------------------------------
# Section "scale": a million coroutines (fresh process each: RSS deltas)

scale_prepare() {
  local n=$SCALE_N
  # The machine's floor: first-touch page faults, one per stack (this VM: 1.5-2.5 us each).
  bench_queue scale machine-touch 120 "$BENCH_CPU" "$bin/scale_bench" touch "$n"
  bench_queue scale coring-parked 300 "$BENCH_CPU" "$bin/scale_bench" parked "$n"
  [[ -x $bin/peers/go_peer ]] &&
    bench_queue scale go-parked 300 "$BENCH_CPU" env GOMAXPROCS=1 "$bin/peers/go_peer" parked "$n"
  bench_queue scale coring-sleep 300 "$BENCH_CPU" "$bin/scale_bench" sleep "$n"
  [[ -x $bin/peers/go_peer ]] &&
    bench_queue scale go-sleep 300 "$BENCH_CPU" env GOMAXPROCS=1 "$bin/peers/go_peer" sleep "$n"
  return 0
}

# Round 0, not counted: the first process in a fresh VM that touches gigabytes pays for the host
# backing that memory (seen here: 5x slower spawns), so the biggest users run once beforehand.
scale_warmup() {
  bench_step coring-parked 300 "$BENCH_CPU" "$bin/scale_bench" parked "$SCALE_N"
  [[ -x $bin/peers/go_peer ]] &&
    bench_step go-parked 300 "$BENCH_CPU" env GOMAXPROCS=1 "$bin/peers/go_peer" parked "$SCALE_N"
  return 0
}

scale_round() { bench_steps scale; }

scale_rows() {
  local m
  m=$(awk -v n="$SCALE_N" 'BEGIN { if (n % 1000000 == 0) printf "%dM", n / 1e6; else print n }')
  bench_row "$m parked on one Channel (pop): RSS, bytes per coroutine" coring:park_rss \
    "Go: goroutines blocked on a chan" go:park_rss of "value<=4608" "≤ 4.5 KiB (4608 B)"
  bench_row "$m parked: create until all parked, ms" coring:park_spawn "Go" go:park_spawn of - \
    "(info)"
  bench_row "$m parked: create until all parked, ms" coring:park_spawn \
    "machine: $m first-touch page faults" machine:touch of - "(info: the floor)"
  bench_row "$m parked: close + wake all until all ended, ms" coring:park_wake "Go" go:park_wake \
    of - "(info)"
  bench_row "$m × sleep(1 s): wall from first create to all woken, ms" coring:sleep_wall \
    "Go: time.Sleep(1s)" go:sleep_wall of "value<2000" "< 2000 ms"
  bench_row "$m × sleep(1 s): of which the create loop, ms" coring:sleep_spawn "Go" \
    go:sleep_spawn of - "(info)"
  bench_row "$m × sleep(1 s): of which the create loop, ms" coring:sleep_spawn \
    "machine: $m first-touch page faults" machine:touch of - "(info: the floor)"
  bench_row "$m × sleep(1 s): peak RSS of the process, MiB" coring:sleep_peak_rss "Go" \
    go:sleep_peak_rss of - "(info)"
}

# ---------------------------------------------------------------------------------------------
# Run

scripts/deps.sh || { echo "bench: installing dependencies failed" >&2; exit 1; }
command -v taskset >/dev/null || { echo "bench: taskset (util-linux) is missing" >&2; exit 1; }
for section in $SECTIONS; do
  declare -F "${section}_round" >/dev/null || { echo "bench: no section '$section'" >&2; exit 1; }
done

echo "bench: building into $BUILD_DIR (release, LTO $LTO)" >&2
if ! build_all; then
  [[ $LTO == true ]] || { echo "bench: build failed" >&2; exit 1; }
  echo "bench: the LTO build failed; building without LTO" >&2
  LTO=false
  build_all || { echo "bench: build failed" >&2; exit 1; }
fi

load_before=$(cut -d' ' -f1 /proc/loadavg)  # other work on the machine skews everything
stamp=$(date -u +%Y%m%d-%H%M%S)
bench_init "$BUILD_DIR/bench-results/run-$stamp"
for section in $SECTIONS; do
  if declare -F "${section}_prepare" >/dev/null; then "${section}_prepare"; fi
done

if [[ $WARMUP != 0 ]]; then
  BENCH_ROUND=0
  echo "bench: warm-up (not counted)" >&2
  for section in $SECTIONS; do
    if declare -F "${section}_warmup" >/dev/null; then "${section}_warmup"; fi
  done
fi
for ((BENCH_ROUND = 1; BENCH_ROUND <= ROUNDS; BENCH_ROUND++)); do
  echo "bench: round $BENCH_ROUND of $ROUNDS" >&2
  for section in $SECTIONS; do "${section}_round"; done
done
bench_summarize

cpu_model=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
go_version=$(command -v go >/dev/null && go version | awk '{ print $3 }')
boost_version=$(awk '/define BOOST_LIB_VERSION/ { gsub(/"/, "", $3); sub(/_/, ".", $3); print $3 }' \
  /usr/include/boost/version.hpp 2>/dev/null)
table=$BENCH_OUT/table.md
{
  echo "coring benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC'); $(uname -sr) $(uname -m); CPU:" \
    "${cpu_model:-unknown} ($(nproc) CPUs); g++ $(g++ -dumpfullversion), ${go_version:-no go}," \
    "Boost ${boost_version:-?}; release build, LTO $LTO; pinned to CPU $BENCH_CPU; median of" \
    "$ROUNDS round(s) (min..max); load average before the run: $load_before"
  echo
  bench_table_header
  for section in $SECTIONS; do "${section}_rows"; done
  echo
  echo "Goals met: $BENCH_GOALS_MET of $BENCH_GOALS."
  if [[ -s $BENCH_FAILURES ]]; then
    echo
    echo "Failures:"
    sed 's/^/- /' "$BENCH_FAILURES"
  fi
} >"$table"
cp "$table" "$BUILD_DIR/bench-results/latest.md"
cat "$table"
echo >&2
echo "bench: table in $BUILD_DIR/bench-results/latest.md; raw figures and logs in $BENCH_OUT" >&2
[[ ! -s $BENCH_FAILURES ]]
