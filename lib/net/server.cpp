// coring::Server and coring::Connection (see coring/server.hpp).
#include "coring/server.hpp"

#include <arpa/inet.h>
#include <cxxabi.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/event_engine.hpp"
#include "core/logging.hpp"
#include "core/scheduler.hpp"
#include "coring/channel.hpp"
#include "coring/coroutine.hpp"
#include "coring/sync.hpp"
#include "net/worker_context.hpp"

namespace coring {

using namespace std::chrono_literals;

class ServerCore : public std::enable_shared_from_this<ServerCore> {
 public:
  enum class State { idle, running, stopped };

  std::string host;
  uint16_t port = 0;
  int inherited_fd = -1;
  ServerOptions options;
  std::function<void(Connection&)> handler;
  std::function<void()> on_stop;
  bool counts_requests = true;  // one request per connection (see detail::set_counts_requests)

  State state = State::idle;
  bool stopping = false;  // shutdown() was called
  std::optional<Socket> listener;
  uint16_t bound_port = 0;
  size_t max_conn = 0;
  int error = 0;
  std::string error_text;
  bool accept_failed = false;  // accepting stopped on an error: start() returns false
  ServerStats stats;
  long next_id = 1;
  std::unordered_map<long, Connection*> connections;
  // Connections in their TLS handshake: id -> the coroutine running it (shutdown cancels it).
  // A node per TLS connection: nothing beside the handshake's own cost.
  std::unordered_map<long, long> handshakes;
  WaitGroup handlers;
  // A connection closed: a descriptor may be free again (the acceptor waits for this after
  // EMFILE). Capacity 1: one pending wake-up is enough.
  Channel<char> freed{1};
  detail::RateLimitedLog out_of_descriptors;
  detail::RateLimitedLog over_max_conn;
  detail::RateLimitedLog tls_failures;

  bool fail(int error_number, std::string text) {
    error = error_number;
    error_text = std::move(text);
    return false;
  }
  bool open_listener();
  void accept_loop();
  void serve(Socket socket, long id);
  bool handshake(Connection& connection);
  void heartbeat();
  void close_idle(uint32_t idle_ms);
  void stop_accepting();
};

namespace {

bool is_resource_shortage(int error) {
  return error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM;
}

// Accept errors that concern only the connection being accepted (it was reset or refused by a
// filter before accept() took it): the next one may be fine.
bool is_connection_error(int error) {
  return error == ECONNABORTED || error == EPROTO || error == EPERM || error == EINTR ||
         error == ENETDOWN || error == ENOPROTOOPT || error == EHOSTDOWN || error == ENONET ||
         error == EHOSTUNREACH || error == EOPNOTSUPP || error == ENETUNREACH;
}

size_t descriptor_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return SIZE_MAX;
  return static_cast<size_t>(limit.rlim_cur);
}

}  // namespace

// ---- Connection --------------------------------------------------------------------------------

Connection::Connection(Socket socket, long id, Duration linger_timeout)
    : Socket(std::move(socket)), id_(id), linger_timeout_(linger_timeout) {}

void Connection::lookup_peer() const {
  if (peer_known_) return;
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (fd() < 0 || ::getpeername(fd(), reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    return;  // not known yet: try again next time
  }
  char text[INET6_ADDRSTRLEN] = {};
  if (address.ss_family == AF_INET) {
    auto* v4 = reinterpret_cast<sockaddr_in*>(&address);
    ::inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text);
    peer_port_ = ntohs(v4->sin_port);
  } else if (address.ss_family == AF_INET6) {
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&address);
    ::inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof text);
    peer_port_ = ntohs(v6->sin6_port);
  }
  peer_host_ = text;
  peer_known_ = true;
}

std::string Connection::peer_host() const {
  lookup_peer();
  return peer_host_;
}

uint16_t Connection::peer_port() const {
  lookup_peer();
  return peer_port_;
}

ssize_t Connection::report(ssize_t result, size_t size) {
  if (result >= 0 && static_cast<size_t>(result) == size) return result;
  int error_number = error().value();
  if (error_number == EPIPE || error_number == ECONNRESET || error_number == ENOTCONN ||
      error_number == EBADF || error_number == ECANCELED) {
    detail::log_format(LogLevel::notice, "send %zu bytes failed, because connection#%ld is closed",
                       size, id_);
  }
  return result;
}

