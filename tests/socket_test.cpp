// Sockets over real loopback connections and the real io_uring: TCP over 127.0.0.1 and ::1,
// UDP, Unix stream (path and abstract) and datagram sockets, timeouts (zero means "do not
// wait"), the one-reader-one-writer rule (BindError), close/destroy/cancel while a coroutine
// waits, writes to a closed peer, recv_packet framing (EOF and length), the default timeouts,
// and 1,000 concurrent connections.
//
// Assertions inside coroutines use CHECK only: a REQUIRE throws, and an exception that escapes
// a coroutine ends the program by design. Every wait that the test expects to be ended early
// (by close, cancel, data...) has a finite timeout (kLong), so a missing behaviour fails the
// test instead of hanging it.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <coring/coring.hpp>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "test_util.hpp"

using namespace std::chrono_literals;
using coring_test::pattern;
using coring_test::TempDir;

using Type = Co::Socket::Type;
using Clock = std::chrono::steady_clock;

namespace {

// A wait that the test must see end early; if the behaviour under test is missing, the wait
// times out instead and the test fails rather than hanging.
constexpr auto kLong = 5s;

long long elapsed_ms(Clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since).count();
}

// Waits for wg. If that takes longer than kLong the test fails, and the wait goes on (every
// coroutine in these tests waits with a finite timeout), so that no coroutine outlives the
// frames it refers to.
bool settle(Co::WaitGroup& wg) {
  if (wg.wait(kLong)) return true;
  wg.wait();
  return false;
}

