# Sourced by the integration scripts that run a sample server (not a test itself).
#
# start_sample BINARY LOG ARGS...: starts BINARY --port 0 ARGS... under timeout(1) in the
# background and waits (up to 5 s) for its "listening on HOST:PORT" line. Sets timeout_pid
# (the shell's child: its exit status is the server's), server_pid (the server itself, which
# gets the signals: timeout(1) forks it) and port; returns non-zero when it did not come up.
# Output goes to LOG.out and LOG.err.
start_sample() {
  local binary=$1 log=$2
  shift 2
  timeout -k 5 120 "$binary" --port 0 "$@" >"$log.out" 2>"$log.err" &
  timeout_pid=$!
  server_pid=
  port=
  local tries
  for ((tries = 0; tries < 100; tries++)); do
    port=$(sed -nE 's/^listening on .*:([0-9]+)$/\1/p' "$log.out" 2>/dev/null)
    [[ -n $port ]] && break
    sleep 0.05
  done
  server_pid=$(pgrep -P "$timeout_pid" | head -1)
  [[ -n $port && -n $server_pid ]]
}

# stop_server: SIGTERM to the master that start_sample started (a graceful shutdown), up to 5 s
# for it to end, then SIGKILL to whatever is left of it and its workers.
stop_server() {
  [[ -n $server_pid ]] || return 0
  local workers waited
  workers=$(pgrep -P "$server_pid" 2>/dev/null)
  kill -TERM "$server_pid" 2>/dev/null
  for ((waited = 0; waited < 100; waited++)); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "$server_pid" $workers 2>/dev/null
  wait "$timeout_pid" 2>/dev/null
  server_pid=
  timeout_pid=
}