ssize_t Connection::send(const void* data, size_t size, Duration timeout) {
  ssize_t result = Socket::send(data, size, timeout);
  // A short send is not a failure; only a failed one is reported.
  return result < 0 ? report(result, size) : result;
}

ssize_t Connection::send_all(const void* data, size_t size, Duration timeout) {
  return report(Socket::send_all(data, size, timeout), size);
}

bool Connection::close() {
  if (!is_open() || linger_timeout_ <= Duration::zero() || detail::running_is_unwinding() ||
      !detail::in_coroutine()) {
    return Socket::close();
  }
  // The peer gets everything sent so far, then end of stream; its input is drained so that the
  // close does not reset the connection while the peer still reads the response.
  if (!shutdown(SHUT_WR)) return Socket::close();  // reset already, or not connected
  const int64_t deadline = detail::deadline_for(linger_timeout_);
  char sink[4096];
  try {
    for (;;) {
      // Most peers have closed already (the handler saw end of stream): no wait for them.
      int32_t n = detail::receive_now(fd(), sink, sizeof sink, 0);
      if (n > 0) continue;
      if (n == 0 || (n != -EAGAIN && n != -EWOULDBLOCK)) break;
      int64_t left = deadline - detail::monotonic_ns();
      if (left <= 0) break;
      if (Socket::recv(sink, sizeof sink, Duration(left)) <= 0) break;
    }
  } catch (const BindError&) {
    // Another coroutine still reads this connection: the plain close below wakes it.
  }
  return Socket::close();
}

// ---- ServerCore --------------------------------------------------------------------------------

bool ServerCore::open_listener() {
  if (inherited_fd >= 0) {
    // A duplicate of our own: closing it at shutdown leaves the master's descriptor, and the
    // accept queue behind it, to the other workers.
    int fd = ::fcntl(inherited_fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) return fail(errno, "cannot use the inherited listening socket");
    int listening = 0;
    socklen_t length = sizeof listening;
    sockaddr_storage address{};
    socklen_t address_length = sizeof address;
    if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) != 0 || !listening ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &address_length) != 0) {
      ::close(fd);
      return fail(EINVAL, "the inherited descriptor is not a listening socket");
    }
    listener.emplace(fd, address.ss_family == AF_INET6 ? Socket::Type::tcp6 : Socket::Type::tcp);
  } else {
    Socket::Type type =
        host.find(':') != std::string::npos ? Socket::Type::tcp6 : Socket::Type::tcp;
    listener.emplace(type);
    if (!listener->is_open()) {
      return fail(listener->error().value(), std::string(listener->error_message()));
    }
    if (options.reuse_port) {
      int on = 1;
      if (::setsockopt(listener->fd(), SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0) {
        return fail(errno, std::string("SO_REUSEPORT: ") + std::strerror(errno));
      }
    }
    if (!listener->bind(host, port) ||
        !listener->listen(options.backlog > 0 ? options.backlog : 512)) {
      return fail(listener->error().value(), std::string(listener->error_message()));
    }
  }
  bound_port = listener->local_port();
  return true;
}

void ServerCore::stop_accepting() {
  // Closing the listener waits for the acceptor to leave accept(); start() may return and the
  // Server go meanwhile: the state stays alive until this call is done with it.
  std::shared_ptr<ServerCore> self = shared_from_this();
  bool first = !stopping;
  stopping = true;
  // Wakes the acceptor (its accept() returns ECANCELED) and refuses new connections.
  if (listener && listener->is_open()) listener->close();
  // A handshake has not brought a request yet: its connection ends, as an idle one would.
  // cancel() does not wait, so the table cannot change under the loop. (A handshake that is
  // not waiting just now is not interrupted: it ends within tls_handshake_timeout, and its
  // handler then runs as any handler of a connection accepted before the shutdown.)
  // A copy: a coroutine that leaves its handshake takes itself out of the table.
  std::vector<long> cids;
  cids.reserve(handshakes.size());
  for (const auto& [id, cid] : handshakes) cids.push_back(cid);
  for (long cid : cids) cancel(cid);
  if (first && state == State::running && on_stop) {
    // Moved out: it runs once, and whatever it holds is released when it has run.
    std::function<void()> hook = std::move(on_stop);
    hook();
  }
}