// Starts fn in a coroutine that wg tracks.
template <class F>
long spawn(Co::WaitGroup& wg, F&& fn) {
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
bool within(Co::Duration limit, F&& call) {
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

const char* loopback(Type type) {
  return type == Type::tcp6 || type == Type::udp6 ? "::1" : "127.0.0.1";
}

// The server side of an echo test: accepts one connection and sends every byte back until the
// peer closes. Returns how many bytes it echoed; every step must succeed.
size_t accept_and_echo(Co::Socket& listener, size_t buffer_size) {
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

bool set_int_option(int fd, int level, int name, int value) {
  return ::setsockopt(fd, level, name, &value, sizeof value) == 0;
}

// Bytes waiting in fd's receive queue.
int queued(int fd) {
  int n = -1;
  if (::ioctl(fd, FIONREAD, &n) != 0) return -1;
  return n;
}

// Lets the other coroutines run until the receiver on the other end of our connection has
// taken everything out of its kernel queue (reader_fd is that receiver's descriptor). Used to
// make each send() arrive as a read of its own, so that "split" really means split.
bool until_drained(int reader_fd) {
  auto until = Clock::now() + kLong;
  while (queued(reader_fd) > 0) {
    if (Clock::now() > until) return false;
    Co::this_coroutine::sleep(Co::Duration::zero());
  }
  return true;
}

// Sends data one byte per read on the receiving side.
bool send_bytewise(Co::Socket& sender, int reader_fd, std::string_view data) {
  for (char c : data) {
    if (sender.send(&c, 1, kLong) != 1) return false;
    if (!until_drained(reader_fd)) return false;
  }
  return true;
}

// Fills the kernel buffers between sender and its peer with zero-timeout sends, until a send
// would have to wait. Returns the bytes queued.
size_t fill_send_buffer(Co::Socket& sender) {
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
Pair tcp_pair(Type type = Type::tcp, bool small_buffers = false) {
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

std::string abstract_name(std::string_view what) {
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

std::string bind_error_text(int fd, long bound, long current, const char* side) {
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
Packets read_packets(Co::Socket& socket) {
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
Packets read_framed(const Co::Protocol& protocol, Send&& send) {
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
auto send_coalesced(std::string_view stream) {
  return [stream](Co::Socket& client, int) {
    CHECK(client.send_all(stream.data(), stream.size(), kLong) ==
          static_cast<ssize_t>(stream.size()));
  };
}

}  // namespace

// ---- data transfer -----------------------------------------------------------------------------

static void echo_one_mebibyte(Type type) {
  const std::string sent = pattern(1 << 20, 7);
  std::string received(sent.size(), '\0');
  ssize_t client_got = -2;
  size_t server_echoed = 0;
  int rc = Co::run([&] {
    Co::Socket listener(type);
    CO_REQUIRE(listener.bind(loopback(type), 0));
    CO_REQUIRE(listener.listen());
    uint16_t port = listener.local_port();
    CHECK(port != 0);
    Co::WaitGroup done;
    done.add(1);
    Co::create([&] {
      server_echoed = accept_and_echo(listener, 64 * 1024);
      done.done();
    });
    Co::Socket client(type);
    CHECK(client.connect(loopback(type), port, kLong));
    // The writer and the reader of one socket run at the same time (1 MiB does not fit in the
    // kernel buffers, so a writer alone would wait for a reader forever).
    spawn(done, [&] {
      CHECK(client.send_all(sent.data(), sent.size(), kLong) == static_cast<ssize_t>(sent.size()));
      CHECK(client.shutdown(SHUT_WR));
    });
    client_got = client.recv_all(received.data(), received.size(), kLong);
    char extra;
    CHECK(client.recv(&extra, 1, kLong) == 0);  // the server closed after echoing everything
    CHECK(settle(done));
  });
  CHECK(rc == 0);
  CHECK(client_got == static_cast<ssize_t>(sent.size()));
  CHECK(server_echoed == sent.size());
  CHECK(received == sent);
}

TEST_CASE("tcp: 1 MiB echoed intact over 127.0.0.1") {
  echo_one_mebibyte(Type::tcp);
}

TEST_CASE("tcp: 1 MiB echoed intact over ::1") {
  echo_one_mebibyte(Type::tcp6);
}

TEST_CASE("tcp: peer addresses and local ports over IPv4 and IPv6") {
  int rc = Co::run([&] {
    for (Type type : {Type::tcp, Type::tcp6}) {
      Pair p = tcp_pair(type);
      if (!p.ok) return;
      std::string expected_host = type == Type::tcp ? "127.0.0.1:" : "[::1]:";
      CHECK(p.server.peer_address() == expected_host + std::to_string(p.client.local_port()));
      CHECK(p.client.peer_address() == expected_host + std::to_string(p.server.local_port()));
      CHECK(p.server.type() == type);
    }
  });
  CHECK(rc == 0);
}

TEST_CASE("tcp: connect resolves names without a DNS query: localhost, .invalid, malformed") {
  int rc = Co::run([&] {
    Co::Socket listener;
    CO_REQUIRE(listener.bind("127.0.0.1", 0));
    CO_REQUIRE(listener.listen());
    Co::Socket client;
    CHECK(client.connect("localhost", listener.local_port(), kLong));
    CHECK(listener.accept(kLong).has_value());

    Co::Socket nowhere;
    CHECK_FALSE(nowhere.connect("no-such-host.invalid", 80, kLong));
    CHECK(nowhere.error().value() == ENXIO);
    CHECK_FALSE(nowhere.error_message().empty());
    Co::Socket malformed;
    CHECK_FALSE(malformed.connect("bad..name", 80, kLong));
    CHECK(malformed.error().value() == EINVAL);
  });
  CHECK(rc == 0);
}

TEST_CASE("tcp: connecting to a port that was bound and closed fails with ECONNREFUSED") {
  int rc = Co::run([&] {
    for (Type type : {Type::tcp, Type::tcp6}) {
      uint16_t port = 0;
      {
        Co::Socket taken(type);
        CO_REQUIRE(taken.bind(loopback(type), 0));
        port = taken.local_port();
        CO_REQUIRE(port != 0);
      }  // closed: nothing listens on port now
      Co::Socket client(type);
      auto start = Clock::now();
      CHECK_FALSE(client.connect(loopback(type), port, kLong));
      CHECK(client.error().value() == ECONNREFUSED);
      CHECK(client.error() == std::errc::connection_refused);
      CHECK_FALSE(client.error_message().empty());
      CHECK(elapsed_ms(start) < 2000);
    }
  });
  CHECK(rc == 0);
}

TEST_CASE("tcp: the peer closing makes recv return 0, and recv_all returns what it got") {
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    if (!p.ok) return;
    CHECK(p.client.send_all("abc", 3, kLong) == 3);
    CHECK(p.client.close());
    char buffer[16];
    // recv_all stops at the end of the stream: the bytes it moved, and no error.
    CHECK(p.server.recv_all(buffer, sizeof buffer, kLong) == 3);
    CHECK(std::string_view(buffer, 3) == "abc");
    CHECK(p.server.error().value() == 0);
    CHECK(p.server.recv(buffer, sizeof buffer, kLong) == 0);
    CHECK(p.server.recv(buffer, sizeof buffer, kLong) == 0);  // and stays at the end
    CHECK(p.server.recv_all(buffer, sizeof buffer, kLong) == 0);
  });
  CHECK(rc == 0);
}

TEST_CASE("tcp: a reader already waiting sees the peer's close as 0") {
  ssize_t got = -2;
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    if (!p.ok) return;
    Co::WaitGroup wg;
    wg.add(1);
    Co::create([&] {
      char buffer[16];
      got = p.server.recv(buffer, sizeof buffer, kLong);
      wg.done();
    });
    CHECK(got == -2);  // it waits
    CHECK(p.client.shutdown(SHUT_WR));
    CHECK(settle(wg));
  });
  CHECK(rc == 0);
  CHECK(got == 0);
}

// ---- timeouts ----------------------------------------------------------------------------------

TEST_CASE("tcp: a read timeout fails with ETIMEDOUT in time and the socket stays usable") {
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    if (!p.ok) return;
    char buffer[64];
    auto start = Clock::now();
    ssize_t got = -2;
    CHECK(within(kLong, [&] { got = p.server.recv(buffer, sizeof buffer, 50ms); }));
    CHECK(got == -1);
    long long waited = elapsed_ms(start);
    CHECK(p.server.error().value() == ETIMEDOUT);
    CHECK(p.server.error() == std::errc::timed_out);
    CHECK(waited >= 50);
    CHECK(waited < 3000);

    // The configured read timeout applies when no timeout is passed.
    p.server.set_timeout(50ms);
    CHECK(p.server.read_timeout() == 50ms);
    CHECK(p.server.write_timeout() == 50ms);
    start = Clock::now();
    CHECK(within(kLong, [&] { got = p.server.recv(buffer, sizeof buffer); }));
    CHECK(got == -1);
    waited = elapsed_ms(start);
    CHECK(p.server.error().value() == ETIMEDOUT);
    CHECK(waited >= 50);
    CHECK(waited < 3000);

    // recv_all's timeout covers the whole call: it returns what it got so far.
    CHECK(p.client.send_all("12345", 5, kLong) == 5);
    start = Clock::now();
    CHECK(within(kLong, [&] { got = p.server.recv_all(buffer, 10, 50ms); }));
    CHECK(got == 5);
    CHECK(p.server.error().value() == ETIMEDOUT);
    CHECK(elapsed_ms(start) >= 50);
    CHECK(std::string_view(buffer, 5) == "12345");

    // Data sent after the timeouts arrives intact.
    const std::string later = pattern(100'000, 3);
    Co::WaitGroup wg;
    spawn(wg, [&] { CHECK(p.client.send_all(later.data(), later.size(), kLong) == 100'000); });
    std::string arrived(later.size(), '\0');
    CHECK(p.server.recv_all(arrived.data(), arrived.size(), kLong) == 100'000);
    CHECK(arrived == later);
    CHECK(settle(wg));
  });
  CHECK(rc == 0);
}

TEST_CASE("tcp: reads that keep timing out while data trickles in lose no byte") {
  // A timeout that fires just as data lands must not drop that data: the stream that comes out
  // of many short-timeout reads is exactly the stream that went in.
  std::string sent, received;
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    if (!p.ok) return;
    for (uint32_t i = 0; i < 300; ++i) sent += pattern(1 + i % 7, i);
    Co::WaitGroup wg;
    spawn(wg, [&] {
      size_t offset = 0;
      uint32_t step = 0;
      while (offset < sent.size()) {
        size_t n = std::min<size_t>(1 + step % 7, sent.size() - offset);
        CHECK(p.client.send_all(sent.data() + offset, n, kLong) == static_cast<ssize_t>(n));
        offset += n;
        Co::this_coroutine::sleep(std::chrono::microseconds(step * 37 % 1500));
        ++step;
      }
      CHECK(p.client.shutdown(SHUT_WR));
    });
    char buffer[5];  // small reads, so that many are in flight when timeouts fire
    int timeouts = 0;
    for (;;) {
      ssize_t n = p.server.recv(buffer, sizeof buffer, 1ms);
      if (n > 0) {
        received.append(buffer, static_cast<size_t>(n));
      } else if (n == 0) {
        break;
      } else {
        CHECK(p.server.error().value() == ETIMEDOUT);
        if (p.server.error().value() != ETIMEDOUT) break;
        ++timeouts;
      }
    }
    CHECK(timeouts > 0);
    CHECK(settle(wg));
  });
  CHECK(rc == 0);
  CHECK(received.size() == sent.size());
  CHECK(received == sent);
}

TEST_CASE("tcp: data that lands as a read times out is returned, not dropped") {
  // Each round a reader waits 1 ms while a sender coroutine wakes from 50 us before to 50 us
  // after that deadline and writes one byte with a plain syscall, so that the byte lands at
  // every point around the deadline, including after the deadline asked the kernel to cancel
  // the read and before the cancellation was submitted. Whichever wins, no byte may be lost or
  // reordered: a read that timed out leaves its byte for the next read.
  constexpr int kRounds = 300;
  std::string received;
  int timeouts = 0;
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    if (!p.ok) return;
    const int client_fd = p.client.fd();
    for (int i = 0; i < kRounds; ++i) {
      const char byte = static_cast<char>(i);
      const auto nap = 1ms + std::chrono::microseconds((i % 21 - 10) * 5);
      Co::WaitGroup wg;
      spawn(wg, [client_fd, byte, nap] {
        Co::this_coroutine::sleep(nap);
        CHECK(::send(client_fd, &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1);
      });
      char buffer[4];
      ssize_t n = p.server.recv(buffer, sizeof buffer, 1ms);
      CHECK(settle(wg));
      if (n < 0) {
        CHECK(p.server.error().value() == ETIMEDOUT);
        ++timeouts;
        n = p.server.recv(buffer, sizeof buffer, kLong);  // the byte must still be there
      }
      CHECK(n == 1);
      if (n > 0) received.append(buffer, static_cast<size_t>(n));
    }
  });
  CHECK(rc == 0);
  MESSAGE(timeouts << " of " << kRounds << " reads timed out");
  std::string sent;
  for (int i = 0; i < kRounds; ++i) sent.push_back(static_cast<char>(i));
  CHECK(received == sent);
}

TEST_CASE("timeout zero means do not wait") {
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    if (!p.ok) return;
    Co::Socket listener;
    CO_REQUIRE(listener.bind("127.0.0.1", 0));
    CO_REQUIRE(listener.listen());
    // Each call must return within a second (see within()).
    auto at_once = [](auto&& call) { return within(1s, call); };
    char buffer[16];
    ssize_t got = -2;
    CHECK(at_once([&] { got = p.server.recv(buffer, sizeof buffer, Co::Duration::zero()); }));
    CHECK(got == -1);
    CHECK(p.server.error().value() == ETIMEDOUT);
    CHECK(at_once([&] { got = p.server.recv(buffer, sizeof buffer, -5ms); }));  // in the past
    CHECK(got == -1);
    CHECK(p.server.error().value() == ETIMEDOUT);
    CHECK(at_once([&] { got = p.server.recv_all(buffer, sizeof buffer, Co::Duration::zero()); }));
    CHECK(got == -1);
    CHECK(p.server.error().value() == ETIMEDOUT);
    CHECK(at_once([&] { got = p.server.recv_packet(Co::Duration::zero()) ? 1 : -1; }));
    CHECK(got == -1);
    CHECK(p.server.error().value() == ETIMEDOUT);
    bool accepted_one = true;
    CHECK(at_once([&] { accepted_one = listener.accept(Co::Duration::zero()).has_value(); }));
    CHECK_FALSE(accepted_one);
    CHECK(listener.error().value() == ETIMEDOUT);

    // Ready now: a zero timeout succeeds.
    CHECK(p.client.send("hi", 2, Co::Duration::zero()) == 2);
    // Wait for the bytes to land before the zero-timeout read (without reading them).
    auto until = Clock::now() + kLong;
    while (queued(p.server.fd()) < 2 && Clock::now() < until) Co::this_coroutine::sleep(1ms);
    CHECK(p.server.recv(buffer, sizeof buffer, Co::Duration::zero()) == 2);
    CHECK(std::string_view(buffer, 2) == "hi");

    Co::Socket client;
    CHECK(client.connect("127.0.0.1", listener.local_port(), kLong));
    until = Clock::now() + kLong;
    std::optional<Co::Socket> accepted;
    while (!accepted && Clock::now() < until) {
      accepted = listener.accept(Co::Duration::zero());
      if (!accepted) Co::this_coroutine::sleep(1ms);
    }
    CHECK(accepted.has_value());
  });
  CHECK(rc == 0);
}

TEST_CASE("tcp: accept times out with ETIMEDOUT") {
  int rc = Co::run([&] {
    Co::Socket listener(Type::tcp6);
    CO_REQUIRE(listener.bind("::1", 0));
    CO_REQUIRE(listener.listen());
    auto start = Clock::now();
    bool accepted = true;
    CHECK(within(kLong, [&] { accepted = listener.accept(50ms).has_value(); }));
    CHECK_FALSE(accepted);
    long long waited = elapsed_ms(start);
    CHECK(listener.error().value() == ETIMEDOUT);
    CHECK(waited >= 50);
    CHECK(waited < 3000);
    // Still usable.
    Co::Socket client(Type::tcp6);
    CHECK(client.connect("::1", listener.local_port(), kLong));
    CHECK(listener.accept(kLong).has_value());
  });
  CHECK(rc == 0);
}

TEST_CASE("tcp: connect times out with ETIMEDOUT when the listener's queue is full") {
  // listen(0) takes one connection into its accept queue; the SYN of the next is dropped, so
  // its connect() waits (the kernel would retry for minutes).
  int rc = Co::run([&] {
    Co::Socket listener;
    CO_REQUIRE(listener.bind("127.0.0.1", 0));
    CO_REQUIRE(listener.listen(0));
    Co::Socket first;
    CHECK(first.connect("127.0.0.1", listener.local_port(), kLong));
    Co::Socket second;
    auto start = Clock::now();
    bool connected = true;
    CHECK(within(kLong,
                 [&] { connected = second.connect("127.0.0.1", listener.local_port(), 100ms); }));
    CHECK_FALSE(connected);
    long long waited = elapsed_ms(start);
    CHECK(second.error().value() == ETIMEDOUT);
    CHECK(waited >= 100);
    CHECK(waited < 3000);
  });
  CHECK(rc == 0);
}

TEST_CASE("default timeouts: connect 10 s, read and write 60 s; set_default_timeouts") {
  DefaultTimeoutsGuard restore;
  {
    Co::Socket socket;
    CHECK(socket.connect_timeout() == 10s);
    CHECK(socket.read_timeout() == 60s);
    CHECK(socket.write_timeout() == 60s);
    socket.set_timeouts(1s, 2s, 3s);
    CHECK(socket.connect_timeout() == 1s);
    CHECK(socket.read_timeout() == 2s);
    CHECK(socket.write_timeout() == 3s);
  }
  Co::Socket before;
  Co::Socket::set_default_timeouts(7s, 50ms, 9s);
  Co::Socket after(Type::udp);
  CHECK(before.read_timeout() == 60s);  // only later sockets are affected
  CHECK(after.connect_timeout() == 7s);
  CHECK(after.read_timeout() == 50ms);
  CHECK(after.write_timeout() == 9s);

  // The new default read timeout is the one a later socket really uses.
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    if (!p.ok) return;
    CHECK(p.server.read_timeout() == 50ms);
    char buffer[8];
    auto start = Clock::now();
    ssize_t got = -2;
    CHECK(within(kLong, [&] { got = p.server.recv(buffer, sizeof buffer); }));
    CHECK(got == -1);
    CHECK(p.server.error().value() == ETIMEDOUT);
    CHECK(elapsed_ms(start) >= 50);
    CHECK(elapsed_ms(start) < 3000);

    // An accepted socket inherits its listener's timeouts.
    Co::Socket listener;
    listener.set_timeouts(1s, 2s, 3s);
    CO_REQUIRE(listener.bind("127.0.0.1", 0));
    CO_REQUIRE(listener.listen());
    Co::Socket client;
    CHECK(client.connect("127.0.0.1", listener.local_port(), kLong));
    std::optional<Co::Socket> accepted = listener.accept(kLong);
    CHECK(accepted.has_value());
    if (accepted) {
      CHECK(accepted->connect_timeout() == 1s);
      CHECK(accepted->read_timeout() == 2s);
      CHECK(accepted->write_timeout() == 3s);
    }
  });
  CHECK(rc == 0);
}

