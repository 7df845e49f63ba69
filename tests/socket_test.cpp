// Stream sockets over real loopback connections and the real io_uring: TCP over 127.0.0.1 and
// ::1, timeouts (zero means "do not wait"), the one-reader-one-writer rule (BindError), the
// default timeouts, 1,000 concurrent connections, options, and bad input: sizes, names,
// descriptors that could not be made. (Closing while waiting, framing and datagrams have suites
// of their own.)
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
#include <sys/mman.h>
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

#include "socket_util.hpp"
#include "test_util.hpp"

using namespace std::chrono_literals;
using coring_test::pattern;
using coring_test::TempDir;

using Type = Co::Socket::Type;
using Clock = std::chrono::steady_clock;

using namespace coring_test;  // NOLINT: the suites' shared helpers

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
      CHECK(waited_ms(start) < 2000);
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
    long long waited = waited_ms(start);
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
    waited = waited_ms(start);
    CHECK(p.server.error().value() == ETIMEDOUT);
    CHECK(waited >= 50);
    CHECK(waited < 3000);

    // recv_all's timeout covers the whole call: it returns what it got so far.
    CHECK(p.client.send_all("12345", 5, kLong) == 5);
    start = Clock::now();
    CHECK(within(kLong, [&] { got = p.server.recv_all(buffer, 10, 50ms); }));
    CHECK(got == 5);
    CHECK(p.server.error().value() == ETIMEDOUT);
    CHECK(waited_ms(start) >= 50);
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
    long long waited = waited_ms(start);
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
    long long waited = waited_ms(start);
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
    CHECK(waited_ms(start) >= 50);
    CHECK(waited_ms(start) < 3000);

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

TEST_CASE("bad input: a socket made when out of descriptors fails every call with EMFILE") {
  coring_test::ChildResult child = coring_test::run_in_child([] {
    rlimit limit{64, 64};
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) return 90;
    std::vector<int> held;
    int code = 0;
    auto expect_emfile = [&](bool failed, const Co::Socket& socket, int step) {
      if (code == 0 && (!failed || socket.error().value() != EMFILE)) code = step;
    };
    int rc = Co::run([&] {
      for (int fd; (fd = ::dup(STDIN_FILENO)) >= 0;) held.push_back(fd);  // every one taken
      Co::Socket socket(Type::tcp);
      expect_emfile(socket.fd() == -1, socket, 1);
      expect_emfile(!socket.connect("127.0.0.1", 9, 1s), socket, 2);
      expect_emfile(!socket.bind("127.0.0.1", 0), socket, 3);
      expect_emfile(!socket.listen(), socket, 4);
      char byte;
      expect_emfile(socket.recv(&byte, 1, 1s) == -1, socket, 5);
      expect_emfile(socket.send("x", 1, 1s) == -1, socket, 6);
      expect_emfile(!socket.set_nodelay(true), socket, 7);
      expect_emfile(!socket.accept(1s).has_value(), socket, 8);
      Co::Socket udp(Type::udp);
      expect_emfile(udp.sendto("127.0.0.1", 9, "x", 1) == -1, udp, 9);
      expect_emfile(!socket.close(), socket, 10);  // close() of it keeps the real cause too
    });
    for (int fd : held) ::close(fd);
    return rc == 0 ? code : 80;
  });
  CHECK_MESSAGE(child.exit_code() == 0, child.describe());
}

TEST_CASE("bad input: sizes past SSIZE_MAX fail with EINVAL; the socket stays usable") {
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    CO_REQUIRE(p.ok);
    char buffer[8];
    const size_t huge = static_cast<size_t>(-1);  // a negative length, cast
    CHECK(p.client.send(buffer, huge, kLong) == -1);
    CHECK(p.client.error() == std::errc::invalid_argument);
    CHECK(p.client.send_all(buffer, huge, kLong) == -1);
    CHECK(p.server.recv(buffer, huge, kLong) == -1);
    CHECK(p.server.error() == std::errc::invalid_argument);
    CHECK(p.server.recv_all(buffer, huge, kLong) == -1);
    CHECK(p.client.send_all("ok", 2, kLong) == 2);
    CHECK(p.server.recv_all(buffer, 2, kLong) == 2);
  });
  CHECK(rc == 0);
}

