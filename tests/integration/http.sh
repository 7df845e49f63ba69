#!/usr/bin/env bash
# samples/http_server (2 worker processes, --root serving a directory under /static/) against
# real clients, for each event engine:
#  1. curl GET / : 200, text/plain, "Hello, World!", Date and Server headers;
#  2. curl with three URLs: one connection for all (%{num_connects} adds up to 1);
#  3. curl POST of a 100 KiB body and a chunked upload of it (Transfer-Encoding: chunked), each
#     followed on the same connection by a GET (the body was consumed exactly);
#  4. curl with Expect: 100-continue and a 64 KiB body: the server sends "HTTP/1.1 100 Continue";
#  5. ab -k -n 2000 -c 10 (HTTP/1.0 keep-alive): 2000 complete, 0 failed, 2000 keep-alive;
#  5b. three SIGUSR1 reloads of the master during ab -k -n 600000: every request answered;
#  6. a 10 MiB file from /static/ arrives intact (cmp); a path out of the directory is 404;
#  7. slowhttptest in slowloris mode (200 connections that send a header line every second and
#     never end their heads): the server answers curl during and after it, and closes the slow
#     connections (header_timeout, 10 s in the sample): slowhttptest's "closed" count.
# Needs BUILD_DIR (samples/http_server built), curl, ab (apache2-utils) and slowhttptest. Prints
# "RESULT: N passed, M failed". Everything it starts runs under timeout(1) and is stopped before
# it returns.
set -uo pipefail
source "$(dirname "$0")/lib/sample_server.bash"
build_dir=${BUILD_DIR:?BUILD_DIR must name a build directory}
server_bin=$build_dir/samples/http_server
source "$(dirname "$0")/lib/checks.bash"

require "$server_bin" curl ab slowhttptest cmp