// ---- one reader, one writer --------------------------------------------------------------------

TEST_CASE("BindError: a second reader throws with Swoole's exact text") {
  std::string what;
  int fd = -1;
  long reader = 0, intruder = 0, bound = 0, current = 0;
  bool side_is_reading = false;
  bool caught_as_logic_error = false;
  ssize_t first_got = -2;
  std::string first_data;
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    if (!p.ok) return;
    fd = p.server.fd();
    Co::WaitGroup wg;
    wg.add(1);
    reader = Co::create([&] {
      char buffer[16];
      first_got = p.server.recv(buffer, sizeof buffer, kLong);
      if (first_got > 0) first_data.assign(buffer, static_cast<size_t>(first_got));
      wg.done();
    });
    intruder = Co::this_coroutine::id();
    char buffer[16];
    try {
      p.server.recv(buffer, sizeof buffer, kLong);
      FAIL_CHECK("a second reader was allowed");
    } catch (const Co::BindError& e) {
      what = e.what();
      bound = e.bound_cid();
      current = e.current_cid();
      side_is_reading = e.side() == Co::BindError::Side::reading;
      CHECK(e.fd() == fd);
    }
    // Also from another coroutine, and through the other read calls; as a std::logic_error.
    Co::create([&] {
      char b[4];
      try {
        p.server.recv_all(b, sizeof b, kLong);
      } catch (const std::logic_error&) {
        caught_as_logic_error = true;
      }
      try {
        p.server.recv_packet(kLong);
        FAIL_CHECK("recv_packet was allowed");
      } catch (const Co::BindError&) {
      }
    });
    // The first reader is undisturbed: it gets the data.
    CHECK(p.client.send_all("data", 4, kLong) == 4);
    CHECK(settle(wg));
  });
  CHECK(rc == 0);
  CHECK(what == bind_error_text(fd, reader, intruder, "reading"));
  CHECK(bound == reader);
  CHECK(current == intruder);
  CHECK(side_is_reading);
  CHECK(caught_as_logic_error);
  CHECK(first_got == 4);
  CHECK(first_data == "data");
}

TEST_CASE("BindError: a second writer throws with Swoole's exact text") {
  std::string what;
  int fd = -1;
  long writer = 0, intruder = 0, bound = 0, current = 0;
  bool side_is_writing = false;
  ssize_t writer_sent = -2;
  const std::string big = pattern(4 << 20, 11);
  std::string drained;
  int rc = Co::run([&] {
    Pair p = tcp_pair(Type::tcp, true);
    if (!p.ok) return;
    fd = p.client.fd();
    Co::WaitGroup wg;
    wg.add(1);
    // 4 MiB cannot fit in the tiny buffers and the server does not read yet: the writer waits.
    writer = Co::create([&] {
      writer_sent = p.client.send_all(big.data(), big.size(), kLong);
      wg.done();
    });
    CHECK(writer_sent == -2);
    intruder = Co::this_coroutine::id();
    try {
      p.client.send("x", 1, kLong);
      FAIL_CHECK("a second writer was allowed");
    } catch (const Co::BindError& e) {
      what = e.what();
      bound = e.bound_cid();
      current = e.current_cid();
      side_is_writing = e.side() == Co::BindError::Side::writing;
      CHECK(e.fd() == fd);
    }
    try {
      p.client.send_all("x", 1, kLong);
      FAIL_CHECK("send_all was allowed");
    } catch (const Co::BindError&) {
    }
    // connect() is a write operation too.
    try {
      p.client.connect("127.0.0.1", 1, kLong);
      FAIL_CHECK("connect was allowed");
    } catch (const Co::BindError&) {
    }
    // Reading the socket meanwhile is allowed (full duplex): a zero-timeout read just finds
    // nothing.
    char b;
    CHECK(p.client.recv(&b, 1, Co::Duration::zero()) == -1);
    CHECK(p.client.error().value() == ETIMEDOUT);
    // Now drain: the writer finishes, every byte intact.
    drained.resize(big.size());
    CHECK(p.server.recv_all(drained.data(), drained.size(), kLong) ==
          static_cast<ssize_t>(big.size()));
    CHECK(settle(wg));
  });
  CHECK(rc == 0);
  CHECK(what == bind_error_text(fd, writer, intruder, "writing"));
  CHECK(bound == writer);
  CHECK(current == intruder);
  CHECK(side_is_writing);
  CHECK(writer_sent == static_cast<ssize_t>(big.size()));
  CHECK(drained == big);
}

TEST_CASE("one reader and one writer on one socket at the same time (full duplex)") {
  const std::string up = pattern(512 * 1024, 21);
  const std::string down = pattern(512 * 1024, 22);
  std::string got_up(up.size(), '\0'), got_down(down.size(), '\0');
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    if (!p.ok) return;
    Co::WaitGroup wg;
    wg.add(3);
    // On the client socket: a reader waits first, then a writer starts while it waits.
    Co::create([&] {
      CHECK(p.client.recv_all(got_down.data(), got_down.size(), kLong) ==
            static_cast<ssize_t>(down.size()));
      wg.done();
    });
    Co::create([&] {
      CHECK(p.client.send_all(up.data(), up.size(), kLong) == static_cast<ssize_t>(up.size()));
      wg.done();
    });
    // And on the server socket too.
    Co::create([&] {
      CHECK(p.server.send_all(down.data(), down.size(), kLong) ==
            static_cast<ssize_t>(down.size()));
      wg.done();
    });
    CHECK(p.server.recv_all(got_up.data(), got_up.size(), kLong) ==
          static_cast<ssize_t>(up.size()));
    CHECK(settle(wg));
  });
  CHECK(rc == 0);
  CHECK(got_up == up);
  CHECK(got_down == down);
}

// ---- close, destroy and cancel while a coroutine waits -----------------------------------------