// One accept at a time, not io_uring's multishot accept: a multishot accept keeps taking
// connections off the shared accept queue (WorkerPool) into this worker's own queue whether or
// not a coroutine waits, and a worker that stops would have to serve or reset them. It would
// save little: under connection churn the ring's part of accepting is under 0.5% of a worker's
// time, do_accept itself 7% (README, "TCP server and worker processes").
void ServerCore::accept_loop() {
  while (!stopping) {
    std::optional<Socket> accepted = listener->accept(kForever);
    if (!accepted) {
      int error_number = listener->error().value();
      if (stopping) break;
      ++stats.accept_errors;
      if (is_resource_shortage(error_number)) {
        out_of_descriptors.log(LogLevel::warning,
                               "accept() failed: %s; %zu connections open; "
                               "accepting again when one closes",
                               std::strerror(error_number), connections.size());
        freed.pop(100ms);  // a connection closed, or 100 ms: descriptors free elsewhere
        continue;
      }
      if (is_connection_error(error_number)) continue;
      if (error_number == ECANCELED) {  // cancel(cid) of the serving coroutine: a shutdown
        stop_accepting();
        break;
      }
      detail::log_format(LogLevel::error,
                         "accept() on port %u failed: %s; the server stops accepting", bound_port,
                         std::strerror(error_number));
      fail(error_number, std::string("accept: ") + std::strerror(error_number));
      accept_failed = true;
      stop_accepting();
      break;
    }
    if (connections.size() >= max_conn) {
      ++stats.refused;
      accepted->Socket::close();
      over_max_conn.log(LogLevel::notice,
                        "max_conn (%zu) connections are open: a new one was closed", max_conn);
      continue;
    }
    if (options.tcp_keepalive) {
      accepted->set_keepalive(true, options.keepidle, options.keepinterval, options.keepcount);
    }
    if (!options.protocol.eof.empty() || options.protocol.length_type != 0 ||
        options.protocol.package_max_length != Protocol{}.package_max_length) {
      accepted->set_protocol(options.protocol);
    }
    long id = next_id++;
    ++stats.accepted;
    handlers.add(1);
    // The coroutine keeps the server's state alive: a handler may outlive the Server object.
    create([self = shared_from_this(), socket = std::move(*accepted), id]() mutable {
      self->serve(std::move(socket), id);
    });
  }
}

void ServerCore::serve(Socket socket, long id) {
  Connection connection(std::move(socket), id, options.linger_timeout);
  connections.emplace(id, &connection);
  detail::note_connection_opened();
  // However the handler ends (also unwound), the server forgets the connection.
  struct Leave {
    ServerCore* server;
    long id;
    ~Leave() {
      server->connections.erase(id);
      ++server->stats.closed;
      detail::note_connection_closed();
      server->freed.push(char{1}, Duration::zero());  // full: a wake-up is pending already
      if (server->counts_requests && handled) detail::note_request();
      server->handlers.done();
    }
    bool handled = false;  // a connection whose TLS handshake failed is no request
  } leave{this, id};
  if (options.tls && !handshake(connection)) {
    connection.close();
    return;
  }
  leave.handled = true;
  try {
    handler(connection);
  } catch (const detail::ForcedUnwind&) {
    throw;  // the container unwinds this coroutine: not the handler's failure
  } catch (const abi::__forced_unwind&) {
    throw;
  } catch (const std::exception& e) {
    detail::log_format(LogLevel::error, "connection#%ld: the handler threw: %s; closing it", id,
                       e.what());
  } catch (...) {
    detail::log_format(LogLevel::error,
                       "connection#%ld: the handler threw a non-standard exception; closing it",
                       id);
  }
  if (connection.is_open()) connection.close();
}

bool ServerCore::handshake(Connection& connection) {
  const long id = connection.id();
  handshakes.emplace(id, this_coroutine::id());
  struct Leave {
    ServerCore* server;
    long id;
    ~Leave() { server->handshakes.erase(id); }
  } leave{this, id};
  const Duration timeout = std::max(options.tls_handshake_timeout, Duration::zero());
  if (connection.start_tls(*options.tls, {}, timeout)) return true;
  ++stats.tls_failed;
  const int error = connection.error().value();
  if (stopping && error == ECANCELED) {
    detail::log_format(LogLevel::debug, "connection#%ld: TLS handshake cancelled by shutdown", id);
    return false;
  }
  tls_failures.log(LogLevel::notice, "connection#%ld (%s:%u): %s; closed", id,
                   connection.peer_host().c_str(), connection.peer_port(),
                   std::string(connection.error_message()).c_str());
  return false;
}

