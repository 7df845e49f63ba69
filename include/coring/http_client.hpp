// coring::http::Client: HTTP/1.1 requests from straight-line coroutine code, and the one-call
// functions http::get(url) / http::post(url, body) behind which idle connections wait per host.
//
// A Client talks to one host:port over one connection at a time, in plain HTTP or, with
// ClientOptions::https, over TLS (HTTPS, see below), kept open between requests while
// keep-alive holds (the HTTP/1.1 default): get(), post() and execute() send a request, wait for
// the whole response and return true when one arrived, whatever its status (404 included);
// status_code(), header(), headers() and body() then describe it until the next request. The
// response is read with llhttp in strict mode (the server's adapter): bodies framed by
// Content-Length, chunked (trailers are checked and kept, see trailer()) or read until the server
// closes (HTTP/1.0, or no length given); a response to HEAD, and every 204 and 304, has no body
// whatever its head claims; interim 1xx responses (100 Continue included) are skipped, up to 5
// (more: -3, EBADMSG, as Go refuses them). Options:
// a decoded body (decompress: gzip and deflate through zlib), a body handed out in pieces instead
// of stored (on_body: a 10 GiB download needs no 10 GiB of memory), redirects followed
// (max_redirects), a request body sent from a file with sendfile(2) (execute_file, post_file).
//
// The request head is Host (with the port unless it is the scheme's default: 80 for http, 443
// for https), User-Agent: coring/0.1,
// Content-Length when there is a body (also 0 for POST, PUT and PATCH without one),
// Accept-Encoding: gzip, deflate with decompress, Connection: close without keep_alive, then
// the headers of set_headers(), in their order. A user header replaces the default of the same
// name (Host, User-Agent, Accept-Encoding, Connection); Content-Length and Transfer-Encoding are
// the client's (the body is framed by its size) and are not sent from set_headers().
//
// Connections. One is reused only after its previous response was read whole, and never after a
// response that said `Connection: close`, an HTTP/1.0 response without keep-alive, a body read
// until close, or bytes the server sent beyond the response. A connection is checked before
// each reuse (a peek that does not wait, as Go's transport learns of a close from its background
// read): one the server closed, or one with bytes nobody asked for waiting (a body after a HEAD,
// more than a Content-Length said), is replaced before the request is sent, so a server's
// keepalive_timeout costs no request, POST included, and no request reads another's leftovers
// as its response. When the server closes a reused
// connection before any byte of the response came (a close the check could not see yet: a
// keepalive_requests limit without `Connection: close`, or a close racing the request), a
// replayable request is sent again, once, on a new connection: GET, HEAD, PUT, DELETE, OPTIONS and
// TRACE, and any request with an Idempotency-Key header. Any other (POST, PATCH...) fails with -3
// or -4 and is never sent twice. A fresh connection is never retried.
//
// How things fail. get/post/execute return false, status_code() says where it failed and error()
// why (an errno; error_message() a readable text). The connection is closed after any failure,
// body() is empty (never part of a body as if it were all of it), and header() keeps the fields
// of a head that had arrived whole, if any.
// - -1, the connection could not be made: the kernel's errno (ECONNREFUSED, ENETUNREACH...),
//   ETIMEDOUT after connect_timeout (or when the request's timeout ran out first), a name that
//   does not resolve (ENXIO, see coring::resolve), EPERM outside a coroutine, ECANCELED when
//   cancel(cid) or close() ended the wait.
// - -2, the request timed out (ETIMEDOUT): timeout, which covers the whole call (connecting,
//   sending, every byte of the response, retries and redirects), ran out. A timeout of zero or
//   less fails every request at once this way, before anything is sent.
// - -3, no complete response: the server closed or reset the connection first (ECONNRESET, also
//   for a clean close mid-response: a body cut short is never a success), or the response was
//   refused: malformed (EBADMSG: a signed, non-numeric or duplicated Content-Length, Content-Length
//   beside Transfer-Encoding, a bad status line or version, a 101 nobody asked for, a bare LF,
//   obs-fold or a bad field name, bad chunked framing, a compressed body that is corrupt or ends
//   early, an unusable Location), a head over max_header_size (EMSGSIZE), a body over
//   max_body_size (EFBIG; decided from Content-Length before any body byte is read when it can
//   be), on_body returned false (ECANCELED), or cancel(cid) or close() from another coroutine
//   while the response was awaited (ECANCELED).
// - -4, the request could not be sent: the kernel's errno (EPIPE, ECONNRESET), ECANCELED (cancel
//   or close while sending), EINVAL for a request that cannot be written (a method that is not a
//   token; a path that does not start with '/' (an empty one is "/"), other than "*", or that
//   holds a space, CR, LF or other control byte; a header from set_headers() with a name that is
//   not a token or a CR, LF or NUL in its value), or the file of execute_file(): its open() errno,
//   EINVAL when it is not a regular file, EIO when it became shorter while it was sent. If the
//   server answered before it stopped reading (a 413, say, then closed), that answer is returned
//   instead, and the call succeeds.
// - -5, the TLS handshake failed (https only; the TCP connection had been made): error() EPROTO
//   with OpenSSL's reason in error_message(), "https://HOST:PORT: TLS handshake failed: " then
//   "certificate verify failed: certificate has expired", "...: hostname mismatch" (the
//   certificate is not for the URL's host; an IP address is checked against its IP entries),
//   "...: unable to get local issuer certificate" or "...: self-signed certificate in
//   certificate chain" (a CA the client does not trust), "wrong version number (the peer does
//   not speak TLS)" (a plaintext server on that port), "tlsv1 alert ..." (the server refused
//   us); ECONNRESET when the server closed the connection during the handshake; ETIMEDOUT
//   when it did not complete within connect_timeout (or the rest of timeout); ECANCELED
//   (cancel(cid), close()); EINVAL when ClientOptions::tls holds a server context; the errno of
//   TlsContext::client() when the default context cannot be made. The handshake of a reused
//   connection is not repeated, and no request is ever sent on a connection that failed one.
// - Redirects (max_redirects > 0): 301, 302 and 303 become GET without a body (HEAD stays HEAD),
//   307 and 308 repeat the method and body; Location may be absolute (another host or port too:
//   the client connects there for the hop, and the next request goes back to its own host) or
//   relative. Authorization, Cookie and WWW-Authenticate from set_headers() are not sent to
//   another host:port, nor to another scheme (an https request's credentials never go out in
//   clear; Go drops them for another host the same way). A redirect may go from http to https
//   and back: the hop connects with the Location's scheme (a scheme-relative "//host/path"
//   keeps the request's). A 3xx without Location, or the one that would exceed max_redirects,
//   is returned as the response (true, status 3xx, its body stored or handed to on_body as any
//   response's). So is a 307 or 308 that would send a request body (of one byte or more) from
//   https to plain http: Go follows it, but a body that went out encrypted must not go out
//   again in clear (a 301, 302 or 303 downgrade is followed: its GET carries no body; so is a
//   307 of a request without one). A followed redirect's body is dropped, never handed to
//   on_body, and read only up to 2 KiB, as Go's transport does (maxBodySlurpSize): a short one
//   is read whole and the connection reused; a longer one (a Content-Length over 2 KiB, or more
//   than 2 KiB of a chunked or until-close body) is not waited for: the connection is closed
//   and the redirect followed at once.
// - Two coroutines using one Client at the same time: the second one's call throws
//   coring::BindError with Swoole's text for "reading" and the client's socket (see common.hpp);
//   the first one's request goes on. Use one Client per coroutine, or a pool (coring/pool.hpp).
//   A call on the client from inside its own on_body callback (a request, set_headers,
//   set_options) throws std::logic_error.
// - close() from another coroutine while a request waits ends that wait (ECANCELED as above);
//   cancel(cid) of the requesting coroutine does the same. A coroutine unwound while it waits in a
//   request (after a deadlock) leaves the request abandoned, the connection closed and the
//   client free for another coroutine; waiting for the server is I/O, which is no deadlock, so
//   this is a wait inside on_body (on a channel, a lock) that nothing will end. An exception
//   thrown by on_body abandons the request the same way and leaves get()/execute().
// - Sizes and durations: max_header_size and max_body_size of 0 refuse any head or any non-empty
//   body; a negative number cast to size_t is a limit too large to matter. max_redirects of 0 or
//   less follows none. Durations saturate (see common.hpp); kForever means no limit.
//
// HTTPS. With ClientOptions::https a Client connects, then runs a TLS handshake with its host
// as the name to verify (sent as SNI; an IP address is checked against the certificate's IP
// entries and not sent), with ClientOptions::tls or, when that is empty, the thread's default
// client context (TlsContext::client(): the system's CA store, made once per thread and shared
// by every Client on it; the store itself is parsed once per process, off the scheduler). A context
// remembers the last session per server, so the next connection to a server resumes it (an
// abbreviated handshake, no certificate check to repeat). Verification is on by default; a context
// made with TlsOptions::verify_peer false turns it off (WARNING: then anyone on the path can read
// and change the traffic; for tests only). Everything else works as over plain HTTP (keep-alive,
// the idle check, retries, redirects, uploads from a file, which are read and encrypted instead of
// sendfile(2)), and close() sends the TLS close_notify. A body that lasts until the close must end
// with the server's close_notify: a connection cut without one is -3, ECONNRESET (a truncation an
// attacker could cause), never a short body passed for a whole one.
//
// The one-call functions get(url), post(url, body) and execute(method, url, body) parse
// `http://host[:port]/path?query` and `https://host[:port]/path?query` (an IPv6 literal in
// brackets too; no fragment is sent; the default port is 80 or 443) and run the request on a
// Client taken from this container's idle ones for that scheme, host and port (at most 8 idle
// per scheme, host and port, 64 in all: more are closed), which goes back there when its
// connection may be reused. The URL's scheme decides whether TLS is spoken (options.https is
// ignored); options.tls is the context for https, as on a Client. An idle https connection
// serves only a request with the context it was verified with (options.tls a copy of the same
// TlsContext, or both empty: the thread's default), never one that asked for another.
// Their ClientResponse carries status, headers, body and error as Client would. A URL that is
// malformed fails with status -1 and EINVAL, with credentials (user@host) EINVAL too, without
// connecting.
// coring::last_error() is set to the error as well. The idle connections of a container are
// closed when it ends (after its last coroutine, before run() returns).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "coring/common.hpp"
#include "coring/http_server.hpp"  // Header
#include "coring/tls.hpp"