TEST_CASE("close() from a third coroutine wakes a waiting reader with ECANCELED first") {
  ssize_t got = -2;
  int error = 0;
  long long waited = -1;
  bool reader_woke = false;
  bool woke_before_close_returned = false;
  bool descriptor_released = false;
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    if (!p.ok) return;
    int fd = p.server.fd();
    Co::create([&] {
      char buffer[16];
      auto start = Clock::now();
      got = p.server.recv(buffer, sizeof buffer, kLong);
      waited = elapsed_ms(start);
      error = p.server.error().value();
      reader_woke = true;
    });
    Co::WaitGroup closed;
    closed.add(1);
    Co::create([&] {  // the third coroutine
      CHECK(p.server.close());
      woke_before_close_returned = reader_woke;
      // When close() returns the descriptor is really closed.
      descriptor_released = ::fcntl(fd, F_GETFD) == -1 && errno == EBADF;
      closed.done();
    });
    CHECK(settle(closed));
    // Every later call fails with EBADF.
    char buffer[4];
    CHECK(p.server.fd() == -1);
    CHECK_FALSE(p.server.is_open());
    CHECK(p.server.recv(buffer, sizeof buffer, kLong) == -1);
    CHECK(p.server.error().value() == EBADF);
    CHECK(p.server.send("x", 1, kLong) == -1);
    CHECK(p.server.error().value() == EBADF);
    CHECK_FALSE(p.server.recv_packet(kLong).has_value());
    CHECK(p.server.error().value() == EBADF);
    CHECK_FALSE(p.server.accept(kLong).has_value());
    CHECK(p.server.error().value() == EBADF);
    CHECK_FALSE(p.server.shutdown());
    CHECK(p.server.error().value() == EBADF);
    CHECK_FALSE(p.server.close());
    CHECK(p.server.error().value() == EBADF);
    // The peer sees the close.
    CHECK(p.client.recv(buffer, sizeof buffer, kLong) == 0);
  });
  CHECK(rc == 0);
  CHECK(got == -1);
  CHECK(error == ECANCELED);
  CHECK(waited < 2000);
  CHECK(woke_before_close_returned);
  CHECK(descriptor_released);
}

TEST_CASE("close() from a third coroutine wakes a waiting writer (and reader) with ECANCELED") {
  ssize_t sent = -2, got = -2, all_sent = -2;
  int send_error = 0, recv_error = 0, send_all_error = 0;
  bool writer_woke = false, reader_woke = false;
  bool both_woke_before_close_returned = false;
  long long waited = -1;
  int rc = Co::run([&] {
    {
      Pair p = tcp_pair(Type::tcp, true);
      if (!p.ok) return;
      fill_send_buffer(p.client);
      Co::create([&] {  // the writer: the buffers are full, it waits
        std::string chunk(64 * 1024, 'w');
        auto start = Clock::now();
        sent = p.client.send(chunk.data(), chunk.size(), kLong);
        waited = elapsed_ms(start);
        send_error = p.client.error().value();
        writer_woke = true;
      });
      Co::create([&] {  // the reader: nothing comes
        char buffer[16];
        got = p.client.recv(buffer, sizeof buffer, kLong);
        recv_error = p.client.error().value();
        reader_woke = true;
      });
      CHECK_FALSE(writer_woke);
      CHECK_FALSE(reader_woke);
      Co::WaitGroup closed;
      closed.add(1);
      Co::create([&] {
        CHECK(p.client.close());
        both_woke_before_close_returned = writer_woke && reader_woke;
        closed.done();
      });
      CHECK(settle(closed));
      CHECK(p.client.send("x", 1, kLong) == -1);
      CHECK(p.client.error().value() == EBADF);
    }
    {
      // send_all that already moved some bytes reports them, and stops with ECANCELED.
      Pair p = tcp_pair(Type::tcp, true);
      if (!p.ok) return;
      std::string big = pattern(4 << 20, 5);
      Co::WaitGroup wg;
      wg.add(1);
      Co::create([&] {
        all_sent = p.client.send_all(big.data(), big.size(), kLong);
        send_all_error = p.client.error().value();
        wg.done();
      });
      CHECK(p.client.close());
      CHECK(settle(wg));
    }
  });
  CHECK(rc == 0);
  CHECK(sent == -1);
  CHECK(send_error == ECANCELED);
  CHECK(waited < 2000);
  CHECK(got == -1);
  CHECK(recv_error == ECANCELED);
  CHECK(both_woke_before_close_returned);
  CHECK(all_sent > 0);
  CHECK(all_sent < (4 << 20));
  CHECK(send_all_error == ECANCELED);
}

TEST_CASE("close() wakes a coroutine waiting in accept with ECANCELED") {
  bool accepted = true;
  int error = 0;
  bool woke_first = false;
  int rc = Co::run([&] {
    Co::Socket listener;
    CO_REQUIRE(listener.bind("127.0.0.1", 0));
    CO_REQUIRE(listener.listen());
    bool woke = false;
    Co::create([&] {
      accepted = listener.accept(kLong).has_value();
      error = listener.error().value();
      woke = true;
    });
    CHECK(listener.close());
    woke_first = woke;
  });
  CHECK(rc == 0);
  CHECK_FALSE(accepted);
  CHECK(error == ECANCELED);
  CHECK(woke_first);
}

TEST_CASE("destroying a Socket while another coroutine waits on it acts as close()") {
  ssize_t got = -2;
  long long waited = -1;
  bool open_while_waiter_inside = false;
  bool released_after = false;
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    if (!p.ok) return;
    auto socket = std::make_unique<Co::Socket>(std::move(p.server));
    Co::Socket* raw = socket.get();
    int fd = raw->fd();
    Co::WaitGroup wg;
    wg.add(1);
    Co::create([&] {
      char buffer[16];
      auto start = Clock::now();
      got = raw->recv(buffer, sizeof buffer, kLong);  // must not touch *raw after this
      waited = elapsed_ms(start);
      wg.done();
    });
    socket.reset();
    // The waiter has not run yet: its descriptor must still be held, so that the number
    // cannot be reused while the kernel may still complete the read on it.
    open_while_waiter_inside = ::fcntl(fd, F_GETFD) != -1;
    CHECK(settle(wg));
    released_after = ::fcntl(fd, F_GETFD) == -1 && errno == EBADF;
    // The peer sees the close.
    char buffer[4];
    CHECK(p.client.recv(buffer, sizeof buffer, kLong) == 0);
  });
  CHECK(rc == 0);
  CHECK(got == -1);
  CHECK(waited < 2000);
  CHECK(open_while_waiter_inside);
  CHECK(released_after);
}

TEST_CASE("moving a Socket while a coroutine waits on it is safe") {
  std::string got;
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    if (!p.ok) return;
    Co::Socket* raw = &p.server;
    Co::WaitGroup wg;
    wg.add(1);
    Co::create([&] {
      char buffer[16];
      ssize_t n = raw->recv(buffer, sizeof buffer, kLong);
      if (n > 0) got.assign(buffer, static_cast<size_t>(n));
      wg.done();
    });
    Co::Socket moved(std::move(p.server));
    CHECK(p.server.fd() == -1);
    CHECK(p.client.send_all("moved", 5, kLong) == 5);
    CHECK(settle(wg));
    CHECK(moved.send_all("back", 4, kLong) == 4);
    char buffer[8];
    CHECK(p.client.recv_all(buffer, 4, kLong) == 4);
    CHECK(std::string_view(buffer, 4) == "back");
  });
  CHECK(rc == 0);
  CHECK(got == "moved");
}

TEST_CASE("cancel(cid) of a coroutine waiting in recv returns -1 with ECANCELED") {
  ssize_t got = -2;
  int error = 0;
  bool saw_cancelled = false;
  long long waited = -1;
  std::string after;
  int rc = Co::run([&] {
    Pair p = tcp_pair(Type::tcp6);
    if (!p.ok) return;
    Co::WaitGroup wg;
    wg.add(1);
    long reader = Co::create([&] {
      char buffer[16];
      auto start = Clock::now();
      got = p.server.recv(buffer, sizeof buffer, kLong);
      waited = elapsed_ms(start);
      error = p.server.error().value();
      saw_cancelled = Co::this_coroutine::is_cancelled();
      wg.done();
    });
    CHECK(Co::cancel(reader));
    CHECK(settle(wg));
    // The socket is still usable and lost nothing.
    CHECK(p.client.send_all("after", 5, kLong) == 5);
    char buffer[8];
    ssize_t n = p.server.recv_all(buffer, 5, kLong);
    if (n > 0) after.assign(buffer, static_cast<size_t>(n));
  });
  CHECK(rc == 0);
  CHECK(got == -1);
  CHECK(error == ECANCELED);
  CHECK(saw_cancelled);
  CHECK(waited < 2000);
  CHECK(after == "after");
}

