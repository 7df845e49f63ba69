#!/usr/bin/env bash
# The benchmark suite, from a fresh clone: installs what is missing (scripts/deps.sh), makes a
# release build of its own (build-release), builds the peer programs of bench/peers/ into it,
# then runs every figure for coring and its peers, interleaved over several rounds, and prints
# one markdown table of medians (min..max) with ratios and the project's goals.
#
#   scripts/bench.sh                      everything, 3 rounds (a few minutes)
#   ROUNDS=1 scripts/bench.sh             a quick look
#   SECTIONS=micro scripts/bench.sh       only some sections (micro, scale, echo, workers, http,
#                                         client, tls)
#   scripts/bench.sh http client          the same: sections as arguments
#
# Knobs (environment):
#   ROUNDS [3]           rounds; every figure is the median over them
#   SECTIONS [micro scale echo workers http client tls]
#   BUILD_DIR [build-release]   the build directory (results go to BUILD_DIR/bench-results/)
#   LTO [true]           -Db_lto for the static build (the second coring column) and the C++
#                        peers; the first coring column is always the shared library
#   BENCH_CPU [0]        the CPU every measured program is pinned to (taskset -c)
#   MIN_TIME [0.5]       Google Benchmark's --benchmark_min_time per micro figure, seconds
#   PEER_SCALE [1]       multiplies the peers' micro iteration counts
#   SCALE_N [1000000]    coroutines (and goroutines) of the scale section
#   WARMUP [1]           0: skip the uncounted warm-up round (round 0) of the sections that
#                        have one
#   ECHO_SECS [2]        measured seconds per echo run (after 0.5 s of warm-up)
#   ECHO_CONFIGS ["100x64 1000x64 100x512 1000x512"]   connections x message bytes
#   WORKERS_SECS [4]     measured seconds per run of the workers section
#   HTTP_SECS [5]        seconds per wrk run of the http section (plain and pipelined)
#   HTTP_WARMUP_SECS [1] unmeasured wrk load after each HTTP server starts (0: none)
#   HTTP_AB_N [200000]   requests per ab -k run of the http section
#   NGINX [/usr/sbin/nginx]   the nginx binary the http section runs
#   HTTP_DIRTY_PCT [5] HTTP_RETRIES [3]   redo an HTTP run (http and client sections) during
#                        which other processes used more than this % of the machine, at most
#                        this many times
#   CLIENT_SECS [3]      seconds per client run of the client section
#   CLIENT_CONNS [100]   concurrent keep-alive connections of each client
#   CLIENT_FILE_BYTES [1024]   the size of the static file the clients fetch from nginx
#   CLIENT_WARMUP_SECS [1]     unmeasured wrk load after nginx starts (0: none)
#   CLIENT_IMPLS ["coring go wrk"]   the clients, in order (also: coring-epoll, coring-lto)
#   TLS_SECS [4]         seconds per wrk (keep-alive) and openssl s_time (resumption) run of the
#                        tls section
#   TLS_AB_N [10000]     new connections (full handshakes) per ab run of the tls section
#   TLS_CIPHERSUITE [TLS_AES_128_GCM_SHA256]   the TLS 1.3 suite both HTTPS servers are pinned to
#   TLS_CLIENT_IMPLS ["coring go wrk"]   the HTTPS clients of the tls section, in order
#                        (its client runs use CLIENT_SECS, CLIENT_CONNS and CLIENT_FILE_BYTES)
#
# coring is measured as an embedding program gets it: the library built with the README's
# options (release, no LTO) and installed into a private prefix, and the measured programs
# compiled with `g++ -O2` against it through pkg-config, linked to the shared library. That is
# the "coring" column, the one ratios and goals use; the "static LTO" column beside it is the
# same program linked statically to an LTO build (BUILD_DIR). The "coring" column runs the
# io_uring engine (CORING_ENGINE=io_uring); the "epoll engine" column beside it is the same
# shared-library program with CORING_ENGINE=epoll, for the micro figures and the echo and HTTP
# servers.
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
SECTIONS=${SECTIONS:-micro scale echo workers http client tls}
(($# > 0)) && SECTIONS="$*"  # scripts/bench.sh client: the same as SECTIONS=client
BUILD_DIR=${BUILD_DIR:-build-release}
LTO=${LTO:-true}
BENCH_CPU=${BENCH_CPU:-0}
MIN_TIME=${MIN_TIME:-0.5}
PEER_SCALE=${PEER_SCALE:-1}
SCALE_N=${SCALE_N:-1000000}
WARMUP=${WARMUP:-1}
ECHO_SECS=${ECHO_SECS:-2}
ECHO_CONFIGS=${ECHO_CONFIGS:-100x64 1000x64 100x512 1000x512}

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
    -Dsamples=true -Dbenchmarks=true)
  if [[ -f $BUILD_DIR/build.ninja ]]; then
    meson configure "$BUILD_DIR" "${options[@]}" >"$log" 2>&1
  else
    meson setup "$BUILD_DIR" "${options[@]}" >"$log" 2>&1
  fi || { tail -40 "$log"; return 1; }
  local targets=(bench/coring_bench bench/scale_bench bench/peers/context_peer
    bench/peers/echo_load bench/peers/epoll_echo bench/peers/uring_echo bench/peers/churn_load
    bench/peers/http_limit bench/peers/http_limit_uring samples/echo_server bench/http_client_load)
  if grep -q 'bench/peers/fiber_peer' "$BUILD_DIR/build.ninja"; then
    targets+=(bench/peers/fiber_peer)
  else
    echo "bench: Boost.Fiber not found, its peer is skipped (scripts/deps.sh installs it)" >&2
  fi
  ninja -C "$BUILD_DIR" "${targets[@]}" >>"$log" 2>&1 || { tail -60 "$log"; return 1; }
  build_shared || { tail -60 "$log"; return 1; }
  # The Go peer: a single file, no module; caches under the build directory, output there too.
  if command -v go >/dev/null; then
    mkdir -p "$BUILD_DIR/go"
    GOCACHE=$BUILD_DIR/go/cache GOPATH=$BUILD_DIR/go/path GO111MODULE=off GOFLAGS="" \
      GOTMPDIR=$BUILD_DIR/go go build -o "$bin/peers/go_peer" bench/peers/go_peer.go \
      >>"$log" 2>&1 || { tail -20 "$log"; return 1; }
    GOCACHE=$BUILD_DIR/go/cache GOPATH=$BUILD_DIR/go/path GO111MODULE=off GOFLAGS="" \
      GOTMPDIR=$BUILD_DIR/go go build -o "$bin/peers/go_echo_server" bench/peers/echo_server.go \
      >>"$log" 2>&1 || { tail -20 "$log"; return 1; }
    GOCACHE=$BUILD_DIR/go/cache GOPATH=$BUILD_DIR/go/path GO111MODULE=off GOFLAGS="" \
      GOTMPDIR=$BUILD_DIR/go go build -o "$bin/peers/go_http_server" bench/peers/http_server.go \
      >>"$log" 2>&1 || { tail -20 "$log"; return 1; }
    GOCACHE=$BUILD_DIR/go/cache GOPATH=$BUILD_DIR/go/path GO111MODULE=off GOFLAGS="" \
      GOTMPDIR=$BUILD_DIR/go go build -o "$bin/peers/go_http_client" bench/peers/http_client.go \
      >>"$log" 2>&1 || { tail -20 "$log"; return 1; }
  else
    echo "bench: go not found, the Go peer is skipped (scripts/deps.sh installs it)" >&2
  fi
}

# The programs an embedder would build: the README's build (release, no LTO) installed into
# BUILD_DIR/shared-prefix, and each measured program compiled with g++ -O2 against it through
# pkg-config (shared library, found through an rpath), into $bin/shared/.
build_shared() {
  local log=$BUILD_DIR/bench-build.log dir=$BUILD_DIR/shared-lib prefix=$BUILD_DIR/shared-prefix
  local options=(-Dbuildtype=release -Db_lto=false -Dwerror=false -Dtests=false
    -Dbenchmarks=false -Dsamples=false --prefix="$prefix")
  if [[ -f $dir/build.ninja ]]; then
    meson configure "$dir" "${options[@]}" >>"$log" 2>&1
  else
    meson setup "$dir" "${options[@]}" >>"$log" 2>&1
  fi || return 1
  ninja -C "$dir" >>"$log" 2>&1 && meson install -C "$dir" --quiet >>"$log" 2>&1 || return 1
  local pc_dir lib_dir flags
  pc_dir=$(dirname "$(find "$prefix" -name coring.pc | head -1)")
  lib_dir=$(dirname "$pc_dir")
  # shellcheck disable=SC2207  # pkg-config's words
  flags=($(PKG_CONFIG_PATH=$pc_dir pkg-config --cflags --libs coring))
  mkdir -p "$bin/shared"
  local program
  for program in bench/coring_bench bench/scale_bench samples/echo_server samples/tcp_server \
    samples/http_server bench/http_client_load; do
    local extra=()
    [[ $program == bench/coring_bench ]] && extra=(-lbenchmark -lpthread)
    g++ -O2 -std=c++20 -o "$bin/shared/$(basename "$program")" "$program.cpp" "${flags[@]}" \
      "${extra[@]}" -Wl,-rpath,"$lib_dir" >>"$log" 2>&1 || return 1
  done
}

# ---------------------------------------------------------------------------------------------
# Section "micro": switch, create, channel (Google Benchmark for coring; fixed counts for peers)

micro_prepare() {
  bench_queue micro coring-micro 300 "$BENCH_CPU" env CORING_ENGINE=io_uring \
    "$bin/shared/coring_bench" --results --benchmark_min_time="$MIN_TIME" --benchmark_color=false
  bench_queue micro coring-micro-epoll 300 "$BENCH_CPU" env CORING_ENGINE=epoll \
    CORING_BENCH_IMPL=coring-epoll "$bin/shared/coring_bench" --results \
    --benchmark_min_time="$MIN_TIME" --benchmark_color=false
  bench_queue micro coring-micro-lto 300 "$BENCH_CPU" env CORING_ENGINE=io_uring \
    CORING_BENCH_IMPL=coring-lto \
    "$bin/coring_bench" --results --benchmark_min_time="$MIN_TIME" --benchmark_color=false
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
  # The rows that go through the engine's loop (the ready queue's polls, timers): the io_uring
  # engine must not be slower than the epoll engine. 3%: what one figure moves between rounds.
  local row key
  for row in "sched_rt:$sched" "chan_timeout_rt:the same with a 1 s timeout on every pop, ns per round trip" \
    "timer_after_clear:user timer: after(1 h) + clear(), ns per timer"; do
    key=${row%%:*}
    bench_row "${row#*:}" "coring:$key" "coring, epoll engine" "coring-epoll:$key" faster \
      "ratio>=0.97" "io_uring ≥ epoll (3% noise)"
  done
}