#pragma GCC visibility push(default)

namespace coring::http {

struct ClientOptions {
  // Each connection attempt, within timeout (zero or less: a connect that cannot complete at
  // once fails with -1, ETIMEDOUT).
  Duration connect_timeout = std::chrono::seconds(10);
  // The whole call: connecting, sending, the whole response, retries and redirects; a body
  // streamed to on_body too (raise it for a large download: kForever for no limit).
  Duration timeout = std::chrono::seconds(60);
  bool keep_alive = true;
  // The response head, status line through the empty line (each interim 1xx's too); trailers
  // have the same limit. 256 KiB: between nginx's proxy buffers (8 KiB) and Go's transport
  // (10 MiB), as Chromium; larger: -3, EMSGSIZE.
  size_t max_header_size = 256 * 1024;
  // A stored body (after decoding, so a small compressed body cannot unpack into gigabytes);
  // larger: -3, EFBIG. Bodies handed to on_body are not limited: the callback decides.
  size_t max_body_size = 256 * 1024 * 1024;
  int max_redirects = 0;  // Swoole's default: none followed
  // Sends `Accept-Encoding: gzip, deflate` (unless set_headers() has one) and decodes a body
  // whose Content-Encoding is gzip, x-gzip or deflate (zlib or raw); its Content-Encoding and
  // Content-Length are then dropped from headers(), as Go does. Other codings arrive as sent.
  bool decompress = false;
  // Set: the body (decoded) is handed out in pieces as it arrives instead of being stored, and
  // body() stays empty; status_code() and header() already describe the response during the
  // calls. Each piece is valid during its call only. Returning false abandons the response
  // (-3, ECANCELED) and closes the connection.
  std::function<bool(std::string_view piece)> on_body;
  // A Client speaks HTTPS to its host:port: TLS, verified against its host (see the header
  // comment). The one-call functions ignore it: the URL's scheme decides. Changed with
  // set_options(), the next request opens a new connection.
  bool https = false;
  // The client context for HTTPS (requests with https, https:// URLs, redirects to them).
  // Empty: TlsContext::client() with the system's CA store, made once per thread and reused.
  // Make one with TlsOptions::ca_file to trust a private CA, or with verify_peer false to
  // accept any certificate (WARNING: for tests only, see tls.hpp).
  std::optional<TlsContext> tls;
};

struct ClientStats {
  // Responses received (each redirect's too, even one whose long body was left unread; 1xx not
  // counted).
  uint64_t requests = 0;
  uint64_t connections = 0;  // connections made (https: counted before their handshake)
  uint64_t retries = 0;      // requests sent again after a reused connection was found closed
  uint64_t redirects = 0;    // redirects followed
  uint64_t tls_resumed = 0;  // https connections whose handshake resumed an earlier session
};

namespace detail {
struct ClientCore;
}

class Client {
 public:
  // host: a name, an IPv4 address, or an IPv6 address (with or without brackets).
  Client(std::string host, uint16_t port, ClientOptions options = {});
  // Closes the connection. Destroying or moving a Client while a request of another coroutine
  // runs on it is a programming error (that coroutine's request would use freed memory).
  ~Client();
  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Extra request headers, sent with every request from now on (see the header comment); a
  // name or value that could not be sent makes each request fail with -4, EINVAL.
  void set_headers(std::vector<std::pair<std::string, std::string>> headers);
  const ClientOptions& options() const noexcept;
  void set_options(ClientOptions options);