TEST_CASE("cancel(cid) of a coroutine waiting in accept returns ECANCELED") {
  bool accepted = true;
  int error = 0;
  int rc = Co::run([&] {
    Co::Socket listener;
    CO_REQUIRE(listener.bind("127.0.0.1", 0));
    CO_REQUIRE(listener.listen());
    Co::WaitGroup wg;
    wg.add(1);
    long acceptor = Co::create([&] {
      accepted = listener.accept(2 * kLong).has_value();
      error = listener.error().value();
      wg.done();
    });
    CHECK(Co::cancel(acceptor));
    CHECK(settle(wg));
    // Still listening.
    Co::Socket client;
    CHECK(client.connect("127.0.0.1", listener.local_port(), kLong));
    CHECK(listener.accept(kLong).has_value());
  });
  CHECK(rc == 0);
  CHECK_FALSE(accepted);
  CHECK(error == ECANCELED);
}

TEST_CASE("cancel(cid) of a coroutine waiting in connect returns ECANCELED") {
  bool connected = true;
  int error = 0;
  long long waited = -1;
  int rc = Co::run([&] {
    Co::Socket listener;
    CO_REQUIRE(listener.bind("127.0.0.1", 0));
    CO_REQUIRE(listener.listen(0));  // one queued connection, then SYNs are dropped
    Co::Socket first;
    CHECK(first.connect("127.0.0.1", listener.local_port(), kLong));
    Co::Socket second;
    Co::WaitGroup wg;
    wg.add(1);
    long connector = Co::create([&] {
      auto start = Clock::now();
      connected = second.connect("127.0.0.1", listener.local_port(), kLong);
      waited = elapsed_ms(start);
      error = second.error().value();
      wg.done();
    });
    CHECK(Co::cancel(connector));
    CHECK(settle(wg));
  });
  CHECK(rc == 0);
  CHECK_FALSE(connected);
  CHECK(error == ECANCELED);
  CHECK(waited < 2000);
}

TEST_CASE("writes after the peer closed fail with EPIPE or ECONNRESET, and SIGPIPE kills nobody") {
  // In a child whose SIGPIPE disposition is the default (terminate), so that the library alone
  // must keep the signal from killing the process. The writes go on until one fails with EPIPE:
  // that is the failure that raises SIGPIPE.
  TempDir dir;
  const std::string path = dir.file("pipe.sock");
  for (Type type : {Type::tcp, Type::tcp6, Type::unix_stream}) {
    CAPTURE(static_cast<int>(type));
    int status =
        coring_test::run_in_child([&] {
          ::signal(SIGPIPE, SIG_DFL);
          int result = 10;
          int rc = Co::run([&] {
            const bool unix_socket = type == Type::unix_stream;
            Co::Socket listener(type);
            if (!listener.bind(unix_socket ? path : loopback(type), 0) || !listener.listen())
              return;
            Co::Socket client(type);
            bool connected = unix_socket
                                 ? client.connect(path, kLong)
                                 : client.connect(loopback(type), listener.local_port(), kLong);
            if (!connected) return;
            {
              std::optional<Co::Socket> server = listener.accept(kLong);
              if (!server) return;
            }  // the peer closes
            char b;
            if (client.recv(&b, 1, kLong) != 0) return;
            std::string chunk(1024, 'x');
            // Waiting sends (through the ring), then sends that do not wait (a direct syscall):
            // each path must fail without raising the signal.
            for (Co::Duration timeout : {Co::Duration(kLong), Co::Duration::zero()}) {
              bool epipe = false;
              for (int i = 0; i < 200 && !epipe; ++i) {
                ssize_t n = (i % 2 == 0) ? client.send(chunk.data(), chunk.size(), timeout)
                                         : client.send_all(chunk.data(), chunk.size(), timeout);
                if (n < 0) {
                  int e = client.error().value();
                  epipe = e == EPIPE;
                  if (e != EPIPE && e != ECONNRESET) {
                    result = 11;
                    return;
                  }
                }
                if (!epipe) Co::this_coroutine::sleep(1ms);  // let the peer's RST come back
              }
              if (!epipe) {
                result = 12;
                return;
              }
            }
            result = 0;
          });
          return rc == 0 ? result : 13;
        }).status;
    INFO("child status " << status
                         << (WIFSIGNALED(status) && WTERMSIG(status) == SIGPIPE
                                 ? " (killed by SIGPIPE)"
                                 : ""));
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
}

// ---- framing -----------------------------------------------------------------------------------

TEST_CASE("recv_packet: EOF framing, packets coalesced in one send and split byte by byte") {
  for (std::string eof : {std::string("\n"), std::string("\r\n"), std::string("<<END>>")}) {
    CAPTURE(eof);
    const std::vector<std::string> packets = {
        "hello" + eof, eof, "a longer packet, with spaces" + eof, std::string(3000, 'z') + eof};
    std::string stream;
    for (const auto& packet : packets) stream += packet;
    Co::Protocol protocol;
    protocol.eof = eof;
    Packets coalesced = read_framed(protocol, send_coalesced(stream));
    // A 3000-byte packet one byte at a time is slow; split the small ones bytewise and the
    // large one in uneven chunks.
    Packets split = read_framed(protocol, [&](Co::Socket& client, int server_fd) {
      std::string_view rest = stream;
      std::string_view small = rest.substr(0, rest.size() - packets.back().size());
      CHECK(send_bytewise(client, server_fd, small));
      rest.remove_prefix(small.size());
      for (size_t chunk = 1; !rest.empty(); chunk = chunk * 3 + 1) {
        size_t n = std::min(chunk, rest.size());
        CHECK(client.send_all(rest.data(), n, kLong) == static_cast<ssize_t>(n));
        CHECK(until_drained(server_fd));
        rest.remove_prefix(n);
      }
    });
    CHECK(coalesced.packets == packets);
    CHECK(coalesced.ended_cleanly);
    CHECK(split.packets == packets);
    CHECK(split.ended_cleanly);
  }
}

TEST_CASE("recv_packet: a multi-byte delimiter split across reads, and near misses") {
  // Each piece arrives as a read of its own. "\r\n\r\n" is split 1+3, 2+2 and 3+1 across reads,
  // and "\r\n\r" followed by something else is not a delimiter.
  const std::vector<std::string> pieces = {
      "first\r", "\n\r\n", "second\r\n", "\r\n", "third\r\n\r", "\nfourth\r\n\rx\r\n\r", "\n"};
  const std::vector<std::string> expected = {"first\r\n\r\n", "second\r\n\r\n", "third\r\n\r\n",
                                             "fourth\r\n\rx\r\n\r\n"};
  Packets got;
  int rc = Co::run([&] {
    Pair p = tcp_pair(Type::tcp6);
    if (!p.ok) return;
    Co::Protocol protocol;
    protocol.eof = "\r\n\r\n";
    p.server.set_protocol(protocol);
    Co::WaitGroup wg;
    wg.add(1);
    Co::create([&] {
      got = read_packets(p.server);
      wg.done();
    });
    for (const std::string& piece : pieces) {
      CHECK(p.client.send_all(piece.data(), piece.size(), kLong) ==
            static_cast<ssize_t>(piece.size()));
      CHECK(until_drained(p.server.fd()));
    }
    CHECK(p.client.shutdown(SHUT_WR));
    CHECK(settle(wg));
  });
  CHECK(rc == 0);
  CHECK(got.packets == expected);
  CHECK(got.ended_cleanly);
}

namespace {

void put_length(std::string& out, size_t at, char type, uint32_t value) {
  auto byte = [&](size_t i, uint32_t v) { out[at + i] = static_cast<char>(v & 0xff); };
  switch (type) {
    case 'C':
      byte(0, value);
      break;
    case 'n':
      byte(0, value >> 8);
      byte(1, value);
      break;
    case 'v':
      byte(0, value);
      byte(1, value >> 8);
      break;
    case 'N':
      byte(0, value >> 24);
      byte(1, value >> 16);
      byte(2, value >> 8);
      byte(3, value);
      break;
    case 'V':
      byte(0, value);
      byte(1, value >> 8);
      byte(2, value >> 16);
      byte(3, value >> 24);
      break;
  }
}

// A packet: length_offset bytes of header, the length field, padding up to body_offset, then
// the body; the field counts the body's bytes.
std::string length_packet(const Co::Protocol& protocol, std::string_view body, char fill) {
  std::string packet(protocol.body_offset, fill);
  put_length(packet, protocol.length_offset, protocol.length_type,
             static_cast<uint32_t>(body.size()));
  packet += body;
  return packet;
}

}  // namespace

TEST_CASE("recv_packet: length framing for C, n, N, v, V with offsets, coalesced and split") {
  struct Layout {
    char type;
    size_t length_offset, body_offset;
  };
  // Bodies of 261 bytes (0x0105): read with the wrong byte order that is 0x0501 = 1281, or more
  // than 80 MB for the 4-byte types, so a byte-order mistake cannot go unnoticed.
  const Layout layouts[] = {{'C', 0, 1}, {'C', 3, 5}, {'n', 0, 2}, {'n', 2, 6}, {'N', 0, 4},
                            {'N', 1, 8}, {'v', 0, 2}, {'v', 4, 7}, {'V', 0, 4}, {'V', 2, 10}};
  for (const Layout& layout : layouts) {
    CAPTURE(layout.type);
    CAPTURE(layout.length_offset);
    CAPTURE(layout.body_offset);
    Co::Protocol protocol;
    protocol.length_type = layout.type;
    protocol.length_offset = layout.length_offset;
    protocol.body_offset = layout.body_offset;
    const size_t big = layout.type == 'C' ? 200 : 261;
    const std::vector<std::string> packets = {
        length_packet(protocol, pattern(big, layout.type), 'h'), length_packet(protocol, "", 'e'),
        length_packet(protocol, "x", 'a'), length_packet(protocol, pattern(17, 1), 'd')};
    std::string stream;
    for (const auto& packet : packets) stream += packet;
    Packets coalesced = read_framed(protocol, send_coalesced(stream));
    Packets split = read_framed(protocol, [&](Co::Socket& client, int server_fd) {
      CHECK(send_bytewise(client, server_fd, stream));
    });
    CHECK(coalesced.error == 0);
    CHECK(coalesced.packets == packets);
    CHECK(coalesced.ended_cleanly);
    CHECK(split.error == 0);
    CHECK(split.packets == packets);
    CHECK(split.ended_cleanly);
  }
}

TEST_CASE("recv_packet: a large length-framed packet spanning many reads") {
  Co::Protocol protocol;
  protocol.length_type = 'N';
  protocol.body_offset = 4;
  const std::string body = pattern(1'500'000, 99);
  const std::string packet = length_packet(protocol, body, 0);
  std::vector<std::string> got;
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    if (!p.ok) return;
    p.server.set_protocol(protocol);
    Co::WaitGroup wg;
    spawn(wg, [&] {
      for (int i = 0; i < 2; ++i) {
        CHECK(p.client.send_all(packet.data(), packet.size(), kLong) ==
              static_cast<ssize_t>(packet.size()));
      }
    });
    for (int i = 0; i < 2; ++i) {
      auto view = p.server.recv_packet(kLong);
      CHECK(view.has_value());
      if (view) got.emplace_back(*view);
    }
    CHECK(settle(wg));
  });
  CHECK(rc == 0);
  REQUIRE(got.size() == 2);
  CHECK(got[0] == packet);
  CHECK(got[1] == packet);
}