namespace {
// Address space for a buffer of `size` bytes that costs no memory until touched (reads of
// untouched pages see zeros).
struct SparseBuffer {
  char* data = nullptr;
  size_t size = 0;
  explicit SparseBuffer(size_t n) : size(n) {
    void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p != MAP_FAILED) data = static_cast<char*>(p);
  }
  ~SparseBuffer() {
    if (data != nullptr) ::munmap(data, size);
  }
};
}  // namespace

TEST_CASE("buffers of 4 GiB and more: send_all moves every byte, recv never truncates to 0") {
  constexpr size_t kFourGiB = size_t{1} << 32;
  const size_t size = kFourGiB + 4097;
  SparseBuffer source(size);
  SparseBuffer target(kFourGiB);
  REQUIRE(source.data != nullptr);
  REQUIRE(target.data != nullptr);
  // Marks around the 4 GiB boundary, where a 32-bit length would wrap.
  const std::vector<size_t> marks = {0, kFourGiB - 1, kFourGiB, kFourGiB + 1, size - 1};
  for (size_t at : marks) source.data[at] = static_cast<char>(0x5a ^ (at & 0xff));
  ssize_t sent = -2;
  size_t received = 0;
  int mismatches = 0;
  ssize_t small_recv = -2;
  int rc = Co::run([&] {
    Pair p = tcp_pair();
    CO_REQUIRE(p.ok);
    Co::WaitGroup wg;
    spawn(wg, [&] {
      std::vector<char> chunk(1 << 20);
      size_t at = 0;
      for (;;) {
        ssize_t n = p.server.recv(chunk.data(), chunk.size(), 60s);
        if (n <= 0) break;
        for (size_t mark : marks) {
          if (mark >= at && mark < at + static_cast<size_t>(n) &&
              chunk[mark - at] != static_cast<char>(0x5a ^ (mark & 0xff))) {
            ++mismatches;
          }
        }
        at += static_cast<size_t>(n);
      }
      received = at;
    });
    sent = p.client.send_all(source.data, size, 120s);
    CHECK(p.client.shutdown(SHUT_WR));
    CHECK(settle(wg));
    // A recv that asks for exactly 4 GiB gets what is there, not a false end of stream.
    Pair q = tcp_pair();
    CO_REQUIRE(q.ok);
    CHECK(q.client.send_all("hello", 5, kLong) == 5);
    small_recv = q.server.recv(target.data, kFourGiB, kLong);
  });
  CHECK(rc == 0);
  CHECK(sent == static_cast<ssize_t>(size));
  CHECK(received == size);
  CHECK(mismatches == 0);
  CHECK(small_recv == 5);
  CHECK(std::string_view(target.data, 5) == "hello");
}

TEST_CASE("names: a NUL inside a host or path fails with EINVAL; IPv6 scope ids are accepted") {
  int rc = Co::run([&] {
    using namespace std::string_view_literals;
    Co::Socket listener(Type::tcp);
    CO_REQUIRE(listener.bind("127.0.0.1", 0));
    CO_REQUIRE(listener.listen());
    Co::Socket client(Type::tcp);
    // Without the check, inet_pton and getaddrinfo stop at the NUL and connect to 127.0.0.1.
    CHECK_FALSE(client.connect("127.0.0.1\0evil"sv, listener.local_port(), kLong));
    CHECK(client.error() == std::errc::invalid_argument);
    Co::Socket other(Type::tcp);
    CHECK_FALSE(other.bind("127.0.0.1\0"sv, 0));
    CHECK(other.error() == std::errc::invalid_argument);
    Co::Socket unix_socket(Type::unix_stream);
    CHECK_FALSE(unix_socket.connect("/tmp/a\0b"sv, kLong));
    CHECK(unix_socket.error() == std::errc::invalid_argument);
    Co::Socket udp(Type::udp);
    CHECK(udp.sendto("127.0.0.1\0x"sv, 9, "x", 1) == -1);
    CHECK(udp.error() == std::errc::invalid_argument);

    // "::1%lo": an IPv6 literal with a scope (the loopback interface), for bind and connect.
    Co::Socket listener6(Type::tcp6);
    CO_REQUIRE(listener6.bind("::1%lo", 0));
    CO_REQUIRE(listener6.listen());
    Co::Socket client6(Type::tcp6);
    CHECK(client6.connect("::1%lo", listener6.local_port(), kLong));
    CHECK(client6.connect_timeout() > Co::Duration::zero());
    Co::Socket bracketed(Type::tcp6);
    CHECK(bracketed.connect("[::1%1]", listener6.local_port(), kLong));
    Co::Socket unknown_interface(Type::tcp6);
    CHECK_FALSE(unknown_interface.connect("::1%no-such-interface", listener6.local_port(), kLong));
    CHECK(unknown_interface.error() == std::errc::invalid_argument);
  });
  CHECK(rc == 0);
}

