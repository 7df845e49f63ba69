#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what is missing, builds, runs every
# doctest suite under each event engine (io_uring, epoll) and every integration script, then the
# same under an ASan+UBSan build, then the libFuzzer targets for a bounded time (clang,
# ASan+UBSan).
# The last line is "N passed, N failed" over every suite (doctest test cases plus integration
# checks); the exit status is 0 only when nothing failed.
#
#   scripts/test.sh                 everything
#   SANITIZE=0 scripts/test.sh      skip the sanitizer pass
#   FUZZ=0 scripts/test.sh          skip the fuzz pass (clang + libFuzzer, FUZZ_SECONDS each)
#   SUITES="core channel" scripts/test.sh   only these suites (names of tests/*_test.cpp)
#   ENGINES=epoll scripts/test.sh           only this event engine (default: io_uring epoll)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

scripts/deps.sh || { echo "deps: installation failed"; echo "0 passed, 1 failed"; exit 1; }

total_passed=0
total_failed=0
failures=()

# run_suite LABEL TIMEOUT CMD...: runs one doctest binary or integration script and adds its
# counts. A suite that dies without printing its summary counts as one failure.
run_suite() {
  local label=$1 limit=$2
  shift 2
  local log
  log=$(mktemp)
  local start=$SECONDS
  timeout -k 10 "$limit" "$@" >"$log" 2>&1
  local status=$?
  local passed failed
  # doctest: "[doctest] test cases: 12 | 12 passed | 0 failed | 0 skipped"
  # integration scripts: "RESULT: N passed, M failed"
  if line=$(grep -E '^\[doctest\] test cases:' "$log" | tail -1) && [[ -n $line ]]; then
    passed=$(sed -E 's/.*\| *([0-9]+) passed.*/\1/' <<<"$line")
    failed=$(sed -E 's/.*\| *([0-9]+) failed.*/\1/' <<<"$line")
  elif line=$(grep -E '^RESULT: [0-9]+ passed, [0-9]+ failed' "$log" | tail -1) && [[ -n $line ]]; then
    passed=$(sed -E 's/^RESULT: ([0-9]+) passed.*/\1/' <<<"$line")
    failed=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
  else
    passed=0
    failed=0
  fi
  if ((status != 0 && failed == 0)); then failed=1; fi
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
  printf '%-36s %4d passed %3d failed  (%ds)\n' "$label" "$passed" "$failed" $((SECONDS - start))
  if ((failed > 0)); then
    failures+=("$label")
    echo "----- $label output (last 60 lines) -----"
    tail -60 "$log"
    echo "----- end of $label -----"
  fi
  rm -f "$log"
}

# build DIR OPTIONS...: configures (or brings an existing build's options up to date) and
# builds; a failed build counts as a failure. Our own builds turn warnings into errors (users'
# builds do not: see meson.build).
build() {
  local dir=$1
  shift
  if [[ ! -f $dir/build.ninja ]]; then
    meson setup "$dir" -Dwerror=true "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; return 1; }
  else
    meson configure "$dir" -Dwerror=true "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; return 1; }
  fi
  ninja -C "$dir" >"$dir.build.log" 2>&1 || { tail -80 "$dir.build.log"; return 1; }
}

# run_all DIR LABEL_SUFFIX: every suite of one build, once per event engine (CORING_ENGINE
# picks it for Engine::automatic, which the suites use), then the integration scripts.
run_all() {
  local dir=$1 suffix=$2 binary name engine
  if ! compgen -G "$dir/tests/*_test" >/dev/null; then
    # meson skips the suites when doctest is missing; here that is a failure, not a pass.
    run_suite "test suites$suffix" 10 bash -c 'echo "no test binaries in $1/tests"; exit 1' _ "$dir"
    return
  fi
  for engine in ${ENGINES:-io_uring epoll}; do
    for binary in "$dir"/tests/*_test; do
      name=$(basename "$binary" _test)
      if [[ -n ${SUITES:-} && " $SUITES " != *" $name "* ]]; then continue; fi
      CORING_ENGINE=$engine run_suite "$name [$engine]$suffix" 600 "$binary"
    done
  done
  for script in tests/integration/*.sh; do
    [[ -e $script ]] || continue
    name=$(basename "$script" .sh)
    if [[ -n ${SUITES:-} && " $SUITES " != *" $name "* ]]; then continue; fi
    BUILD_DIR="$root/$dir" run_suite "$name$suffix" 600 bash "$script"
  done
}

echo "== build (debugoptimized, assertions on)"
if build build-test --buildtype=debugoptimized -Db_ndebug=false --prefix="$root/build-test/prefix"; then
  run_all build-test ""
else
  total_failed=$((total_failed + 1))
  failures+=("build")
fi

if [[ ${SANITIZE:-1} != 0 ]]; then
  echo "== build (ASan + UBSan)"
  # detect_stack_use_after_return: locals whose address escapes live in per-coroutine fake
  # stacks, freed when a frame returns, so a coroutine that touches a dead frame of another one
  # is caught (every stack switch is annotated for ASan).
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:detect_stack_use_after_return=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
  if build build-asan --buildtype=debugoptimized -Db_ndebug=false -Db_sanitize=address,undefined \
      -Db_lundef=false -Dbenchmarks=false --prefix="$root/build-asan/prefix"; then
    CORING_SANITIZED=1 run_all build-asan " (asan)"
  else
    total_failed=$((total_failed + 1))
    failures+=("build (asan)")
  fi
fi

# Untrusted bytes (packet framing) under libFuzzer, for a bounded time, with ASan + UBSan.
if [[ ${FUZZ:-1} != 0 && ${SANITIZE:-1} != 0 ]]; then
  echo "== fuzz (clang, libFuzzer, ${FUZZ_SECONDS:=30} s per target)"
  if ! command -v clang++ >/dev/null; then
    echo "clang++ missing: the fuzz pass needs it"
    total_failed=$((total_failed + 1))
    failures+=("fuzz (no clang++)")
  elif CXX=clang++ CC=clang build build-fuzz --buildtype=debugoptimized -Dfuzz=true \
      -Db_sanitize=address,undefined -Db_lundef=false -Dtests=false -Dbenchmarks=false \
      -Dsamples=false; then
    for target in build-fuzz/fuzz/*_fuzz; do
      name=$(basename "$target")
      seeds=fuzz/corpus/${name%_fuzz}
      corpus=$(mktemp -d)
      # libFuzzer writes new inputs to the first directory, reads the seeds from the second.
      run_suite "$name" $((FUZZ_SECONDS + 120)) bash -c '
        "$1" -max_total_time="$2" -max_len=2048 -timeout=20 -print_final_stats=1 \
          -artifact_prefix="$4/" "$3" "$5" >"$3.log" 2>&1
        status=$?
        grep -m5 -E "^[a-z_]+_fuzz: " "$3.log"  # a harness violation says what it was
        tail -25 "$3.log"
        if ((status == 0)); then echo "RESULT: 1 passed, 0 failed"; else
          echo "RESULT: 0 passed, 1 failed (crash input kept in $4)"; fi
        exit $status' _ "$target" "$FUZZ_SECONDS" "$corpus" "$root/build-fuzz" "$seeds"
      rm -rf "$corpus" "$corpus.log"
    done
  else
    total_failed=$((total_failed + 1))
    failures+=("build (fuzz)")
  fi
fi

if ((${#failures[@]} > 0)); then echo "failed: ${failures[*]}"; fi
echo "$total_passed passed, $total_failed failed"
((total_failed == 0))