TEST_CASE("recv_packet: EMSGSIZE past package_max_length, then the socket cannot be read") {
  struct Case {
    const char* name;
    Co::Protocol protocol;
    std::string accepted;  // exactly package_max_length bytes: still fine
    std::string refused;   // one byte more
  };
  std::vector<Case> cases;
  {
    Co::Protocol eof;
    eof.eof = "\r\n";
    eof.package_max_length = 1024;
    cases.push_back({"eof", eof, std::string(1022, 'a') + "\r\n", std::string(1023, 'b') + "\r\n"});
    Co::Protocol length;
    length.length_type = 'n';
    length.body_offset = 2;
    length.package_max_length = 1024;
    cases.push_back({"length", length, length_packet(length, std::string(1022, 'c'), 0),
                     length_packet(length, std::string(1023, 'd'), 0)});
    Co::Protocol no_eof_in_sight = eof;  // a stream that never contains the delimiter
    cases.push_back(
        {"eof-never", no_eof_in_sight, std::string(1022, 'e') + "\r\n", std::string(5000, 'f')});
  }
  for (const Case& c : cases) {
    CAPTURE(c.name);
    int rc = Co::run([&] {
      Pair p = tcp_pair();
      if (!p.ok) return;
      p.server.set_protocol(c.protocol);
      std::string stream = c.accepted + c.refused;
      Co::WaitGroup wg;
      spawn(wg, [&] {
        CHECK(p.client.send_all(stream.data(), stream.size(), kLong) ==
              static_cast<ssize_t>(stream.size()));
      });
      CHECK(settle(wg));  // it all fits in the kernel buffers
      auto first = p.server.recv_packet(kLong);
      CHECK(first.has_value());
      if (first) CHECK(*first == c.accepted);
      auto second = p.server.recv_packet(kLong);
      CHECK_FALSE(second.has_value());
      CHECK(p.server.error().value() == EMSGSIZE);
      CHECK_FALSE(p.server.error_message().empty());
      // The stream cannot be re-synchronised: every later read fails the same way.
      CHECK_FALSE(p.server.recv_packet(kLong).has_value());
      CHECK(p.server.error().value() == EMSGSIZE);
      char buffer[16];
      CHECK(p.server.recv(buffer, sizeof buffer, kLong) == -1);
      CHECK(p.server.error().value() == EMSGSIZE);
      CHECK(p.server.recv_all(buffer, sizeof buffer, kLong) == -1);
      CHECK(p.server.error().value() == EMSGSIZE);
      // Writing still works.
      CHECK(p.server.send_all("ok", 2, kLong) == 2);
    });
    CHECK(rc == 0);
  }
}

TEST_CASE("recv_packet: peer close between packets gives an empty view, mid-packet ECONNRESET") {
  int rc = Co::run([&] {
    Co::Protocol eof;
    eof.eof = "\n";
    Co::Protocol length;
    length.length_type = 'V';
    length.body_offset = 4;
    for (const Co::Protocol& protocol : {eof, length}) {
      const bool is_eof = !protocol.eof.empty();
      CAPTURE(is_eof);
      const std::string whole = is_eof ? std::string("one\n") : length_packet(protocol, "one", 0);
      {
        Pair p = tcp_pair();
        if (!p.ok) return;
        p.server.set_protocol(protocol);
        CHECK(p.client.send_all(whole.data(), whole.size(), kLong) ==
              static_cast<ssize_t>(whole.size()));
        CHECK(p.client.close());
        auto first = p.server.recv_packet(kLong);
        CHECK((first && *first == whole));
        auto end = p.server.recv_packet(kLong);
        CHECK(end.has_value());
        if (end) CHECK(end->empty());
        CHECK(p.server.error().value() == 0);
      }
      for (size_t cut : {size_t{1}, whole.size() - 1}) {
        CAPTURE(cut);
        Pair p = tcp_pair();
        if (!p.ok) return;
        p.server.set_protocol(protocol);
        std::string stream = whole + whole.substr(0, cut);
        CHECK(p.client.send_all(stream.data(), stream.size(), kLong) ==
              static_cast<ssize_t>(stream.size()));
        CHECK(p.client.close());
        auto first = p.server.recv_packet(kLong);
        CHECK((first && *first == whole));
        CHECK_FALSE(p.server.recv_packet(kLong).has_value());
        CHECK(p.server.error().value() == ECONNRESET);
      }
    }
  });
  CHECK(rc == 0);
}

TEST_CASE("recv_packet: recv() and recv_all() afterwards return the buffered bytes first") {
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    if (!p.ok) return;
    Co::Protocol protocol;
    protocol.eof = "\r\n";
    p.server.set_protocol(protocol);
    const std::string stream = "one\r\ntwo-rest-of-it";
    CHECK(p.client.send_all(stream.data(), stream.size(), kLong) ==
          static_cast<ssize_t>(stream.size()));
    // Let it all land so that recv_packet's read takes more than the first packet.
    auto until = Clock::now() + kLong;
    while (queued(p.server.fd()) < static_cast<int>(stream.size()) && Clock::now() < until) {
      Co::this_coroutine::sleep(1ms);
    }
    auto packet = p.server.recv_packet(kLong);
    CHECK((packet && *packet == "one\r\n"));
    CHECK(queued(p.server.fd()) == 0);  // the rest sits in the socket's own buffer
    char buffer[64];
    CHECK(p.server.recv(buffer, 4, kLong) == 4);
    CHECK(std::string_view(buffer, 4) == "two-");
    CHECK(p.client.send_all("+more", 5, kLong) == 5);
    // recv_all takes the rest of the buffer, then reads the socket.
    CHECK(p.server.recv_all(buffer, 15, kLong) == 15);
    CHECK(std::string_view(buffer, 15) == "rest-of-it+more");

    // And recv_packet goes on after plain reads.
    CHECK(p.client.send_all("x\r\ny\r\n", 6, kLong) == 6);
    packet = p.server.recv_packet(kLong);
    CHECK((packet && *packet == "x\r\n"));
    packet = p.server.recv_packet(kLong);
    CHECK((packet && *packet == "y\r\n"));
  });
  CHECK(rc == 0);
}

TEST_CASE("recv_packet: without framing returns what one read brings; invalid protocols fail") {
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    if (!p.ok) return;
    CHECK(p.client.send_all("raw", 3, kLong) == 3);
    auto packet = p.server.recv_packet(kLong);
    CHECK((packet && *packet == "raw"));

    int warnings = 0;
    Co::set_log_sink([&](Co::LogLevel level, long, std::string_view message) {
      if (level == Co::LogLevel::warning && message.find("invalid Protocol") != message.npos) {
        ++warnings;
      }
    });
    Co::Protocol bad;
    bad.length_type = 'x';
    p.server.set_protocol(bad);
    Co::set_log_sink({});
    CHECK(warnings == 1);
    CHECK_FALSE(p.server.recv_packet(kLong).has_value());
    CHECK(p.server.error().value() == EINVAL);
  });
  CHECK(rc == 0);
}

