// coring::http::Server: HTTP/1.1 (and HTTP/1.0) on coroutines, one coroutine per connection.
//
// Each connection reads request heads with llhttp in strict mode and runs the handler of the
// longest matching path prefix with a Request and a Response. Keep-alive is the HTTP/1.1
// default (HTTP/1.0 with `Connection: keep-alive`); pipelined requests are answered in order,
// the responses of every complete request in one read gathered into one write (so a handler in
// such a batch that waits, say for a database, holds back the responses before it in the batch,
// as any pipelined answer waits for those before it; up to 64 KiB of them). Request bodies
// come whole (Content-Length or chunked, up to package_max_length); `Expect: 100-continue` is
// answered before the body is read. A response is ended with end(body) (Content-Length),
// streamed with write() (chunked), or sent from a file with sendfile(). HEAD gets the head and
// no body. Every response carries `Date` and `Server`. A connection the server ends is closed
// gracefully (server.hpp: the client's input drained until it closes, at most linger_timeout),
// except when the client itself asked to close (`Connection: close`, HTTP/1.0 without
// keep-alive) after a request read whole and has sent nothing more: it cannot be sending, and
// the connection is closed at once, as nginx does (no wait for its FIN).
//
// How things fail:
// - Refused requests (the server answers, then closes the connection): a head larger than
//   max_header_size, counted from the request line through the empty line that ends it, is
//   431 (so are trailer fields that long). A body larger than package_max_length: 413,
//   answered from the head, before the body is read. A malformed request: 400, which includes
//   every ambiguity that could smuggle a request: Content-Length together with
//   Transfer-Encoding, two Content-Lengths (even equal ones), `chunked` not the last encoding,
//   a chunk size that overflows, bytes other than CRLF after a chunk's data, obs-fold, a bare
//   LF (in the head or in chunked framing), whitespace before a header's colon, an empty or
//   non-token header name, an HTTP/1.1 request without exactly one Host, Transfer-Encoding in
//   an HTTP/1.0 request, chunk extensions longer than max_header_size, chunked framing (sizes,
//   leading zeros, extensions, trailers) longer than package_max_length + max_header_size.
//   Trailer fields are checked like the head's, then dropped (headers() is the head's). An unknown
//   method: 501; a version other than HTTP/1.x: 505 (a version llhttp cannot read at all may be 400
//   or 505); `Expect` other than 100-continue: 417. Which status a request that is wrong in two
//   ways gets can depend on how its bytes arrive (a malformed head over the limit: 400 or 431).
// - Timeouts (the connection is closed without a response): a head that has not arrived
//   header_timeout (10 s) after its first byte (slowloris), a body that stalls for
//   body_timeout, a response the client stops reading for send_timeout (each wait for
//   progress, not the whole transfer), a keep-alive
//   connection idle for keepalive_timeout (a connection that never sends a byte too).
// - A handler that throws, or returns without ending its response: if no byte of the response
//   has gone out, the client gets 500 and the connection stays usable (the request was read
//   whole); otherwise the connection is closed (a chunked response without its last chunk
//   tells the client it is incomplete). An ERROR is logged; the server goes on.
// - A client that goes away mid-response: write()/end()/sendfile() return false and a NOTICE
//   names the connection (see server.hpp); the handler may go on, its later writes fail fast.
// - shutdown() (or a WorkerPool worker told to stop): the server stops accepting, requests in
//   progress finish (their responses carry `Connection: close`), connections waiting for their
//   next request are closed, and start() returns once every connection has ended.
// - Static files (serve_directory): a path that would leave the directory (`..`, `%2e%2e`, a
//   NUL byte, a symlink pointing outside, an absolute path after decoding) is 404, never served;
//   a directory or anything but a regular file is 404; only GET and HEAD are allowed (405).
//
// HTTPS: ServerOptions::tls (inherited from the TCP server's options) set to a
// TlsContext::server() serves every connection over TLS; everything above holds over it
// (keep-alive, pipelining, chunked, 100-continue, the timeouts, shutdown). The handshake comes
// first, bounded by tls_handshake_timeout (10 s, as header_timeout); header_timeout starts with
// the first request byte after it. A failed handshake (a plaintext HTTP client on the HTTPS
// port, a client that does not trust the certificate) closes the connection without an answer
// and logs a NOTICE (see server.hpp); Request::connection().is_tls() tells a handler which it
// got. sendfile() over TLS cannot leave the copy to the kernel (coring does not use kernel TLS,
// see tls.hpp): the file is read in 64 KiB pieces and sent encrypted, with the same send_timeout
// per piece and the same failures (a file of at most 64 KiB is read into the head's write: one
// TLS write and one send for both). A response is ended by the server's close_notify when the
// connection closes, so a client can tell a body cut short (without one) from one that ends
// with the connection (HTTP/1.0, or write() to an HTTP/1.0 client).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include "coring/common.hpp"
#include "coring/server.hpp"

#pragma GCC visibility push(default)

