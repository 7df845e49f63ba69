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
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

#include "coring/common.hpp"
#include "coring/socket.hpp"

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
};

struct ServerStats {
  size_t connections = 0;      // open now
  uint64_t accepted = 0;       // handed to a handler
  uint64_t closed = 0;         // handlers that ended and whose connection was closed
  uint64_t refused = 0;        // closed at once because max_conn were open
  uint64_t accept_errors = 0;  // failed accept() calls (EMFILE...)
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