void ServerCore::heartbeat() {
  const auto idle = options.heartbeat_idle_time;
  Duration interval = options.heartbeat_check_interval;
  if (interval <= Duration::zero()) {
    interval = std::clamp<Duration>(idle / 4, Duration(10ms), Duration(1s));
  }
  const auto idle_ms = static_cast<uint32_t>(std::min<int64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(idle).count(), UINT32_MAX));
  // Ends when cancelled (start() does, once the handlers are done).
  while (this_coroutine::sleep(interval)) close_idle(idle_ms);
}

void ServerCore::close_idle(uint32_t idle_ms) {
  std::vector<long> idle;
  for (const auto& [id, connection] : connections) {
    tcp_info info{};
    socklen_t length = sizeof info;
    if (::getsockopt(connection->fd(), IPPROTO_TCP, TCP_INFO, &info, &length) != 0) continue;
    // The kernel's own clocks: nothing is stamped on the data path.
    if (std::min(info.tcpi_last_data_recv, info.tcpi_last_data_sent) >= idle_ms) {
      idle.push_back(id);
    }
  }
  for (long id : idle) {
    // Closing may wait for the handler's pending call to leave; the handler may end meanwhile.
    auto found = connections.find(id);
    if (found == connections.end()) continue;
    detail::log_format(LogLevel::debug, "connection#%ld idle for %u ms: closed", id, idle_ms);
    found->second->Socket::close();
  }
}

// ---- Server ------------------------------------------------------------------------------------

Server::Server(std::string host, uint16_t port, ServerOptions options)
    : core_(std::make_shared<ServerCore>()) {
  core_->host = std::move(host);
  core_->port = port;
  core_->options = std::move(options);
}

Server::Server(int listening_fd, ServerOptions options) : core_(std::make_shared<ServerCore>()) {
  core_->inherited_fd = listening_fd;
  core_->options = std::move(options);
}

Server::~Server() {
  if (core_->state == ServerCore::State::running) core_->stop_accepting();
}

void Server::handle(std::function<void(Connection&)> fn) {
  core_->handler = std::move(fn);
}

void Server::on_stop(std::function<void()> fn) {
  core_->on_stop = std::move(fn);
}

void detail::set_counts_requests(Server& server, bool per_connection) noexcept {
  server.core_->counts_requests = per_connection;
}

bool Server::start() {
  std::shared_ptr<ServerCore> core = core_;
  if (!detail::in_coroutine()) return core->fail(EPERM, "Server::start() outside a coroutine");
  if (core->state == ServerCore::State::running) {
    return core->fail(EBUSY, "the server is running already");
  }
  if (core->stopping) return core->fail(ECANCELED, "the server was shut down");
  if (!core->handler) return core->fail(EINVAL, "no handler: call handle() first");
  if (core->options.tls && !core->options.tls->is_server()) {
    return core->fail(
        EINVAL, "ServerOptions::tls is not a server context (make it with TlsContext::server())");
  }
  core->error = 0;
  core->error_text.clear();
  core->accept_failed = false;
  if (!core->open_listener()) return false;
  core->state = ServerCore::State::running;
  core->max_conn = core->options.max_conn > 0 ? core->options.max_conn : descriptor_limit();
  detail::RunningServer registered(core.get());  // WorkerPool shuts it down on SIGTERM
  long heartbeat = 0;
  if (core->options.heartbeat_idle_time > Duration::zero()) {
    heartbeat = create([core] { core->heartbeat(); });
  }
  core->accept_loop();
  core->handlers.wait();
  if (heartbeat > 0) {
    cancel(heartbeat);
    join({heartbeat});
  }
  core->state = ServerCore::State::stopped;
  return !core->accept_failed;
}

void Server::shutdown() {
  core_->stop_accepting();
}

void detail::shutdown_server(ServerCore* core) {
  core->stop_accepting();
}

uint16_t Server::port() const {
  return core_->bound_port;
}

ServerStats Server::stats() const {
  ServerStats stats = core_->stats;
  stats.connections = core_->connections.size();
  return stats;
}

std::error_code Server::error() const noexcept {
  return std::error_code(core_->error, std::generic_category());
}

std::string_view Server::error_message() const noexcept {
  return core_->error_text;
}

}  // namespace coring