// ---- datagrams and Unix sockets ----------------------------------------------------------------

TEST_CASE("udp: sendto/recvfrom round trip over IPv4 and IPv6 fill in host and port") {
  int rc = Co::run([&] {
    for (Type type : {Type::udp, Type::udp6}) {
      CAPTURE(static_cast<int>(type));
      Co::Socket server(type);
      CO_REQUIRE(server.bind(loopback(type), 0));
      uint16_t server_port = server.local_port();
      CHECK(server_port != 0);
      Co::Socket client(type);
      CO_REQUIRE(client.bind(loopback(type), 0));
      Co::WaitGroup wg;
      wg.add(1);
      Co::create([&] {  // an echo server for two datagrams
        for (int i = 0; i < 2; ++i) {
          char buffer[2048];
          std::string host;
          uint16_t port = 0;
          ssize_t n = server.recvfrom(buffer, sizeof buffer, &host, &port, kLong);
          CHECK(n > 0);
          if (n <= 0) break;
          CHECK(host == loopback(type));
          CHECK(port == client.local_port());
          CHECK(server.sendto(host, port, buffer, static_cast<size_t>(n)) == n);
        }
        wg.done();
      });
      const std::string datagram = pattern(1200, 8);
      for (std::string_view message : {std::string_view("ping"), std::string_view(datagram)}) {
        CHECK(client.sendto(loopback(type), server_port, message.data(), message.size()) ==
              static_cast<ssize_t>(message.size()));
        char buffer[2048];
        std::string host;
        uint16_t port = 0;
        ssize_t n = client.recvfrom(buffer, sizeof buffer, &host, &port, kLong);
        CHECK(n == static_cast<ssize_t>(message.size()));
        if (n > 0) CHECK(std::string_view(buffer, static_cast<size_t>(n)) == message);
        CHECK(host == loopback(type));
        CHECK(port == server_port);
      }
      CHECK(settle(wg));
      // recvfrom times out, and a zero timeout does not wait.
      char buffer[16];
      auto start = Clock::now();
      ssize_t got = -2;
      CHECK(within(kLong,
                   [&] { got = client.recvfrom(buffer, sizeof buffer, nullptr, nullptr, 30ms); }));
      CHECK(got == -1);
      CHECK(client.error().value() == ETIMEDOUT);
      CHECK(elapsed_ms(start) >= 30);
      start = Clock::now();
      CHECK(client.recvfrom(buffer, sizeof buffer, nullptr, nullptr, Co::Duration::zero()) == -1);
      CHECK(client.error().value() == ETIMEDOUT);
      CHECK(elapsed_ms(start) < 1000);
    }
  });
  CHECK(rc == 0);
}

TEST_CASE("udp: recvfrom with a zero timeout returns a datagram that is already queued") {
  int rc = Co::run([&] {
    Co::Socket server(Type::udp);
    CO_REQUIRE(server.bind("127.0.0.1", 0));
    Co::Socket client(Type::udp);
    CHECK(client.sendto("127.0.0.1", server.local_port(), "now", 3) == 3);
    auto until = Clock::now() + kLong;
    while (queued(server.fd()) <= 0 && Clock::now() < until) Co::this_coroutine::sleep(1ms);
    char buffer[8];
    std::string host;
    uint16_t port = 0;
    CHECK(server.recvfrom(buffer, sizeof buffer, &host, &port, Co::Duration::zero()) == 3);
    CHECK(std::string_view(buffer, 3) == "now");
    CHECK(host == "127.0.0.1");
    CHECK(port == client.local_port());
  });
  CHECK(rc == 0);
}