# ---------------------------------------------------------------------------------------------
# Section "scale": a million coroutines (fresh process each: RSS deltas)

scale_prepare() {
  local n=$SCALE_N
  # The machine's floor: first-touch page faults, one per stack (this VM: 1.5-2.5 us each).
  bench_queue scale machine-touch 120 "$BENCH_CPU" "$bin/scale_bench" touch "$n"
  bench_queue scale coring-parked 300 "$BENCH_CPU" "$bin/shared/scale_bench" parked "$n"
  bench_queue scale coring-parked-lto 300 "$BENCH_CPU" env CORING_BENCH_IMPL=coring-lto \
    "$bin/scale_bench" parked "$n"
  [[ -x $bin/peers/go_peer ]] &&
    bench_queue scale go-parked 300 "$BENCH_CPU" env GOMAXPROCS=1 "$bin/peers/go_peer" parked "$n"
  bench_queue scale coring-sleep 300 "$BENCH_CPU" "$bin/shared/scale_bench" sleep "$n"
  bench_queue scale coring-sleep-lto 300 "$BENCH_CPU" env CORING_BENCH_IMPL=coring-lto \
    "$bin/scale_bench" sleep "$n"
  [[ -x $bin/peers/go_peer ]] &&
    bench_queue scale go-sleep 300 "$BENCH_CPU" env GOMAXPROCS=1 "$bin/peers/go_peer" sleep "$n"
  return 0
}

# Round 0, not counted: the first process in a fresh VM that touches gigabytes pays for the host
# backing that memory (seen here: 5x slower spawns), so the biggest users run once beforehand.
scale_warmup() {
  bench_step coring-parked 300 "$BENCH_CPU" "$bin/shared/scale_bench" parked "$SCALE_N"
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
  bench_row "$m × sleep(1 s), stacks pooled (2nd round in the container): wall, ms" \
    coring:sleep_wall_warm - - - "value<2000" "< 2000 ms"
  bench_row "$m × sleep(1 s), stacks pooled: of which the create loop, ms" \
    coring:sleep_spawn_warm - - - - "(info)"
  bench_row "$m × sleep(1 s), fresh process: wall from first create to all woken, ms" \
    coring:sleep_wall "Go: time.Sleep(1s), fresh process" go:sleep_wall of - \
    "(info: < 2000 ms is out of reach while the create loop alone costs the page-fault floor)"
  bench_row "$m × sleep(1 s): of which the create loop, ms" coring:sleep_spawn "Go" \
    go:sleep_spawn of - "(info)"
  bench_row "$m × sleep(1 s): of which the create loop, ms" coring:sleep_spawn \
    "machine: $m first-touch page faults" machine:touch of - "(info: the floor)"
  bench_row "$m × sleep(1 s): peak RSS of the process, MiB" coring:sleep_peak_rss "Go" \
    go:sleep_peak_rss of - "(info)"
}

# ---------------------------------------------------------------------------------------------
# Section "echo": TCP echo round trips per second. coring's samples/echo_server (a coroutine per
# connection) against Go's net.Conn echo server (GOMAXPROCS=1, a goroutine per connection) and
# a C epoll server with no runtime at all (the floor), all driven by the same closed-loop client
# (bench/peers/echo_load: N connections, one message in flight each). Servers run on
# BENCH_CPU; the client runs there too ("single": both on one CPU, which repeats within a few
# percent on this VM) or on the other CPU ("split": two busy vCPUs lose ~30% of their time to
# the host here, so it swings widely). The goal is judged on "single".

echo_servers=(coring coring-epoll go epoll uring)

# echo_measure IMPL CONNS SIZE MODE PORT: one run; records round trips/s and the server's CPU
# time per round trip.
echo_measure() {
  local impl=$1 conns=$2 size=$3 mode=$4 port=$5
  local client_cpu=$BENCH_CPU
  [[ $mode == split ]] && client_cpu=$(((BENCH_CPU + 1) % $(nproc)))
  local log="$BENCH_OUT/logs/r$BENCH_ROUND.echo-$impl-${conns}x$size-$mode"
  local server=()
  case $impl in
    coring) server=(env CORING_ENGINE=io_uring "$bin/shared/echo_server" --port "$port") ;;
    coring-epoll) server=(env CORING_ENGINE=epoll "$bin/shared/echo_server" --port "$port") ;;
    go) server=(env GOMAXPROCS=1 "$bin/peers/go_echo_server" -port "$port") ;;
    epoll) server=("$bin/peers/epoll_echo" --port "$port") ;;
    uring) server=("$bin/peers/uring_echo" --port "$port") ;;
  esac
  [[ -x ${server[0]} || ${server[0]} == env ]] || return 0
  timeout -k 5 $((ECHO_SECS + 60)) taskset -c "$BENCH_CPU" "${server[@]}" </dev/null \
    >"$log.server" 2>&1 &
  local pid=$! tries
  for ((tries = 0; tries < 50; tries++)); do
    grep -q listening "$log.server" 2>/dev/null && break
    sleep 0.1
  done
  # timeout(1)'s child is the server (taskset and env exec into it).
  local server_pid ticks_before ticks_after output status
  server_pid=$(pgrep -P "$pid" | head -1)
  ticks_before=$(awk '{ print $14 + $15 }' "/proc/$server_pid/stat" 2>/dev/null || echo 0)
  output=$(timeout -k 5 $((ECHO_SECS + 40)) taskset -c "$client_cpu" "$bin/peers/echo_load" \
    --port "$port" --conns "$conns" --size "$size" --warmup 0.5 --seconds "$ECHO_SECS" \
    </dev/null 2>"$log.client")
  status=$?
  ticks_after=$(awk '{ print $14 + $15 }' "/proc/$server_pid/stat" 2>/dev/null || echo 0)
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  echo "$output" >>"$log.client"
  if ((status != 0)); then
    bench_fail "echo $impl ${conns}x$size $mode: client exit $status: $(tail -c 200 "$log.client")"
    return 0
  fi
  local rate
  rate=$(sed -nE 's/.*round_trips_per_s=([0-9.]+).*/\1/p' <<<"$output")
  [[ -n $rate ]] || { bench_fail "echo $impl: no result"; return 0; }
  bench_record "$impl" "echo_${conns}x${size}_$mode" "$rate" "rt/s"
  # The server's CPU per round trip over the whole client run (0.5 s warm-up included).
  awk -v t=$((ticks_after - ticks_before)) -v hz="$(getconf CLK_TCK)" -v r="$rate" \
    -v s="$ECHO_SECS" 'BEGIN { if (r > 0) printf "%.6g\n", t / hz * 1e6 / (r * (s + 0.5)) }' |
    while read -r us; do bench_record "$impl" "echo_cpu_${conns}x${size}_$mode" "$us" "us"; done
  printf '  %-24s %s rt/s\n' "echo $impl ${conns}x$size $mode" "$rate" >&2
}

