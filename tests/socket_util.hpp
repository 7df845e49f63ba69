// Helpers shared by the socket suites: connected pairs, echo servers, waits with a limit, and
// packet reading. Assertions here use CHECK only (they run inside coroutines).
#pragma once

#include <doctest/doctest.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <coring/coring.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "test_util.hpp"

namespace coring_test {

using namespace std::chrono_literals;
using Type = Co::Socket::Type;

// A wait that the test must see end early; if the behaviour under test is missing, the wait
// times out instead and the test fails rather than hanging.
constexpr auto kLong = 5s;

inline long long waited_ms(Clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since).count();
}

// Runs body inside a container and checks that it ended cleanly.
template <class Body>
void in_container(Body&& body) {
  int rc = Co::run([&] { body(); });
  CHECK(rc == 0);
}

// Inside a coroutine: waits (at most kLong, polling each millisecond) for a condition that
// another coroutine makes true and that nothing signals, such as a server's counters.
template <class Condition>
bool eventually(Condition&& condition) {
  auto until = Clock::now() + kLong;
  while (!condition()) {
    if (Clock::now() > until) return false;
    Co::this_coroutine::sleep(1ms);
  }
  return true;
}

inline bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

// Waits for wg. If that takes longer than kLong the test fails, and the wait goes on (every
// coroutine in these tests waits with a finite timeout), so that no coroutine outlives the
// frames it refers to.
inline bool settle(Co::WaitGroup& wg) {
  if (wg.wait(kLong)) return true;
  wg.wait();
  return false;
}

// Starts fn in a coroutine that wg tracks.
template <class F>
inline long spawn(Co::WaitGroup& wg, F&& fn) {
  wg.add(1);
  return Co::create([&wg, fn = std::forward<F>(fn)]() mutable {
    fn();
    wg.done();
  });
}

// Runs call() in a coroutine of its own and waits up to `limit` for it: a call that should
// return by itself (a timeout under test, a zero timeout) but waits on fails the test and is
// cancelled, instead of hanging the suite. True if it returned in time.
template <class F>
inline bool within(Co::Duration limit, F&& call) {
  bool done = false;
  Co::WaitGroup wg;
  wg.add(1);
  long cid = Co::create([&] {
    call();
    done = true;
    wg.done();
  });
  if (!wg.wait(limit)) {
    Co::cancel(cid);
    wg.wait();
  }
  return done;
}

inline const char* loopback(Type type) {
  return type == Type::tcp6 || type == Type::udp6 ? "::1" : "127.0.0.1";
}

// The server side of an echo test: accepts one connection and sends every byte back until the
// peer closes. Returns how many bytes it echoed; every step must succeed.
inline size_t accept_and_echo(Co::Socket& listener, size_t buffer_size) {
  std::optional<Co::Socket> connection = listener.accept(kLong);
  CHECK(connection.has_value());
  if (!connection) return 0;
  std::vector<char> buffer(buffer_size);
  size_t echoed = 0;
  for (;;) {
    ssize_t n = connection->recv(buffer.data(), buffer.size(), kLong);
    CHECK(n >= 0);
    if (n <= 0) break;
    CHECK(connection->send_all(buffer.data(), static_cast<size_t>(n), kLong) == n);
    echoed += static_cast<size_t>(n);
  }
  return echoed;
}

inline bool set_int_option(int fd, int level, int name, int value) {
  return ::setsockopt(fd, level, name, &value, sizeof value) == 0;
}

// Bytes waiting in fd's receive queue.
inline int queued(int fd) {
  int n = -1;
  if (::ioctl(fd, FIONREAD, &n) != 0) return -1;
  return n;
}

// Lets the other coroutines run until the receiver on the other end of our connection has
// taken everything out of its kernel queue (reader_fd is that receiver's descriptor). Used to
// make each send() arrive as a read of its own, so that "split" really means split.
inline bool until_drained(int reader_fd) {
  auto until = Clock::now() + kLong;
  while (queued(reader_fd) > 0) {
    if (Clock::now() > until) return false;
    Co::this_coroutine::sleep(Co::Duration::zero());
  }
  return true;
}

// Sends data one byte per read on the receiving side.
inline bool send_bytewise(Co::Socket& sender, int reader_fd, std::string_view data) {
  for (char c : data) {
    if (sender.send(&c, 1, kLong) != 1) return false;
    if (!until_drained(reader_fd)) return false;
  }
  return true;
}

// Fills the kernel buffers between sender and its peer with zero-timeout sends, until a send
// would have to wait. Returns the bytes queued.
inline size_t fill_send_buffer(Co::Socket& sender) {
  std::string chunk(64 * 1024, 'f');
  size_t total = 0;
  for (int i = 0; i < 100'000; ++i) {
    ssize_t n = sender.send(chunk.data(), chunk.size(), Co::Duration::zero());
    if (n < 0) {
      CHECK(sender.error().value() == ETIMEDOUT);
      return total;
    }
    total += static_cast<size_t>(n);
  }
  FAIL_CHECK("the send buffer never filled up");
  return total;
}

struct Pair {
  Co::Socket client;
  Co::Socket server;
  bool ok = false;
};

