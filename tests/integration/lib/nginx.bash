# Sourced by the integration scripts that run a real nginx on a config of their own (not a test
# itself). Uses $NGINX (the binary) and $work (the script's temporary directory, with
# run/conf, run/logs and run/temp made). nginx runs under timeout(1), so it never outlives a
# script that dies.
#
# free_port: a port nobody listens on now (another program may take it before nginx binds it:
# start_nginx_with tries again).
# start_nginx_with CONFIG PORTS SED_EXPRESSION...: up to 10 tries: picks PORTS (1 or 2) free
# ports (port, other_port), writes CONFIG with @PORT@ and @OTHER_PORT@ replaced and the other
# sed expressions applied to run/conf/nginx.conf, starts nginx and waits (5 s) until every port
# answers. Sets port, other_port and nginx_pid; non-zero when it did not come up.
# stop_nginx: SIGTERM, then SIGKILL after 5 s.
# requests_for PATTERN: the access log's (run/logs/access.log) lines whose URI starts PATTERN.

nginx_pid=

free_port() {
  local candidate
  for ((;;)); do
    candidate=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null || { echo "$candidate"; return; }
  done
}

stop_nginx() {
  [[ -n $nginx_pid ]] || return 0
  kill -TERM "$nginx_pid" 2>/dev/null
  local waited
  for ((waited = 0; waited < 100; waited++)); do
    kill -0 "$nginx_pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "$nginx_pid" 2>/dev/null
  wait "$nginx_pid" 2>/dev/null
  nginx_pid=
}

start_nginx_with() {
  local config=$1 ports=$2 tries waited answering p
  shift 2
  local expressions=()
  for p in "$@"; do expressions+=(-e "$p"); done
  for ((tries = 0; tries < 10; tries++)); do
    port=$(free_port)
    other_port=$(free_port)
    [[ $port == "$other_port" ]] && continue
    sed -e "s|@PORT@|$port|g" -e "s|@OTHER_PORT@|$other_port|g" "${expressions[@]}" "$config" \
      >"$work/run/conf/nginx.conf"
    : >"$work/run/logs/error.log"
    timeout -k 5 300 "$NGINX" -p "$work/run/" -c conf/nginx.conf -e logs/error.log \
      >"$work/nginx.out" 2>&1 &
    nginx_pid=$!
    for ((waited = 0; waited < 100; waited++)); do
      answering=1
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || answering=0
      if ((ports > 1)); then
        (exec 3<>"/dev/tcp/127.0.0.1/$other_port") 2>/dev/null || answering=0
      fi
      ((answering)) && return 0
      kill -0 "$nginx_pid" 2>/dev/null || break
      sleep 0.05
    done
    stop_nginx
  done
  return 1
}

requests_for() {
  grep -F "\"$1" "$work/run/logs/access.log" 2>/dev/null
}