work=$(mktemp -d)
server_pid=
timeout_pid=
slow_pid=
cleanup() {
  [[ -n $slow_pid ]] && kill -KILL "$slow_pid" 2>/dev/null
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT

root=$work/root
mkdir -p "$root"
head -c $((10 * 1024 * 1024)) /dev/urandom >"$root/big.bin"
echo "SECRET" >"$work/secret.txt"
head -c $((100 * 1024)) /dev/urandom >"$work/upload.bin"
head -c $((64 * 1024)) /dev/urandom >"$work/expect.bin"

# start_server LOG: starts http_server on a free port under timeout(1); sets timeout_pid,
# server_pid (the master) and port.
start_server() {
  start_sample "$server_bin" "$1" --workers 2 --root "$root"
}

# hello: one GET / with curl; prints its status code.
hello() {
  curl -sS --max-time 3 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/" 2>/dev/null
}

for engine in io_uring epoll; do
  export CORING_ENGINE=$engine
  log=$work/server-$engine
  if ! start_server "$log"; then
    fail "[$engine] server start" "$(cat "$log.out" "$log.err" 2>/dev/null)"
    stop_server
    continue
  fi
  url=http://127.0.0.1:$port

  # 1. GET /
  out=$(curl -sS --max-time 5 -D "$work/headers" -o "$work/body" \
    -w '%{http_code} %{content_type}' "$url/" 2>&1)
  if [[ $out == "200 text/plain"* && $(cat "$work/body") == "Hello, World!" ]] &&
    grep -qi '^Date: ' "$work/headers" && grep -qi '^Server: ' "$work/headers"; then
    pass "[$engine] curl GET /: 200 text/plain Hello, World!, Date, Server"
  else
    fail "[$engine] curl GET / ($out)" "$(cat "$work/headers" "$work/body" 2>/dev/null)"
  fi

  # 2. Three URLs, one connection.
  out=$(curl -sS --max-time 5 -o /dev/null -o /dev/null -o /dev/null \
    -w '%{http_code} %{num_connects}\n' "$url/" "$url/" "$url/" 2>&1)
  codes=$(awk '{print $1}' <<<"$out" | tr '\n' ' ')
  connects=$(awk '{s += $2} END {print s}' <<<"$out")
  if [[ $codes == "200 200 200 " && $connects == 1 ]]; then
    pass "[$engine] curl, three URLs: one connection (keep-alive reuse)"
  else
    fail "[$engine] curl, three URLs: codes '$codes', connections '$connects'" "$out"
  fi

  # 3. POST bodies (plain and chunked), each followed by a GET on the same connection.
  for mode in length chunked; do
    extra=()
    [[ $mode == chunked ]] && extra=(-H 'Transfer-Encoding: chunked')
    out=$(curl -sS --max-time 10 "${extra[@]}" --data-binary @"$work/upload.bin" \
      -o /dev/null -w '%{http_code} %{num_connects}\n' "$url/" \
      --next -o /dev/null -w '%{http_code} %{num_connects}\n' "$url/" 2>&1)
    codes=$(awk '{print $1}' <<<"$out" | tr '\n' ' ')
    connects=$(awk '{s += $2} END {print s}' <<<"$out")
    if [[ $codes == "200 200 " && $connects == 1 ]]; then
      pass "[$engine] curl POST of 100 KiB ($mode), then a GET on the same connection"
    else
      fail "[$engine] curl POST ($mode): codes '$codes', connections '$connects'" "$out"
    fi
  done

  # 4. Expect: 100-continue (curl waits up to 5 s for it before sending the body anyway).
  out=$(curl -sS -v --max-time 10 --expect100-timeout 5 -H 'Expect: 100-continue' \
    --data-binary @"$work/expect.bin" -o /dev/null -w 'status=%{http_code}\n' "$url/" 2>&1)
  if grep -q '^< HTTP/1.1 100 Continue' <<<"$out" && grep -q '^status=200' <<<"$out"; then
    pass "[$engine] curl with Expect: 100-continue: 100 Continue, then 200"
  else
    fail "[$engine] curl with Expect: 100-continue" "$(grep -E '^[<>*]|status=' <<<"$out")"
  fi

  # 5. ab -k: HTTP/1.0 keep-alive.
  out=$(timeout -k 5 60 ab -k -n 2000 -c 10 "$url/" 2>&1)
  complete=$(sed -nE 's/^Complete requests: *([0-9]+).*/\1/p' <<<"$out")
  failed_requests=$(sed -nE 's/^Failed requests: *([0-9]+).*/\1/p' <<<"$out")
  keepalive=$(sed -nE 's/^Keep-Alive requests: *([0-9]+).*/\1/p' <<<"$out")
  if [[ $complete == 2000 && $failed_requests == 0 && $keepalive == 2000 ]] &&
    ! grep -q '^Non-2xx responses' <<<"$out"; then
    pass "[$engine] ab -k -n 2000 -c 10: 2000 complete, 0 failed, 2000 keep-alive"
  else
    fail "[$engine] ab -k: complete '$complete', failed '$failed_requests', keep-alive '$keepalive'" \
      "$out"
  fi

  # 5b. Reloads under keep-alive load: three SIGUSR1 to the master while ab runs. Old workers
  # finish their requests (answering with Connection: close), new ones take the socket:
  # every request must be answered, none may fail.
  ab -k -n 600000 -c 10 "$url/" >"$work/ab-reload-$engine.log" 2>&1 &
  ab_pid=$!
  during_load=1
  for _ in 1 2 3; do
    sleep 0.2  # (pacing: the reloads spread over the run)
    kill -0 "$ab_pid" 2>/dev/null || during_load=0
    kill -USR1 "$server_pid"
  done
  kill -0 "$ab_pid" 2>/dev/null || during_load=0
  timeout 60 tail --pid="$ab_pid" -f /dev/null
  wait "$ab_pid"
  ab_status=$?
  out=$(cat "$work/ab-reload-$engine.log")
  complete=$(sed -nE 's/^Complete requests: *([0-9]+).*/\1/p' <<<"$out")
  # ab's "Failed requests" also counts "Length": a response whose byte count differs from the
  # first one's (ab's close_connection compares them). The last response on a connection a
  # stopping worker ends says Connection: close, a header longer than the others: one per
  # connection the reloads ended: each reload ends each of ab's 10 connections at most once,
  # and a connection ab opens again may reach the stopping worker in the instant before it
  # stops accepting (answered once, with close): at most 3 x 10 x 2 (a CI run saw 40). Every
  # other kind must be zero.
  failed_requests=$(sed -nE 's/^ *\(Connect: ([0-9]+), Receive: ([0-9]+), Length: [0-9]+, Exceptions: ([0-9]+)\).*/\1\2\3/p' <<<"$out")
  length_failures=$(sed -nE 's/.*Length: ([0-9]+),.*/\1/p' <<<"$out")
  [[ -z $failed_requests ]] && failed_requests=$(sed -nE 's/^Failed requests: *([0-9]+).*/\1/p' <<<"$out")
  [[ $failed_requests =~ ^0+$ ]] && failed_requests=0
  reloads=$(grep -c 'reload' "$log" 2>/dev/null)
  if ((ab_status == 0 && during_load && ${length_failures:-0} <= 60)) &&
    [[ $complete == 600000 && $failed_requests == 0 ]] &&
    ! grep -q '^Non-2xx responses' <<<"$out" && [[ $(hello) == 200 ]]; then
    pass "[$engine] three reloads during ab -k: 600000 complete, none failed (${length_failures:-0} last responses of closed connections longer: they say close)"
  else
    fail "[$engine] reloads under load: ab status $ab_status, during load $during_load," \
      "complete '$complete', failed '$failed_requests', log lines mentioning reload: $reloads; $out"
  fi

  # 6. Static files: 10 MiB intact; nothing outside the directory.
  rm -f "$work/big.out"
  code=$(curl -sS --max-time 20 -o "$work/big.out" -w '%{http_code}' "$url/static/big.bin" 2>&1)
  if [[ $code == 200 ]] && cmp -s "$root/big.bin" "$work/big.out"; then
    pass "[$engine] curl of a 10 MiB file from /static/: identical"
  else
    fail "[$engine] 10 MiB file: status '$code'" "$(cmp "$root/big.bin" "$work/big.out" 2>&1)"
  fi
  ok=1
  for path in /static/../secret.txt /static/%2e%2e/secret.txt /static/%2E%2e%2fsecret.txt; do
    out=$(curl -sS --max-time 5 --path-as-is -o "$work/leak" -w '%{http_code}' "$url$path" 2>&1)
    if [[ $out != 404 && $out != 400 ]] || grep -q SECRET "$work/leak" 2>/dev/null; then
      ok=0
      fail "[$engine] $path answered $out" "$(cat "$work/leak" 2>/dev/null)"
    fi
  done
  ((ok)) && pass "[$engine] paths out of /static/ are refused"

  # 7. slowloris.
  timeout -k 5 40 slowhttptest -H -c 200 -r 200 -i 1 -x 10 -l 14 -p 3 -u "$url/" \
    -g -o "$work/slow-$engine" >"$work/slow-$engine.log" 2>&1 &
  slow_pid=$!
  sleep 4  # (the slow connections are open and trickling by now)
  during=$(hello)
  wait "$slow_pid"
  slow_status=$?
  slow_pid=
  after=$(hello)
  # Its CSV has a row a second: seconds,closed,pending,connected,available. The test ends
  # early with "Exit status: No open connections left" once the server closed them all.
  last=$(tail -1 "$work/slow-$engine.csv" 2>/dev/null)
  closed=$(cut -d, -f2 <<<"$last")
  connected=$(cut -d, -f4 <<<"$last")
  exit_line=$(sed 's/\x1b\[[0-9;]*m//g' "$work/slow-$engine.log" | grep -a 'Exit status' | tail -1)
  status_line="last row '$last', $exit_line"
  all_closed=0
  [[ $exit_line == *"No open connections left"* ]] && all_closed=1
  if [[ $closed =~ ^[0-9]+$ && $connected =~ ^[0-9]+$ ]] && ((closed >= 150 && connected < 50)); then
    all_closed=1
  fi
  if ((slow_status == 0 && all_closed)) && [[ $during == 200 && $after == 200 ]]; then
    pass "[$engine] slowloris: served during and after; the slow connections closed ($status_line)"
  else
    fail "[$engine] slowloris: status $slow_status, curl during '$during' after '$after'," \
      "last status '$status_line'; $(tail -5 "$work/slow-$engine.log" | tr -d '\r')"
  fi

  stop_server
done

report
((failed == 0))
