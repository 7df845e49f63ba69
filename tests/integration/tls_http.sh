#!/usr/bin/env bash
# HTTPS between coring and real peers, once for each event engine. The script makes a
# throwaway CA and certificates with the `openssl` command in its temp directory (nothing is
# committed): one for localhost and 127.0.0.1, one for other.example, both from the CA.
#
# coring's client (samples/http_fetch) against nginx with TLS (tests/integration/nginx_tls.conf.in,
# started here on free 127.0.0.1 ports):
#  1. --cacert: a small file and a 10 MiB file streamed to disk (sha256 intact);
#  2. without the CA (the system's store): -5, "certificate verify failed", exit status 1;
#     --insecure: 200, with a WARNING on stderr;
#  3. nginx's certificate for another name: -5 "IP address mismatch" (by address) and
#     "hostname mismatch" (by name), even with the CA;
#  4. the default context pointed at the CA (SSL_CERT_FILE): 10 URLs over one keep-alive
#     connection (nginx's access log); --cacert with 5 URLs: one full handshake, the other
#     connections resumed their session (the access log's $ssl_session_reused);
#  5. a redirect followed over https.
# coring's server (samples/http_server --cert --key --root, 2 workers, the context made in the
# master) against curl and openssl s_client:
#  6. plaintext HTTP (curl http://) to the TLS port: no answer, the server logs the NOTICE and
#     serves https right after; http_fetch --cacert against the sample server: 200;
#  7. curl --cacert GET /: "Hello, World!"; curl without the CA refuses it (exit 60);
#  8. curl with three URLs: one connection (keep-alive);
#  9. a 10 MiB static file from --root, intact (cmp);
# 10. openssl s_client with a raw request: verified, 200 and the body; a session saved by one
#     s_client is resumed by four more, whichever worker takes them.
# Needs BUILD_DIR (samples/http_fetch and samples/http_server built), nginx, openssl, curl,
# sha256sum and cmp. Prints "RESULT: N passed, M failed". Everything it starts runs under
# timeout(1) and is stopped before it returns.
set -uo pipefail
source "$(dirname "$0")/lib/sample_server.bash"
source "$(dirname "$0")/lib/nginx.bash"
build_dir=${BUILD_DIR:?BUILD_DIR must name a build directory}
fetch=$build_dir/samples/http_fetch
server_bin=$build_dir/samples/http_server
config=$(dirname "$0")/nginx_tls.conf.in
NGINX=${NGINX:-/usr/sbin/nginx}
source "$(dirname "$0")/lib/checks.bash"

require "$fetch" "$server_bin" "$NGINX" openssl curl sha256sum cmp timeout

work=$(mktemp -d)
server_pid=
timeout_pid=
cleanup() {
  stop_server
  stop_nginx
  rm -rf "$work"
}
trap cleanup EXIT

# ---- certificates ------------------------------------------------------------------------------
pki=$work/pki
mkdir -p "$pki"
# leaf NAME SAN: a certificate for NAME from the CA, with the one leaf key.
leaf() {
  openssl req -new -key "$pki/key.pem" -subj "/CN=$1" -out "$pki/$1.csr" &&
    printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
      "$2" >"$pki/$1.ext" &&
    openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
      -days 2 -extfile "$pki/$1.ext" -out "$pki/$1.pem"
}
if ! {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=coring integration test CA" -keyout "$pki/ca.key" -out "$pki/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" &&
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/key.pem" &&
    leaf localhost "DNS:localhost,IP:127.0.0.1" && leaf other.example "DNS:other.example"
} >"$work/openssl.log" 2>&1; then
  fail "certificates (openssl)" "$(cat "$work/openssl.log")"
  report
  exit 1
