#!/usr/bin/env bash
# samples/tcp_server with worker processes, under real load, for each event engine:
#  1. reloads under churn: 2 workers; several client threads connect, send a line, read the
#     echo and close, for several seconds, while the master gets SIGUSR1 five times and then
#     SIGTERM. Every round trip must get its answer (no failure, no reset) and the master must
#     exit 0 after exactly five reloads.
#  2. the forced kill: a worker with a tick() timer nobody clears never ends on its own; with a
#     long-lived connection open, SIGTERM makes the master kill it after --max-wait-time, log
#     "WARNING worker exit timeout, forced to terminate", and exit 0; the kill closes the
#     connection.
# Needs BUILD_DIR (samples/tcp_server and tests/churn_load built). Prints "RESULT: N passed,
# M failed". Everything it starts runs under timeout(1) and is stopped before it returns.
set -uo pipefail
source "$(dirname "$0")/lib/sample_server.bash"
build_dir=${BUILD_DIR:?BUILD_DIR must name a build directory}
server_bin=$build_dir/samples/tcp_server
churn_bin=$build_dir/tests/churn_load
source "$(dirname "$0")/lib/checks.bash"

require "$server_bin" "$churn_bin"

work=$(mktemp -d)
server_pid=
cleanup() {
  [[ -n $server_pid ]] && kill -KILL "$server_pid" 2>/dev/null
  pkill -KILL -f "$work/" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# start_server LOG ARGS...: starts tcp_server on a free port under timeout(1); sets
# timeout_pid (our child: its exit status is the server's), server_pid (the server, which gets
# the signals) and port.
start_server() {
  local log=$1
  shift
  start_sample "$server_bin" "$log" "$@"
}

# wait_exit SECONDS: sets status to the server's exit status (timeout's passes it on), or to
# 255 after SECONDS (then it is killed). Not in a $(...): only this shell can wait for it.
wait_exit() {
  local limit=$1 waited=0
  while kill -0 "$server_pid" 2>/dev/null; do
    if ((waited >= limit * 20)); then
      kill -KILL "$server_pid" 2>/dev/null
      wait "$timeout_pid" 2>/dev/null
      status=255
      return
    fi
    sleep 0.05
    waited=$((waited + 1))
  done
  wait "$timeout_pid" 2>/dev/null
  status=$?
}

for engine in io_uring epoll; do
  export CORING_ENGINE=$engine
  log=$work/reload-$engine
  if ! start_server "$log" --workers 2; then
    fail "[$engine] reloads under churn: server start" "$(cat "$log.err")"
    continue
  fi
  result=$(timeout -k 5 60 "$churn_bin" --port "$port" --threads 4 --seconds 6 \
    --signal "$server_pid:$(kill -l USR1):5")
  churn_status=$?
  kill -TERM "$server_pid"
  wait_exit 20
  reloads=$(grep -c 'INFO reloading 2 workers' "$log.err")
  if ((churn_status == 0)) && [[ $result == *" failures=0 "* && $reloads == 5 ]] &&
    [[ $result == *"signals=5"* ]]; then
    pass "[$engine] reloads under churn: $result"
  else
    fail "[$engine] reloads under churn: churn exit $churn_status, $reloads reloads: $result" \
      "$(cat "$log.err")"
  fi
  if ((status == 0)) && grep -q 'shutting down 2 workers' "$log.err"; then
    pass "[$engine] the master exits 0 after SIGTERM"
  else
    fail "[$engine] the master exits 0 after SIGTERM (status $status)" "$(cat "$log.err")"
  fi
  server_pid=

  log=$work/stuck-$engine
  if ! start_server "$log" --workers 1 --stuck-timer --max-wait-time 300; then
    fail "[$engine] forced kill: server start" "$(cat "$log.err")"
    continue
  fi
  # A long-lived connection the worker holds (its handler waits in recv).
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'hi\n' >&3
  read -r -t 5 echoed <&3
  kill -TERM "$server_pid"
  wait_exit 20
  # The kill closed the connection: end of stream (or a reset) instead of a hang.
  if read -r -t 5 rest <&3; then closed=no; else closed=yes; fi
  exec 3<&-
  if [[ ${echoed:-} == hi && $closed == yes ]] &&
    grep -q 'WARNING worker exit timeout, forced to terminate' "$log.err"; then
    pass "[$engine] a worker that never ends is killed after max_wait_time, with the warning"
  else
    fail "[$engine] forced kill (echoed '${echoed:-}', closed $closed)" "$(cat "$log.err")"
  fi
  if ((status == 0)) && grep -q 'shutting down 1 workers' "$log.err"; then
    pass "[$engine] the master exits 0 after the forced kill"
  else
    fail "[$engine] the master exits 0 after the forced kill (status $status)" "$(cat "$log.err")"
  fi
  server_pid=
done

report
((failed == 0))