// Inside a coroutine: a connected TCP pair over the loopback. With small_buffers the client's
// send buffer and the server's receive buffer are tiny, so that a writer soon has to wait.
inline Pair tcp_pair(Type type = Type::tcp, bool small_buffers = false) {
  Pair pair{Co::Socket(type), Co::Socket(type)};
  Co::Socket listener(type);
  if (small_buffers) {
    CHECK(set_int_option(listener.fd(), SOL_SOCKET, SO_RCVBUF, 4096));
    CHECK(set_int_option(pair.client.fd(), SOL_SOCKET, SO_SNDBUF, 4096));
  }
  if (!listener.bind(loopback(type), 0) || !listener.listen()) {
    FAIL_CHECK("listen on " << loopback(type) << ": " << listener.error_message());
    return pair;
  }
  if (!pair.client.connect(loopback(type), listener.local_port(), kLong)) {
    FAIL_CHECK("connect: " << pair.client.error_message());
    return pair;
  }
  std::optional<Co::Socket> accepted = listener.accept(kLong);
  if (!accepted) {
    FAIL_CHECK("accept: " << listener.error_message());
    return pair;
  }
  pair.server = std::move(*accepted);
  pair.ok = true;
  return pair;
}

// A server (Co::Server, Co::http::Server) started in a coroutine of its own; stop() shuts it
// down and waits for start().
template <class Server>
class Running {
 public:
  explicit Running(Server& server) : server_(server) {
    done_.add(1);
    Co::create([this] {
      result_ = server_.start();
      done_.done();
    });
  }
  Running(const Running&) = delete;
  Running& operator=(const Running&) = delete;
  uint16_t port() const { return server_.port(); }
  bool stop() {
    server_.shutdown();
    return settle(done_) && result_;
  }
  bool returned(Co::Duration within) { return done_.wait(within); }
  bool result() const { return result_; }

 private:
  Server& server_;
  Co::WaitGroup done_;
  bool result_ = false;
};

inline std::string abstract_name(std::string_view what) {
  static std::atomic<int> counter{0};
  return "@coring-test-" + std::to_string(::getpid()) + "-" + std::string(what) + "-" +
         std::to_string(counter.fetch_add(1));
}

// Restores the process-wide default timeouts when the test ends.
struct DefaultTimeoutsGuard {
  Co::Duration connect, read, write;
  DefaultTimeoutsGuard() {
    Co::Socket probe;
    connect = probe.connect_timeout();
    read = probe.read_timeout();
    write = probe.write_timeout();
  }
  ~DefaultTimeoutsGuard() { Co::Socket::set_default_timeouts(connect, read, write); }
};

inline std::string bind_error_text(int fd, long bound, long current, const char* side) {
  return "Socket#" + std::to_string(fd) + " has already been bound to another coroutine#" +
         std::to_string(bound) + ", " + side + " of the same socket in coroutine#" +
         std::to_string(current) + " at the same time is not allowed";
}

// Reads packets until the peer closes (empty view) or a failure; returns every packet.
struct Packets {
  std::vector<std::string> packets;
  bool ended_cleanly = false;  // an empty view: the peer closed between packets
  int error = 0;               // the failure, if recv_packet failed
};
inline Packets read_packets(Co::Socket& socket) {
  Packets out;
  for (;;) {
    std::optional<std::string_view> packet = socket.recv_packet(kLong);
    if (!packet) {
      out.error = socket.error().value();
      return out;
    }
    if (packet->empty()) {
      out.ended_cleanly = true;
      return out;
    }
    out.packets.emplace_back(*packet);
  }
}

// Sends a stream with send(client, server_fd) over a fresh TCP pair, half-closes, and reads it
// back with recv_packet() under `protocol` until the peer's close.
template <class Send>
inline Packets read_framed(const Co::Protocol& protocol, Send&& send) {
  Packets out;
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    CO_REQUIRE(p.ok);
    p.server.set_protocol(protocol);
    Co::WaitGroup wg;
    wg.add(1);
    Co::create([&] {
      out = read_packets(p.server);
      wg.done();
    });
    send(p.client, p.server.fd());
    CHECK(p.client.shutdown(SHUT_WR));
    CHECK(settle(wg));
  });
  CHECK(rc == 0);
  return out;
}

// The whole stream in one send.
inline auto send_coalesced(std::string_view stream) {
  return [stream](Co::Socket& client, int) {
    CHECK(client.send_all(stream.data(), stream.size(), kLong) ==
          static_cast<ssize_t>(stream.size()));
  };
}

// Inside a coroutine: an http::Server on 127.0.0.1 (a free port) in the running container;
// setup(server) adds the routes, body(server, port) talks to it; then the server is shut down
// and must return.
template <class Setup, class Body>
void with_http_server(const Co::http::ServerOptions& options, Setup&& setup, Body&& body) {
  Co::http::Server server("127.0.0.1", 0, options);
  setup(server);
  Running running(server);
  CO_REQUIRE(running.port() != 0);
  body(server, running.port());
  CHECK(running.stop());
}

}  // namespace coring_test