namespace coring::http {

struct ServerOptions : coring::ServerOptions {
  size_t max_header_size = 8 * 1024;                      // request line plus headers; larger: 431
  size_t package_max_length = 2 * 1024 * 1024;            // request body; larger: 413
  Duration header_timeout = std::chrono::seconds(10);     // from a head's first byte to its end
  Duration body_timeout = std::chrono::seconds(60);       // between two reads of a body
  Duration keepalive_timeout = std::chrono::seconds(60);  // idle between requests
  Duration send_timeout = std::chrono::seconds(60);       // a response the client does not read
  std::string server_name = "coring";  // the Server header's value; empty: no Server header
};

struct Header {
  std::string_view name;
  std::string_view value;
};

namespace detail {
struct Exchange;
}

// What the client asked. Every view stays valid until the handler returns; the Request and
// Response themselves must not be used after it returns (not from another coroutine either).
class Request {
 public:
  std::string_view method() const noexcept;  // "GET", "POST"...
  std::string_view target() const noexcept;  // as sent: "/a%20b?x=1"
  // The target before '?', not decoded: "/a%20b" (of an absolute-form target,
  // "http://host/a%20b?x=1", the part after the authority: "/a%20b"; "/" when there is none).
  std::string_view path() const noexcept;
  std::string_view query() const noexcept;  // after '?': "x=1" ("" when none)
  int version_minor() const noexcept;       // 1 for HTTP/1.1, 0 for HTTP/1.0
  bool keep_alive() const noexcept;         // the connection stays open after this response
  // The first header of that name, compared without case; empty when absent.
  std::optional<std::string_view> header(std::string_view name) const noexcept;
  std::span<const Header> headers() const noexcept;  // in the order received
  // A cookie from the Cookie headers; empty when absent.
  std::optional<std::string_view> cookie(std::string_view name) const noexcept;
  // A query parameter, percent-decoded ('+' is a space); empty when absent or malformed.
  std::optional<std::string> query_param(std::string_view name) const;
  std::string_view body() const noexcept;  // whole, de-chunked
  Connection& connection() const noexcept;

  explicit Request(detail::Exchange* exchange) noexcept : exchange_(exchange) {}

 private:
  detail::Exchange* exchange_;
};

// The answer. Nothing goes out before end(), write() or sendfile() (except that a large end()
// body may be sent straight away); until then status() and header() may be called in any order.
class Response {
 public:
  // 200 to 999 (an interim 1xx is not a response a handler can end); reason: empty picks the
  // standard one. false (and nothing changes) once the head has gone out, for a code out of
  // range, or for a reason with CR, LF or NUL.
  bool status(int code, std::string_view reason = {});
  // Adds a header. false (and nothing changes) once the head has gone out, for a name that is
  // not an HTTP token, or for a name or value with CR, LF or NUL (no header injection).
  // Content-Length, Transfer-Encoding, Date and Connection are the server's: false.
  bool header(std::string_view name, std::string_view value);
  // Sends the head (first call) and one chunk of a chunked body; an empty chunk sends nothing.
  // false when the client is gone (the NOTICE names the connection) or after end().
  bool write(std::string_view chunk);
  // Ends the response: with Content-Length and this body, or, after write(), with the last
  // chunk (the body is sent as a last data chunk first). false when the client is gone, or when
  // the response had already ended.
  bool end(std::string_view body = {});
  // Ends the response with a whole file's bytes (sendfile(2): the kernel copies them; over TLS
  // they are read and encrypted, see the header comment), Content-Length from its size and
  // Content-Type from its extension unless set. false, with nothing sent, when the file cannot
  // be opened or is not a regular file (then answer something else, a 404, say); false when the
  // client went away during the transfer.
  bool sendfile(const std::string& path);
  // The same with length bytes of an open file from offset (the caller keeps the descriptor);
  // Content-Type is not guessed. false, with nothing sent, when the file is shorter.
  bool sendfile(int file_fd, uint64_t offset, uint64_t length);
  bool head_sent() const noexcept;
  bool ended() const noexcept;

  explicit Response(detail::Exchange* exchange) noexcept : exchange_(exchange) {}

 private:
  detail::Exchange* exchange_;
};

using Handler = std::function<void(Request&, Response&)>;

class ServerCore;

struct ServerStats : coring::ServerStats {
  uint64_t requests = 0;  // responses handlers ended (500s for failed handlers included)
  uint64_t rejected = 0;  // requests refused by the server itself (400, 413, 417, 431, 501, 505)
};

class Server {
 public:
  Server(std::string host, uint16_t port, ServerOptions options = {});
  // Serves a listening socket made elsewhere (WorkerPool::listener()).
  explicit Server(int listening_fd, ServerOptions options = {});
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The handler for paths under path_prefix: "/" takes everything; "/api" takes "/api" and
  // "/api/..." but not "/apis"; the longest matching prefix wins; nothing matching: 404.
  // ("OPTIONS *", a question about the server itself, gets an empty 200 without any route.)
  // Routes are fixed when start() runs: a call after that is ignored, with an ERROR.
  void handle(std::string_view path_prefix, Handler handler);
  // Static files: GET and HEAD of path_prefix + "/x/y" serve directory + "/x/y" (see the header
  // comment for what is refused), with Content-Type by extension, Last-Modified, and 304 for
  // an If-Modified-Since not older than the file. A path naming a directory serves its
  // index.html when there is one.
  void serve_directory(std::string_view path_prefix, std::string directory);

  // As coring::Server::start(); once per Server (a second call fails: EBUSY while it runs,
  // ECANCELED after).
  bool start();
  void shutdown();  // see the header comment
  uint16_t port() const;
  ServerStats stats() const;
  std::error_code error() const noexcept;
  std::string_view error_message() const noexcept;

 private:
  std::shared_ptr<ServerCore> core_;
};

// The standard reason phrase of a status code ("Not Found"); "" for an unknown code.
std::string_view reason_phrase(int code) noexcept;

}  // namespace coring::http

#pragma GCC visibility pop
