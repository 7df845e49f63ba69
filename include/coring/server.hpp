// coring::Server: a TCP server inside a container, one coroutine per connection.
//
// start() listens (or serves a listening socket inherited from a master process, see
// WorkerPool in process.hpp), then accepts until shutdown(); every accepted connection runs the
// handler in a coroutine of its own, with a Connection: the accepted Socket, an id unique
// within the server (Swoole's $fd) and the peer's address. When the handler returns, the
// server closes the connection if the handler has not, gracefully: it shuts down its write
// side (the peer gets everything sent, then end of stream), reads and discards what the peer
// still sends until the peer closes or ServerOptions::linger_timeout passes, then closes. A
// plain close() with unread input would make the kernel send a reset that can destroy a
// response the peer has not read yet (nginx's "lingering close").
//
// How things fail:
// - start() returns false with error() when it cannot listen (EADDRINUSE, EACCES, a name that
//   does not resolve...), when it is called outside a coroutine (EPERM), while it already runs
//   (EBUSY) or after shutdown() (ECANCELED). It returns true after shutdown(), once every
//   handler has returned.
// - shutdown() stops accepting at once (the listening socket closes: new connections are
//   refused; a listener inherited from a master is only closed in this process, so the
//   master's other workers go on accepting from it) and lets the handlers finish; it does not
//   interrupt them. Call it from a coroutine of the container the server runs in.
// - Out of descriptors (EMFILE, ENFILE) or kernel memory while accepting: the server logs one
//   WARNING a second at most, waits until one of its connections closes (or 100 ms), and goes
//   on; it never spins. Other accept errors (a connection aborted before it was accepted) are
//   skipped.
// - More than max_conn connections open: a new one is closed at once and one NOTICE a second
//   says how many were refused.
// - A handler that throws: the server logs an ERROR naming the connection and the exception,
//   closes that connection and goes on. (Unwinding after a deadlock is not caught.)
// - A peer that goes away is normal: a send on a Connection whose peer closed or reset it
//   returns -1 (EPIPE, ECONNRESET) and logs `NOTICE send 165 bytes failed, because
//   connection#12 is closed`; a read returns 0 or -1 with ECONNRESET.
// - heartbeat_idle_time: a connection on which no byte was sent or received for that long is
//   closed by the server (its handler's waits return -1 with ECANCELED); the kernel's own
//   timestamps are used (TCP_INFO), so the data path pays nothing for it.
//
// TLS (ServerOptions::tls set to a TlsContext::server(), see tls.hpp): every accepted connection
// runs its TLS handshake in its own coroutine before the handler sees it, so the handler reads
// and writes plaintext through the same Connection calls, and Connection::close() sends the
// TLS close_notify before the graceful close above. The handshake is bounded by
// tls_handshake_timeout (10 s), which a client that connects and sends nothing (or a slow
// handshake, a slowloris of TLS) cannot stretch. A handshake that fails closes the connection
// without running the handler, counts in stats().tls_failed, and logs one NOTICE a second at
// most (later ones are counted in the next), naming the connection, the peer and OpenSSL's
// reason, for example
//   `NOTICE connection#7 (127.0.0.1:51234): TLS handshake failed: http request (plaintext HTTP
//   sent to a TLS port); closed`
// (a plaintext client on a TLS port), "...: wrong version number (the peer does not speak TLS)",
// "...: tlsv1 alert unknown ca" (a client that does not trust the certificate), "...: the peer
// closed the connection without a TLS close_notify" (a client that gave up), "...: Connection
// timed out" (tls_handshake_timeout). Such failures are what a public TLS port sees all day
// (scanners, clients with old CA stores): the server goes on, and the limit keeps them from
// flooding the log. The plaintext client gets no answer, only the close (nginx would answer its
// HTTP with a 400; the bytes it sent are the TLS layer's, which has refused them).
// shutdown() cancels the handshakes in progress (their connections close without a handler, as
// a plain connection that had not sent its request yet would with http::Server). A tls that
// is not a server context makes start() fail with EINVAL.
// With WorkerPool the context may be made in the master before start() forks the workers (as
// nginx does): each worker then uses its own copy of the same OpenSSL context, which is safe
// with OpenSSL 3 (its random generator notices the fork and reseeds in each child; the context
// is only read after it is made) and lets a client resume its session (TLS tickets) with any
// worker, since they share the ticket keys made with the context. A context made in each
// worker (in on_worker_start or worker_main) works too, but a ticket from one worker is then a
// full handshake on another.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "coring/common.hpp"
#include "coring/socket.hpp"
#include "coring/tls.hpp"