  // path: origin form ("/a/b?x=1"). true: a response arrived (any status); false: see above.
  bool get(std::string_view path);
  bool post(std::string_view path, std::string_view body);
  bool execute(std::string_view method, std::string_view path, std::string_view body = {});
  // The body is the file's bytes, Content-Length its size at open, sent with sendfile(2) (the
  // kernel copies; reading a file not in the page cache blocks the thread, as in nginx).
  bool post_file(std::string_view path, const std::string& file_path);
  bool execute_file(std::string_view method, std::string_view path, const std::string& file_path);

  // >0: the HTTP status; -1 connect failed or timed out, -2 request timed out, -3 server closed
  // the connection (or the response was refused), -4 sending the request failed, -5 the TLS
  // handshake failed (a certificate that does not verify, a server that does not speak TLS);
  // 0 before any.
  int status_code() const noexcept;
  std::string_view body() const noexcept;
  // The first header of that name (compared without case), from the last response's head. The
  // views stay valid until the next call on the client (taken inside on_body: until it returns).
  std::optional<std::string_view> header(std::string_view name) const noexcept;
  std::span<const Header> headers() const noexcept;  // in the order received
  // A trailer field of a chunked response (they are not merged into headers()).
  std::optional<std::string_view> trailer(std::string_view name) const noexcept;
  std::error_code error() const noexcept;
  std::string_view error_message() const noexcept;
  ClientStats stats() const noexcept;
  const std::string& host() const noexcept;
  uint16_t port() const noexcept;

  // Closes the connection (the next request opens a new one); true if one was open. From
  // another coroutine while a request waits: that request fails (ECANCELED, see above).
  bool close();

 private:
  friend struct detail::ClientCore;
  std::unique_ptr<detail::ClientCore> core_;
};

struct ClientResponse {
  int status = 0;  // as Client::status_code()
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::error_code error;
  std::string error_message;
  // The first header of that name, compared without case.
  std::optional<std::string_view> header(std::string_view name) const noexcept;
};

ClientResponse get(std::string_view url, ClientOptions options = {});
ClientResponse post(std::string_view url, std::string_view body, ClientOptions options = {});
ClientResponse execute(std::string_view method, std::string_view url, std::string_view body = {},
                       ClientOptions options = {});

}  // namespace coring::http

#pragma GCC visibility pop