TEST_CASE("bind with a name: destroying or closing the socket while it resolves is safe") {
  // bind() waits while a worker thread resolves the name; the socket is destroyed (or closed)
  // meanwhile: bind() must fail with ECANCELED without touching freed state (ASan), and the
  // resolution must not keep it waiting. Each way runs in its own child, so each starts with an
  // empty name cache: the abandoned lookup of the first would otherwise fill the cache for the
  // second whenever the worker thread wins the race, and the second bind would not wait at all.
  auto entry = coring_test::hosts_file_entry();
  if (!entry) {
    MESSAGE("no /etc/hosts name answered without DNS on this machine; skipped");
    return;
  }
  const std::string name = entry->first;
  for (bool destroy : {true, false}) {
    CAPTURE(destroy);
    coring_test::ChildResult child = coring_test::run_in_child([&] {
      int code = 0;  // the first failure found
      int rc = Co::run([&] {
        auto socket = std::make_unique<Co::Socket>(Type::tcp);
        bool bound = true;
        int error = 0;
        long binder = Co::create([&] {
          Co::Socket* raw = socket.get();
          bound = raw->bind(name, 0);
          if (!destroy) error = raw->error().value();
        });
        if (destroy) {
          socket.reset();
        } else {
          socket->close();
        }
        if (!Co::join({binder}, 5s)) {
          code = 1;
        } else if (bound) {
          code = 2;
        } else if (!destroy && error != ECANCELED) {
          code = 3;
        }
        Co::Socket other(Type::udp);  // a fresh core may reuse the freed one's memory
        if (code == 0 && other.error().value() != 0) code = 4;
      });
      return rc == 0 ? code : 10;
    });
    CHECK_MESSAGE(child.exit_code() == 0, child.describe());
  }
}

TEST_CASE("accept(kDefaultTimeout) waits for the socket's read timeout") {
  int rc = Co::run([&] {
    Co::Socket listener(Type::tcp);
    CO_REQUIRE(listener.bind("127.0.0.1", 0) && listener.listen());
    listener.set_timeout(kLong);
    Co::create([&] {
      Co::this_coroutine::sleep(10ms);
      Co::Socket client(Type::tcp);
      CHECK(client.connect("127.0.0.1", listener.local_port(), kLong));
    });
    CHECK(listener.accept(Co::Socket::kDefaultTimeout).has_value());
  });
  CHECK(rc == 0);
}

// ---- sendfile -----------------------------------------------------------------------------------

namespace {

// A file with `content`, opened for reading (closed by the caller).
int open_file_with(const TempDir& dir, const std::string& content) {
  std::string path = dir.file("data");
  int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()));
  return fd;
}

}  // namespace

TEST_CASE("sendfile: a range of a file arrives intact; a file shorter than count stops early") {
  TempDir dir;
  const std::string content = pattern(3 * 1024 * 1024 + 17, 7);
  int fd = open_file_with(dir, content);
  int rc = Co::run([&] {
    Pair pair = tcp_pair(Type::tcp, true);  // small buffers: the sender has to wait
    CO_REQUIRE(pair.ok);
    Co::WaitGroup wg;
    std::string received;
    spawn(wg, [&] {
      char buffer[65536];
      ssize_t n;
      while ((n = pair.server.recv(buffer, sizeof buffer, kLong)) > 0) received.append(buffer, n);
    });
    CHECK(pair.client.sendfile(fd, 100, content.size() - 100, kLong) ==
          static_cast<ssize_t>(content.size() - 100));
    CHECK(pair.client.error().value() == 0);
    // count past the end of the file: what there is, and no error.
    CHECK(pair.client.sendfile(fd, content.size() - 10, 1000, kLong) == 10);
    CHECK(pair.client.error().value() == 0);
    pair.client.shutdown(SHUT_WR);
    CHECK(settle(wg));
    CHECK(received == content.substr(100) + content.substr(content.size() - 10));
  });
  CHECK(rc == 0);
  ::close(fd);
}