// Everything declared here is part of the shared library's interface (the library itself
// is built with hidden visibility).
#pragma GCC visibility push(default)

namespace coring {

struct ServerOptions {
  int backlog = 512;
  // Connections open at once; over it a new connection is closed at once. 0: the process's
  // descriptor limit (RLIMIT_NOFILE) when start() runs.
  size_t max_conn = 0;
  // SO_REUSEPORT on the listening socket: several processes may listen on the port, each with
  // an accept queue of its own (connections waiting in one are reset when it closes).
  bool reuse_port = false;
  Duration heartbeat_idle_time = Duration::zero();  // 0: off
  // How often idle connections are looked for; 0: a quarter of heartbeat_idle_time (at least
  // 10 ms, at most 1 s).
  Duration heartbeat_check_interval = Duration::zero();
  // TCP keepalive on every connection: probes after keepidle seconds without traffic, every
  // keepinterval seconds, keepcount of them before the kernel drops the connection.
  bool tcp_keepalive = false;
  int keepidle = 60;
  int keepinterval = 5;
  int keepcount = 3;
  // Framing for Connection::recv_packet() (package_max_length defaults to 2 MiB).
  Protocol protocol;
  // The graceful close's bound: how long the server drains a closed connection's input; 0
  // closes plainly.
  Duration linger_timeout = std::chrono::seconds(2);
  // Set: serve TLS with this server context (see the header comment); empty: plain TCP.
  std::optional<TlsContext> tls;
  // The TLS handshake's bound, from the accept to its end (zero or less fails every handshake
  // at once with ETIMEDOUT: the peer has always to be waited for).
  Duration tls_handshake_timeout = std::chrono::seconds(10);
};

struct ServerStats {
  size_t connections = 0;      // open now
  uint64_t accepted = 0;       // accepted and not refused (with TLS, before the handshake)
  uint64_t closed = 0;         // connections that ended and were closed (failed handshakes too)
  uint64_t refused = 0;        // closed at once because max_conn were open
  uint64_t accept_errors = 0;  // failed accept() calls (EMFILE...)
  uint64_t tls_failed = 0;     // closed because their TLS handshake failed (no handler ran)
};

class ServerCore;
class Server;

namespace detail {
// For protocols built on Server (HTTP): they count requests for WorkerPool's max_request
// themselves, instead of one per connection.
void set_counts_requests(Server& server, bool per_connection) noexcept;
}  // namespace detail

class Connection : public Socket {
 public:
  long id() const noexcept { return id_; }
  std::string peer_host() const;  // "" when unknown
  uint16_t peer_port() const;     // 0 when unknown

  // As Socket's, plus the NOTICE above when the peer is gone (a call through a Socket& does not
  // log).
  ssize_t send(const void* data, size_t size, Duration timeout = kDefaultTimeout);
  ssize_t send_all(const void* data, size_t size, Duration timeout = kDefaultTimeout);
  // The graceful close described above; true if it was open. Socket::close() is the plain one.
  bool close();

  Connection(Socket socket, long id, Duration linger_timeout);

 private:
  void lookup_peer() const;
  ssize_t report(ssize_t result, size_t size);

  long id_ = 0;
  Duration linger_timeout_;
  mutable bool peer_known_ = false;
  mutable std::string peer_host_;
  mutable uint16_t peer_port_ = 0;
};

class Server {
 public:
  // Listens on host:port when started ("0.0.0.0", "::", a name; port 0 picks a free port).
  Server(std::string host, uint16_t port, ServerOptions options = {});
  // Serves a listening socket made elsewhere (WorkerPool::listen() in the master). The server
  // uses its own duplicate of the descriptor and closes only that.
  explicit Server(int listening_fd, ServerOptions options = {});
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  void handle(std::function<void(Connection&)> fn);
  // Runs once, in the server's container, when the server stops accepting (shutdown(), or its
  // WorkerPool worker being stopped): the place to close long-lived connections that would
  // otherwise keep start() from returning. It must not throw.
  void on_stop(std::function<void()> fn);
  bool start();
  void shutdown();
  uint16_t port() const;  // the bound port once listening (useful with port 0), else 0
  ServerStats stats() const;
  std::error_code error() const noexcept;
  std::string_view error_message() const noexcept;

 private:
  friend void detail::set_counts_requests(Server& server, bool per_connection) noexcept;
  std::shared_ptr<ServerCore> core_;
};

}  // namespace coring

#pragma GCC visibility pop
