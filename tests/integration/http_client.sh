#!/usr/bin/env bash
# coring's HTTP client (samples/http_fetch) against a real nginx started here on a free
# 127.0.0.1 port with its own configuration (tests/integration/nginx_client.conf.in), once for
# each event engine:
#  1. small static files with Content-Length: status 200 and the files' sizes;
#  2. a 10 MiB file streamed to a file (on_body): its sha256 is the original's;
#  3. gzip on the fly (chunked + gzip) with --gzip: the decoded body equals the file, and the
#     access log shows nginx sent fewer bytes than that;
#  4. keepalive_requests 5: 20 URLs on one client in a row all succeed, and the access log
#     shows exactly those 20 requests (none lost, none twice) over exactly 4 connections;
#  5. keep-alive reuse: 10 URLs, one connection; 60 URLs by 6 coroutines: at most 6 connections;
#  6. 404 for a missing file (a response, exit status 0); HEAD of the large file and of a small
#     one: no bodies, both on one connection (the client waited for no body after a HEAD);
#  7. `return 301` followed with --redirects (and not followed without), and a 302 to an
#     absolute URL with dot segments.
# Needs BUILD_DIR (samples/http_fetch built), nginx, sha256sum and cmp. Prints
# "RESULT: N passed, M failed". nginx runs under timeout(1) and is stopped before it returns.
set -uo pipefail
build_dir=${BUILD_DIR:?BUILD_DIR must name a build directory}
fetch=$build_dir/samples/http_fetch
config=$(dirname "$0")/nginx_client.conf.in
NGINX=${NGINX:-/usr/sbin/nginx}
source "$(dirname "$0")/lib/nginx.bash"
source "$(dirname "$0")/lib/checks.bash"

require "$fetch" "$NGINX" sha256sum cmp timeout

work=$(mktemp -d)
cleanup() {
  stop_nginx
  rm -rf "$work"
}
trap cleanup EXIT