TEST_CASE("sendfile: bad input fails with a clear errno and sends nothing") {
  TempDir dir;
  int fd = open_file_with(dir, "hello");
  int rc = Co::run([&] {
    Pair pair = tcp_pair();
    CO_REQUIRE(pair.ok);
    CHECK(pair.client.sendfile(fd, -1, 5) == -1);
    CHECK(pair.client.error().value() == EINVAL);
    CHECK(pair.client.sendfile(fd, 0, static_cast<size_t>(-1)) == -1);  // a negative size cast
    CHECK(pair.client.error().value() == EINVAL);
    int pipe_fds[2];
    CO_REQUIRE(::pipe(pipe_fds) == 0);
    ::close(pipe_fds[1]);
    CHECK(pair.client.sendfile(pipe_fds[0], 0, 5, kLong) == -1);  // not a file sendfile reads
    CHECK((pair.client.error().value() == ESPIPE || pair.client.error().value() == EINVAL));
    ::close(pipe_fds[0]);
    CHECK(pair.client.sendfile(-1, 0, 5, kLong) == -1);
    CHECK(pair.client.error().value() == EBADF);
    char byte;
    CHECK(pair.server.recv(&byte, 1, Co::Duration::zero()) == -1);  // nothing went out
    CHECK(pair.server.error().value() == ETIMEDOUT);
    Co::Socket udp(Type::udp);
    CHECK(udp.sendfile(fd, 0, 5, kLong) == -1);  // not connected
    CHECK(udp.error().value() != 0);
    pair.client.close();
    CHECK(pair.client.sendfile(fd, 0, 5, kLong) == -1);
    CHECK(pair.client.error().value() == EBADF);
  });
  CHECK(rc == 0);
  ::close(fd);
}

TEST_CASE("sendfile: a peer that does not read: timeout; close or cancel from another coroutine") {
  TempDir dir;
  const std::string content = pattern(16 * 1024 * 1024, 3);
  int fd = open_file_with(dir, content);
  int rc = Co::run([&] {
    {
      Pair pair = tcp_pair(Type::tcp, true);
      CO_REQUIRE(pair.ok);
      ssize_t sent = pair.client.sendfile(fd, 0, content.size(), 200ms);
      CHECK(sent > 0);  // part of it, until the buffers filled
      CHECK(sent < static_cast<ssize_t>(content.size()));
      CHECK(pair.client.error().value() == ETIMEDOUT);
    }
    for (bool by_close : {true, false}) {
      Pair pair = tcp_pair(Type::tcp, true);
      CO_REQUIRE(pair.ok);
      Co::WaitGroup wg;
      ssize_t sent = 0;
      int error = 0;
      long sender = spawn(wg, [&] {
        sent = pair.client.sendfile(fd, 0, content.size(), kLong);
        error = pair.client.error().value();
      });
      // (create() ran the sender until it had to wait: its buffers are full)
      if (by_close) {
        CHECK(pair.client.close());
      } else {
        CHECK(Co::cancel(sender));
      }
      CHECK(settle(wg));
      CHECK(sent < static_cast<ssize_t>(content.size()));
      CHECK(error == ECANCELED);
    }
    {
      Pair pair = tcp_pair(Type::tcp, true);
      CO_REQUIRE(pair.ok);
      pair.server.set_linger(true, 0);
      pair.server.close();  // a reset
      ssize_t sent = pair.client.sendfile(fd, 0, content.size(), kLong);
      CHECK(sent < static_cast<ssize_t>(content.size()));
      int error = pair.client.error().value();
      CHECK((error == ECONNRESET || error == EPIPE));
    }
  });
  CHECK(rc == 0);
  ::close(fd);
}