fi
ca=$pki/ca.pem
# As root, nginx's worker runs as nobody: what it reads must be readable.
chmod 755 "$work" "$pki"
chmod 644 "$pki"/*.pem

# ---- the files served --------------------------------------------------------------------------
root=$work/root
mkdir -p "$root" "$work/run/conf" "$work/run/logs" "$work/run/temp"
chmod 755 "$root" "$work/run"
chmod 777 "$work/run/temp"
printf 'Hello, World!\n' >"$root/hello.txt"
head -c $((10 * 1024 * 1024)) /dev/urandom >"$root/big.bin"
chmod 644 "$root"/*

start_nginx() {
  start_nginx_with "$config" 2 "s|@ROOT@|$root|g" "s|@CERT@|$pki/localhost.pem|g" \
    "s|@OTHER_CERT@|$pki/other.example.pem|g" "s|@KEY@|$pki/key.pem|g"
}

if ! start_nginx; then
  fail "nginx start" "$(cat "$work/nginx.out" "$work/run/logs/error.log" 2>/dev/null)"
  report
  exit 1
fi
nginx_url=https://127.0.0.1:$port
access_log=$work/run/logs/access.log

for engine in io_uring epoll; do
  export CORING_ENGINE=$engine
  # The system's store unless a check says otherwise.
  run() { timeout -k 5 60 env -u SSL_CERT_FILE -u SSL_CERT_DIR "$fetch" "$@" 2>"$work/fetch.err"; }

  # 1. --cacert: small and large.
  out=$(run --cacert "$ca" "$nginx_url/hello.txt?e=$engine")
  status=$?
  rm -f "$work/big.out"
  big=$(run --cacert "$ca" "$nginx_url/big.bin?e=$engine" --output "$work/big.out")
  big_status=$?
  if [[ $status == 0 && $out == "200 14 "* && $big_status == 0 && $big == "200 10485760 "* ]] &&
    [[ $(sha256sum <"$work/big.out") == $(sha256sum <"$root/big.bin") ]]; then
    pass "[$engine] http_fetch --cacert from nginx: 200; a 10 MiB file intact (sha256)"
  else
    fail "[$engine] http_fetch --cacert: '$out' '$big'" "$(cat "$work/fetch.err")"
  fi

  # 2. Without the CA; --insecure.
  out=$(run "$nginx_url/hello.txt?e=$engine&ca=none")
  status=$?
  insecure=$(run --insecure "$nginx_url/hello.txt?e=$engine&ca=insecure")
  insecure_status=$?
  warning=$(grep -c 'WARNING' "$work/fetch.err")
  if [[ $status == 1 && $out == "-5 0 "*"certificate verify failed: unable to get local issuer certificate"* &&
    $insecure_status == 0 && $insecure == "200 14 "* && $warning == 1 ]]; then
    pass "[$engine] without the CA: -5, certificate verify failed; --insecure: 200 with a WARNING"
  else
    fail "[$engine] without the CA: '$out' ($status); --insecure: '$insecure' ($insecure_status), warnings $warning" \
      "$(cat "$work/fetch.err")"
  fi

  # 3. A certificate for another name.
  by_address=$(run --cacert "$ca" "https://127.0.0.1:$other_port/hello.txt")
  by_name=$(run --cacert "$ca" "https://localhost:$other_port/hello.txt")
  if [[ $by_address == "-5 0 "*"certificate verify failed: IP address mismatch"* &&
    $by_name == "-5 0 "*"certificate verify failed: hostname mismatch"* ]]; then
    pass "[$engine] a certificate for other.example: -5, IP address mismatch / hostname mismatch"
  else
    fail "[$engine] another name: '$by_address' / '$by_name'" "$(cat "$work/fetch.err")"
  fi

  # 4. Keep-alive with the default context (pointed at the CA); resumption with --cacert.
  urls=()
  for ((i = 1; i <= 10; i++)); do urls+=("$nginx_url/hello.txt?keep=$engine&i=$i"); done
  out=$(timeout -k 5 60 env SSL_CERT_FILE="$ca" "$fetch" "${urls[@]}" 2>"$work/fetch.err")
  status=$?
  connections=$(requests_for "/hello.txt?keep=$engine&" | awk '{print $1}' | sort -u | wc -l)
  if [[ $status == 0 && $(grep -c '^200 14 ' <<<"$out") == 10 && $connections == 1 ]]; then
    pass "[$engine] the default context (SSL_CERT_FILE): 10 requests on one keep-alive connection"
  else
    fail "[$engine] default context keep-alive: connections $connections" "$out $(cat "$work/fetch.err")"
  fi
  urls=()
  for ((i = 1; i <= 5; i++)); do urls+=("$nginx_url/hello.txt?resume=$engine&i=$i"); done
  out=$(run --cacert "$ca" "${urls[@]}")
  status=$?
  # Connections that began with a full handshake (nginx logs "." for every request on one).
  full=$(requests_for "/hello.txt?resume=$engine&" | awk '$3 == "." {print $1}' | sort -u | wc -l)
  logged=$(requests_for "/hello.txt?resume=$engine&" | wc -l)
  if [[ $status == 0 && $(grep -c '^200 14 ' <<<"$out") == 5 && $logged == 5 && $full == 1 ]]; then
    pass "[$engine] --cacert, 5 requests: one full handshake, the rest resumed or reused"
  else
    fail "[$engine] resumption: $full full handshakes of $logged" \
      "$out $(requests_for "/hello.txt?resume=$engine&")"
  fi

  # 5. A redirect over https.
  out=$(run --cacert "$ca" --redirects 1 "$nginx_url/moved")
  if [[ $? == 0 && $out == "200 14 "* ]]; then
    pass "[$engine] return 301 followed over https"
  else
    fail "[$engine] redirect: '$out'" "$(cat "$work/fetch.err")"
  fi

  # ---- coring's server ---------------------------------------------------------------------
  log=$work/server-$engine
  if ! start_sample "$server_bin" "$log" --workers 2 --root "$root" --cert "$pki/localhost.pem" \
    --key "$pki/key.pem"; then
    fail "[$engine] server start" "$(cat "$log.out" "$log.err" 2>/dev/null)"
    stop_server
    continue
  fi
  url=https://localhost:$port

  # 6. Plaintext to the TLS port (first: the NOTICE of a failed handshake is limited to one a
  #    second, and the check without the CA below fails one too); http_fetch against the
  #    sample.
  curl -sS --max-time 5 -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null
  plain=$?
  # The worker that refused it writes the NOTICE once it has closed the connection: up to 5 s.
  notice='NOTICE .*TLS handshake failed: http request (plaintext HTTP sent to a TLS port); closed'
  for ((waited = 0; waited < 100; waited++)); do
    grep -q "$notice" "$log.err" && break
    sleep 0.05
  done
  notices=$(grep -c "$notice" "$log.err")
  after=$(curl -sS --max-time 5 --cacert "$ca" "$url/" 2>&1)
  fetched=$(run --cacert "$ca" "$url/")
  if [[ $plain != 0 && $notices == 1 && $after == "Hello, World!" && $fetched == "200 13 "* ]]; then
    pass "[$engine] plaintext to the TLS port: closed (curl exit $plain), NOTICE logged; served after; http_fetch: 200"
  else
    fail "[$engine] plaintext: curl exit $plain, notices $notices, after '$after', http_fetch '$fetched'" \
      "$(cat "$log.err" "$work/fetch.err")"
  fi

  # 7. curl --cacert; curl without it.
  out=$(curl -sS --max-time 5 --cacert "$ca" "$url/" 2>&1)
  curl -sS --max-time 5 -o /dev/null "$url/" 2>/dev/null
  refused=$?
  if [[ $out == "Hello, World!" && $refused == 60 ]]; then
    pass "[$engine] curl --cacert: Hello, World!; without the CA curl refuses the certificate"
  else
    fail "[$engine] curl: '$out', without the CA: exit $refused"
  fi

  # 8. Three URLs, one connection.
  out=$(curl -sS --max-time 5 --cacert "$ca" -o /dev/null -o /dev/null -o /dev/null \
    -w '%{http_code} %{num_connects}\n' "$url/" "$url/" "$url/" 2>&1)
  codes=$(awk '{print $1}' <<<"$out" | tr '\n' ' ')
  connects=$(awk '{s += $2} END {print s}' <<<"$out")
  if [[ $codes == "200 200 200 " && $connects == 1 ]]; then
    pass "[$engine] curl, three URLs over TLS: one connection (keep-alive)"
  else
    fail "[$engine] curl, three URLs: codes '$codes', connections '$connects'" "$out"
  fi

  # 9. 10 MiB from --root.
  rm -f "$work/static.out"
  out=$(curl -sS --max-time 30 --cacert "$ca" -o "$work/static.out" -w '%{http_code}' \
    "$url/static/big.bin" 2>&1)
  if [[ $out == 200 ]] && cmp -s "$root/big.bin" "$work/static.out"; then
    pass "[$engine] a 10 MiB static file over TLS: intact (cmp)"
  else
    fail "[$engine] static file: '$out'" "$(cmp "$root/big.bin" "$work/static.out" 2>&1)"
  fi

  # 10. openssl s_client: a raw request; a saved session resumed four times.
  request=$'GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'
  client() {
    timeout -k 2 10 openssl s_client -connect "127.0.0.1:$port" -servername localhost \
      -CAfile "$ca" -ign_eof "$@" <<<"$request" 2>&1
  }
  rm -f "$work/session.pem"
  out=$(client -sess_out "$work/session.pem")
  reused=0
  for ((i = 0; i < 4; i++)); do
    client -sess_in "$work/session.pem" | grep -q '^Reused, TLSv1.3' && reused=$((reused + 1))
  done
  if grep -q '^HTTP/1.1 200 OK' <<<"$out" && grep -q '^Hello, World!' <<<"$out" &&
    grep -q 'Verify return code: 0 (ok)' <<<"$out" && ((reused == 4)); then
    pass "[$engine] openssl s_client: verified, 200 Hello, World!; the session resumed 4 of 4 times"
  else
    fail "[$engine] s_client: resumed $reused of 4" "$out"
  fi

  stop_server
done

if grep -q '\[\(alert\|crit\|emerg\)\]' "$work/run/logs/error.log"; then
  fail "nginx error log" "$(cat "$work/run/logs/error.log")"
fi
stop_nginx
report
((failed == 0))