echo_round() {
  local config conns size mode impl port=$((20000 + BENCH_ROUND * 200))
  local order=("${echo_servers[@]}")
  ((BENCH_ROUND % 2 == 0)) && order=("$(printf '%s\n' "${echo_servers[@]}" | tac)")
  for config in $ECHO_CONFIGS; do
    conns=${config%x*}
    size=${config#*x}
    for mode in single split; do
      for impl in ${order[*]}; do
        port=$((port + 1))
        echo_measure "$impl" "$conns" "$size" "$mode" "$port"
      done
    done
  done
}

echo_rows() {
  local config conns size figure cpu_goal cpu_text
  for config in $ECHO_CONFIGS; do
    conns=${config%x*}
    size=${config#*x}
    figure="TCP echo, $conns conns × $size B, round trips/s, server and client on one CPU"
    bench_row "$figure" "coring:echo_${config}_single" "Go net.Conn server" \
      "go:echo_${config}_single" of "ratio>=1.5" "≥ 1.5x Go"
    bench_row "$figure" "coring:echo_${config}_single" "epoll server in C, no runtime (floor)" \
      "epoll:echo_${config}_single" of - "(info)"
    bench_row "$figure" "coring:echo_${config}_single" "coring, epoll engine" \
      "coring-epoll:echo_${config}_single" of "ratio>=0.97" "io_uring ≥ epoll (3% noise)"
    figure="TCP echo, $conns conns × $size B, epoll engine, round trips/s, one CPU"
    bench_row "$figure" "coring-epoll:echo_${config}_single" \
      "epoll server in C, no runtime (floor)" "epoll:echo_${config}_single" of "ratio>=0.95" \
      "within 5% of the floor"
    figure="TCP echo, $conns conns × $size B, round trips/s, server CPU 0, client CPU 1"
    bench_row "$figure" "coring:echo_${config}_split" "Go net.Conn server" \
      "go:echo_${config}_split" of - "(info)"
    bench_row "$figure" "coring:echo_${config}_split" "epoll server in C, no runtime (floor)" \
      "epoll:echo_${config}_split" of - "(info)"
    figure="TCP echo, $conns conns × $size B, server CPU per round trip (single CPU), us"
    bench_row "$figure" "coring:echo_cpu_${config}_single" "Go net.Conn server" \
      "go:echo_cpu_${config}_single" faster - "(info)"
    # 1000 connections: the ring's batching should beat one system call per operation.
    cpu_goal=- cpu_text="(info)"
    if ((conns >= 1000)); then cpu_goal="ratio>=1.176" cpu_text="io_uring ≥ 15% less CPU"; fi
    bench_row "$figure" "coring:echo_cpu_${config}_single" "epoll server in C, no runtime (floor)" \
      "epoll:echo_cpu_${config}_single" faster "$cpu_goal" "$cpu_text"
    # What the best use of io_uring costs with no runtime at all: the bound on that goal.
    bench_row "$figure" "uring:echo_cpu_${config}_single" \
      "epoll server in C, no runtime (floor)" "epoll:echo_cpu_${config}_single" faster - \
      "(info: io_uring in C, multishot recv, no runtime)"
  done
}

# ---------------------------------------------------------------------------------------------
# Section "workers": samples/tcp_server (coring::Server under coring::WorkerPool, shared-library
# build) with several processes. Echo throughput with one worker and with two (echo_load, 100
# connections x 64 B), and connection churn (bench/peers/churn_load: 4 threads connect, send a
# line, read the echo, close) with two workers, once undisturbed and once while the master gets
# SIGUSR1 five times (a graceful reload each): the dip a reload costs, and failed round trips
# (goal: zero). Nothing is pinned: two workers need both CPUs, and the client shares them.

WORKERS_SECS=${WORKERS_SECS:-4}

# workers_start WORKERS PORT LOG: starts the server under timeout(1); sets workers_pid (the
# timeout process) and workers_master (the server's master process).
workers_start() {
  local workers=$1 port=$2 log=$3 tries
  timeout -k 5 $((WORKERS_SECS + 60)) "$bin/shared/tcp_server" --port "$port" \
    --workers "$workers" </dev/null >"$log" 2>&1 &
  workers_pid=$!
  for ((tries = 0; tries < 50; tries++)); do
    grep -q listening "$log" 2>/dev/null && break
    sleep 0.1
  done
  workers_master=$(pgrep -P "$workers_pid" | head -1)
}

workers_stop() {
  kill -TERM "$workers_master" 2>/dev/null
  wait "$workers_pid" 2>/dev/null
}

workers_echo() {
  local workers=$1 port=$2 log="$BENCH_OUT/logs/r$BENCH_ROUND.workers-echo-$1" output status
  workers_start "$workers" "$port" "$log.server"
  output=$(timeout -k 5 $((WORKERS_SECS + 40)) "$bin/peers/echo_load" --port "$port" \
    --conns 100 --size 64 --warmup 0.5 --seconds "$WORKERS_SECS" </dev/null 2>"$log.client")
  status=$?
  workers_stop
  echo "$output" >>"$log.client"
  if ((status != 0)); then
    bench_fail "workers echo --workers $workers: client exit $status: $(tail -c 200 "$log.client")"
    return 0
  fi
  local rate
  rate=$(sed -nE 's/.*round_trips_per_s=([0-9.]+).*/\1/p' <<<"$output")
  [[ -n $rate ]] && bench_record coring "workers_echo_$workers" "$rate" "rt/s"
  printf '  %-24s %s rt/s\n' "workers echo x$workers" "$rate" >&2
}

# workers_churn KIND PORT: KIND steady (no signal) or reload (five SIGUSR1 spread over the run).
workers_churn() {
  local kind=$1 port=$2 log="$BENCH_OUT/logs/r$BENCH_ROUND.workers-churn-$1" output signal=()
  workers_start 2 "$port" "$log.server"
  [[ $kind == reload ]] && signal=(--signal "$workers_master:$(kill -l USR1):5")
  output=$(timeout -k 5 $((WORKERS_SECS + 40)) "$bin/peers/churn_load" --port "$port" \
    --threads 4 --seconds "$WORKERS_SECS" "${signal[@]}" </dev/null 2>"$log.client")
  workers_stop
  echo "$output" >>"$log.client"
  local rate failures
  rate=$(sed -nE 's/.*per_s=([0-9.]+).*/\1/p' <<<"$output")
  failures=$(sed -nE 's/.*failures=([0-9]+).*/\1/p' <<<"$output")
  if [[ -z $rate || -z $failures ]]; then
    bench_fail "workers churn $kind: no result: $(tail -c 200 "$log.client")"
    return 0
  fi
  bench_record coring "workers_churn_$kind" "$rate" "conn/s"
  bench_record coring "workers_churn_failures_$kind" "$failures" "count"
  printf '  %-24s %s conn/s, %s failed\n' "workers churn $kind" "$rate" "$failures" >&2
}

workers_prepare() {
  [[ -x $bin/shared/tcp_server && -x $bin/peers/churn_load ]] ||
    bench_fail "workers: samples/tcp_server or churn_load was not built"
}

workers_round() {
  [[ -x $bin/shared/tcp_server && -x $bin/peers/churn_load ]] || return 0
  local port=$((24000 + BENCH_ROUND * 20)) step
  local steps=("echo 1" "echo 2" "churn steady" "churn reload")
  ((BENCH_ROUND % 2 == 0)) && steps=("churn reload" "churn steady" "echo 2" "echo 1")
  for step in "${steps[@]}"; do
    port=$((port + 1))
    "workers_${step% *}" "${step#* }" "$port"
  done
}

workers_rows() {
  local figure="TCP echo through samples/tcp_server, 100 conns × 64 B, round trips/s, unpinned"
  bench_row "$figure" coring:workers_echo_2 "the same, --workers 1" coring:workers_echo_1 of \
    - "(info: 2 workers vs 1)"
  figure="connection churn (connect, line, echo, close), --workers 2, connections/s"
  bench_row "$figure" coring:workers_churn_reload "the same without reloads" \
    coring:workers_churn_steady of - "(info: the dip of 5 reloads)"
  bench_row "failed round trips during 5 reloads (max over rounds)" \
    coring:workers_churn_failures_reload - - - "max<=0" "zero"
  bench_row "failed round trips without reloads (max over rounds)" \
    coring:workers_churn_failures_steady - - - "max<=0" "zero"
}

# ---------------------------------------------------------------------------------------------
# Section "http": HTTP/1.1 GET / answering "Hello, World!" (text/plain), keep-alive.
# samples/http_server (coring::http::Server under WorkerPool, --workers 1, shared-library
# build; io_uring, and the epoll engine beside it) against Debian's nginx (one worker, access
# log off: bench/peers/nginx.conf.in), Go's net/http (GOMAXPROCS=1: bench/peers/http_server.go)
# and a server that does not parse HTTP at all (bench/peers/http_limit: a canned response per
# request head, the ceiling of this machine and load generator; bench/peers/http_limit_uring:
# the same on io_uring with multishot receives, the least CPU per request any server can spend
# here). Each server runs alone,
# pinned to BENCH_CPU (nginx: master and worker; coring: master and worker), the load
# generator pinned to the other CPU. Per server and round, after HTTP_WARMUP_SECS of
# unmeasured load: wrk -t1 -c100 for HTTP_SECS (req/s, p99 latency), the same with 16
# pipelined requests per write (bench/peers/pipeline.lua), and ab -k -c 100 -n HTTP_AB_N
# (HTTP/1.0 keep-alive, the seeds' tool). The server's CPU time per request is its processes'
# utime+stime (/proc/PID/stat) over the run divided by the requests answered: one wrk thread
# saturates its CPU near the fast servers' rates, so req/s cannot rank them; CPU per request
# can. Failures: wrk's non-2xx responses and socket errors, ab's failed and non-2xx requests.
# A run during which other processes used more than HTTP_DIRTY_PCT % of the machine (its busy
# ticks in /proc/stat less the server's and the load generator's) is redone, at most
# HTTP_RETRIES times (the disturbed output stays in logs/ as *.disturbedN); what others used
# in the run that counts is kept as the figure http_MODE_others.

HTTP_SECS=${HTTP_SECS:-5}
HTTP_WARMUP_SECS=${HTTP_WARMUP_SECS:-1}
HTTP_AB_N=${HTTP_AB_N:-200000}
NGINX=${NGINX:-/usr/sbin/nginx}
HTTP_DIRTY_PCT=${HTTP_DIRTY_PCT:-5}
HTTP_RETRIES=${HTTP_RETRIES:-3}

http_servers=(coring coring-epoll nginx go limit limit-uring)

# http_tree PID: PID and its descendants (a master and its workers).
http_tree() {
  local pid
  for pid in "$@"; do
    echo "$pid"
    # shellcheck disable=SC2046  # a list of pids
    http_tree $(cat /proc/"$pid"/task/*/children 2>/dev/null)
  done
}

# http_ticks PID...: utime+stime of those processes, in clock ticks.
http_ticks() {
  local pid sum=0 ticks
  for pid in "$@"; do
    ticks=$(awk '{ print $14 + $15 }' /proc/"$pid"/stat 2>/dev/null)
    sum=$((sum + ${ticks:-0}))
  done
  echo "$sum"
}

# http_machine_ticks: "busy total" clock ticks of all CPUs (/proc/stat; busy: user, nice,
# system, irq, softirq).
http_machine_ticks() {
  awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat
}

# http_start IMPL PORT LOG: starts IMPL's server on PORT under timeout(1), pinned to BENCH_CPU,
# and waits (10 s at most) until GET / answers "Hello, World!". Sets http_pid (the timeout
# process) and http_top (the server, or its master). Non-zero when it did not come up.
http_start() {
  local impl=$1 port=$2 log=$3 server=()
  case $impl in
    coring | coring-epoll)
      local engine=io_uring
      [[ $impl == coring-epoll ]] && engine=epoll
      server=(env "CORING_ENGINE=$engine" "$bin/shared/http_server" --port "$port" --workers 1) ;;
    nginx)
      local run=$BENCH_OUT/nginx-r$BENCH_ROUND
      mkdir -p "$run/conf" "$run/logs" "$run/temp"
      sed "s/@PORT@/$port/" bench/peers/nginx.conf.in >"$run/conf/nginx.conf"
      server=("$NGINX" -p "$run/" -c conf/nginx.conf -e logs/error.log) ;;
    go) server=(env GOMAXPROCS=1 "$bin/peers/go_http_server" -port "$port") ;;
    limit) server=("$bin/peers/http_limit" --port "$port") ;;
    limit-uring) server=("$bin/peers/http_limit_uring" --port "$port") ;;
  esac
  # Long enough for every run against it; timeout(1) signals its whole process group.
  timeout -k 5 $((2 * HTTP_SECS + HTTP_WARMUP_SECS + 240)) taskset -c "$BENCH_CPU" \
    "${server[@]}" </dev/null >"$log" 2>&1 &
  http_pid=$!
  http_top=
  local deadline=$((SECONDS + 10))
  while ((SECONDS < deadline)); do
    if [[ $(curl -s -m 1 "http://127.0.0.1:$port/" 2>/dev/null) == "Hello, World!" ]]; then
      http_top=$(pgrep -P "$http_pid" | head -1)  # taskset and env exec into the server
      [[ -n $http_top ]] && return 0
    fi
    kill -0 "$http_pid" 2>/dev/null || break
    sleep 0.1
  done
  return 1
}

# http_stop: SIGTERM to the server (nginx: fast shutdown; coring: graceful, its connections are
# idle by now), SIGKILL to whatever of its process tree is left after 5 s.
http_stop() {
  local pids="" tries
  if [[ -n $http_top ]]; then
    pids=$(http_tree "$http_top")
    kill -TERM "$http_top" 2>/dev/null
  fi
  for ((tries = 0; tries < 50; tries++)); do
    kill -0 "$http_pid" 2>/dev/null || break
    sleep 0.1
  done
  # shellcheck disable=SC2086  # a list of pids
  kill -KILL $pids "$http_pid" 2>/dev/null
  wait "$http_pid" 2>/dev/null
}

# http_wrk_figures FILE: "requests req_per_s p99_ms failures" from wrk's output ("-" when
# missing).
http_wrk_figures() {
  awk '
    / requests in / { requests = $1 }
    /^Requests\/sec:/ { rate = $2 }
    $1 == "99%" { v = $2 + 0
      if ($2 ~ /us$/) v /= 1000; else if ($2 ~ /ms$/) v += 0; else if ($2 ~ /m$/) v *= 60000
      else if ($2 ~ /s$/) v *= 1000
      p99 = v }
    /Non-2xx or 3xx responses:/ { failures += $NF }
    /Socket errors:/ { gsub(/,/, ""); failures += $4 + $6 + $8 + $10 }
    END { printf "%s %s %s %d\n", requests == "" ? "-" : requests, rate == "" ? "-" : rate,
          p99 == "" ? "-" : p99, failures }' "$1"
}

# http_ab_figures FILE: "requests req_per_s failures" from ab's output.
http_ab_figures() {
  awk '
    /^Complete requests:/ { requests = $3 }
    /^Requests per second:/ { rate = $4 }
    /^Failed requests:/ { failures += $3 }
    /^Non-2xx responses:/ { failures += $3 }
    END { printf "%s %s %d\n", requests == "" ? "-" : requests, rate == "" ? "-" : rate,
          failures }' "$1"
}

# http_load IMPL MODE PORT TREE...: one measured run of MODE (plain, pipe, ab) against the
# server whose processes are TREE; records req/s, p99 (wrk), CPU per request and failures.
http_load() {
  local impl=$1 mode=$2 port=$3
  shift 3
  local load_cpu=$(((BENCH_CPU + 1) % $(nproc))) url="http://127.0.0.1:$port/"
  local out="$BENCH_OUT/logs/r$BENCH_ROUND.http-$impl-$mode.out" load=() status
  case $mode in
    plain) load=(wrk -t1 -c100 -d"${HTTP_SECS}s" --latency "$url") ;;
    pipe) load=(wrk -t1 -c100 -d"${HTTP_SECS}s" --latency -s bench/peers/pipeline.lua "$url" -- 16) ;;
    ab) load=(ab -k -q -c 100 -n "$HTTP_AB_N" "$url") ;;
  esac
  local ticks_before ticks_after machine_before machine_after load_times others attempt
  for ((attempt = 1; ; attempt++)); do
    machine_before=$(http_machine_ticks)
    ticks_before=$(http_ticks "$@")
    # The last line of `times`: the CPU time of the load generator (this subshell's children).
    load_times=$({
      timeout -k 5 $((HTTP_SECS + 120)) taskset -c "$load_cpu" "${load[@]}" </dev/null >"$out" 2>&1
      echo "status $?"
      times
    })
    ticks_after=$(http_ticks "$@")
    machine_after=$(http_machine_ticks)
    status=$(awk '$1 == "status" { print $2 }' <<<"$load_times")
    # What every other process on the machine used meanwhile, in % of all its CPUs.
    others=$(tail -1 <<<"$load_times" | awk -v before="$machine_before" -v after="$machine_after" \
      -v server=$((ticks_after - ticks_before)) -v hz="$(getconf CLK_TCK)" '{
        load = 0
        for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); load += (t[1] * 60 + t[2]) * hz }
        split(before, b, " "); split(after, a, " ")
        o = a[2] > b[2] ? 100 * (a[1] - b[1] - server - load) / (a[2] - b[2]) : 0
        printf "%.1f", o < 0 ? 0 : o }')
    awk -v o="$others" -v d="$HTTP_DIRTY_PCT" 'BEGIN { exit !(o > d) }' || break
    if ((attempt > HTTP_RETRIES)); then
      bench_fail "http $impl $mode: other processes used $others% of the machine in each of" \
        "$attempt runs; the last one counts"
      break
    fi
    mv "$out" "$out.disturbed$attempt"
    printf '  %-24s disturbed: other processes used %s%% of the machine; again in 3 s\n' \
      "http $impl $mode" "$others" >&2
    sleep 3
  done
  bench_record "$impl" "http_${mode}_others" "$others" "%"
  local requests rate p99 failures
  if [[ $mode == ab ]]; then
    read -r requests rate failures < <(http_ab_figures "$out")
    p99=-
  else
    read -r requests rate p99 failures < <(http_wrk_figures "$out")
  fi
  if ((status != 0)) || [[ $requests == - || $rate == - ]]; then
    bench_fail "http $impl $mode: load generator exit $status: $(tail -c 200 "$out" | tr '\n' ' ')"
    return 0
  fi
  bench_record "$impl" "http_$mode" "$rate" "req/s"
  bench_record "$impl" "http_${mode}_failures" "$failures" "count"
  http_failed=$((http_failed + failures))
  # wrk's p99 under pipelining is per batch of 16 and often printed as 0: kept when there is one.
  [[ $p99 != - ]] && awk -v p="$p99" 'BEGIN { exit !(p > 0) }' &&
    bench_record "$impl" "http_${mode}_p99" "$p99" "ms"
  local us
  us=$(awk -v t=$((ticks_after - ticks_before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" \
    'BEGIN { if (n > 0) printf "%.6g", t / hz * 1e6 / n }')
  [[ -n $us ]] && bench_record "$impl" "http_${mode}_cpu" "$us" "us"
  printf '  %-24s %s req/s, p99 %s ms, %s us/req, %s failed, others %s%%\n' "http $impl $mode" \
    "$rate" "$p99" "${us:--}" "$failures" "$others" >&2
}

# http_measure IMPL PORT: starts IMPL's server, warms it up, runs the three loads, stops it.
http_measure() {
  local impl=$1 port=$2 log="$BENCH_OUT/logs/r$BENCH_ROUND.http-$1.server"
  case $impl in
    coring | coring-epoll) [[ -x $bin/shared/http_server ]] || return 0 ;;
    nginx) [[ -x $NGINX ]] || return 0 ;;
    go) [[ -x $bin/peers/go_http_server ]] || return 0 ;;
    limit) [[ -x $bin/peers/http_limit ]] || return 0 ;;
    limit-uring) [[ -x $bin/peers/http_limit_uring ]] || return 0 ;;
  esac
  if ! http_start "$impl" "$port" "$log"; then
    bench_fail "http $impl: the server did not answer GET / within 10 s: $(tail -c 300 "$log" | tr '\n' ' ')"
    http_stop
    return 0
  fi
  local tree mode
  # shellcheck disable=SC2207  # pids
  tree=($(http_tree "$http_top"))
  if ((HTTP_WARMUP_SECS > 0)); then
    timeout -k 5 $((HTTP_WARMUP_SECS + 30)) taskset -c $(((BENCH_CPU + 1) % $(nproc))) \
      wrk -t1 -c100 -d"${HTTP_WARMUP_SECS}s" "http://127.0.0.1:$port/" </dev/null >/dev/null 2>&1
  fi
  http_failed=0
  for mode in plain pipe ab; do
    http_load "$impl" "$mode" "$port" "${tree[@]}"
  done
  bench_record "$impl" http_failures "$http_failed" "count"
  http_stop
}

http_prepare() {
  local tool
  for tool in wrk ab curl; do
    command -v "$tool" >/dev/null || bench_fail "http: $tool is missing (scripts/deps.sh installs it)"
  done
  [[ -x $bin/shared/http_server ]] || bench_fail "http: samples/http_server was not built"
  [[ -x $NGINX ]] || bench_fail "http: no nginx at $NGINX (NGINX=path; scripts/deps.sh installs it)"
  [[ -x $bin/peers/go_http_server ]] || bench_fail "http: the Go peer was not built"
  [[ -x $bin/peers/http_limit ]] || bench_fail "http: bench/peers/http_limit was not built"
  [[ -x $bin/peers/http_limit_uring ]] ||
    bench_fail "http: bench/peers/http_limit_uring was not built"
  return 0
}

http_round() {
  command -v wrk >/dev/null && command -v ab >/dev/null && command -v curl >/dev/null || return 0
  local port=$((25000 + BENCH_ROUND * 20)) impl
  local order=("${http_servers[@]}")
  ((BENCH_ROUND % 2 == 0)) && mapfile -t order < <(printf '%s\n' "${http_servers[@]}" | tac)
  for impl in "${order[@]}"; do
    port=$((port + 1))
    http_measure "$impl" "$port"
  done
}

http_rows() {
  local figure="HTTP GET / keep-alive, wrk -t1 -c100, req/s (server on one CPU, wrk on the other)"
  bench_row "$figure" coring:http_plain "nginx, 1 worker" nginx:http_plain of "ratio>=1.0" \
    "≥ nginx"
  bench_row "$figure" coring:http_plain "Go net/http" go:http_plain of - "(info)"
  bench_row "$figure" coring:http_plain "canned responses, no parsing (ceiling)" \
    limit:http_plain of - "(info: one wrk thread's ceiling)"
  figure="HTTP keep-alive (as above): server CPU per request, us"
  bench_row "$figure" coring:http_plain_cpu "nginx, 1 worker" nginx:http_plain_cpu faster \
    "ratio>=1.176" "≤ 0.85x nginx's"
  bench_row "$figure" coring:http_plain_cpu "Go net/http" go:http_plain_cpu faster - "(info)"
  bench_row "$figure" coring:http_plain_cpu "canned responses, no parsing (ceiling)" \
    limit:http_plain_cpu faster - "(info)"
  bench_row "$figure" coring:http_plain_cpu "canned responses on io_uring (the floor)" \
    limit-uring:http_plain_cpu faster - "(info)"
  bench_row "$figure" limit-uring:http_plain_cpu "nginx, 1 worker" nginx:http_plain_cpu faster \
    - "(info: the floor against nginx)"
  figure="HTTP keep-alive (as above): p99 latency, ms"
  bench_row "$figure" coring:http_plain_p99 "nginx, 1 worker" nginx:http_plain_p99 faster \
    "ratio>=1.0" "no worse than nginx"
  bench_row "$figure" coring:http_plain_p99 "Go net/http" go:http_plain_p99 faster - "(info)"
  figure="HTTP GET / pipelined 16 deep, wrk -t1 -c100, req/s"
  bench_row "$figure" coring:http_pipe "canned responses, no parsing (ceiling)" limit:http_pipe \
    of "ratio>=0.8" "≥ 0.8x the ceiling"
  bench_row "$figure" coring:http_pipe "nginx, 1 worker" nginx:http_pipe of - "(info)"
  bench_row "$figure" coring:http_pipe "Go net/http" go:http_pipe of - "(info)"
  figure="HTTP pipelined 16 deep (as above): server CPU per request, us"
  bench_row "$figure" coring:http_pipe_cpu "nginx, 1 worker" nginx:http_pipe_cpu faster - "(info)"
  bench_row "$figure" coring:http_pipe_cpu "canned responses, no parsing (ceiling)" \
    limit:http_pipe_cpu faster - "(info)"
  figure="HTTP/1.0 keep-alive, ab -k -c 100 -n $HTTP_AB_N, req/s"
  bench_row "$figure" coring:http_ab "nginx, 1 worker" nginx:http_ab of - "(info)"
  bench_row "$figure" coring:http_ab "Go net/http" go:http_ab of - "(info)"
  bench_row "$figure" coring:http_ab "canned responses, no parsing (ceiling)" limit:http_ab of - \
    "(info)"
  figure="HTTP failed requests over the three runs (wrk: non-2xx, socket errors; ab: failed)"
  bench_row "$figure, max over rounds" coring:http_failures "nginx, 1 worker" nginx:http_failures \
    - "max<=0" "zero"
}

# ---------------------------------------------------------------------------------------------
# Section "client": HTTP client throughput. Debian's nginx (one worker, access log off,
# keep-alive with no practical request limit: bench/peers/nginx_client.conf.in) serves one
# small static file (CLIENT_FILE_BYTES bytes) pinned to the CPU other than BENCH_CPU; each
# client runs alone on BENCH_CPU against it, CLIENT_CONNS keep-alive connections, for
# CLIENT_SECS:
#   coring  bench/http_client_load: CLIENT_CONNS coroutines in one container, each with its own
#           coring::http::Client, GETs in a loop (shared-library build, io_uring; the epoll
#           engine and the static LTO build when CLIENT_IMPLS names coring-epoll, coring-lto)
#   go      bench/peers/http_client.go: net/http's client, CLIENT_CONNS goroutines through one
#           Transport (MaxConnsPerHost and MaxIdleConnsPerHost CLIENT_CONNS), every body read
#           whole and closed; GOMAXPROCS=1, since the client has one CPU, as a coring container
#           uses one
#   wrk     wrk -t1 -cCLIENT_CONNS: a load generator in C with no runtime and no per-request
#           bookkeeping beyond counting, the floor of what a client costs here
# nginx is started once per round (and warmed up with CLIENT_WARMUP_SECS of unmeasured wrk
# load); the clients then run in turn against it, in reverse order on even rounds. Per run:
# requests/s as the client reports it (coring and Go count a request when the status is 200 and
# the body has exactly the file's size; wrk counts every response), failures (coring, Go: any
# other outcome; wrk: non-2xx responses and socket errors), and the client's CPU time per
# request: the user+sys time of the client process over its whole life (the rusage of the
# subshell's children, as bash's `times` reports it: the same utime+stime /proc/PID/stat shows,
# taken when the process has ended, so nothing is missed) divided by the requests it counted.
# nginx's CPU use over the run is kept too (%, from /proc/PID/stat of its master and worker):
# near 100 the server, not the client, bounds req/s. A run during which other processes used
# more than HTTP_DIRTY_PCT % of the machine is redone, at most HTTP_RETRIES times, as in the
# http section (whose process helpers this section uses).

CLIENT_SECS=${CLIENT_SECS:-3}
CLIENT_CONNS=${CLIENT_CONNS:-100}
CLIENT_FILE_BYTES=${CLIENT_FILE_BYTES:-1024}
CLIENT_WARMUP_SECS=${CLIENT_WARMUP_SECS:-1}
CLIENT_IMPLS=${CLIENT_IMPLS:-coring go wrk}

# client_command IMPL PORT: sets client_load, the command line of one run of IMPL's client
# against the nginx on PORT; false when IMPL is unknown or its program was not built.
client_command() {
  local impl=$1 port=$2 program
  local url="http://127.0.0.1:$port/small.txt"
  local coring_args=(--port "$port" --path /small.txt --concurrency "$CLIENT_CONNS"
    --duration "$CLIENT_SECS" --body-size "$CLIENT_FILE_BYTES")
  case $impl in
    coring) program=$bin/shared/http_client_load
      client_load=(env CORING_ENGINE=io_uring "$program" "${coring_args[@]}") ;;
    coring-epoll) program=$bin/shared/http_client_load
      client_load=(env CORING_ENGINE=epoll "$program" "${coring_args[@]}") ;;
    coring-lto) program=$bin/http_client_load
      client_load=(env CORING_ENGINE=io_uring "$program" "${coring_args[@]}") ;;
    go) program=$bin/peers/go_http_client
      client_load=(env GOMAXPROCS=1 "$program" -url "$url" -c "$CLIENT_CONNS"
        -seconds "$CLIENT_SECS" -size "$CLIENT_FILE_BYTES") ;;
    wrk) program=$(command -v wrk) || return 1
      client_load=(wrk -t1 -c"$CLIENT_CONNS" -d"${CLIENT_SECS}s" "$url") ;;
    *) return 1 ;;
  esac
  [[ -x $program ]]
}

# client_start_nginx PORT: the round's nginx (its run directory, config and file), pinned to
# the CPU other than BENCH_CPU; waits (10 s at most) until it serves the file. Sets http_pid
# (the timeout process) and http_top (the master), as http_start does, for http_stop.
client_start_nginx() {
  local port=$1 run=$BENCH_OUT/client-nginx-r$BENCH_ROUND impls
  mkdir -p "$run/conf" "$run/logs" "$run/temp" "$run/html"
  sed "s/@PORT@/$port/" bench/peers/nginx_client.conf.in >"$run/conf/nginx.conf"
  head -c "$CLIENT_FILE_BYTES" /dev/zero | tr '\0' x >"$run/html/small.txt"
  read -ra impls <<<"$CLIENT_IMPLS"
  # Long enough for every run of the round, retries included; timeout(1) signals the group.
  timeout -k 5 $(((CLIENT_SECS + 30) * ${#impls[@]} * (HTTP_RETRIES + 1) + CLIENT_WARMUP_SECS + 60)) \
    taskset -c $(((BENCH_CPU + 1) % $(nproc))) "$NGINX" -p "$run/" -c conf/nginx.conf \
    -e logs/error.log </dev/null >"$run/logs/stdout" 2>&1 &
  http_pid=$!
  http_top=
  local deadline=$((SECONDS + 10))
  while ((SECONDS < deadline)); do
    if [[ $(curl -s -m 1 -o /dev/null -w '%{http_code} %{size_download}' \
      "http://127.0.0.1:$port/small.txt" 2>/dev/null) == "200 $CLIENT_FILE_BYTES" ]]; then
      http_top=$(pgrep -P "$http_pid" | head -1)  # taskset execs into nginx's master
      [[ -n $http_top ]] && return 0
    fi
    kill -0 "$http_pid" 2>/dev/null || break
    sleep 0.1
  done
  return 1
}

# client_figures IMPL FILE: "requests req_per_s failures" from a client's output ("-" when
# missing).
client_figures() {
  if [[ $1 == wrk ]]; then
    http_wrk_figures "$2" | awk '{ print $1, $2, $4 }'
  else
    awk '/^requests=/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] } }
      END { print ("requests" in f) ? f["requests"] : "-", ("requests_per_s" in f) ? f["requests_per_s"] : "-",
            ("failures" in f) ? f["failures"] : "-" }' "$2"
  fi
}

# client_measure IMPL PORT NGINX_PIDS...: one measured run of IMPL's client against nginx.
client_measure() {
  local impl=$1 port=$2
  shift 2
  local out="$BENCH_OUT/logs/r$BENCH_ROUND.client-$impl.out" client_load=()
  client_command "$impl" "$port" || return 0
  local nginx_before nginx_after machine_before machine_after start_time end_time times
  local status client_seconds others attempt hz
  hz=$(getconf CLK_TCK)
  for ((attempt = 1; ; attempt++)); do
    machine_before=$(http_machine_ticks)
    nginx_before=$(http_ticks "$@")
    start_time=$EPOCHREALTIME
    # The last line of `times`: the CPU time of this subshell's children, the client's.
    times=$({
      timeout -k 5 $((CLIENT_SECS + 60)) taskset -c "$BENCH_CPU" "${client_load[@]}" \
        </dev/null >"$out" 2>&1
      echo "status $?"
      times
    })
    end_time=$EPOCHREALTIME
    nginx_after=$(http_ticks "$@")
    machine_after=$(http_machine_ticks)
    status=$(awk '$1 == "status" { print $2 }' <<<"$times")
    client_seconds=$(tail -1 <<<"$times" | awk '{ s = 0
      for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); s += t[1] * 60 + t[2] }
      printf "%.3f", s }')
    others=$(awk -v before="$machine_before" -v after="$machine_after" -v hz="$hz" \
      -v known=$((nginx_after - nginx_before)) -v client="$client_seconds" 'BEGIN {
        split(before, b, " "); split(after, a, " ")
        o = a[2] > b[2] ? 100 * (a[1] - b[1] - known - client * hz) / (a[2] - b[2]) : 0
        printf "%.1f", o < 0 ? 0 : o }')
    awk -v o="$others" -v d="$HTTP_DIRTY_PCT" 'BEGIN { exit !(o > d) }' || break
    if ((attempt > HTTP_RETRIES)); then
      bench_fail "client $impl: other processes used $others% of the machine in each of" \
        "$attempt runs; the last one counts"
      break
    fi
    mv "$out" "$out.disturbed$attempt"
    printf '  %-24s disturbed: other processes used %s%% of the machine; again in 3 s\n' \
      "client $impl" "$others" >&2
    sleep 3
  done
  bench_record "$impl" client_others "$others" "%"
  local requests rate failures
  read -r requests rate failures < <(client_figures "$impl" "$out")
  if ((status != 0)) || [[ $requests == - || $rate == - || $failures == - ]]; then
    bench_fail "client $impl: exit $status: $(tail -c 300 "$out" | tr '\n' ' ')"
    return 0
  fi
  bench_record "$impl" client_rate "$rate" "req/s"
  bench_record "$impl" client_failures "$failures" "count"
  local us busy
  us=$(awk -v s="$client_seconds" -v n="$requests" 'BEGIN { if (n > 0) printf "%.6g", s * 1e6 / n }')
  [[ -n $us ]] && bench_record "$impl" client_cpu "$us" "us"
  busy=$(awk -v t=$((nginx_after - nginx_before)) -v hz="$hz" -v a="$start_time" -v b="$end_time" \
    'BEGIN { if (b > a) printf "%.1f", 100 * t / hz / (b - a) }')
  [[ -n $busy ]] && bench_record "$impl" client_server_busy "$busy" "%"
  printf '  %-24s %s req/s, %s us/req of client CPU, %s failed, nginx %s%% busy, others %s%%\n' \
    "client $impl" "$rate" "${us:--}" "$failures" "${busy:--}" "$others" >&2
}

client_prepare() {
  local tool impl client_load=()
  for tool in wrk curl; do
    command -v "$tool" >/dev/null || bench_fail "client: $tool is missing (scripts/deps.sh installs it)"
  done
  [[ -x $NGINX ]] || bench_fail "client: no nginx at $NGINX (NGINX=path; scripts/deps.sh installs it)"
  for impl in $CLIENT_IMPLS; do
    client_command "$impl" 1 ||
      bench_fail "client: the $impl client is unknown or was not built"
  done
  return 0
}

client_round() {
  [[ -x $NGINX ]] && command -v wrk >/dev/null && command -v curl >/dev/null || return 0
  local port=$((26000 + BENCH_ROUND)) impl tree
  if ! client_start_nginx "$port"; then
    bench_fail "client: nginx did not serve the file within 10 s: $(tail -c 300 \
      "$BENCH_OUT/client-nginx-r$BENCH_ROUND/logs/error.log" 2>/dev/null | tr '\n' ' ')"
    http_stop
    return 0
  fi
  # shellcheck disable=SC2207  # pids
  tree=($(http_tree "$http_top"))
  if ((CLIENT_WARMUP_SECS > 0)); then
    timeout -k 5 $((CLIENT_WARMUP_SECS + 30)) taskset -c "$BENCH_CPU" wrk -t1 -c"$CLIENT_CONNS" \
      -d"${CLIENT_WARMUP_SECS}s" "http://127.0.0.1:$port/small.txt" </dev/null >/dev/null 2>&1
  fi
  local order
  read -ra order <<<"$CLIENT_IMPLS"
  ((BENCH_ROUND % 2 == 0)) && mapfile -t order < <(printf '%s\n' "${order[@]}" | tac)
  for impl in "${order[@]}"; do
    client_measure "$impl" "$port" "${tree[@]}"
  done
  http_stop
}

client_rows() {
  local kib
  kib=$(awk -v b="$CLIENT_FILE_BYTES" 'BEGIN { if (b % 1024 == 0) printf "%d KiB", b / 1024; else printf "%d B", b }')
  local figure="HTTP client: keep-alive GETs of a $kib file from nginx (1 worker, other CPU), $CLIENT_CONNS connections, one CPU, req/s"
  bench_row "$figure" coring:client_rate "Go net/http, $CLIENT_CONNS goroutines, GOMAXPROCS=1" \
    go:client_rate of "ratio>=1.5" "≥ 1.5x Go"
  bench_row "$figure" coring:client_rate "wrk -t1 -c$CLIENT_CONNS (C, no runtime: the floor)" \
    wrk:client_rate of - "(info)"
  figure="HTTP client (as above): client CPU time per request, us"
  bench_row "$figure" coring:client_cpu "Go net/http, $CLIENT_CONNS goroutines, GOMAXPROCS=1" \
    go:client_cpu faster "ratio>=1.4925" "≤ 0.67x Go's"
  bench_row "$figure" coring:client_cpu "wrk -t1 -c$CLIENT_CONNS (C, no runtime: the floor)" \
    wrk:client_cpu faster "ratio>=0.7692" "≤ 1.3x wrk's"
  figure="HTTP client (as above): nginx's CPU use during the run, %"
  bench_row "$figure" coring:client_server_busy "Go net/http" go:client_server_busy of - \
    "(info: near 100, nginx bounds req/s)"
  bench_row "$figure" coring:client_server_busy "wrk" wrk:client_server_busy of - "(info)"
  figure="HTTP client (as above): failed requests, max over rounds"
  bench_row "$figure" coring:client_failures "Go net/http" go:client_failures - "max<=0" "zero"
  bench_row "$figure" coring:client_failures "wrk (non-2xx, socket errors)" wrk:client_failures - \
    - "(info)"
}

# ---------------------------------------------------------------------------------------------
# Section "tls": HTTPS, server and client, on OpenSSL 3 (TLS 1.3 with TLS_AES_128_GCM_SHA256
# pinned on both ends of every server figure: coring's samples/http_server --ciphersuites, and
# nginx's `ssl_conf_command Ciphersuites`; key exchange X25519, OpenSSL's default on both). One
# throwaway ECDSA P-256 certificate, made here with the `openssl` command from a throwaway CA,
# serves both servers (ECDSA, the common choice today: its signature is cheap, so what a
# server adds around OpenSSL weighs more in the figures than behind an RSA-2048 signature).
#
# The servers: coring's HTTPS server (the shared-library samples/http_server --cert --key, one
# worker, io_uring) and nginx (bench/peers/nginx_tls.conf.in, one worker), each alone on
# BENCH_CPU, the load on the other CPU, in the same interleaved order as the http section:
#   keepalive  wrk -t1 -c100 -dTLS_SECS over https: req/s and the server's CPU per request;
#   handshake  ab -c 50 -n TLS_AB_N without -k: every request on a new connection with a full
#              handshake (ab keeps no sessions); new connections per second (ab's), and the
#              server's CPU per connection, also shown as connections per second of server
#              CPU, which is what the server could take if it had its CPU to itself (ab on
#              one CPU may be the one that saturates);
#   resume     openssl s_time -reuse -time TLS_SECS -www /: one connection at a time, each a
#              resumed session (the ticket of the one before) and one HTTP/1.0 request:
#              connections per second and the server's CPU per connection; connections that
#              were not resumed count as failures (s_time prints 'r' for each resumed one).
# (wrk has no way to make one request per connection and resume; s_time -new would be a
# second full-handshake figure at concurrency one: ab's is the one kept.) The server's CPU
# is its processes' utime+stime (/proc/PID/stat: master and worker) over the run; a disturbed
# run is redone as in the http section (HTTP_DIRTY_PCT, HTTP_RETRIES).
#
# The client: nginx (the same configuration, one worker, on the CPU other than BENCH_CPU)
# serves a CLIENT_FILE_BYTES file over HTTPS; each client runs alone on BENCH_CPU with
# CLIENT_CONNS keep-alive connections for CLIENT_SECS, as in the client section: coring's
# bench/http_client_load --tls 1 --cacert (one TlsContext for its 100 Clients), Go's net/http
# (bench/peers/http_client.go -cacert, GOMAXPROCS=1) and wrk over https; req/s, the client's
# CPU per request, nginx's CPU use, failures. Every client verifies the certificate except wrk
# (which cannot), once per connection.

TLS_SECS=${TLS_SECS:-4}
TLS_AB_N=${TLS_AB_N:-10000}
TLS_CIPHERSUITE=${TLS_CIPHERSUITE:-TLS_AES_128_GCM_SHA256}
TLS_CLIENT_IMPLS=${TLS_CLIENT_IMPLS:-coring go wrk}

tls_servers=(coring nginx)
tls_pki=

# tls_make_pki DIR: DIR/ca.pem (the CA), DIR/server.pem (for 127.0.0.1 and localhost, from the
# CA) and DIR/key.pem, ECDSA P-256. Non-zero when openssl failed (its output: DIR/openssl.log).
tls_make_pki() {
  local dir=$1
  mkdir -p "$dir"
  {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
      -subj "/CN=coring bench CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" &&
      openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/key.pem" &&
      openssl req -new -key "$dir/key.pem" -subj "/CN=localhost" -out "$dir/server.csr" &&
      printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
        >"$dir/server.ext" &&
      openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 7 -extfile "$dir/server.ext" -out "$dir/server.pem"
  } >"$dir/openssl.log" 2>&1 || return 1
  # As root, nginx's worker runs as nobody: what it reads must be readable.
  chmod 755 "$dir"
  chmod 644 "$dir"/*.pem
}

# tls_start IMPL PORT CPU LOG: starts IMPL's HTTPS server (coring, nginx) on PORT under
# timeout(1), pinned to CPU, and waits (10 s at most) until GET / answers "Hello, World!" over
# TLS. Sets http_pid and http_top, as http_start does (http_stop stops it). Non-zero when it
# did not come up.
tls_start() {
  local impl=$1 port=$2 cpu=$3 log=$4 server=()
  case $impl in
    coring)
      server=(env CORING_ENGINE=io_uring "$bin/shared/http_server" --port "$port" --workers 1
        --cert "$tls_pki/server.pem" --key "$tls_pki/key.pem" --ciphersuites "$TLS_CIPHERSUITE") ;;
    nginx)
      local run=$BENCH_OUT/tls-nginx-$port
      mkdir -p "$run/conf" "$run/logs" "$run/temp" "$run/html"
      chmod 755 "$run" "$run/html"
      sed -e "s|@PORT@|$port|" -e "s|@CERT@|$tls_pki/server.pem|" -e "s|@KEY@|$tls_pki/key.pem|" \
        -e "s|Ciphersuites TLS_AES_128_GCM_SHA256|Ciphersuites $TLS_CIPHERSUITE|" \
        bench/peers/nginx_tls.conf.in >"$run/conf/nginx.conf"
      head -c "$CLIENT_FILE_BYTES" /dev/zero | tr '\0' x >"$run/html/small.txt"
      chmod 644 "$run/html/small.txt"
      server=("$NGINX" -p "$run/" -c conf/nginx.conf -e logs/error.log) ;;
  esac
  # Long enough for every run against it; timeout(1) signals its whole process group.
  timeout -k 5 $((4 * (TLS_SECS + CLIENT_SECS + 30) * (HTTP_RETRIES + 1) + 120)) \
    taskset -c "$cpu" "${server[@]}" </dev/null >"$log" 2>&1 &
  http_pid=$!
  http_top=
  local deadline=$((SECONDS + 10))
  while ((SECONDS < deadline)); do
    if [[ $(curl -s -m 1 --cacert "$tls_pki/ca.pem" "https://127.0.0.1:$port/" 2>/dev/null) == \
      "Hello, World!" ]]; then
      http_top=$(pgrep -P "$http_pid" | head -1)  # taskset and env exec into the server
      [[ -n $http_top ]] && return 0
    fi
    kill -0 "$http_pid" 2>/dev/null || break
    sleep 0.1
  done
  return 1
}

# tls_stime_figures FILE: "connections resumed" from openssl s_time -reuse's output ("-" when
# missing): the connections it made, and how many of them resumed a session ('r' in its
# progress line; '*' is a full handshake).
tls_stime_figures() {
  awk '/connections in .* real seconds/ { n = $1 }
    /^[*r]+$/ { r += gsub(/r/, "r") }
    END { printf "%s %d\n", n == "" ? "-" : n, r }' "$1"
}

# tls_load IMPL MODE PORT TREE...: one measured run of MODE (keepalive, handshake, resume)
# against the server whose processes are TREE; records its rate, the server's CPU per request
# (per connection) and failures.
tls_load() {
  local impl=$1 mode=$2 port=$3
  shift 3
  local load_cpu=$(((BENCH_CPU + 1) % $(nproc))) url="https://127.0.0.1:$port/"
  local out="$BENCH_OUT/logs/r$BENCH_ROUND.tls-$impl-$mode.out" load=() status
  case $mode in
    keepalive) load=(wrk -t1 -c100 -d"${TLS_SECS}s" "$url") ;;
    handshake) load=(ab -q -c 50 -n "$TLS_AB_N" "$url") ;;
    resume) load=(openssl s_time -connect "127.0.0.1:$port" -reuse -time "$TLS_SECS" -www /) ;;
  esac
  local ticks_before ticks_after machine_before machine_after load_times others attempt
  local start_time end_time
  for ((attempt = 1; ; attempt++)); do
    machine_before=$(http_machine_ticks)
    ticks_before=$(http_ticks "$@")
    start_time=$EPOCHREALTIME
    # The last line of `times`: the CPU time of the load generator (this subshell's children).
    load_times=$({
      timeout -k 5 $((TLS_SECS + 120)) taskset -c "$load_cpu" "${load[@]}" </dev/null >"$out" 2>&1
      echo "status $?"
      times
    })
    end_time=$EPOCHREALTIME
    ticks_after=$(http_ticks "$@")
    machine_after=$(http_machine_ticks)
    status=$(awk '$1 == "status" { print $2 }' <<<"$load_times")
    others=$(tail -1 <<<"$load_times" | awk -v before="$machine_before" -v after="$machine_after" \
      -v server=$((ticks_after - ticks_before)) -v hz="$(getconf CLK_TCK)" '{
        load = 0
        for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); load += (t[1] * 60 + t[2]) * hz }
        split(before, b, " "); split(after, a, " ")
        o = a[2] > b[2] ? 100 * (a[1] - b[1] - server - load) / (a[2] - b[2]) : 0
        printf "%.1f", o < 0 ? 0 : o }')
    awk -v o="$others" -v d="$HTTP_DIRTY_PCT" 'BEGIN { exit !(o > d) }' || break
    if ((attempt > HTTP_RETRIES)); then
      bench_fail "tls $impl $mode: other processes used $others% of the machine in each of" \
        "$attempt runs; the last one counts"
      break
    fi
    mv "$out" "$out.disturbed$attempt"
    printf '  %-24s disturbed: other processes used %s%% of the machine; again in 3 s\n' \
      "tls $impl $mode" "$others" >&2
    sleep 3
  done
  bench_record "$impl" "tls_${mode}_others" "$others" "%"
  local requests rate failures reused
  case $mode in
    keepalive) read -r requests rate _ failures < <(http_wrk_figures "$out") ;;
    handshake) read -r requests rate failures < <(http_ab_figures "$out") ;;
    resume)
      read -r requests reused < <(tls_stime_figures "$out")
      rate=-
      failures=0
      if [[ $requests != - ]]; then
        rate=$(awk -v n="$requests" -v a="$start_time" -v b="$end_time" \
          'BEGIN { if (b > a) printf "%.1f", n / (b - a) }')
        failures=$((requests - 1 - reused))  # the first connection has nothing to resume
        ((failures < 0)) && failures=0
      fi ;;
  esac
  if ((status != 0)) || [[ $requests == - || -z $rate || $rate == - ]]; then
    bench_fail "tls $impl $mode: load generator exit $status: $(tail -c 200 "$out" | tr '\n' ' ')"
    return 0
  fi
  local unit=conn/s
  [[ $mode == keepalive ]] && unit=req/s
  bench_record "$impl" "tls_$mode" "$rate" "$unit"
  bench_record "$impl" "tls_${mode}_failures" "$failures" "count"
  tls_failed=$((tls_failed + failures))
  local us capacity
  us=$(awk -v t=$((ticks_after - ticks_before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" \
    'BEGIN { if (n > 0) printf "%.6g", t / hz * 1e6 / n }')
  [[ -n $us ]] && bench_record "$impl" "tls_${mode}_cpu" "$us" "us"
  capacity=$(awk -v u="$us" 'BEGIN { if (u > 0) printf "%.6g", 1e6 / u }')
  [[ -n $capacity ]] && bench_record "$impl" "tls_${mode}_per_cpu_s" "$capacity" "$unit"
  printf '  %-24s %s/s, %s us of server CPU each, %s failed, others %s%%\n' "tls $impl $mode" \
    "$rate" "${us:--}" "$failures" "$others" >&2
}

# tls_measure IMPL PORT: starts IMPL's HTTPS server, warms it up, runs the three loads, stops it.
tls_measure() {
  local impl=$1 port=$2 log="$BENCH_OUT/logs/r$BENCH_ROUND.tls-$1.server"
  case $impl in
    coring) [[ -x $bin/shared/http_server ]] || return 0 ;;
    nginx) [[ -x $NGINX ]] || return 0 ;;
  esac
  if ! tls_start "$impl" "$port" "$BENCH_CPU" "$log"; then
    bench_fail "tls $impl: the server did not answer GET / over TLS within 10 s: $(tail -c 300 "$log" | tr '\n' ' ')"
    http_stop
    return 0
  fi
  local tree mode
  # shellcheck disable=SC2207  # pids
  tree=($(http_tree "$http_top"))
  if ((HTTP_WARMUP_SECS > 0)); then
    timeout -k 5 $((HTTP_WARMUP_SECS + 30)) taskset -c $(((BENCH_CPU + 1) % $(nproc))) \
      wrk -t1 -c100 -d"${HTTP_WARMUP_SECS}s" "https://127.0.0.1:$port/" </dev/null >/dev/null 2>&1
  fi
  tls_failed=0
  for mode in keepalive handshake resume; do
    tls_load "$impl" "$mode" "$port" "${tree[@]}"
  done
  bench_record "$impl" tls_failures "$tls_failed" "count"
  http_stop
}

# tls_client_command IMPL PORT: sets client_load, the command line of one run of IMPL's HTTPS
# client against the nginx on PORT; false when IMPL is unknown or its program was not built.
tls_client_command() {
  local impl=$1 port=$2 program
  local url="https://127.0.0.1:$port/small.txt"
  case $impl in
    coring) program=$bin/shared/http_client_load
      client_load=(env CORING_ENGINE=io_uring "$program" --port "$port" --path /small.txt
        --concurrency "$CLIENT_CONNS" --duration "$CLIENT_SECS" --body-size "$CLIENT_FILE_BYTES"
        --tls 1 --cacert "$tls_pki/ca.pem") ;;
    go) program=$bin/peers/go_http_client
      client_load=(env GOMAXPROCS=1 "$program" -url "$url" -c "$CLIENT_CONNS"
        -seconds "$CLIENT_SECS" -size "$CLIENT_FILE_BYTES" -cacert "$tls_pki/ca.pem") ;;
    wrk) program=$(command -v wrk) || return 1
      client_load=(wrk -t1 -c"$CLIENT_CONNS" -d"${CLIENT_SECS}s" "$url") ;;
    *) return 1 ;;
  esac
  [[ -x $program ]]
}

# tls_client_measure IMPL PORT NGINX_PIDS...: one measured run of IMPL's HTTPS client against
# nginx (as client_measure, with the figures named tls_client_*).
tls_client_measure() {
  local impl=$1 port=$2
  shift 2
  local out="$BENCH_OUT/logs/r$BENCH_ROUND.tls-client-$impl.out" client_load=()
  tls_client_command "$impl" "$port" || return 0
  local nginx_before nginx_after machine_before machine_after start_time end_time times
  local status client_seconds others attempt hz
  hz=$(getconf CLK_TCK)
  for ((attempt = 1; ; attempt++)); do
    machine_before=$(http_machine_ticks)
    nginx_before=$(http_ticks "$@")
    start_time=$EPOCHREALTIME
    times=$({
      timeout -k 5 $((CLIENT_SECS + 60)) taskset -c "$BENCH_CPU" "${client_load[@]}" \
        </dev/null >"$out" 2>&1
      echo "status $?"
      times
    })
    end_time=$EPOCHREALTIME
    nginx_after=$(http_ticks "$@")
    machine_after=$(http_machine_ticks)
    status=$(awk '$1 == "status" { print $2 }' <<<"$times")
    client_seconds=$(tail -1 <<<"$times" | awk '{ s = 0
      for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); s += t[1] * 60 + t[2] }
      printf "%.3f", s }')
    others=$(awk -v before="$machine_before" -v after="$machine_after" -v hz="$hz" \
      -v known=$((nginx_after - nginx_before)) -v client="$client_seconds" 'BEGIN {
        split(before, b, " "); split(after, a, " ")
        o = a[2] > b[2] ? 100 * (a[1] - b[1] - known - client * hz) / (a[2] - b[2]) : 0
        printf "%.1f", o < 0 ? 0 : o }')
    awk -v o="$others" -v d="$HTTP_DIRTY_PCT" 'BEGIN { exit !(o > d) }' || break
    if ((attempt > HTTP_RETRIES)); then
      bench_fail "tls client $impl: other processes used $others% of the machine in each of" \
        "$attempt runs; the last one counts"
      break
    fi
    mv "$out" "$out.disturbed$attempt"
    printf '  %-24s disturbed: other processes used %s%% of the machine; again in 3 s\n' \
      "tls client $impl" "$others" >&2
    sleep 3
  done
  bench_record "$impl" tls_client_others "$others" "%"
  local requests rate failures
  read -r requests rate failures < <(client_figures "$impl" "$out")
  if ((status != 0)) || [[ $requests == - || $rate == - || $failures == - ]]; then
    bench_fail "tls client $impl: exit $status: $(tail -c 300 "$out" | tr '\n' ' ')"
    return 0
  fi
  bench_record "$impl" tls_client_rate "$rate" "req/s"
  bench_record "$impl" tls_client_failures "$failures" "count"
  local us busy
  us=$(awk -v s="$client_seconds" -v n="$requests" 'BEGIN { if (n > 0) printf "%.6g", s * 1e6 / n }')
  [[ -n $us ]] && bench_record "$impl" tls_client_cpu "$us" "us"
  busy=$(awk -v t=$((nginx_after - nginx_before)) -v hz="$hz" -v a="$start_time" -v b="$end_time" \
    'BEGIN { if (b > a) printf "%.1f", 100 * t / hz / (b - a) }')
  [[ -n $busy ]] && bench_record "$impl" tls_client_server_busy "$busy" "%"
  printf '  %-24s %s req/s, %s us/req of client CPU, %s failed, nginx %s%% busy, others %s%%\n' \
    "tls client $impl" "$rate" "${us:--}" "$failures" "${busy:--}" "$others" >&2
}

tls_prepare() {
  local tool impl client_load=()
  for tool in wrk ab curl openssl; do
    command -v "$tool" >/dev/null || bench_fail "tls: $tool is missing (scripts/deps.sh installs it)"
  done
  [[ -x $bin/shared/http_server ]] || bench_fail "tls: samples/http_server was not built"
  [[ -x $NGINX ]] || bench_fail "tls: no nginx at $NGINX (NGINX=path; scripts/deps.sh installs it)"
  tls_pki=$BENCH_OUT/tls-pki
  if ! tls_make_pki "$tls_pki"; then
    bench_fail "tls: making the certificate failed: $(tail -c 300 "$tls_pki/openssl.log" | tr '\n' ' ')"
    tls_pki=
  fi
  for impl in $TLS_CLIENT_IMPLS; do
    tls_client_command "$impl" 1 || bench_fail "tls: the $impl client is unknown or was not built"
  done
  return 0
}

tls_round() {
  [[ -n $tls_pki ]] && command -v wrk >/dev/null && command -v ab >/dev/null &&
    command -v curl >/dev/null && command -v openssl >/dev/null || return 0
  local port=$((27000 + BENCH_ROUND * 20)) impl tree order
  order=("${tls_servers[@]}")
  ((BENCH_ROUND % 2 == 0)) && mapfile -t order < <(printf '%s\n' "${tls_servers[@]}" | tac)
  for impl in "${order[@]}"; do
    port=$((port + 1))
    tls_measure "$impl" "$port"
  done
  # The clients, against nginx on the other CPU.
  [[ -x $NGINX ]] || return 0
  port=$((port + 1))
  if ! tls_start nginx "$port" $(((BENCH_CPU + 1) % $(nproc))) \
    "$BENCH_OUT/logs/r$BENCH_ROUND.tls-client-nginx.server"; then
    bench_fail "tls client: nginx did not answer over TLS within 10 s: $(tail -c 300 \
      "$BENCH_OUT/tls-nginx-$port/logs/error.log" 2>/dev/null | tr '\n' ' ')"
    http_stop
    return 0
  fi
  # shellcheck disable=SC2207  # pids
  tree=($(http_tree "$http_top"))
  if ((CLIENT_WARMUP_SECS > 0)); then
    timeout -k 5 $((CLIENT_WARMUP_SECS + 30)) taskset -c "$BENCH_CPU" wrk -t1 -c"$CLIENT_CONNS" \
      -d"${CLIENT_WARMUP_SECS}s" "https://127.0.0.1:$port/small.txt" </dev/null >/dev/null 2>&1
  fi
  read -ra order <<<"$TLS_CLIENT_IMPLS"
  ((BENCH_ROUND % 2 == 0)) && mapfile -t order < <(printf '%s\n' "${order[@]}" | tac)
  for impl in "${order[@]}"; do
    tls_client_measure "$impl" "$port" "${tree[@]}"
  done
  http_stop
}

tls_rows() {
  local suite="TLS 1.3, $TLS_CIPHERSUITE, ECDSA P-256"
  local figure="HTTPS GET / keep-alive ($suite), wrk -t1 -c100, req/s (server on one CPU, wrk on the other)"
  bench_row "$figure" coring:tls_keepalive "nginx, 1 worker" nginx:tls_keepalive of - "(info)"
  figure="HTTPS keep-alive (as above): server CPU per request, us"
  bench_row "$figure" coring:tls_keepalive_cpu "nginx, 1 worker" nginx:tls_keepalive_cpu faster \
    "ratio>=1.0" "≤ nginx's"
  figure="HTTPS new connections, one request each (full handshake), ab -c 50 -n $TLS_AB_N, connections/s"
  bench_row "$figure" coring:tls_handshake "nginx, 1 worker" nginx:tls_handshake of - \
    "(info: the client may bound it)"
  figure="HTTPS full handshakes (as above): connections per second of server CPU"
  bench_row "$figure" coring:tls_handshake_per_cpu_s "nginx, 1 worker" \
    nginx:tls_handshake_per_cpu_s of "ratio>=1.0" "≥ nginx"
  figure="HTTPS full handshakes (as above): server CPU per connection, us"
  bench_row "$figure" coring:tls_handshake_cpu "nginx, 1 worker" nginx:tls_handshake_cpu faster \
    - "(info)"
  figure="HTTPS resumed sessions (tickets), openssl s_time -reuse, one at a time, connections/s"
  bench_row "$figure" coring:tls_resume "nginx, 1 worker" nginx:tls_resume of - "(info)"
  figure="HTTPS resumed sessions (as above): server CPU per connection, us"
  bench_row "$figure" coring:tls_resume_cpu "nginx, 1 worker" nginx:tls_resume_cpu faster - \
    "(info)"
  figure="HTTPS server runs: failed requests (wrk, ab) and connections not resumed (s_time)"
  bench_row "$figure, max over rounds" coring:tls_failures "nginx, 1 worker" nginx:tls_failures \
    - "max<=0" "zero"
  local kib
  kib=$(awk -v b="$CLIENT_FILE_BYTES" 'BEGIN { if (b % 1024 == 0) printf "%d KiB", b / 1024; else printf "%d B", b }')
  figure="HTTPS client: keep-alive GETs of a $kib file from nginx ($suite, 1 worker, other CPU), $CLIENT_CONNS connections, one CPU, req/s"
  bench_row "$figure" coring:tls_client_rate "Go net/http, $CLIENT_CONNS goroutines, GOMAXPROCS=1" \
    go:tls_client_rate of - "(info)"
  bench_row "$figure" coring:tls_client_rate "wrk -t1 -c$CLIENT_CONNS (C, no runtime: the floor)" \
    wrk:tls_client_rate of - "(info)"
  figure="HTTPS client (as above): client CPU time per request, us"
  bench_row "$figure" coring:tls_client_cpu "Go net/http, $CLIENT_CONNS goroutines, GOMAXPROCS=1" \
    go:tls_client_cpu faster - "(info)"
  bench_row "$figure" coring:tls_client_cpu "wrk -t1 -c$CLIENT_CONNS (C, no runtime: the floor)" \
    wrk:tls_client_cpu faster - "(info)"
  figure="HTTPS client (as above): nginx's CPU use during the run, %"
  bench_row "$figure" coring:tls_client_server_busy "Go net/http" go:tls_client_server_busy of - \
    "(info: near 100, nginx bounds req/s)"
  bench_row "$figure" coring:tls_client_server_busy "wrk" wrk:tls_client_server_busy of - "(info)"
  figure="HTTPS client (as above): failed requests, max over rounds"
  bench_row "$figure" coring:tls_client_failures "Go net/http" go:tls_client_failures - "max<=0" \
    "zero"
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