static void unix_stream_round_trip(const std::string& path) {
  CAPTURE(path);
  const std::string request = pattern(300'000, 31);
  std::string echoed(request.size(), '\0');
  std::string peer;
  int rc = Co::run([&] {
    Co::Socket listener(Type::unix_stream);
    CO_REQUIRE(listener.bind(path));
    CO_REQUIRE(listener.listen());
    Co::WaitGroup wg;
    wg.add(1);
    Co::create([&] {
      accept_and_echo(listener, 32 * 1024);
      wg.done();
    });
    Co::Socket client(Type::unix_stream);
    CHECK(client.connect(path, kLong));
    peer = client.peer_address();
    spawn(wg, [&] {
      CHECK(client.send_all(request.data(), request.size(), kLong) ==
            static_cast<ssize_t>(request.size()));
      CHECK(client.shutdown(SHUT_WR));
    });
    CHECK(client.recv_all(echoed.data(), echoed.size(), kLong) ==
          static_cast<ssize_t>(request.size()));
    char b;
    CHECK(client.recv(&b, 1, kLong) == 0);
    CHECK(settle(wg));
  });
  CHECK(rc == 0);
  CHECK(echoed == request);
  CHECK(peer == path);
}

TEST_CASE("unix stream: round trip over a filesystem path") {
  TempDir dir;
  unix_stream_round_trip(dir.file("stream.sock"));
}

TEST_CASE("unix stream: round trip over an abstract name") {
  unix_stream_round_trip(abstract_name("stream"));
}

TEST_CASE("unix stream: connecting to a path nobody listens on fails") {
  TempDir dir;
  int rc = Co::run([&] {
    Co::Socket client(Type::unix_stream);
    CHECK_FALSE(client.connect(dir.file("nobody.sock"), kLong));
    CHECK(client.error().value() == ENOENT);
    Co::Socket abstract(Type::unix_stream);
    CHECK_FALSE(abstract.connect(abstract_name("nobody"), kLong));
    CHECK(abstract.error().value() == ECONNREFUSED);
  });
  CHECK(rc == 0);
}

TEST_CASE("unix datagram: round trip over paths and abstract names") {
  TempDir dir;
  for (bool abstract : {false, true}) {
    CAPTURE(abstract);
    const std::string server_path = abstract ? abstract_name("dgram-server") : dir.file("s.sock");
    const std::string client_path = abstract ? abstract_name("dgram-client") : dir.file("c.sock");
    int rc = Co::run([&] {
      Co::Socket server(Type::unix_dgram);
      CO_REQUIRE(server.bind(server_path));
      Co::Socket client(Type::unix_dgram);
      CO_REQUIRE(client.bind(client_path));
      Co::WaitGroup wg;
      wg.add(1);
      Co::create([&] {
        char buffer[256];
        std::string from;
        uint16_t port = 7;
        ssize_t n = server.recvfrom(buffer, sizeof buffer, &from, &port, kLong);
        CHECK(n == 5);
        CHECK(from == client_path);
        CHECK(port == 0);
        if (n > 0) {
          std::string reply = "re:" + std::string(buffer, static_cast<size_t>(n));
          CHECK(server.sendto(from, 0, reply.data(), reply.size()) ==
                static_cast<ssize_t>(reply.size()));
        }
        wg.done();
      });
      CHECK(client.sendto(server_path, 0, "hello", 5) == 5);
      char buffer[256];
      std::string from;
      ssize_t n = client.recvfrom(buffer, sizeof buffer, &from, nullptr, kLong);
      CHECK(n == 8);
      if (n > 0) CHECK(std::string_view(buffer, static_cast<size_t>(n)) == "re:hello");
      CHECK(from == server_path);
      CHECK(settle(wg));
    });
    CHECK(rc == 0);
  }
}

// ---- many connections --------------------------------------------------------------------------

TEST_CASE("1,000 concurrent clients against a coroutine-per-connection echo server") {
  constexpr int kClients = 1000;
  // Two descriptors per connection in this process.
  rlimit limit{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &limit) == 0);
  if (limit.rlim_cur < 2 * kClients + 100 && limit.rlim_max > limit.rlim_cur) {
    limit.rlim_cur = std::min<rlim_t>(limit.rlim_max, 4 * kClients);
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
  size_t expected = 0;
  for (int i = 0; i < kClients; ++i) expected += 1000 + static_cast<size_t>(i % 97) * 31;
  size_t server_received = 0, server_sent = 0, clients_received = 0;
  int connections = 0, intact = 0;
  size_t peak = 0;
  int rc = Co::run([&] {
    Co::Socket listener;
    CO_REQUIRE(listener.bind("127.0.0.1", 0));
    CO_REQUIRE(listener.listen(4096));
    uint16_t port = listener.local_port();
    Co::WaitGroup handlers;
    Co::WaitGroup acceptor_done;
    acceptor_done.add(1);
    Co::create([&] {
      for (;;) {
        std::optional<Co::Socket> accepted = listener.accept(4 * kLong);
        if (!accepted) {
          CHECK(listener.error().value() == ECANCELED);
          break;
        }
        ++connections;
        handlers.add(1);
        Co::create(
            [&](Co::Socket connection) {
              char buffer[4096];
              for (;;) {
                ssize_t n = connection.recv(buffer, sizeof buffer, kLong);
                CHECK(n >= 0);
                if (n <= 0) break;
                server_received += static_cast<size_t>(n);
                ssize_t m = connection.send_all(buffer, static_cast<size_t>(n), kLong);
                CHECK(m == n);
                if (m != n) break;
                server_sent += static_cast<size_t>(m);
              }
              handlers.done();
            },
            std::move(*accepted));
      }
      acceptor_done.done();
    });
    Co::WaitGroup clients;
    clients.add(kClients);
    for (int i = 0; i < kClients; ++i) {
      Co::create([&, i] {
        const std::string message = pattern(1000 + static_cast<size_t>(i % 97) * 31, i);
        Co::Socket client;
        bool ok = client.connect("127.0.0.1", port, 4 * kLong);
        CHECK(ok);
        if (ok) {
          CHECK(client.send_all(message.data(), message.size(), 4 * kLong) ==
                static_cast<ssize_t>(message.size()));
          std::string reply(message.size(), '\0');
          ssize_t n = client.recv_all(reply.data(), reply.size(), 4 * kLong);
          CHECK(n == static_cast<ssize_t>(message.size()));
          if (n > 0) clients_received += static_cast<size_t>(n);
          if (reply == message) ++intact;
        }
        peak = std::max(peak, Co::stats().coroutine_num);
        clients.done();
      });
    }
    bool all_done = clients.wait(30s);
    CHECK(all_done);
    if (!all_done) clients.wait();
    CHECK(listener.close());  // ends the accept loop
    CHECK(settle(acceptor_done));
    CHECK(settle(handlers));
  });
  CHECK(rc == 0);
  CHECK(connections == kClients);
  CHECK(intact == kClients);
  CHECK(server_received == expected);
  CHECK(server_sent == expected);
  CHECK(clients_received == expected);
  CHECK(peak >= kClients);  // they really were all alive at once
}

namespace {
int int_option(int fd, int level, int name) {
  int value = -1;
  socklen_t length = sizeof value;
  if (::getsockopt(fd, level, name, &value, &length) != 0) return -1;
  return value;
}
}  // namespace

TEST_CASE("options: TCP_NODELAY on by default (also accepted sockets), keepalive, linger") {
  int rc = Co::run([] {
    for (Type type : {Type::tcp, Type::tcp6}) {
      CAPTURE(static_cast<int>(type));
      Co::Socket listener(type);
      CO_REQUIRE(listener.bind(loopback(type), 0));
      CO_REQUIRE(listener.listen());
      CHECK(int_option(listener.fd(), IPPROTO_TCP, TCP_NODELAY) == 1);
      Co::Socket client(type);
      CHECK(int_option(client.fd(), IPPROTO_TCP, TCP_NODELAY) == 1);
      CO_REQUIRE(client.connect(loopback(type), listener.local_port()));
      std::optional<Co::Socket> accepted = listener.accept(kLong);
      CO_REQUIRE(accepted.has_value());
      CHECK(int_option(accepted->fd(), IPPROTO_TCP, TCP_NODELAY) == 1);

      CHECK(client.set_nodelay(false));
      CHECK(int_option(client.fd(), IPPROTO_TCP, TCP_NODELAY) == 0);
      CHECK(client.set_nodelay(true));
      CHECK(int_option(client.fd(), IPPROTO_TCP, TCP_NODELAY) == 1);

      CHECK(client.set_keepalive(true, 30, 4, 5));
      CHECK(int_option(client.fd(), SOL_SOCKET, SO_KEEPALIVE) == 1);
      CHECK(int_option(client.fd(), IPPROTO_TCP, TCP_KEEPIDLE) == 30);
      CHECK(int_option(client.fd(), IPPROTO_TCP, TCP_KEEPINTVL) == 4);
      CHECK(int_option(client.fd(), IPPROTO_TCP, TCP_KEEPCNT) == 5);
      CHECK(client.set_keepalive(false));
      CHECK(int_option(client.fd(), SOL_SOCKET, SO_KEEPALIVE) == 0);

      CHECK(client.set_linger(true, 3));
      linger value{};
      socklen_t length = sizeof value;
      CHECK(::getsockopt(client.fd(), SOL_SOCKET, SO_LINGER, &value, &length) == 0);
      CHECK(value.l_onoff == 1);
      CHECK(value.l_linger == 3);
    }
  });
  CHECK(rc == 0);
}

TEST_CASE("options: bad values and closed sockets fail with the errno, the socket stays usable") {
  int rc = Co::run([] {
    Co::Socket udp(Type::udp);
    CHECK_FALSE(udp.set_nodelay(true));  // no TCP options on a datagram socket
    CHECK(udp.error().value() != 0);
    CHECK_FALSE(udp.error_message().empty());

    Co::Socket tcp(Type::tcp);
    CHECK_FALSE(tcp.set_keepalive(true, -1, 5, 3));  // the kernel refuses a negative idle time
    CHECK(tcp.error() == std::errc::invalid_argument);
    CHECK(tcp.set_nodelay(true));  // still usable

    CHECK(tcp.close());
    CHECK_FALSE(tcp.set_nodelay(true));
    CHECK(tcp.error() == std::errc::bad_file_descriptor);
    CHECK_FALSE(tcp.set_keepalive(true));
    CHECK_FALSE(tcp.set_linger(true, 1));
    CHECK_FALSE(tcp.close());  // a second close: false, EBADF
    CHECK(tcp.error() == std::errc::bad_file_descriptor);
    CHECK(tcp.fd() == -1);
  });
  CHECK(rc == 0);
}

TEST_CASE("bad input: bind, listen, sendto and connect fail with the errno and change nothing") {
  TempDir dir;
  int rc = Co::run([&] {
    Co::Socket first(Type::tcp);
    CO_REQUIRE(first.bind("127.0.0.1", 0));
    CO_REQUIRE(first.listen());
    Co::Socket second(Type::tcp);
    CHECK_FALSE(second.bind("127.0.0.1", first.local_port()));  // taken
    CHECK(second.error() == std::errc::address_in_use);
    CHECK_FALSE(second.error_message().empty());
    CHECK_FALSE(second.bind("bad..name", 0));  // malformed: no query is sent
    CHECK(second.error() == std::errc::invalid_argument);
    CHECK_FALSE(second.bind("::1", 0));  // an IPv6 address for an IPv4 socket
    CHECK(second.error().value() == ENXIO);
    CHECK(second.bind("127.0.0.1", 0));  // still usable

    Co::Socket unix_socket(Type::unix_stream);
    CHECK_FALSE(unix_socket.bind(std::string(200, 'x')));  // longer than sun_path
    CHECK(unix_socket.error() == std::errc::filename_too_long);
    CHECK_FALSE(unix_socket.bind(""));
    CHECK(unix_socket.error() == std::errc::invalid_argument);
    CHECK_FALSE(unix_socket.connect(dir.file("nobody-listens")));
    CHECK((unix_socket.error() == std::errc::no_such_file_or_directory ||
           unix_socket.error() == std::errc::connection_refused));

    Co::Socket udp(Type::udp);
    CHECK_FALSE(udp.listen());  // datagram sockets do not listen
    CHECK(udp.error() == std::errc::operation_not_supported);
    CHECK(udp.sendto("bad..name", 9, "x", 1) == -1);
    CHECK(udp.error() == std::errc::invalid_argument);
    CHECK(udp.sendto("::1", 9, "x", 1) == -1);
    CHECK(udp.error().value() == ENXIO);

    Co::Socket tcp(Type::tcp);
    CHECK_FALSE(tcp.connect(dir.file("a-path")));  // a path needs a Unix socket
    CHECK(tcp.error() == std::errc::invalid_argument);
    CHECK_FALSE(tcp.connect("bad..name", 80, kLong));
    CHECK(tcp.error() == std::errc::invalid_argument);
  });
  CHECK(rc == 0);
}

TEST_CASE("bad input: an adopted -1, a moved-from socket and waits outside a coroutine") {
  Co::Socket adopted(-1, Type::tcp);
  CHECK(adopted.fd() == -1);
  CHECK_FALSE(adopted.is_open());
  CHECK(adopted.error() == std::errc::bad_file_descriptor);

  Co::Socket original(Type::tcp);
  CHECK(original.bind("127.0.0.1", 0));
  CHECK(original.listen());
  Co::Socket moved(std::move(original));
  CHECK(moved.is_open());
  CHECK(original.fd() == -1);  // NOLINT(bugprone-use-after-move): the moved-from state is tested
  CHECK(original.error() == std::errc::bad_file_descriptor);
  CHECK_FALSE(original.listen());
  CHECK_FALSE(original.close());

  // Outside a container a call that would wait fails at once with EPERM; the socket stays fine.
  char byte;
  CHECK(moved.recv(&byte, 1, kLong) == -1);
  CHECK(moved.error() == std::errc::operation_not_permitted);
  CHECK_FALSE(moved.accept(kLong).has_value());
  CHECK(moved.error() == std::errc::operation_not_permitted);
  uint16_t port = moved.local_port();
  int rc = Co::run([&] {
    Co::Socket client(Type::tcp);
    CHECK(client.connect("127.0.0.1", port, kLong));
    std::optional<Co::Socket> accepted = moved.accept(kLong);
    CHECK(accepted.has_value());
  });
  CHECK(rc == 0);
}