# The files nginx serves. As root, nginx's worker runs as nobody: the tree must be readable.
root=$work/root
mkdir -p "$root/gz" "$root/limited" "$work/run/conf" "$work/run/logs" "$work/run/temp"
chmod 755 "$work" "$root" "$root/gz" "$root/limited" "$work/run"
chmod 777 "$work/run/temp"
printf 'Hello, World!\n' >"$root/hello.txt"
printf 'small file\n' >"$root/small.txt"
cp "$root/small.txt" "$root/limited/small.txt"
head -c $((10 * 1024 * 1024)) /dev/urandom >"$root/big.bin"
for ((i = 0; i < 20000; i++)); do echo "line $i of a text that compresses well"; done >"$root/gz/text.txt"
chmod 644 "$root"/*.* "$root"/gz/* "$root"/limited/*

start_nginx() {
  start_nginx_with "$config" 1 "s|@ROOT@|$root|g"
}

if ! start_nginx; then
  fail "nginx start" "$(cat "$work/nginx.out" "$work/run/logs/error.log" 2>/dev/null)"
  report
  exit 1
fi
url=http://127.0.0.1:$port
access_log=$work/run/logs/access.log

for engine in io_uring epoll; do
  export CORING_ENGINE=$engine
  run() { timeout -k 5 60 "$fetch" "$@" 2>"$work/fetch.err"; }

  # 1. Small static files.
  out=$(run "$url/hello.txt?e=$engine" "$url/small.txt?e=$engine")
  if [[ $? == 0 ]] && grep -q "^200 14 .* $url/hello.txt" <<<"$out" &&
    grep -q "^200 11 .* $url/small.txt" <<<"$out"; then
    pass "[$engine] small files: 200, Content-Length bodies of 14 and 11 bytes"
  else
    fail "[$engine] small files" "$out $(cat "$work/fetch.err")"
  fi

  # 2. 10 MiB, streamed to a file.
  rm -f "$work/big.out"
  out=$(run "$url/big.bin?e=$engine" --output "$work/big.out")
  if [[ $? == 0 && $out == "200 10485760 "* ]] &&
    [[ $(sha256sum <"$work/big.out") == $(sha256sum <"$root/big.bin") ]]; then
    pass "[$engine] 10 MiB file: intact (sha256)"
  else
    fail "[$engine] 10 MiB file: $out" "$(cat "$work/fetch.err"; cmp "$root/big.bin" "$work/big.out" 2>&1)"
  fi

  # 3. gzip on the fly.
  rm -f "$work/text.out"
  out=$(run "$url/gz/text.txt?e=$engine" --gzip --output "$work/text.out")
  status=$?
  size=$(stat -c %s "$root/gz/text.txt")
  sent=$(requests_for "/gz/text.txt?e=$engine" | tail -1 | awk '{print $NF}')
  if [[ $status == 0 && $out == "200 $size "* ]] && cmp -s "$root/gz/text.txt" "$work/text.out" &&
    [[ -n $sent ]] && ((sent < size / 4)); then
    pass "[$engine] gzip on the fly: decoded body identical ($size bytes from $sent on the wire)"
  else
    fail "[$engine] gzip: '$out', sent '$sent'" "$(cat "$work/fetch.err"; cmp "$root/gz/text.txt" "$work/text.out" 2>&1)"
  fi

  # 4. keepalive_requests 5: 20 requests in a row, one client.
  urls=()
  for ((i = 1; i <= 20; i++)); do urls+=("$url/limited/small.txt?e=$engine&i=$i"); done
  out=$(run "${urls[@]}")
  status=$?
  answered=$(grep -c '^200 11 ' <<<"$out")
  logged=$(requests_for "/limited/small.txt?e=$engine&" | awk '{print $4}' | sort)
  expected=$(printf '"/limited/small.txt?e=%s&i=%d"\n' $(for ((i = 1; i <= 20; i++)); do echo "$engine $i"; done) | sort)
  connections=$(requests_for "/limited/small.txt?e=$engine&" | awk '{print $1}' | sort -u | wc -l)
  per_connection=$(requests_for "/limited/small.txt?e=$engine&" | awk '{print $2}' | sort -n | uniq -c | awk '{print $1}' | tr '\n' ' ')
  if [[ $status == 0 && $answered == 20 && $logged == "$expected" && $connections == 4 &&
    $per_connection == "4 4 4 4 4 " ]]; then
    pass "[$engine] keepalive_requests 5: 20 of 20 answered, each logged once, 4 connections"
  else
    fail "[$engine] keepalive_requests: answered $answered, connections $connections, requests numbered per connection '$per_connection'" \
      "$out $(cat "$work/fetch.err"); log: $(requests_for "/limited/small.txt?e=$engine&")"
  fi

  # 5. Reuse: 10 in a row on one connection; 60 by 6 coroutines on at most 6.
  urls=()
  for ((i = 1; i <= 10; i++)); do urls+=("$url/small.txt?reuse=$engine&i=$i"); done
  out=$(run "${urls[@]}")
  status=$?
  connections=$(requests_for "/small.txt?reuse=$engine&" | awk '{print $1}' | sort -u | wc -l)
  if [[ $status == 0 && $(grep -c '^200 11 ' <<<"$out") == 10 && $connections == 1 ]]; then
    pass "[$engine] 10 requests in a row: one keep-alive connection"
  else
    fail "[$engine] reuse: connections $connections" "$out $(cat "$work/fetch.err")"
  fi
  urls=()
  for ((i = 1; i <= 60; i++)); do urls+=("$url/hello.txt?many=$engine&i=$i"); done
  out=$(run "${urls[@]}" --concurrency 6)
  status=$?
  connections=$(requests_for "/hello.txt?many=$engine&" | awk '{print $1}' | sort -u | wc -l)
  logged=$(requests_for "/hello.txt?many=$engine&" | wc -l)
  if [[ $status == 0 && $(grep -c '^200 14 ' <<<"$out") == 60 && $logged == 60 ]] &&
    ((connections >= 1 && connections <= 6)); then
    pass "[$engine] 60 requests by 6 coroutines: all answered, $connections connections"
  else
    fail "[$engine] concurrency 6: logged $logged, connections $connections" "$out $(cat "$work/fetch.err")"
  fi

  # 6. 404 and HEAD.
  out=$(run "$url/missing.txt?e=$engine")
  status=$?
  head_out=$(run --method HEAD "$url/big.bin?head=$engine" "$url/small.txt?head=$engine")
  head_status=$?
  heads=$(requests_for "/" | grep "?head=$engine\"" | grep -c ' HEAD ')
  same=$(requests_for "/" | grep "?head=$engine\"" | awk '{print $1}' | sort -u | wc -l)
  if [[ $status == 0 && $out == "404 "* && $head_status == 0 && $head_out == "200 0 "*$'\n'"200 0 "* &&
    $heads == 2 && $same == 1 ]]; then
    pass "[$engine] 404 is a response; HEAD of 10 MiB and of a small file: no bodies, one connection"
  else
    fail "[$engine] 404 / HEAD" "$out / $head_out $(cat "$work/fetch.err")"
  fi

  # 7. Redirects.
  followed=$(run --redirects 2 "$url/moved" "$url/moved-absolute")
  status=$?
  not_followed=$(run "$url/moved")
  if [[ $status == 0 && $followed == "200 11 "*$'\n'"200 14 "* && $not_followed == "301 "* ]]; then
    pass "[$engine] return 301 followed with --redirects (and a 302 to an absolute URL), not without"
  else
    fail "[$engine] redirects" "$followed / $not_followed $(cat "$work/fetch.err")"
  fi
done

if grep -q '\[\(alert\|crit\|emerg\)\]' "$work/run/logs/error.log"; then
  fail "nginx error log" "$(cat "$work/run/logs/error.log")"
fi
stop_nginx
report
((failed == 0))
